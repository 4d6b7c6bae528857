"""The compose loader and `stack config` against hostile and careless input (issue #12): the
same checks as deploy, output that loads back to the same stack, compose's own rules, and
never a traceback or a hang."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shoal.compose import ComposeError, check_config, load_stack, render_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "book"  # CC BY-SA 4.0: see its README.md
ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, text: str, *args: str, stdin: str | None = None, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    f = tmp_path / "s.yml"
    f.write_text(text)
    files = ["-c", "-"] if stdin is not None else ["-c", str(f)]
    return subprocess.run([sys.executable, "-m", "shoal", "stack", "config", *files, *args], capture_output=True,
                          text=True, input=stdin, cwd=tmp_path, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


BAD = {  # what deploy refuses, and so must config (each: the key path in the error)
    "cpus: lots": ("services:\n  w:\n    image: x\n    deploy:\n      resources:\n        limits:\n"
                   "          cpus: lots\n", "services.w.deploy.resources.limits.cpus"),
    "memory 100Q": ("services:\n  w:\n    image: x\n    deploy:\n      resources:\n        limits:\n"
                    "          memory: 100Q\n", "services.w.deploy.resources.limits.memory"),
    "no image": ("services:\n  w:\n    command: [sleep, '1']\n", "services.w"),
    "replicas: two": ("services:\n  w:\n    image: x\n    deploy:\n      replicas: two\n", "services.w.deploy.replicas"),
    "undefined network": ("services:\n  w:\n    image: x\n    networks: [nope]\n", "services.w.networks"),
    "deploy typo": ("services:\n  w:\n    image: x\n    deploy:\n      replica: 2\n", "services.w.deploy.replica"),
    "ports typo": ("services:\n  w:\n    image: x\n    ports:\n      - target: 80\n        publish: 8080\n",
                   "services.w.ports[0].publish"),
    "healthcheck typo": ("services:\n  w:\n    image: x\n    healthcheck:\n      intervall: 5s\n",
                         "services.w.healthcheck.intervall"),
    "undefined secret": ("services:\n  w:\n    image: x\n    secrets: [nope]\n", "services.w.secrets"),
    "undefined volume": ("services:\n  w:\n    image: x\n    volumes: ['nope:/data']\n", "services.w.volumes"),
    "undefined depends_on": ("services:\n  w:\n    image: x\n    depends_on: [nope]\n", "services.w.depends_on"),
    "cycle": ("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
              "depends_on"),
    "missing env_file": ("services:\n  w:\n    image: x\n    env_file: ./nope.env\n", "services.w.env_file"),
    "replicas too many": ("services:\n  w:\n    image: x\n    deploy:\n      replicas: 100000\n",
                          "services.w.deploy.replicas"),
    "overflowing duration": ("services:\n  w:\n    image: x\n    stop_grace_period: " + "9" * 310 + "s\n",
                             "services.w.stop_grace_period"),
    "name too long": ("services:\n  " + "w" * 70 + ":\n    image: x\n", "services." + "w" * 70),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_config_refuses_what_deploy_refuses(tmp_path, case):
    text, key = BAD[case]
    p = config(tmp_path, text)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("Error: s.yml:") and key in p.stderr, p.stderr
    with pytest.raises(ComposeError) as e:
        load_stack([tmp_path / "s.yml"], "st", environ={})
    assert key in str(e.value)


def _fixture_sets() -> list[list[Path]]:
    """Every stack file of the book, as the book deploys it: alone, or (the chapter 14 override
    files, which have no image) after docker-compose.yml and prod.yml of their folder."""
    sets = []
    for f in sorted(FIXTURES.rglob("*.yml")):
        if "windows" in f.name:
            continue  # Windows images, paths and constraints: not for this platform
        base, prod = f.parent / "docker-compose.yml", f.parent / "prod.yml"
        raw = f.read_bytes()
        text = raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8", errors="replace")
        if f == base or "image:" in text or not base.exists():
            sets.append([f] if f != base else [base, prod])
        else:
            sets.append([base, prod] if f == prod else [base, prod, f])
    return sets


@pytest.mark.parametrize("files", _fixture_sets(), ids=lambda fs: "+".join(f.name for f in fs))
def test_config_output_loads_back_to_the_same_stack(tmp_path, files):
    """`stack config > out.yml; stack deploy -c out.yml` deploys what the files said (the book's
    chapter 14 does just that)."""
    env = {"HOME": "/root"}
    want = load_stack(files, "st", environ=env)
    tree, _ = check_config(files, environ=env)
    out = tmp_path / "out.yml"
    out.write_text(render_config(tree))
    got = load_stack([out], "st", environ=env)
    assert _by_name(got) == _by_name(want)


def _by_name(stack) -> dict:
    """The stack as data, its objects in name order (config prints them sorted; order is no meaning)."""
    d = stack.model_dump()
    d.pop("warnings")
    for key in ("services", "networks", "volumes", "configs", "secrets"):
        d[key] = sorted(d[key], key=lambda o: o["name"])
    return d


def test_interpolated_values_are_typed_as_the_schema_wants(tmp_path):
    text = ("services:\n  w:\n    image: x\n    init: ${T}\n    deploy:\n      replicas: ${N}\n"
            "      update_config:\n        max_failure_ratio: ${R}\n    ports:\n      - target: ${N}\n"
            "        published: 8080\n    environment:\n      N: ${N}\n      F: 1.0\n      G: 1000.0\n      H: 1.5\n")
    p = config(tmp_path, text, env={"T": "true", "N": "2", "R": "0.5"})
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for line in ("init: true", "replicas: 2", "max_failure_ratio: 0.5", "target: 2", "N: '2'",
                 "F: '1'", "G: '1000'", "H: '1.5'"):
        assert line in out, (line, out)
    (tmp_path / "back.yml").write_text(out)
    assert load_stack([tmp_path / "back.yml"], "st", environ={}).services[0].replicas == 2


def test_skip_interpolation_stdin_and_unset_variable_warnings(tmp_path):
    text = "services:\n  w:\n    image: x:${TAG}\n    environment:\n      A: $$literal\n"
    p = config(tmp_path, text, "--skip-interpolation")
    assert p.returncode == 0 and "image: x:${TAG}" in p.stdout and "Traceback" not in p.stderr, p.stderr
    p = config(tmp_path, "services:\n  w:\n    image: x:${TAG}\n    command: [${BAD\n", "--skip-interpolation")
    assert p.returncode == 1 and "Traceback" not in p.stderr and "s.yml:" in p.stderr
    p = config(tmp_path, "", stdin=text)
    assert p.returncode == 0 and "image: 'x:'" in p.stdout, (p.stdout, p.stderr)
    assert 'The "TAG" variable is not set. Defaulting to a blank string.' in p.stderr


def test_memory_units_as_compose_reads_them(tmp_path):
    def memory(value: str) -> int:
        (tmp_path / "m.yml").write_text("services:\n  w:\n    image: x\n    deploy:\n      resources:\n"
                                        f"        limits:\n          memory: {value}\n")
        return load_stack([tmp_path / "m.yml"], "st", environ={}).services[0].resources.limits.memory_bytes
    assert memory(".5g") == 512 * 1024 ** 2 and memory("100MiB") == memory("100m") == 100 * 1024 ** 2
    assert memory("1e3") == 1000 and memory("1.5g") == 1536 * 1024 ** 2
    for bad in ("1Gi", "100Q", "-1", "99999999999999999999g"):
        with pytest.raises(ComposeError, match="memory"):
            memory(bad)


def test_several_documents_and_merge_tags(tmp_path):
    base = tmp_path / "base.yml"
    base.write_text("services:\n  a:\n    image: x\n    ports: ['80:80']\n    environment:\n      A: '1'\n"
                    "---\nservices:\n  b:\n    image: y\n")
    over = tmp_path / "over.yml"
    over.write_text("services:\n  a:\n    ports: !reset []\n    environment: !override\n      B: '2'\n")
    stack = load_stack([base, over], "st", environ={})
    a = next(s for s in stack.services if s.name == "st_a")
    assert {s.name for s in stack.services} == {"st_a", "st_b"}
    assert a.ports == [] and a.container.env == {"B": "2"}


def test_accepted_but_unused_options_are_named(tmp_path):
    (tmp_path / "s.yml").write_text(
        "services:\n  w:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n      start_interval: 1s\n"
        "    deploy:\n      resources:\n        reservations:\n          devices:\n            - capabilities: [gpu]\n"
        "          generic_resources:\n            - discrete_resource_spec: {kind: gpu, value: 1}\n"
        "    depends_on:\n      other:\n        condition: service_started\n        required: false\n")
    stack = load_stack([tmp_path / "s.yml"], "st", environ={})
    text = "\n".join(stack.warnings)
    for name in ("healthcheck.start_interval", "reservations.devices", "reservations.generic_resources",
                 "'other' is not in the stack; ignored (required: false)"):
        assert name in text, (name, text)
    assert stack.services[0].depends_on == []


HOSTILE = {
    "alias bomb": ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                   'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
                   'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
                   'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n'
                   'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\nservices: {}\n'),
    "deep nesting": "services:\n  w:\n    image: x\n    labels: " + "[" * 350 + "]" * 350 + "\n",
    "int tag": "services:\n  w:\n    image: !!int web\n",
    "custom tag": "services:\n  w:\n    image: x\n    command: !custom [a]\n",
    "NUL in a file path": "services:\n  w:\n    image: x\n    configs: [c]\nconfigs:\n  c:\n    file: \"./a\\0b\"\n",
    "huge cpus": "services:\n  w:\n    image: x\n    deploy:\n      resources:\n        limits:\n          cpus: 1e99999999\n",
    "dependency chain": "services:\n" + "".join(
        f"  s{i}:\n    image: x\n" + (f"    depends_on: [s{i + 1}]\n" if i < 1199 else "") for i in range(1200)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_a_located_error_fast(tmp_path, case):
    (tmp_path / "s.yml").write_text(HOSTILE[case])
    t0 = time.monotonic()
    try:
        load_stack([tmp_path / "s.yml"], "st", environ={})
    except ComposeError as e:
        assert str(e).startswith("s.yml") or "s.yml:" in str(e), str(e)
    assert time.monotonic() - t0 < 10


# -- a fuzzer of the loader: never anything but a StackSpec or a ComposeError -----------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                     st.sampled_from(["x", "1s", "0.5", "100M", "${V}", "80:80", "/data", "CMD", "none",
                                      "global", "start-first", "-1", "1e400", "tcp", "host"]))
_keys = st.sampled_from(["services", "image", "deploy", "replicas", "ports", "volumes", "networks",
                         "configs", "secrets", "environment", "healthcheck", "test", "resources", "limits",
                         "cpus", "memory", "restart_policy", "update_config", "placement", "constraints",
                         "depends_on", "command", "labels", "mode", "target", "published", "w", "x-a"])
_trees = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=5),
                      max_leaves=30)
FUZZ_EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "150"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
@given(tree=st.dictionaries(_keys, _trees, max_size=4), services=st.dictionaries(_keys, _trees, max_size=3))
def test_fuzzed_stack_files_get_a_stack_or_a_compose_error(tmp_path, tree, services):
    import io

    from ruamel.yaml import YAML
    doc = {**tree, "services": {"w": {"image": "x", **services}}}
    buf = io.StringIO()
    YAML(typ="safe").dump(doc, buf)
    path = tmp_path / "f.yml"
    path.write_text(buf.getvalue())
    try:
        load_stack([path], "st", environ={"V": "1"})
        tree_, _ = check_config([path], environ={"V": "1"})
        render_config(tree_)
    except ComposeError:
        pass
