"""Three managers on etcd members Shoal runs itself (issue #15: `shoal init --store etcd`), on
three lab hosts, each a manager with its own etcd member. In order: the managers join (each
member added as a learner and promoted), a stack with a secret runs and no member's data
holds the secret's bytes, and etcd is closed to anyone without the managers' etcd CA; the
leader cut off with its member stops leading and cannot write, and catches up when healed;
the leader is killed (kill -9: Shoal, its etcd member, its engine) during a rolling update
and the update finishes under the new leader; the dead manager comes back and follows; two
managers of three lost is a lost quorum (writes refused, containers left alone) until
`shoal init --force-new-cluster` on the survivor brings the cluster back with its state; a
worker promoted and demoted; a manager of several leaves as a worker; a worker promoted in an
autolocked cluster waits for `shoal unlock` on it."""
from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

SECRET = "own-etcd-secret-7d1c5e"
APP = """
services:
  app:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    secrets: [token]
    deploy:
      replicas: 4
      update_config:
        parallelism: 1
        delay: 2s
secrets:
  token:
    file: ./token.txt
"""


@pytest.fixture(scope="module")
def cl(lab3, tmp_path_factory):
    lab: Lab = lab3
    lab.shoal("lab1", "init", "--advertise-addr", lab.addr("lab1"), "--store", "etcd")
    token = lab.shoal("lab1", "join-token", "-q", "manager").strip()
    lab.shoal("lab2", "join", "--token", token, f"{lab.addr('lab1')}:4343", timeout=240)
    lab.shoal("lab3", "join", "--token", token, f"{lab.addr('lab2')}:4343", timeout=240)  # through the second
    d = tmp_path_factory.mktemp("stacks")
    (d / "app.yml").write_text(APP)
    (d / "token.txt").write_text(SECRET)
    lab.stacks = d
    yield lab


def status(lab: Lab, host: str) -> dict[str, str]:
    return {h: n["ManagerStatus"] for h, n in lab.nodes(host).items()}


def leader(lab: Lab, host: str) -> str:
    return next((h for h, s in status(lab, host).items() if s == "Leader"), "")


def info(lab: Lab, host: str) -> str:
    return lab.shoal(host, "info", check=False)


def test_three_managers_each_run_an_etcd_member(cl):
    lab = cl
    for host in lab.hosts:
        until(f"node ls on {host}: lab1 leading, lab2 and lab3 reachable, all ready",
              lambda host=host: status(lab, host) == {"lab1": "Leader", "lab2": "Reachable", "lab3": "Reachable"}
              and all(n["Status"] == "Ready" for n in lab.nodes(host).values()),
              timeout=60, what_else=lambda host=host: lab.shoal(host, "node", "ls", check=False))
        assert "Store: etcd\n" in info(lab, host)
    until("three voting members", lambda: "3 voting; a quorum is 2" in info(lab, "lab3"), timeout=30,
          what_else=lambda: info(lab, "lab3"))
    # each manager's member is its own process, a child of its daemon
    for host in lab.hosts:
        children = lab.exec(host, "sh", "-c", 'pgrep -x -P "$(cat "$SHOAL_DATA_DIR/shoal.pid")" etcd || true')
        assert len(children.stdout.split()) == 1, (host, children.stdout)


def test_a_stack_with_a_secret_runs_and_no_member_holds_its_bytes(cl):
    lab = cl
    lab.shoal("lab3", "stack", "deploy", "-c", str(Path(lab.stacks) / "app.yml"), "--wait", "--timeout", "120", "o")
    for host in lab.hosts:
        until(f"o_app 4/4 on {host}", lambda host=host: "4/4" in lab.shoal(host, "service", "ls"), timeout=30)
    some = next(h for h in lab.hosts if lab.containers(h, "o_app"))
    assert lab.docker(some, "exec", lab.containers(some, "o_app")[0], "cat", "/run/secrets/token") == SECRET
    for host in lab.hosts:  # the members' data (WAL, snapshots, bolt db): ciphertext only
        found = lab.exec(host, "sh", "-c", f'grep -rl "{SECRET}" "$SHOAL_DATA_DIR/etcd" || true').stdout.strip()
        assert found == "", (host, found)
        assert lab.exec(host, "sh", "-c", 'ls "$SHOAL_DATA_DIR/etcd/data/member/wal"').stdout.strip()


def test_etcd_is_closed_to_anyone_without_the_managers_etcd_ca(cl):
    lab = cl
    addr = lab.addr("lab1")
    # clients: only on the manager's own loopback
    with pytest.raises(OSError):
        socket.create_connection((addr, 2379), timeout=3).close()
    # peers: TLS that wants a certificate of the managers' etcd CA (a node certificate is of the
    # cluster CA; no certificate at all is refused the same way)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with socket.create_connection((addr, 2380), timeout=3) as s, ctx.wrap_socket(s) as t:
            t.sendall(b"GET /members HTTP/1.1\r\nHost: x\r\n\r\n")
            if not t.recv(100):
                raise ConnectionResetError("closed without an answer")


def test_a_partitioned_leader_and_its_member_stop_leading_and_catch_up_when_healed(cl):
    """The leader cut off with its etcd member: that member is the minority, so the manager
    cannot renew its lease nor write; the other two (a majority of members) lead and write;
    healed, it catches up and follows (pre-vote: its member does not depose etcd's leader)."""
    lab = cl
    assert leader(lab, "lab2") == "lab1"
    lab.cut("lab1")
    try:
        new = until("lab2 or lab3 to lead", lambda: leader(lab, "lab2") in ("lab2", "lab3") and leader(lab, "lab2"),
                    timeout=40, what_else=lambda: lab.shoal("lab2", "node", "ls", check=False))
        lab.shoal(new, "service", "scale", "o_app=5")
        p = lab.exec("lab1", "shoal", "service", "scale", "o_app=9", check=False, timeout=120)
        assert p.returncode != 0 and "does not answer" in p.stderr, p.stderr
    finally:
        lab.heal("lab1")
    until("lab1 to catch up and follow", lambda: "5/5" in lab.shoal("lab1", "service", "ls", check=False)
          and leader(lab, "lab1") == leader(lab, "lab2") != "lab1", timeout=90,
          what_else=lambda: lab.shoal("lab1", "node", "ls", check=False))
    assert "/9" not in lab.shoal("lab2", "service", "ls")
    lab.shoal("lab2", "service", "scale", "o_app=4")
    until("lab1 ready again", lambda: lab.nodes("lab2")["lab1"]["Status"] == "Ready", timeout=60)


def test_the_leader_killed_during_a_rolling_update_another_leads_and_the_update_finishes(cl):
    lab = cl
    dead = leader(lab, "lab3")
    living = [h for h in lab.hosts if h != dead]
    lab.dead = dead
    lab.shoal(living[0], "service", "update", "--env-add", "V=2", "o_app")  # one task at a time, 2 s apart
    time.sleep(3)
    t0 = time.monotonic()
    lab.kill(dead)  # kill -9 of its Shoal, its etcd member, its engine
    new = until("another manager to lead", lambda: leader(lab, living[0]) in living and leader(lab, living[0]),
                timeout=40, what_else=lambda: lab.shoal(living[0], "node", "ls", check=False))
    print(f"{dead} killed; new leader {new} after {time.monotonic() - t0:.1f}s")
    until("the update to finish", lambda: (json.loads(lab.shoal(living[0], "service", "inspect", "o_app"))[0]
                                           .get("update_status") or {}).get("state") == "completed",
          timeout=180, what_else=lambda: lab.shoal(living[0], "service", "ps", "o_app", check=False))
    until("4 o_app tasks with V=2 on the living managers", lambda: sum(
        1 for h in living for c in lab.containers(h, "o_app")
        if "V=2" in lab.docker(h, "inspect", "-f", "{{.Config.Env}}", c)) == 4, timeout=120,
        what_else=lambda: lab.shoal(living[0], "service", "ps", "o_app", check=False))
    assert status(lab, living[1])[dead] == "Unreachable"


def test_the_dead_manager_comes_back_and_follows(cl):
    lab = cl
    dead, other = lab.dead, next(h for h in lab.hosts if h != lab.dead)
    lab.start(dead)  # its engine; then its Shoal, whose member rejoins with its data
    lab.shoal(dead, "start", timeout=240)
    until(f"{dead} follows", lambda: leader(lab, dead) == leader(lab, other) != ""
          and lab.nodes(other)[dead]["Status"] == "Ready"
          and json.loads(lab.shoal(dead, "service", "inspect", "o_app"))[0]["spec"]["container"]["env"].get("V") == "2",
          timeout=90, what_else=lambda: lab.shoal(dead, "node", "ls", check=False))
    until("three voting members again", lambda: "3 voting;" in info(lab, dead), timeout=30)


def test_a_lost_quorum_refuses_writes_until_force_new_cluster(cl):
    lab = cl
    survivor = "lab3"
    running = lab.containers(survivor, "o_app")
    for host in ("lab1", "lab2"):
        lab.kill(host)
    p = lab.exec(survivor, "shoal", "service", "scale", "o_app=2", check=False, timeout=120)
    assert p.returncode != 0 and "does not answer" in p.stderr, p.stderr
    assert lab.containers(survivor, "o_app") == running  # the containers are left alone
    # etcd's disaster recovery, done by Shoal: this member alone forms a new etcd cluster with its data
    p = lab.exec(survivor, "shoal", "init", "--force-new-cluster", timeout=240, check=False)
    assert p.returncode == 0 and "new cluster" in p.stdout, p.stdout + p.stderr[-2000:] + lab.exec(
        survivor, "sh", "-c", 'grep -v "^{" "$SHOAL_DATA_DIR/shoal.log" | tail -40', check=False).stdout
    until(f"{survivor} to lead", lambda: leader(lab, survivor) == survivor, timeout=60,
          what_else=lambda: lab.shoal(survivor, "node", "ls", check=False))
    assert "1 voting; a quorum is 1" in info(lab, survivor)
    lab.shoal(survivor, "service", "scale", "o_app=5")
    until(f"o_app: 5 running on {survivor}", lambda: len(lab.containers(survivor, "o_app")) == 5, timeout=120,
          what_else=lambda: lab.shoal(survivor, "service", "ps", "o_app", check=False))
    assert set(running) <= set(lab.containers(survivor, "o_app"))  # none restarted
    # the lost managers are removed for good (a manager that comes back must join again)
    until("lab1 and lab2 down", lambda: all(lab.nodes(survivor)[h]["Status"] == "Down" for h in ("lab1", "lab2")),
          timeout=60, what_else=lambda: lab.shoal(survivor, "node", "ls", check=False))
    for host in ("lab1", "lab2"):
        lab.shoal(survivor, "node", "rm", "--force", host)
    assert set(lab.nodes(survivor)) == {survivor}


def test_a_worker_promoted_runs_an_etcd_member_and_demoted_gives_it_up(cl):
    lab = cl
    lab.start("lab1")
    lab.shoal("lab1", "leave", "--force")  # it was removed from the cluster: its old state goes
    token = lab.shoal("lab3", "join-token", "-q", "worker").strip()
    lab.shoal("lab1", "join", "--token", token, f"{lab.addr('lab3')}:4343")
    out = lab.shoal("lab3", "node", "promote", "lab1")
    assert "Node lab1 promoted to a manager in the cluster." in out, out
    until("lab1 a manager, with a voting etcd member", lambda: status(lab, "lab3").get("lab1") == "Reachable"
          and "2 voting; a quorum is 2" in info(lab, "lab3") and "Role: manager" in info(lab, "lab1"),
          timeout=150, what_else=lambda: info(lab, "lab1") + lab.shoal("lab3", "node", "ls", check=False))
    assert "o_app" in lab.shoal("lab1", "service", "ls")  # it serves the whole API
    assert "Node lab1 is already a manager." in lab.shoal("lab3", "node", "promote", "lab1")
    out = lab.shoal("lab3", "node", "demote", "lab1")  # by another manager (`leave` below: by itself)
    assert "Manager lab1 demoted in the cluster." in out, out
    until("lab1 a worker again, its member gone", lambda: status(lab, "lab3").get("lab1") == ""
          and "1 voting; a quorum is 1" in info(lab, "lab3") and "Role: worker" in info(lab, "lab1"),
          timeout=120, what_else=lambda: info(lab, "lab1") + lab.shoal("lab3", "node", "ls", check=False)
          + lab.exec("lab1", "sh", "-c", 'grep -v "^{" "$SHOAL_DATA_DIR/shoal.log" | tail -40', check=False).stdout)
    left = lab.exec("lab1", "sh", "-c", 'ls -d "$SHOAL_DATA_DIR"/etcd "$SHOAL_DATA_DIR"/manager 2>/dev/null || true')
    assert left.stdout.strip() == ""  # no manager's key or etcd data stays on a worker
    until("lab1 ready as a worker", lambda: lab.nodes("lab3")["lab1"]["Status"] == "Ready", timeout=60)
    p = lab.exec("lab3", "shoal", "node", "demote", "lab3", check=False)
    assert p.returncode != 0 and "last manager" in p.stderr, p.stderr


def test_a_manager_of_several_leaves_as_a_worker(cl):
    """`leave --force` on a manager that is not the last: demoted first (its member leaves
    etcd), then it leaves as a worker; the cluster and its state stay."""
    lab = cl
    lab.shoal("lab3", "node", "promote", "lab1")
    until("lab1 a manager again", lambda: "2 voting;" in info(lab, "lab3") and "Role: manager" in info(lab, "lab1"),
          timeout=150, what_else=lambda: info(lab, "lab1"))
    lab.shoal("lab1", "leave", "--force", timeout=240)
    assert "This node is not part of a cluster" in lab.exec("lab1", "shoal", "leave", check=False).stderr
    until("lab1 gone from etcd and down", lambda: "1 voting; a quorum is 1" in info(lab, "lab3")
          and lab.nodes("lab3")["lab1"]["Status"] == "Down", timeout=60,
          what_else=lambda: info(lab, "lab3") + lab.shoal("lab3", "node", "ls", check=False))
    assert leader(lab, "lab3") == "lab3" and "o_app" in lab.shoal("lab3", "service", "ls")


def test_a_worker_promoted_in_an_autolocked_cluster_waits_for_shoal_unlock_on_it(cl):
    """The manager's keys a promoted worker is sent are sealed by the unlock key: it stays a
    worker, saying so, until `shoal unlock` on it (a wrong key refused) — then a manager,
    unlocked, with a voting member."""
    import re
    lab = cl
    lab.shoal("lab3", "node", "rm", "--force", "lab1")  # the node that left (one lab1 in `node ls`)
    token = lab.shoal("lab3", "join-token", "-q", "worker").strip()
    lab.shoal("lab1", "join", "--token", token, f"{lab.addr('lab3')}:4343")
    key = re.search(r"SWMKEY-1-\S+", lab.shoal("lab3", "update", "--autolock", "true")).group(0)
    try:
        assert "promoted to a manager" in lab.shoal("lab3", "node", "promote", "lab1")
        log = lambda: lab.exec("lab1", "sh", "-c", 'grep -v "^{" "$SHOAL_DATA_DIR/shoal.log" | tail -20',  # noqa: E731
                               check=False).stdout
        until("lab1 waiting for the unlock key", lambda: "until `shoal unlock`" in log(), timeout=60, what_else=log)
        assert "Role: worker" in info(lab, "lab1")
        p = lab.exec("lab1", "env", "SHOAL_UNLOCK_KEY=SWMKEY-1-NOTTHEKEY", "shoal", "unlock", check=False)
        assert p.returncode != 0 and "invalid key" in p.stderr, p.stderr
        lab.exec("lab1", "env", f"SHOAL_UNLOCK_KEY={key}", "shoal", "unlock")
        until("lab1 a manager, unlocked, with a voting member",
              lambda: "Role: manager" in info(lab, "lab1") and "Locked: False" in info(lab, "lab1")
              and status(lab, "lab3").get("lab1") == "Reachable" and "2 voting;" in info(lab, "lab3"),
              timeout=150, what_else=lambda: info(lab, "lab1") + log())
        assert "o_app" in lab.shoal("lab1", "service", "ls")
    finally:
        lab.shoal("lab3", "update", "--autolock", "false", check=False)
