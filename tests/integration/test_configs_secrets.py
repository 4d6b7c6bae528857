"""Issue 4 on the real engine: configs and secrets end to end.

The book's walk-through (chapter 13 to-do list), then what must hold for every secret:
it never leaks (store file + WAL, daemon log, CLI output, API answers, error messages),
it lives only on tmpfs (in the container and on the node) and goes when its task ends;
rotation without renaming; clear errors; `stack rm` of file-based objects only; mutual TLS.
Autolock is in test_autolock.py (it restarts its own clusters).
"""
from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import FIXTURES, containers, docker, http_get
from shoal.cli.api_client import Api
from shoal.paths import Layout

pytestmark = pytest.mark.integration

MARK = f"shoal-secret-{uuid.uuid4().hex}"          # the secret bytes every leak check looks for
SECRET_DATA = f"password={MARK}\n".encode()


def cid_of(service: str) -> str:
    ids = containers(**{"shoal.service.name": service})
    assert len(ids) == 1, f"{service}: {len(ids)} containers"
    return ids[0]


def running_cids(service: str) -> list[str]:
    out = docker("ps", "-q", "--no-trunc", "--filter", f"label=shoal.service.name={service}")
    return out.split()


def dexec(cid: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", "exec", cid, *cmd], capture_output=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"docker exec {cmd}: {p.returncode} {p.stderr!r}")
    return p


def leak_forms(data: bytes) -> list[bytes]:
    """The secret as raw bytes, its marker, and base64 of it in all three alignments."""
    forms = [data, MARK.encode()]
    for i in range(3):
        chunk = data[i:]
        enc = base64.b64encode(chunk)
        forms.append(enc[4:len(enc) - 4])  # the stable middle part of the encoding
    forms.append(data.hex().encode())
    return forms


def assert_no_leak(blob: bytes | str, where: str, data: bytes = SECRET_DATA) -> None:
    if isinstance(blob, str):
        blob = blob.encode()
    for f in leak_forms(data):
        assert f not in blob, f"secret bytes ({f[:20]!r}…) found in {where}"


def api_raw(data_dir: str, method: str, path: str, body=None) -> tuple[int, bytes]:
    s, r = Api(Layout(data_dir), 60)._send(method, path, json.dumps(body).encode() if body is not None else None, 60)
    try:
        return r.status, r.read()
    finally:
        s.close()


def write(tmp: Path, name: str, text: str | bytes) -> str:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    p.write_bytes(text)
    return str(p)


# --------------------------------------------------------------------------- the book
@pytest.fixture(scope="module")
def todo(cluster, images):
    """Ch. 13: external config + secret, v3 then v4 (the fixtures deploy unchanged)."""
    d = FIXTURES / "diamol-ch13" / "todo-list"
    assert d.is_dir(), f"the book's fixtures are missing at {d}"
    # external: true and missing -> clear error before anything is deployed
    p = cluster.run("stack", "deploy", "-c", "v3.yml", "todo", check=False, cwd=str(d))
    assert p.returncode == 1
    assert "todo-list-config" in p.stderr and "not found" in p.stderr, p.stderr
    assert "todo" not in cluster.out("stack", "ls").split()
    assert "todo_" not in cluster.out("network", "ls")
    assert not containers(**{"com.docker.stack.namespace": "todo"})

    out = cluster.out("config", "create", "todo-list-config", "configs/config.json", cwd=str(d))
    assert out.strip()
    out = cluster.out("secret", "create", "todo-list-secret", "secrets/secrets.json", cwd=str(d))
    assert out.strip()
    return d


def test_book_v3_config_only(cluster, todo):
    d = todo
    cluster.out("stack", "deploy", "-c", "v3.yml", "todo", cwd=str(d))
    cluster.wait_for(lambda: cluster.running("todo_todo-web") == 1 and cluster.running("todo_todo-db") == 1,
                     timeout=240, what="todo v3 running")
    cid = cid_of("todo_todo-web")
    got = dexec(cid, "cat", "/app/config/config.json").stdout
    assert got == (d / "configs" / "config.json").read_bytes()
    # Postgres provider with no connection string: the book's error page.
    code, body = cluster.wait_for(lambda: (lambda r: r if r[0] in (500, 200) else None)(
        http_get("http://127.0.0.1:8080/")), timeout=120, what="todo-web answers")
    assert code == 500 and "database cannot be reached" in body.lower(), (code, body[:300])


def test_book_v4_config_and_secret(cluster, todo):
    d = todo
    cluster.out("stack", "deploy", "-c", "v4.yml", "todo", cwd=str(d))

    def new_web():
        ids = running_cids("todo_todo-web")
        if len(ids) != 1:
            return None
        r = dexec(ids[0], "cat", "/app/config/secrets.json", check=False)
        return ids[0] if r.returncode == 0 else None
    cid = cluster.wait_for(new_web, timeout=240, what="todo-web rolled onto v4")
    assert dexec(cid, "cat", "/app/config/config.json").stdout == (d / "configs" / "config.json").read_bytes()
    assert dexec(cid, "cat", "/app/config/secrets.json").stdout == (d / "secrets" / "secrets.json").read_bytes()
    for path in ("/app/config/config.json", "/app/config/secrets.json"):
        st = dexec(cid, "stat", "-c", "%a %u %g", path).stdout.decode().split()
        assert st == ["444", "0", "0"], (path, st)
        w = dexec(cid, "sh", "-c", f"echo x >> {path}", check=False)
        assert w.returncode != 0, f"{path} is writable"
    mounts = dexec(cid, "cat", "/proc/mounts").stdout.decode()
    line = [l for l in mounts.splitlines() if l.split()[1] == "/app/config/secrets.json"]
    assert line and line[0].split()[2] == "tmpfs" and "ro" in line[0].split()[3].split(","), line

    def ok():
        code, body = http_get("http://127.0.0.1:8080/", timeout=10)
        return (code, body) if code == 200 else None
    code, body = cluster.wait_for(ok, timeout=240, interval=2, what="todo app works against Postgres")
    assert "You have 0 items to do." in body

    pretty = cluster.out("config", "inspect", "--pretty", "todo-list-config")
    assert '"Provider": "Postgres"' in pretty and "Data:" in pretty
    assert pretty.splitlines()[1].split()[:1] == ["Name:"]
    spretty = cluster.out("secret", "inspect", "--pretty", "todo-list-secret")
    assert "todo-list-secret" in spretty
    assert "ConnectionStrings" not in spretty and "Password" not in spretty and "Data:" not in spretty
    assert "Data version:      1" in spretty
    sjson = cluster.out("secret", "inspect", "todo-list-secret")
    assert "ConnectionStrings" not in sjson and "ciphertext" not in sjson and "wrapped" not in sjson

    # in use: removal refused, naming the service
    for kind, name in (("config", "todo-list-config"), ("secret", "todo-list-secret")):
        p = cluster.run(kind, "rm", name, check=False)
        assert p.returncode == 1 and "todo_todo-web" in p.stderr, p.stderr

    # stack rm never removes external objects
    cluster.out("stack", "rm", "todo")
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "todo"}), timeout=120,
                     what="todo containers gone")
    assert "todo-list-config" in cluster.out("config", "ls")
    assert "todo-list-secret" in cluster.out("secret", "ls")
    assert cluster.out("config", "rm", "todo-list-config").strip() == "todo-list-config"
    assert cluster.out("secret", "rm", "todo-list-secret").strip() == "todo-list-secret"


# --------------------------------------------------------------------------- secrets stack
SECRETS_STACK = """
services:
  app:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    configs:
      - app-conf
      - source: app-conf
        target: /etc/app/conf.txt
        uid: "1000"
        gid: "1001"
        mode: 0440
    secrets:
      - app-secret
      - source: app-secret
        target: /etc/app/secret.txt
        uid: "1000"
        gid: "1001"
        mode: 0400
      - ext-secret
    deploy:
      update_config:
        parallelism: 1
        delay: 0s
      restart_policy:
        delay: 1s
configs:
  app-conf:
    file: ./conf.txt
secrets:
  app-secret:
    file: ./secret.txt
  ext-secret:
    external: true
"""


@pytest.fixture(scope="module")
def sec(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sec")
    write(tmp, "conf.txt", "conf-v1\n")
    write(tmp, "secret.txt", SECRET_DATA)
    ext = write(tmp, "ext.txt", b"ext-" + SECRET_DATA)
    cluster.out("secret", "create", "--label", "team=blue", "ext-secret", ext)
    stack = write(tmp, "stack.yml", SECRETS_STACK)
    out = cluster.out("stack", "deploy", "-c", stack, "sec")
    assert "Creating secret sec_app-secret" in out and "Creating config sec_app-conf" in out
    assert_no_leak(out, "stack deploy output")
    cluster.wait_for(lambda: cluster.running("sec_app") == 1, timeout=120, what="sec_app running")
    return {"tmp": tmp, "stack": stack}


def test_files_in_container(cluster, sec):
    cid = cid_of("sec_app")
    assert dexec(cid, "cat", "/run/secrets/app-secret").stdout == SECRET_DATA
    assert dexec(cid, "cat", "/run/secrets/ext-secret").stdout == b"ext-" + SECRET_DATA
    assert dexec(cid, "cat", "/app-conf").stdout == b"conf-v1\n"
    assert dexec(cid, "cat", "/etc/app/conf.txt").stdout == b"conf-v1\n"
    assert dexec(cid, "stat", "-c", "%a %u %g", "/etc/app/secret.txt").stdout.split() == [b"400", b"1000", b"1001"]
    assert dexec(cid, "stat", "-c", "%a %u %g", "/etc/app/conf.txt").stdout.split() == [b"440", b"1000", b"1001"]
    assert dexec(cid, "stat", "-c", "%a %u %g", "/run/secrets/app-secret").stdout.split() == [b"444", b"0", b"0"]
    mounts = {l.split()[1]: l.split() for l in dexec(cid, "cat", "/proc/mounts").stdout.decode().splitlines()}
    for target in ("/run/secrets/app-secret", "/etc/app/secret.txt", "/run/secrets/ext-secret"):
        assert mounts[target][2] == "tmpfs", mounts.get(target)
        assert "ro" in mounts[target][3].split(","), mounts[target]
    for target in ("/app-conf", "/etc/app/conf.txt"):
        assert "ro" in mounts[target][3].split(","), mounts[target]
    for path in ("/run/secrets/app-secret", "/etc/app/conf.txt"):
        assert dexec(cid, "sh", "-c", f"echo x >> {path}", check=False).returncode != 0


def secrets_dir(cluster) -> str:
    cid = cid_of("sec_app")
    info = json.loads(docker("inspect", cid))[0]
    src = [m["Source"] for m in info["Mounts"] if m["Destination"] == "/run/secrets/app-secret"]
    assert src, info["Mounts"]
    # <secrets root>/<task id>/<file>
    return str(Path(src[0]).parent.parent), src[0]


def test_secret_on_node_only_on_shoal_tmpfs(cluster, sec):
    root, path = secrets_dir(cluster)
    assert Path(path).read_bytes() == SECRET_DATA
    fm = subprocess.run(["findmnt", "-n", "-o", "TARGET,FSTYPE", "--target", root], capture_output=True,
                        text=True).stdout.split()
    assert fm == [root, "tmpfs"], f"secrets root {root} is not its own tmpfs: {fm}"
    assert (os.stat(root).st_mode & 0o777) == 0o700
    # nowhere under the data dir (configs dir, store, logs …), on disk
    for dirpath, _, files in os.walk(cluster.data_dir):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                assert_no_leak(fh.read(), p)
    # the task ends -> its secret file is deleted
    task_dir = Path(path).parent
    cluster.out("service", "scale", "sec_app=0")
    cluster.wait_for(lambda: not task_dir.exists(), timeout=90, what="secret file removed with its task")
    cluster.out("service", "scale", "sec_app=1")
    cluster.wait_for(lambda: cluster.running("sec_app") == 1, timeout=90, what="sec_app back")


def test_no_leak_anywhere(cluster, sec):
    # an error message that could carry the data: name taken
    p = cluster.run("secret", "create", "ext-secret", "-", input=SECRET_DATA.decode(), check=False)
    assert p.returncode == 1 and "already exists" in p.stderr
    outputs = [p.stdout + p.stderr]
    big = sec["tmp"] / "big.txt"
    big.write_bytes(SECRET_DATA * (500 * 1024 // len(SECRET_DATA) + 2))
    p = cluster.run("secret", "create", "too-big", str(big), check=False)
    assert p.returncode == 1
    outputs.append(p.stdout + p.stderr)
    p = cluster.run("secret", "rm", "sec_app-secret", check=False)
    assert p.returncode == 1
    outputs.append(p.stdout + p.stderr)
    for args in (("secret", "ls"), ("secret", "inspect", "sec_app-secret", "ext-secret"),
                 ("secret", "inspect", "--pretty", "sec_app-secret"), ("service", "inspect", "sec_app"),
                 ("service", "inspect", "--pretty", "sec_app"), ("service", "ls"), ("service", "ps", "sec_app"),
                 ("stack", "ps", "--no-trunc", "sec"), ("stack", "services", "sec"), ("stack", "ls"),
                 ("stack", "config", "-c", sec["stack"]), ("config", "ls"), ("info",), ("node", "ls"),
                 ("node", "inspect", "self"), ("network", "ls"), ("service", "logs", "sec_app")):
        p = cluster.run(*args, check=False, cwd=str(sec["tmp"]), timeout=60)
        outputs.append(f"$ {args}\n{p.stdout}{p.stderr}")
    for o in outputs:
        assert_no_leak(o, f"CLI output:\n{o[:500]}")

    # every GET route of the API (the local socket is the admin API)
    d = cluster.data_dir
    svc_id = json.loads(api_raw(d, "GET", "/v1/services/sec_app")[1])["id"]
    sec_id = json.loads(api_raw(d, "GET", "/v1/secrets/sec_app-secret")[1])["id"]
    routes = ["/openapi.json", "/v1/info", "/v1/stacks", "/v1/services", f"/v1/services/{svc_id}",
              "/v1/services/sec_app", "/v1/tasks", "/v1/tasks?stack=sec", "/v1/tasks?service=sec_app",
              "/v1/nodes", "/v1/nodes/self", "/v1/configs", "/v1/configs/sec_app-conf", "/v1/secrets",
              f"/v1/secrets/{sec_id}", "/v1/secrets/sec_app-secret", "/v1/secrets/ext-secret", "/v1/networks",
              "/v1/networks/sec_default", "/v1/volumes", "/v1/agent/assignments?rev=-1", "/v1/nope"]
    node_id = json.loads(api_raw(d, "GET", "/v1/nodes/self")[1])["id"]
    routes.append(f"/v1/tasks?node={node_id}")
    for r in routes:
        status, body = api_raw(d, "GET", r)
        assert status < 500, (r, status, body[:300])
        assert_no_leak(body, f"GET {r}")
    status, body = api_raw(d, "GET", "/v1/agent/assignments?rev=-1")
    assert status == 403, "the user API socket must not serve agent assignments (decrypted secrets)"
    # error answers of write routes
    for method, path, body in (("POST", "/v1/secrets", {"name": "ext-secret",
                                                       "data": base64.b64encode(SECRET_DATA).decode()}),
                               ("POST", "/v1/secrets", {"name": "x", "data": SECRET_DATA.decode()}),
                               ("POST", "/v1/secrets/nope/update", {"data": base64.b64encode(SECRET_DATA).decode()}),
                               ("POST", "/v1/secrets", {"name": "", "data": base64.b64encode(SECRET_DATA).decode()}),
                               ("DELETE", "/v1/secrets/sec_app-secret", None)):
        status, rbody = api_raw(d, method, path, body)
        assert 400 <= status < 500, (path, status, rbody[:300])
        assert_no_leak(rbody, f"{method} {path} -> {status}")

    # the store and its WAL, raw
    store = Path(d) / "manager" / "store.db"
    for f in (store, Path(str(store) + "-wal"), Path(str(store) + "-shm")):
        if f.exists():
            assert_no_leak(f.read_bytes(), str(f))
            assert_no_leak(f.read_bytes(), str(f), data=b"ext-" + SECRET_DATA)
    assert Path(str(store) + "-wal").exists() or store.exists()
    # the daemon log
    assert_no_leak((Path(d) / "shoal.log").read_bytes(), "daemon log")
    assert_no_leak((Path(d) / "shoal.log").read_bytes(), "daemon log", data=b"ext-" + SECRET_DATA)


def test_rotate_secret_and_config_without_renaming(cluster, sec):
    tmp = sec["tmp"]
    old = cid_of("sec_app")
    new_secret = f"password={MARK}-v2\n".encode()
    f = write(tmp, "new-ext.txt", b"ext-" + new_secret)
    out = cluster.out("secret", "rotate", "ext-secret", f)
    assert "version 2" in out and "sec_app" in out, out
    assert_no_leak(out, "secret rotate output", data=new_secret)

    def rolled(prev):
        ids = running_cids("sec_app")
        return ids[0] if len(ids) == 1 and ids[0] != prev and cluster.running("sec_app") == 1 else None
    cid = cluster.wait_for(lambda: rolled(old), timeout=120, what="service rolled after secret rotate")
    assert dexec(cid, "cat", "/run/secrets/ext-secret").stdout == b"ext-" + new_secret
    assert json.loads(cluster.out("secret", "inspect", "ext-secret"))[0]["data_version"] == 2
    # rotating to the same bytes is a no-op (no roll)
    out = cluster.out("secret", "rotate", "ext-secret", f)
    assert "Updating service" not in out

    f = write(tmp, "conf-new.txt", "conf-v2\n")
    out = cluster.out("config", "rotate", "sec_app-conf", f)
    assert "version 2" in out
    cid2 = cluster.wait_for(lambda: rolled(cid), timeout=120, what="service rolled after config rotate")
    assert dexec(cid2, "cat", "/etc/app/conf.txt").stdout == b"conf-v2\n"
    assert "conf-v2" in cluster.out("config", "inspect", "--pretty", "sec_app-conf")

    # redeploy with a changed file: config -> rolls, new bytes; unchanged file -> nothing happens
    write(tmp, "conf.txt", "conf-v3\n")
    out = cluster.out("stack", "deploy", "-c", sec["stack"], "sec")
    assert "Updating config sec_app-conf" in out and "sec_app" in out, out
    cid3 = cluster.wait_for(lambda: rolled(cid2), timeout=120, what="service rolled after redeploy")
    assert dexec(cid3, "cat", "/app-conf").stdout == b"conf-v3\n"
    out = cluster.out("stack", "deploy", "-c", sec["stack"], "sec")
    assert "Updating" not in out, out
    # the stack's own secret file changed
    write(tmp, "secret.txt", new_secret)
    out = cluster.out("stack", "deploy", "-c", sec["stack"], "sec")
    assert "Updating secret sec_app-secret" in out
    assert_no_leak(out, "redeploy output", data=new_secret)
    cid4 = cluster.wait_for(lambda: rolled(cid3), timeout=120, what="service rolled after secret file change")
    assert dexec(cid4, "cat", "/etc/app/secret.txt").stdout == new_secret


def test_errors(cluster, sec):
    tmp = sec["tmp"]
    ok = write(tmp, "ok.txt", "x")
    empty = write(tmp, "empty.txt", b"")
    cases = [
        (("config", "create", "sec_app-conf", ok), "already exists"),
        (("secret", "create", "ext-secret", ok), "already exists"),
        (("config", "create", "e1", empty), "empty"),
        (("secret", "create", "e2", empty), "empty"),
        (("config", "create", "m1", str(tmp / "missing.txt")), "no such file"),
        (("secret", "create", "m2", str(tmp / "missing.txt")), "no such file"),
        (("config", "rm", "sec_app-conf"), "sec_app"),
        (("secret", "rm", "ext-secret"), "sec_app"),
        (("config", "rm", "nope-nope"), "not found"),
        (("secret", "inspect", "nope-nope"), "not found"),
        (("secret", "rotate", "nope-nope", ok), "not found"),
    ]
    big_c = write(tmp, "bigc.txt", b"c" * (1000 * 1024 + 1))
    big_s = write(tmp, "bigs.txt", b"s" * (500 * 1024 + 1))
    cases += [(("config", "create", "big1", big_c), "1000 KB"), (("secret", "create", "big2", big_s), "500 KB")]
    for args, want in cases:
        p = cluster.run(*args, check=False)
        assert p.returncode == 1, (args, p.returncode, p.stdout, p.stderr)
        assert want in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr
    # exactly at the limits: accepted
    cluster.out("config", "create", "lim-c", write(tmp, "limc.txt", b"c" * (1000 * 1024)))
    cluster.out("secret", "create", "lim-s", write(tmp, "lims.txt", b"s" * (500 * 1024)))
    cluster.out("config", "rm", "lim-c")
    cluster.out("secret", "rm", "lim-s")
    # none of the failed creates left anything behind
    names = cluster.out("config", "ls") + cluster.out("secret", "ls")
    for n in ("e1", "e2", "m1", "m2", "big1", "big2"):
        assert f" {n} " not in names
    # stdin
    cluster.out("config", "create", "from-stdin", "-", input="hello\n")
    assert "hello" in cluster.out("config", "inspect", "--pretty", "from-stdin")
    cluster.out("config", "rm", "from-stdin")
    # columns as Docker's
    assert cluster.out("config", "ls").splitlines()[0].split() == ["ID", "NAME", "CREATED", "UPDATED"]
    assert cluster.out("secret", "ls").splitlines()[0].split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    # a stack whose file: is missing/empty: clear error, nothing deployed
    bad = write(tmp, "bad.yml", "services:\n  a:\n    image: shoal/busybox:latest\n    secrets: [s]\n"
                                "secrets:\n  s:\n    file: ./empty.txt\n")
    p = cluster.run("stack", "deploy", "-c", bad, "bad", check=False)
    assert p.returncode == 1 and "empty" in p.stderr, p.stderr
    assert "bad" not in cluster.out("stack", "ls").split()


def test_stack_rm_removes_only_its_own(cluster, sec):
    cluster.out("stack", "rm", "sec")
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "sec"}), timeout=120,
                     what="sec containers gone")
    assert "sec_app-secret" not in cluster.out("secret", "ls")
    assert "sec_app-conf" not in cluster.out("config", "ls")
    assert "ext-secret" in cluster.out("secret", "ls")
    cluster.out("secret", "rm", "ext-secret")


# --------------------------------------------------------------------------- rotation as versions
ROT_STACK = """
services:
  web:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    configs:
      - source: rot-conf
        target: /etc/rot.txt
    deploy:
      replicas: 2
      update_config:
        parallelism: 1
        delay: 8s
        monitor: 1s
      rollback_config:
        parallelism: 1
        delay: 0s
        monitor: 1s
  vault:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    secrets:
      - source: rot-secret
        target: /run/secrets/rot
    deploy:
      update_config:
        monitor: 1s
      rollback_config:
        monitor: 1s
configs:
  rot-conf:
    external: true
secrets:
  rot-secret:
    external: true
"""


def replica_files(service: str, path: str) -> list[bytes]:
    """The file's bytes in each running replica (a replica stopping meanwhile is skipped)."""
    out = []
    for cid in running_cids(service):
        p = dexec(cid, "cat", path, check=False)
        if p.returncode == 0:
            out.append(p.stdout)
    return sorted(out)


def update_state(cluster, service: str) -> str:
    status = json.loads(cluster.out("service", "inspect", service))[0].get("update_status") or {}
    return status.get("state", "")


def kept_versions(cluster, kind: str, name: str) -> list[int]:
    return json.loads(cluster.out(kind, "inspect", name))[0]["versions"]


def test_rotation_versions_roll_rollback_and_prune(cluster, tmp_path):
    """A rotation is a new version the service rolls onto (update_config honoured: midway, one
    replica has the old bytes and one the new); rollback brings the old bytes back; an old
    version goes once no spec, previous spec or task pins it."""
    v1, v2, v3 = b"rot-v1\n", b"rot-v2\n", b"rot-v3\n"
    cluster.out("config", "create", "rot-conf", write(tmp_path, "c1.txt", v1))
    s1, s2 = f"token={MARK}-rot1\n".encode(), f"token={MARK}-rot2\n".encode()
    cluster.out("secret", "create", "rot-secret", write(tmp_path, "s1.txt", s1))
    cluster.out("stack", "deploy", "-c", write(tmp_path, "rot.yml", ROT_STACK), "rot")
    cluster.wait_for(lambda: replica_files("rot_web", "/etc/rot.txt") == [v1, v1]
                     and replica_files("rot_vault", "/run/secrets/rot") == [s1], timeout=120, what="rot running")

    # rotate: replicas roll one at a time, 8 s apart; midway they hold different versions
    out = cluster.out("config", "rotate", "rot-conf", write(tmp_path, "c2.txt", v2))
    assert "version 2" in out and "rot_web" in out, out
    cluster.wait_for(lambda: replica_files("rot_web", "/etc/rot.txt") == [v1, v2], timeout=60, interval=0.3,
                     what="one replica on v1 and one on v2 midway")
    assert update_state(cluster, "rot_web") == "updating"
    cluster.wait_for(lambda: replica_files("rot_web", "/etc/rot.txt") == [v2, v2]
                     and update_state(cluster, "rot_web") == "completed", timeout=120, what="rolled onto v2")
    info = json.loads(cluster.out("config", "inspect", "rot-conf"))[0]
    assert info["data_version"] == 2 and info["versions"] == [1, 2], info  # previous_spec pins v1
    pretty = cluster.out("config", "inspect", "--pretty", "rot-conf")
    assert "Data version:      2" in pretty and "Versions kept:     1, 2" in pretty, pretty
    assert re.search(r"Source:\s+rot-conf\n\s+Version:\s+2\n", cluster.out("service", "inspect", "--pretty", "rot_web"))

    # rollback: the previous spec pins v1, whose bytes are still kept
    cluster.out("service", "rollback", "rot_web")
    cluster.wait_for(lambda: replica_files("rot_web", "/etc/rot.txt") == [v1, v1]
                     and update_state(cluster, "rot_web") == "rollback_completed", timeout=120,
                     what="rolled back onto v1's bytes")
    assert kept_versions(cluster, "config", "rot-conf") == [1, 2]

    # rotate again: nothing pins v2 anymore (spec v3, previous spec v1, v2's tasks stopped)
    cluster.out("config", "rotate", "rot-conf", write(tmp_path, "c3.txt", v3))
    cluster.wait_for(lambda: kept_versions(cluster, "config", "rot-conf") == [1, 3], timeout=60, what="v2 pruned")
    cluster.wait_for(lambda: replica_files("rot_web", "/etc/rot.txt") == [v3, v3]
                     and update_state(cluster, "rot_web") == "completed", timeout=120, what="rolled onto v3")
    # one more update and the previous spec no longer pins v1 either: only the current version is left
    cluster.out("service", "update", "--force", "rot_web")
    cluster.wait_for(lambda: update_state(cluster, "rot_web") == "completed"
                     and kept_versions(cluster, "config", "rot-conf") == [3], timeout=120, what="v1 pruned")
    assert replica_files("rot_web", "/etc/rot.txt") == [v3, v3]

    # a secret: rotate, then roll back to the old bytes; both versions only ever ciphertext at rest
    out = cluster.out("secret", "rotate", "rot-secret", write(tmp_path, "s2.txt", s2))
    assert "version 2" in out and "rot_vault" in out, out
    cluster.wait_for(lambda: replica_files("rot_vault", "/run/secrets/rot") == [s2]
                     and update_state(cluster, "rot_vault") == "completed", timeout=120, what="vault on v2")
    cluster.out("service", "rollback", "rot_vault")
    cluster.wait_for(lambda: replica_files("rot_vault", "/run/secrets/rot") == [s1]
                     and update_state(cluster, "rot_vault") == "rollback_completed", timeout=120,
                     what="vault rolled back onto v1's bytes")
    sinfo = cluster.out("secret", "inspect", "rot-secret")
    assert json.loads(sinfo)[0]["versions"] == [1, 2] and json.loads(sinfo)[0]["data_version"] == 2
    store = Path(cluster.data_dir) / "manager" / "store.db"
    for f in (store, Path(str(store) + "-wal")):
        if f.exists():
            for data in (s1, s2):
                assert_no_leak(f.read_bytes(), str(f), data=data)
    for data in (s1, s2):
        assert_no_leak(sinfo + cluster.out("secret", "inspect", "--pretty", "rot-secret"), "secret inspect", data=data)

    cluster.out("stack", "rm", "rot")
    cluster.wait_for(lambda: not containers(**{"com.docker.stack.namespace": "rot"}), timeout=120,
                     what="rot containers gone")
    cluster.out("config", "rm", "rot-conf")
    cluster.out("secret", "rm", "rot-secret")


# --------------------------------------------------------------------------- mutual TLS
def _tls_get(port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    from shoal.bootstrap import _ManagerConnection
    c = _ManagerConnection("127.0.0.1", port, ctx, 30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_mutual_tls(cluster, tmp_path):
    """Over TLS, a caller without a certificate may only join; a certificate of another CA is
    refused in the handshake; a node certificate gets the agent routes only; the user API is
    on the unix socket only (there is no admin certificate any more)."""
    from shoal import pki
    from shoal.manager.keyring import Keyring
    d = Path(cluster.data_dir)
    port = json.loads((d / "cluster.json").read_text())["port"]
    certs = d / "certs"
    assert not (certs / "admin.crt").exists() and not (certs / "admin.key").exists()

    # no client certificate: the join routes only
    anon = pki.client_context(str(certs / "ca.crt"))
    for path in ("/v1/services", "/v1/secrets", "/v1/nodes", "/v1/agent/assignments?rev=-1"):
        status, body = _tls_get(port, path, anon)
        assert status == 403, (path, status, body[:200])
    status, ca = _tls_get(port, "/v1/join/ca", anon)
    assert status == 200 and ca == (certs / "ca.crt").read_bytes()

    # a certificate from another CA: refused in the handshake
    other = pki.make_ca("other")
    fake = pki.issue(other, "x" * 25, pki.ROLE_MANAGER, "", 3600)
    pki.write_pair(fake, str(tmp_path / "f.crt"), str(tmp_path / "f.key"))
    ctx = pki.client_context(str(certs / "ca.crt"), str(tmp_path / "f.crt"), str(tmp_path / "f.key"))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        status, _ = _tls_get(port, "/v1/services", ctx)
        raise AssertionError(f"answered {status} to a foreign certificate") if status else OSError()

    # the manager node's own certificate (its key is encrypted under the cluster key on disk):
    # agent routes yes, user API no
    assert b"ENCRYPTED" in (certs / "node.key").read_bytes()
    keyring = Keyring(str(d / "manager" / "cluster.key"))
    keyring.load()
    node = pki.client_context(str(certs / "ca.crt"), str(certs / "node.crt"), str(certs / "node.key"),
                              keyring.tls_password())
    for path in ("/v1/services", "/v1/secrets", "/v1/configs", "/v1/nodes", "/v1/tasks"):
        status, body = _tls_get(port, path, node)
        assert status == 403, (path, status, body[:200])
    status, body = _tls_get(port, "/v1/agent/assignments?rev=-1", node)
    assert status == 200
