"""Issue 5 on the real engine: nodes, labels, constraints, max replicas, reservations, drain/pause.

One-node cluster (module scope). Tasks that cannot be placed stay pending with Swarm's
reason in `stack ps`; node changes (labels, availability) take effect without a redeploy.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import ShoalCli, containers

pytestmark = pytest.mark.integration

CONSTRAINT_REASON = "no suitable node (scheduling constraints not satisfied on 1 node)"
UNAVAILABLE_REASON = "no suitable node (1 node not available for new tasks)"


def service(name: str, deploy: str, replicas: int = 1) -> str:
    return f"""
  {name}:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    deploy:
      replicas: {replicas}
{deploy}"""


def placement(*constraints: str) -> str:
    lines = "\n".join(f"          - \"{c}\"" for c in constraints)
    return f"      placement:\n        constraints:\n{lines}"


def deploy(cli: ShoalCli, tmp: Path, stack: str, services: str) -> str:
    path = tmp / f"{stack}.yml"
    path.write_text("services:" + services + "\n")
    return cli.out("stack", "deploy", "-c", str(path), stack)


def current(cli: ShoalCli, stack: str) -> dict[str, list[dict]]:
    """Newest task per slot, by service short name (`<stack>_<name>`)."""
    out: dict[str, list[dict]] = {}
    for t in cli.json_lines("stack", "ps", "--no-trunc", stack):
        if t["Name"].startswith(" "):
            continue
        svc = t["Name"].rsplit(".", 1)[0][len(stack) + 1:]
        out.setdefault(svc, []).append(t)
    return out


def is_running(t: dict) -> bool:
    return t["DesiredState"] == "Running" and t["CurrentState"].startswith("Running")


def is_pending(t: dict, reason: str) -> bool:
    return t["CurrentState"].startswith("Pending") and json.loads(t["Error"] or '""') == reason


def wait_states(cli: ShoalCli, stack: str, want: dict[str, tuple], timeout: float = 120):
    """want: service -> (running count, pending count, pending reason)."""
    def ok():
        tasks = current(cli, stack)
        for svc, (running, pending, reason) in want.items():
            ts = tasks.get(svc, [])
            if sum(map(is_running, ts)) != running:
                return False
            if pending and sum(1 for t in ts if is_pending(t, reason)) != pending:
                return False
        return tasks
    return cli.wait_for(ok, timeout=timeout, interval=1, what=f"{stack}: {want}")


def rm_stack(cli: ShoalCli, stack: str) -> None:
    cli.run("stack", "rm", stack, check=False)
    cli.wait_for(lambda: not containers(**{"com.docker.stack.namespace": stack}), timeout=120,
                 what=f"{stack}'s containers to go")


@pytest.fixture(scope="module")
def me(cluster: ShoalCli) -> dict:
    ids = cluster.out("node", "ls", "-q").split()
    assert len(ids) == 1
    return json.loads(cluster.out("node", "inspect", "self"))[0]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def test_node_ls_and_inspect(cluster: ShoalCli, me: dict):
    lines = cluster.out("node", "ls").splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS", "ENGINE", "VERSION"]
    assert lines[1].split()[:2] == [me["id"], "*"] and "Ready" in lines[1] and "Active" in lines[1]
    pretty = cluster.out("node", "inspect", "--pretty", "self")
    for want in ("ID:", me["id"], "Hostname:", me["description"]["hostname"], "Status:", "State:",
                 "Ready", "Availability:", "Active", "Platform:", "Operating System:", "linux",
                 "Architecture:", "Resources:", "CPUs:", "Memory:", "Engine Version:"):
        assert want in pretty, (want, pretty)
    d = me["description"]
    assert d["nano_cpus"] >= 10**9 and d["memory_bytes"] > 0 and d["engine_version"] and me["role"] == "manager"
    by_host = json.loads(cluster.out("node", "inspect", d["hostname"]))[0]
    assert by_host["id"] == me["id"]
    cluster.out("node", "update", "--label-add", "probe=1", "--label-add", "flag", me["id"])
    pretty = cluster.out("node", "inspect", "--pretty", "self")
    assert " - probe=1" in pretty and " - flag=" in pretty
    cluster.out("node", "update", "--label-rm", "probe", "--label-rm", "flag", "self")
    assert json.loads(cluster.out("node", "inspect", "self"))[0]["labels"] == {}
    bad = cluster.run("node", "update", "--label-rm", "nope", "self", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_each_constraint_field_and_operator(cluster: ShoalCli, me: dict, tmp: Path):
    d = me["description"]
    stack = "pc"
    services = "".join([
        service("host-eq", placement(f"node.hostname == {d['hostname']}")),
        service("host-ne", placement(f"node.hostname != {d['hostname']}")),
        service("id-eq", placement(f"node.id == {me['id']}")),
        service("role-ne-worker", placement("node.role != worker")),
        service("role-eq-worker", placement("node.role == worker")),
        service("os-eq", placement("node.platform.os == linux")),
        service("arch-ne", placement(f"node.platform.arch != {d['arch']}")),
        service("label-eq", placement("node.labels.zone == east")),
        service("label-ne", placement("node.labels.zone != east")),
        service("engine-label", placement("engine.labels.x == y")),
    ])
    deploy(cluster, tmp, stack, services)
    try:
        run, wait = (1, 0, ""), (0, 1, CONSTRAINT_REASON)
        wait_states(cluster, stack, {
            "host-eq": run, "host-ne": wait, "id-eq": run, "role-ne-worker": run, "role-eq-worker": wait,
            "os-eq": run, "arch-ne": wait, "label-eq": wait, "label-ne": run, "engine-label": wait})
        # Pending stays pending: nothing is started for them.
        time.sleep(2)
        assert not containers(**{"shoal.service.name": f"{stack}_label-eq"})

        # A label makes label-eq placeable and takes label-ne's node away: no redeploy.
        cluster.out("node", "update", "--label-add", "zone=east", me["id"])
        tasks = wait_states(cluster, stack, {"label-eq": run, "label-ne": wait})
        assert len(containers(**{"shoal.service.name": f"{stack}_label-eq"})) == 1
        cluster.wait_for(lambda: not containers(**{"shoal.service.name": f"{stack}_label-ne"}), timeout=60,
                         what="label-ne's container stopped")
        hist = [t for t in cluster.json_lines("stack", "ps", stack) if f"{stack}_label-ne." in t["Name"]]
        assert any(t["DesiredState"] == "Shutdown" and t["CurrentState"].startswith("Shutdown") for t in hist), hist

        # Removing it again moves them back.
        cluster.out("node", "update", "--label-rm", "zone", me["id"])
        wait_states(cluster, stack, {"label-eq": wait, "label-ne": run})
        assert tasks  # (kept for the failure message above)
    finally:
        cluster.run("node", "update", "--label-rm", "zone", me["id"], check=False)
        rm_stack(cluster, stack)


def test_malformed_constraint_is_a_deploy_error(cluster: ShoalCli, tmp: Path):
    path = tmp / "bad.yml"
    path.write_text("services:" + service("db", placement("node.labels.storage = raid")) + "\n")
    p = cluster.run("stack", "deploy", "-c", str(path), "badc", check=False)
    assert p.returncode != 0
    assert "badc_db" in p.stderr and "node.labels.storage = raid" in p.stderr, p.stderr
    assert "badc" not in cluster.out("stack", "ls")


def test_max_replicas_per_node_and_preferences(cluster: ShoalCli, tmp: Path):
    stack = "pm"
    deploy(cluster, tmp, stack, service("one", "      placement:\n        max_replicas_per_node: 1", replicas=3)
           + service("spread", "      placement:\n        preferences:\n          - spread: node.labels.zone",
                     replicas=2))
    try:
        wait_states(cluster, stack, {"one": (1, 2, "no suitable node (max replicas per node limit exceed)"),
                                     "spread": (2, 0, "")})
        assert len(containers(**{"shoal.service.name": f"{stack}_one"})) == 1
    finally:
        rm_stack(cluster, stack)


def test_reservations_over_commit_is_refused(cluster: ShoalCli, tmp: Path):
    stack = "pr"
    deploy(cluster, tmp, stack,
           service("huge", "      resources:\n        reservations:\n          memory: 1000G")
           + service("small", "      resources:\n        reservations:\n          memory: 16M\n          cpus: '0.1'"))
    try:
        wait_states(cluster, stack, {"huge": (0, 1, "no suitable node (insufficient resources on 1 node)"),
                                     "small": (1, 0, "")})
        assert not containers(**{"shoal.service.name": f"{stack}_huge"})
    finally:
        rm_stack(cluster, stack)


def test_drain_then_active(cluster: ShoalCli, me: dict, tmp: Path):
    stack = "pd"
    deploy(cluster, tmp, stack, service("app", "", replicas=2))
    try:
        wait_states(cluster, stack, {"app": (2, 0, "")})
        cluster.out("node", "update", "--availability", "drain", me["id"])
        assert json.loads(cluster.out("node", "inspect", "self"))[0]["availability"] == "drain"
        wait_states(cluster, stack, {"app": (0, 2, UNAVAILABLE_REASON)})
        cluster.wait_for(lambda: not containers(**{"shoal.service.name": f"{stack}_app"}), timeout=60,
                         what="drained containers to stop")
        cluster.out("node", "update", "--availability", "active", me["id"])
        wait_states(cluster, stack, {"app": (2, 0, "")})
    finally:
        cluster.run("node", "update", "--availability", "active", me["id"], check=False)
        rm_stack(cluster, stack)


def test_pause_keeps_tasks_places_nothing_new(cluster: ShoalCli, me: dict, tmp: Path):
    stack = "pp"
    deploy(cluster, tmp, stack, service("app", "", replicas=1))
    try:
        wait_states(cluster, stack, {"app": (1, 0, "")})
        before = containers(**{"shoal.service.name": f"{stack}_app"})
        cluster.out("node", "update", "--availability", "pause", me["id"])
        cluster.out("service", "scale", "--detach", f"{stack}_app=2")
        wait_states(cluster, stack, {"app": (1, 1, UNAVAILABLE_REASON)})
        time.sleep(2)
        assert containers(**{"shoal.service.name": f"{stack}_app"}) == before
        cluster.out("node", "update", "--availability", "active", me["id"])
        wait_states(cluster, stack, {"app": (2, 0, "")})
        assert set(before) <= set(containers(**{"shoal.service.name": f"{stack}_app"}))
    finally:
        cluster.run("node", "update", "--availability", "active", me["id"], check=False)
        rm_stack(cluster, stack)
