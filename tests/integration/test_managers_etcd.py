"""Several managers on etcd (issue #15), on three lab hosts: lab1 and lab2 managers, lab3 a
worker, the cluster's state in an etcd member on this machine's side of the lab bridge (an
etcd the user runs: `init --store etcd://…`). In order: a manager joins with the manager
token and either manager answers; the leader (lab1) cut off from the network stops leading,
cannot write, and catches up when healed; an unlock key rotated through lab2 unlocks lab1
and the old one does not; the new leader (lab2) is killed (kill -9 of its
Shoal and engine) while deploys go through lab1: every acknowledged one exists once, and lab1
leads; the cluster carries on (a scale, the dead node's tasks elsewhere, nothing restarted,
the worker through the remaining manager)."""
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


def test_a_partitioned_leader_stops_leading_and_catches_up_when_healed(cl):
    lab = cl
    lab.cut("lab1")  # the leader's link down: it reaches neither etcd nor the other nodes
    try:
        until("lab2 to lead", lambda: status(lab, "lab2").get("lab2") == "Leader", timeout=40,
              what_else=lambda: lab.shoal("lab2", "node", "ls", check=False))
        lab.shoal("lab2", "service", "scale", "m_app=4")
        # the cut-off manager cannot write: a clear error, nothing changed
        p = lab.exec("lab1", "shoal", "service", "scale", "m_app=9", check=False, timeout=120)
        assert p.returncode != 0 and ("does not answer" in p.stderr or "try again" in p.stderr), p.stderr
        until("m_app: 4 running on lab2 and lab3",
              lambda: sum(n for h, n in lab.running_on("m_app", "lab2").items() if h != "lab1") == 4,
              timeout=90, what_else=lambda: lab.shoal("lab2", "service", "ps", "m_app", check=False))
    finally:
        lab.heal("lab1")
    # healed: lab1 follows again (the scale made meanwhile), and lab2 still leads
    until("lab1 to catch up", lambda: "/4" in lab.shoal("lab1", "service", "ls", check=False)
          and status(lab, "lab1").get("lab2") == "Leader" and status(lab, "lab1").get("lab1") != "Leader",
          timeout=60, what_else=lambda: lab.shoal("lab1", "service", "ls", check=False)
          + lab.shoal("lab1", "node", "ls", check=False))
    assert "m_app=9" not in lab.shoal("lab2", "service", "ls") and "/9" not in lab.shoal("lab2", "service", "ls")
    until("lab1 ready again", lambda: lab.nodes("lab2")["lab1"]["Status"] == "Ready", timeout=60)


def test_an_unlock_key_rotated_through_one_manager_unlocks_the_other_and_the_old_one_does_not(cl):
    """Autolock turned on through lab1 and the key rotated through lab2: lab1, restarted, is
    locked; the first key is refused, the rotated one unlocks it. Turned off through lab2,
    lab1 starts unlocked."""
    import re
    lab = cl
    first = re.search(r"SWMKEY-1-\S+", lab.shoal("lab1", "update", "--autolock", "true")).group(0)
    time.sleep(4)  # lab2's file follows (lock_sync: every 3 s)
    second = lab.shoal("lab2", "unlock-key", "--rotate", "-q").strip()
    assert second.startswith("SWMKEY-1-") and second != first
    time.sleep(4)
    lab.shoal("lab1", "stop")
    lab.shoal("lab1", "start", timeout=120)
    assert "Locked: True" in lab.shoal("lab1", "info")
    p = lab.exec("lab1", "env", f"SHOAL_UNLOCK_KEY={first}", "shoal", "unlock", check=False)
    assert p.returncode != 0 and "invalid key" in p.stderr, p.stderr
    lab.exec("lab1", "env", f"SHOAL_UNLOCK_KEY={second}", "shoal", "unlock")
    until("lab1 unlocked and following", lambda: "Locked: False" in lab.shoal("lab1", "info")
          and status(lab, "lab1").get("lab2") == "Leader", timeout=60)
    lab.shoal("lab2", "update", "--autolock", "false")
    time.sleep(4)
    lab.shoal("lab1", "stop")
    lab.shoal("lab1", "start", timeout=120)
    until("lab1 up, not locked", lambda: "Locked: False" in lab.shoal("lab1", "info"), timeout=60)
    until("lab2 leading, every node ready", lambda: status(lab, "lab2").get("lab2") == "Leader"
          and all(n["Status"] == "Ready" for n in lab.nodes("lab2").values()), timeout=90,
          what_else=lambda: lab.shoal("lab2", "node", "ls", check=False))


def test_writes_acknowledged_while_the_leader_is_killed_all_exist_once(cl, tmp_path):
    """Many `stack deploy` of new stacks through the manager that does not lead, while the
    leader is killed: every one acknowledged exists afterwards, exactly once."""
    import concurrent.futures
    lab = cl
    assert status(lab, "lab2").get("lab2") == "Leader"
    files = []
    for i in range(8):
        f = tmp_path / f"c{i}.yml"
        f.write_text(APP.replace("replicas: 3", "replicas: 1"))
        files.append((f"c{i}", str(f)))

    def deploy(name_file):
        name, f = name_file
        return name, lab.exec("lab1", "shoal", "stack", "deploy", "-c", f, name, check=False, timeout=120).returncode

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(deploy, nf) for nf in files]
        time.sleep(0.3)
        lab.kill("lab2")  # the leader, kill -9
        acked = [name for name, rc in (f.result() for f in futures) if rc == 0]
    until("lab1 to lead", lambda: status(lab, "lab1").get("lab1") == "Leader", timeout=40,
          what_else=lambda: lab.shoal("lab1", "node", "ls", check=False))
    names = [s["Name"] for s in lab.json_lines("lab1", "service", "ls")]
    assert len(names) == len(set(names)), names
    for name in acked:
        assert names.count(f"{name}_app") == 1, (name, names)
    assert acked, "no deploy was acknowledged"
    until("the acknowledged stacks running on lab1 and lab3",
          lambda: all(sum(lab.running_on(f"{n}_app", "lab1").values()) == 1 for n in acked), timeout=120,
          what_else=lambda: lab.shoal("lab1", "service", "ls", check=False))


def test_after_the_leader_died_the_cluster_carries_on(cl):
    """lab2 (the leader) was killed above: lab1 leads; a scale is applied, the dead node's
    tasks run on the living nodes, the tasks already there are not restarted, and the worker
    reports through the remaining manager."""
    lab = cl
    before = {t["ID"] for t in lab.tasks("m_app", "lab1")
              if t["Node"] in ("lab1", "lab3") and t["DesiredState"] == "Running" and t["CurrentState"].startswith("Running")}
    lab.shoal("lab1", "service", "scale", "m_app=5")
    until("m_app: 5 running on lab1 and lab3",
          lambda: sum(n for h, n in lab.running_on("m_app", "lab1").items() if h != "lab2") == 5,
          timeout=120, what_else=lambda: lab.shoal("lab1", "service", "ps", "m_app", check=False))
    assert status(lab, "lab1")["lab2"] == "Unreachable"
    still = {t["ID"] for t in lab.tasks("m_app", "lab1") if t["DesiredState"] == "Running"}
    assert before <= still, (before, still)
    assert lab.nodes("lab1")["lab3"]["Status"] == "Ready"
