"""Placement across nodes (issue #13), on three lab hosts: constraints on every key, preferences,
max replicas per node, reservations summed per node, global services (a node joining later
included), drain and pause, volume-aware placement. The book's chapter 13 on three nodes
(`storage=raid` on one of them) is test_book_ch13_cluster.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

SLEEP = """    image: shoal/busybox:latest
    command: [sleep, "3600"]
    init: true
    stop_grace_period: 1s
"""


@pytest.fixture(scope="module")
def cl(lab3, tmp_path_factory):
    """lab1 (manager, zone=a), lab2 (zone=a); lab3 joins in the first test (zone=b)."""
    lab: Lab = lab3
    lab.cluster(workers=["lab2"])
    lab.shoal("lab1", "node", "update", "--label-add", "zone=a", "lab1")
    lab.shoal("lab1", "node", "update", "--label-add", "zone=a", "lab2")
    lab.dir = tmp_path_factory.mktemp("stacks")
    yield lab


def deploy(lab: Lab, name: str, services: str, wait: bool = True, extra: str = "") -> None:
    path = Path(str(lab.dir), f"{name}.yml")
    path.write_text("services:\n" + services + extra)
    args = ["stack", "deploy", "-c", str(path)]
    if wait:
        args += ["--wait", "--timeout", "90"]
    lab.shoal("lab1", *args, name)


def test_global_service_on_every_node_including_one_that_joins_later(cl):
    lab = cl
    deploy(lab, "g", "  agent:\n" + SLEEP + "    deploy:\n      mode: global\n")
    assert lab.running_on("g_agent") == {"lab1": 1, "lab2": 1}
    token = lab.shoal("lab1", "join-token", "-q", "worker").strip()
    lab.shoal("lab3", "join", "--token", token, f"{lab.addr('lab1')}:4343")
    lab.shoal("lab1", "node", "update", "--label-add", "zone=b", "lab3")
    until("a global task on lab3", lambda: lab.running_on("g_agent") == {"lab1": 1, "lab2": 1, "lab3": 1},
          timeout=30)
    lab.shoal("lab1", "stack", "rm", "g")


def test_constraints_on_every_key(cl):
    lab = cl
    lab2_id = lab.nodes()["lab2"]["ID"]
    services = {
        "by_host": "node.hostname == lab2",
        "by_role": "node.role == manager",
        "by_id": f"node.id == {lab2_id}",
        "by_label": "node.labels.zone == b",
        "by_engine": "engine.labels.lab.host == lab1",
        "not_a": "node.labels.zone != a",
        "os_arch": "node.platform.os == linux",
    }
    text = ""
    for name, c in services.items():
        text += f"  {name}:\n" + SLEEP + f"    deploy:\n      replicas: 2\n      placement:\n        constraints: [\"{c}\"]\n"
    deploy(lab, "c", text)
    assert lab.running_on("c_by_host") == {"lab2": 2}
    assert lab.running_on("c_by_role") == {"lab1": 2}
    assert lab.running_on("c_by_id") == {"lab2": 2}
    assert lab.running_on("c_by_label") == {"lab3": 2}
    assert lab.running_on("c_by_engine") == {"lab1": 2}
    assert lab.running_on("c_not_a") == {"lab3": 2}
    assert sum(lab.running_on("c_os_arch").values()) == 2 and len(lab.running_on("c_os_arch")) == 2
    # nowhere to go: pending, with the reason
    deploy(lab, "c", "  nowhere:\n" + SLEEP + "    deploy:\n      placement:\n        constraints: [node.labels.zone == z]\n",
           wait=False)
    until("the reason", lambda: any("scheduling constraints not satisfied on 3 nodes" in t["Error"]
                                    for t in lab.tasks("c_nowhere")), timeout=20)
    lab.shoal("lab1", "stack", "rm", "c")


def test_preferences_spread_over_a_label(cl):
    lab = cl
    deploy(lab, "pr", "  web:\n" + SLEEP + "    deploy:\n      replicas: 4\n      placement:\n"
                                           "        preferences:\n          - spread: node.labels.zone\n")
    on = lab.running_on("pr_web")
    assert on.get("lab3") == 2 and on.get("lab1", 0) + on.get("lab2", 0) == 2, on  # 2 per zone
    lab.shoal("lab1", "stack", "rm", "pr")


def test_max_replicas_per_node_and_reservations_per_node(cl):
    lab = cl
    deploy(lab, "mx", "  one:\n" + SLEEP + "    deploy:\n      replicas: 4\n      placement:\n"
                                          "        max_replicas_per_node: 1\n", wait=False)
    until("3 running, 1 pending", lambda: lab.running_on("mx_one") == {"lab1": 1, "lab2": 1, "lab3": 1}, timeout=30)
    until("why", lambda: any("max replicas per node limit exceed" in t["Error"] for t in lab.tasks("mx_one")),
          timeout=20)
    # each host has 2 CPUs: 0.9 CPU reserved per task fits twice per node, 6 in all
    deploy(lab, "mx", "  cpu:\n" + SLEEP + "    deploy:\n      replicas: 7\n      resources:\n"
                                          "        reservations:\n          cpus: \"0.9\"\n", wait=False)
    until("6 placed, 2 per node", lambda: lab.running_on("mx_cpu") == {"lab1": 2, "lab2": 2, "lab3": 2}, timeout=60)
    until("the 7th pending", lambda: any("insufficient resources on 3 nodes" in t["Error"]
                                         for t in lab.tasks("mx_cpu")), timeout=20)
    lab.shoal("lab1", "stack", "rm", "mx")


def test_drain_moves_tasks_and_pause_takes_no_new_ones(cl):
    lab = cl
    deploy(lab, "dr", "  web:\n" + SLEEP + "    deploy:\n      replicas: 6\n")
    assert lab.running_on("dr_web") == {"lab1": 2, "lab2": 2, "lab3": 2}
    lab.shoal("lab1", "node", "update", "--availability", "drain", "lab3")
    until("moved off lab3", lambda: lab.running_on("dr_web") == {"lab1": 3, "lab2": 3}, timeout=30)
    assert not lab.containers("lab3", "dr_web")
    lab.shoal("lab1", "node", "update", "--availability", "pause", "lab2")
    lab.shoal("lab1", "service", "scale", "dr_web=8")
    until("new ones on lab1 only", lambda: lab.running_on("dr_web") == {"lab1": 5, "lab2": 3}, timeout=30)
    for h in ("lab2", "lab3"):
        lab.shoal("lab1", "node", "update", "--availability", "active", h)
    assert lab.running_on("dr_web") == {"lab1": 5, "lab2": 3}  # nothing moves back by itself
    lab.shoal("lab1", "stack", "rm", "dr")


def test_a_task_stays_with_its_volume_across_redeploys_and_updates(cl):
    lab = cl
    svc = ("  db:\n" + SLEEP.replace('command: [sleep, "3600"]',
                                     'command: ["sh", "-c", "date >> /data/boots; exec sleep 3600"]')
           + "    volumes:\n      - data:/data\n    environment:\n      V: \"{v}\"\n")
    deploy(lab, "vol", svc.format(v="1"), extra="volumes:\n  data:\n")
    (node,) = lab.running_on("vol_db")
    holders = [h for h in lab.hosts if "vol_data" in lab.docker(h, "volume", "ls", "-q")]
    assert holders == [node]
    for v in ("2", "3"):  # updates (a changed environment): the new task goes where the data is
        deploy(lab, "vol", svc.format(v=v), extra="volumes:\n  data:\n")
        until(f"v{v} running", lambda: lab.running_on("vol_db") == {node: 1} and any(
            t["CurrentState"].startswith("Running") and t["DesiredState"] == "Running" for t in lab.tasks("vol_db")),
            timeout=60)
    (cid,) = lab.containers(node, "vol_db")
    assert len(lab.docker(node, "exec", cid, "cat", "/data/boots").splitlines()) == 3  # one volume, three boots
    assert [h for h in lab.hosts if "vol_data" in lab.docker(h, "volume", "ls", "-q")] == [node]
    lab.shoal("lab1", "stack", "rm", "vol")
