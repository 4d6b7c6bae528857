"""Several nodes (issue #13), on three lab hosts with their own engines: joining with a token,
what a worker may do, node management, certificates, and secrets that reach only the nodes
whose tasks use them."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lab import Lab, until

pytestmark = [pytest.mark.integration, pytest.mark.lab]

SECRET = "lab-secret-5b2f9e0c7d1a-never-elsewhere"


@pytest.fixture(scope="module")
def cl(lab3, tmp_path_factory):
    """lab1 manager (certificates valid for 1 minute: renewals within the test), lab2 a worker;
    lab3 joins in a test."""
    lab: Lab = lab3
    rec = tmp_path_factory.mktemp("rec")
    lab.shoal("lab1", "init", "--advertise-addr", lab.addr("lab1"), "--cert-expiry", "1m")
    lab.rec = rec
    token = lab.shoal("lab1", "join-token", "-q", "worker").strip()
    # lab2's agent records everything it receives, in clear (what a worker learns)
    lab.exec("lab2", "env", f"SHOAL_AGENT_RECORD={rec}/lab2.rec", "shoal", "join", "--token", token,
             f"{lab.addr('lab1')}:4343")
    yield lab


def test_join_token_and_node_ls(cl):
    lab = cl
    out = lab.shoal("lab1", "join-token", "worker")
    token = lab.shoal("lab1", "join-token", "-q", "worker").strip()
    assert re.fullmatch(r"SHLTKN-1-[0-9a-z]{50}-[0-9a-z]{25}", token)
    assert f"shoal join --token {token} {lab.addr('lab1')}:4343" in out
    p = lab.exec("lab1", "shoal", "join-token", "manager", check=False)
    # a cluster on SQLite has one manager: a manager token is of no use, and says why
    assert p.returncode == 1 and "joining as a manager needs the cluster's state in etcd" in p.stderr
    lines = lab.shoal("lab1", "node", "ls").splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS", "ENGINE", "VERSION"]
    nodes = lab.nodes()
    assert sorted(nodes) == ["lab1", "lab2"]
    assert nodes["lab1"]["ManagerStatus"] == "Leader" and nodes["lab2"]["ManagerStatus"] == ""
    assert all(n["Status"] == "Ready" and n["Availability"] == "Active" for n in nodes.values())


def test_a_worker_is_not_a_manager(cl):
    lab = cl
    for args in (("service", "ls"), ("node", "ls"), ("stack", "ls")):
        p = lab.exec("lab2", "shoal", *args, check=False)
        assert p.returncode == 1 and "not a Shoal manager" in p.stderr and f"{lab.addr('lab1')}:4343" in p.stderr
    info = lab.shoal("lab2", "info")
    assert "Role: worker" in info and "Registered: True" in info and f"Managers: {lab.addr('lab1')}:4343" in info


def test_rotated_token_refuses_new_joins_only(cl):
    lab = cl
    old = lab.shoal("lab1", "join-token", "-q", "worker").strip()
    out = lab.shoal("lab1", "join-token", "--rotate", "worker")
    new = lab.shoal("lab1", "join-token", "-q", "worker").strip()
    assert "Successfully rotated worker join token" in out and new != old
    p = lab.exec("lab3", "shoal", "join", "--token", old, lab.addr("lab1"), check=False)
    assert p.returncode == 1 and "invalid join token" in p.stderr
    assert not Path(lab.exec("lab3", "sh", "-c", "echo $SHOAL_DATA_DIR").stdout.strip(), "cluster.json").exists()
    # a token for another cluster's CA: refused before anything is sent
    fake = "SHLTKN-1-" + "0" * 50 + "-" + new.rsplit("-", 1)[1]
    p = lab.exec("lab3", "shoal", "join", "--token", fake, lab.addr("lab1"), check=False)
    assert p.returncode == 1 and "not the one the token is for" in p.stderr
    assert lab.nodes()["lab2"]["Status"] == "Ready"  # joined nodes are not affected
    # lab3's daemon runs before it joins (as an engine before `swarm join`): the join happens in it
    assert "not in a cluster yet" in lab.shoal("lab3", "start")
    p = lab.exec("lab3", "shoal", "service", "ls", check=False)
    assert p.returncode == 1 and "not part of a cluster" in p.stderr
    lab.shoal("lab3", "join", "--token", new, lab.addr("lab1"))
    assert "Role: worker" in lab.shoal("lab3", "info")
    until("lab3 ready", lambda: lab.nodes().get("lab3", {}).get("Status") == "Ready", timeout=20)


def test_certificates_renew_before_they_expire(cl):
    """Certificates of 1 minute: each node's is renewed (new serial, new key) at 50-80 % of it,
    and the nodes stay ready and keep working past the first certificate's expiry."""
    lab = cl
    from shoal import pki

    def serial(host: str) -> int:
        d = lab.exec(host, "sh", "-c", "echo $SHOAL_DATA_DIR").stdout.strip()
        return pki.cert_info(Path(d, "certs", "node.crt").read_bytes()).serial

    first = {h: serial(h) for h in ("lab1", "lab2")}
    until("renewed certificates", lambda: all(serial(h) != first[h] for h in first), timeout=75, interval=2)
    stack = "services:\n  app:\n    image: shoal/busybox:latest\n    command: [sleep, '3600']\n    init: true\n" \
            "    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n" \
            "        constraints: [node.hostname != lab3]\n"
    path = Path(str(lab.rec), "renew.yml")
    path.write_text(stack)
    lab.shoal("lab1", "stack", "deploy", "-c", str(path), "--wait", "--timeout", "60", "rn")
    assert lab.running_on("rn_app") == {"lab1": 1, "lab2": 1}
    lab.shoal("lab1", "stack", "rm", "rn")
    assert all(n["Status"] == "Ready" for n in lab.nodes().values())


def test_secrets_reach_only_the_nodes_whose_tasks_mount_them(cl, tmp_path):
    lab = cl
    (tmp_path / "s.txt").write_text(SECRET)
    (tmp_path / "stack.yml").write_text(f"""
services:
  holder:
    image: shoal/busybox:latest
    command: [sleep, "3600"]
    init: true
    secrets: [pw]
    deploy:
      placement:
        constraints: [node.hostname == lab3]
  other:
    image: shoal/busybox:latest
    command: [sleep, "3600"]
    init: true
    deploy:
      placement:
        constraints: [node.hostname == lab2]
secrets:
  pw:
    file: {tmp_path}/s.txt
""")
    lab.shoal("lab1", "stack", "deploy", "-c", str(tmp_path / "stack.yml"), "--wait", "--timeout", "90", "sec")
    holder = lab.containers("lab3", "sec_holder")
    assert len(holder) == 1 and lab.docker("lab3", "exec", holder[0], "cat", "/run/secrets/pw") == SECRET
    assert lab.containers("lab2", "sec_other")
    data2 = lab.exec("lab2", "sh", "-c", "echo $SHOAL_DATA_DIR").stdout.strip()
    # lab2: not in its secrets tmpfs, not anywhere in its data dir, not in what its agent received,
    # not in its agent's memory
    secret = SECRET.encode()
    for root in ("/run/shoal", data2):
        for dirpath, _, files in os.walk(root):
            if "lab2" not in dirpath and root == "/run/shoal":
                continue
            for f in files:
                p = Path(dirpath, f)
                if p.is_file():
                    assert secret not in p.read_bytes(), p
    rec = Path(str(lab.rec), "lab2.rec").read_bytes()
    assert b'"secrets"' in rec and secret not in rec
    import base64
    assert base64.b64encode(secret)[:20] not in rec
    pid = int(Path(data2, "shoal.pid").read_text())
    assert not _in_memory(pid, secret)
    # while lab3's agent does hold it (the check can find it)
    data3 = lab.exec("lab3", "sh", "-c", "echo $SHOAL_DATA_DIR").stdout.strip()
    assert _in_memory(int(Path(data3, "shoal.pid").read_text()), secret)
    lab.shoal("lab1", "stack", "rm", "sec")


def _in_memory(pid: int, needle: bytes) -> bool:
    """Is `needle` anywhere in the process's readable memory?"""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            if needle in chunk:
                found = True
                break
    return found


def test_node_update_rm_and_leave(cl):
    lab = cl
    lab.shoal("lab1", "node", "update", "--label-add", "zone=b", "lab3")
    assert "zone=b" in lab.shoal("lab1", "node", "inspect", "--pretty", "lab3")
    # rm refuses a ready node without --force
    p = lab.exec("lab1", "shoal", "node", "rm", "lab3", check=False)
    assert p.returncode == 1 and "is not down" in p.stderr
    # leave on a worker: down at once, its containers gone, listed until node rm
    lab.shoal("lab3", "leave")
    assert lab.nodes()["lab3"]["Status"] == "Down"
    assert lab.docker("lab3", "ps", "-q", "--filter", "label=shoal.managed=true").strip() == ""
    assert lab.shoal("lab1", "node", "rm", "lab3").strip() == "lab3"
    assert "lab3" not in lab.nodes()
    # a removed node's certificate is refused from then on: lab2 removed by force, its agent is locked out
    lab.shoal("lab1", "node", "rm", "--force", "lab2")
    until("lab2 refused", lambda: "was removed from the cluster" in
          Path(lab.exec("lab2", "sh", "-c", "echo $SHOAL_DATA_DIR").stdout.strip(), "shoal.log").read_text(),
          timeout=20)
    assert "lab2" not in lab.nodes()
