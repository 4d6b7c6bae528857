"""Several managers on etcd (issue #15), on three lab hosts: lab1 and lab2 managers, lab3 a
worker, the cluster's state in an etcd member on this machine's side of the lab bridge (an
etcd the user runs: `init --store etcd://…`). A manager joins with the manager token; either
manager answers every command; kill -9 of the leader (Shoal and engine) makes the other lead
within seconds, accept writes, and bring the dead node's tasks back on the living nodes; the
worker carries on through the remaining manager."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from etcd_server import EtcdServer
from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

APP = """
services:
  app:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 3
"""


@pytest.fixture(scope="module")
def cl(lab3, tmp_path_factory):
    lab: Lab = lab3
    etcd = EtcdServer(tmp_path_factory.mktemp("etcd"), host="10.77.0.1").start()
    try:
        lab.shoal("lab1", "init", "--advertise-addr", lab.addr("lab1"), "--store",
                  f"etcd://10.77.0.1:{etcd.client_port}")
        manager_token = lab.shoal("lab1", "join-token", "-q", "manager").strip()
        out = lab.shoal("lab2", "join", "--token", manager_token, f"{lab.addr('lab1')}:4343")
        assert "joined a cluster as a manager" in out, out
        worker_token = lab.shoal("lab2", "join-token", "-q", "worker").strip()  # from the second manager
        lab.shoal("lab3", "join", "--token", worker_token, f"{lab.addr('lab2')}:4343")
        d = tmp_path_factory.mktemp("stacks")
        (d / "app.yml").write_text(APP)
        lab.stacks = d
        lab.etcd = etcd
        yield lab
    finally:
        etcd.stop()


def status(lab: Lab, host: str) -> dict[str, str]:
    """hostname -> MANAGER STATUS, as `node ls` on `host` shows it."""
    return {h: n["ManagerStatus"] for h, n in lab.nodes(host).items()}


def test_a_second_manager_joins_and_either_answers(cl):
    lab = cl
    for host in ("lab1", "lab2"):
        got = until(f"node ls on {host}: three ready nodes, lab1 leading",
                    lambda host=host: (s := status(lab, host)) == {"lab1": "Leader", "lab2": "Reachable", "lab3": ""}
                    and all(n["Status"] == "Ready" for n in lab.nodes(host).values()) and s,
                    timeout=60, what_else=lambda host=host: lab.shoal(host, "node", "ls"))
        assert got
    # a stack deployed through the second manager runs everywhere, seen from both
    lab.shoal("lab2", "stack", "deploy", "-c", str(Path(lab.stacks) / "app.yml"), "--wait", "--timeout", "120", "m")
    for host in ("lab1", "lab2"):
        until(f"m_app 3/3 on {host}", lambda host=host: "3/3" in lab.shoal(host, "service", "ls"), timeout=30)
    assert sum(lab.running_on("m_app", "lab1").values()) == 3


def test_the_leader_killed_the_other_manager_leads_and_the_cluster_carries_on(cl):
    lab = cl
    before = {t["ID"] for t in lab.tasks("m_app", "lab2") if t["Node"] != "lab1" and t["DesiredState"] == "Running"}
    t0 = time.monotonic()
    lab.kill("lab1")  # kill -9: its Shoal (manager and agent) and its engine
    until("lab2 to lead", lambda: status(lab, "lab2").get("lab2") == "Leader", timeout=30,
          what_else=lambda: lab.shoal("lab2", "node", "ls", check=False))
    lead_after = time.monotonic() - t0
    # writes are accepted by the new leader: a scale issued to it is applied
    lab.shoal("lab2", "service", "scale", "m_app=4")
    until("m_app 4 running on lab2 and lab3",
          lambda: sum(lab.running_on("m_app", "lab2").values()) == 4
          and set(lab.running_on("m_app", "lab2")) <= {"lab2", "lab3"},
          timeout=90, what_else=lambda: lab.shoal("lab2", "service", "ps", "m_app", check=False))
    applied_after = time.monotonic() - t0
    assert status(lab, "lab2")["lab1"] == "Unreachable"
    # the tasks that ran on the living nodes were not restarted
    still = {t["ID"] for t in lab.tasks("m_app", "lab2") if t["DesiredState"] == "Running"}
    assert before <= still, (before, still)
    # the worker reports through the remaining manager
    assert lab.nodes("lab2")["lab3"]["Status"] == "Ready"
    print(f"new leader after {lead_after:.1f}s; scale applied and the dead node's tasks back after "
          f"{applied_after:.1f}s")
