"""Issue 4, autolock: after a restart the manager serves nothing but `unlock` until the right key.

Each test has a cluster of its own (it stops and starts the daemon).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ShoalCli, _destroy, containers, docker, free_port, LOCK_PATH

pytestmark = pytest.mark.integration

LOCKED = "needs to be unlocked"
KEY_RE = re.compile(r"SWMKEY-1-[A-Z2-7]+")

STACK = """
services:
  app:
    image: shoal/busybox:latest
    command: ["sh", "-c", "exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    secrets: [pw]
secrets:
  pw:
    file: ./pw.txt
"""
SECRET = b"autolock-secret-7c1d2f0e9a\n"


@pytest.fixture
def locked_cluster(engine, busybox, tmp_path_factory):
    """A cluster made by `shoal init --autolock` (same machine lock as conftest's clusters)."""
    import fcntl
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    cli = ShoalCli(str(tmp_path_factory.mktemp("locked") / "shoal-data"))
    cli.lock = lock
    try:
        out = cli.out("init", "--autolock", "--port", str(free_port()))
    except BaseException:
        lock.close()
        raise
    m = KEY_RE.search(out)
    assert m, out
    cli.unlock_key = m.group(0)
    yield cli
    _destroy(cli)


def deploy(cli: ShoalCli, tmp: Path) -> str:
    (tmp / "pw.txt").write_bytes(SECRET)
    (tmp / "stack.yml").write_text(STACK)
    cli.out("stack", "deploy", "-c", str(tmp / "stack.yml"), "lk")
    cli.wait_for(lambda: cli.running("lk_app") == 1, timeout=120, what="lk_app running")
    ids = containers(**{"shoal.service.name": "lk_app"})
    assert len(ids) == 1
    return ids[0]


def restart(cli: ShoalCli) -> None:
    assert cli.out("stop").strip() == "stopped"
    cli.out("start")


def tls_port_open(cli: ShoalCli) -> bool:
    import json
    import socket
    port = json.loads((Path(cli.data_dir) / "cluster.json").read_text())["port"]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def assert_locked(cli: ShoalCli) -> None:
    # the manager's private keys are sealed with the cluster key: no TLS until it is unlocked
    assert not tls_port_open(cli)
    for args in (("service", "ls"), ("secret", "ls"), ("stack", "ls"), ("config", "create", "x", "-"),
                 ("unlock-key", "--rotate")):
        p = cli.run(*args, check=False, input="x")
        assert p.returncode == 1 and LOCKED in p.stderr, (args, p.returncode, p.stdout, p.stderr)
    info = cli.out("info")
    assert "Locked: True" in info, info


def still_running(cid: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", cid).strip() == "true"


def test_update_autolock_restart_unlock_and_rotate(fresh_cluster, tmp_path):
    cli = fresh_cluster
    cid = deploy(cli, tmp_path)
    out = cli.out("update", "--autolock", "true")
    key = KEY_RE.search(out).group(0)
    blob = (Path(cli.data_dir) / "manager" / "cluster.key").read_bytes()
    assert blob.startswith(b"locked:")

    restart(cli)
    assert_locked(cli)
    # the agent cannot get assignments while locked, but running tasks keep running
    assert still_running(cid)
    # a wrong key is refused
    p = cli.run("unlock", env={"SHOAL_UNLOCK_KEY": "SWMKEY-1-WRONGWRONGWRONG"}, check=False)
    assert p.returncode == 1 and "invalid" in p.stderr.lower(), p.stderr
    assert_locked(cli)
    # the right key (environment)
    cli.run("unlock", env={"SHOAL_UNLOCK_KEY": key})
    assert "lk_app" in cli.out("service", "ls")
    p = cli.run("unlock", env={"SHOAL_UNLOCK_KEY": key}, check=False)
    assert p.returncode == 1 and "not locked" in p.stderr
    assert still_running(cid)
    assert containers(**{"shoal.service.name": "lk_app"}) == [cid], "the task was restarted by the unlock"
    assert docker("exec", cid, "cat", "/run/secrets/pw").encode() == SECRET
    # everything works: a new secret and a scale
    cli.out("secret", "create", "after-unlock", "-", input="x\n")
    cli.out("service", "scale", "lk_app=2")
    cli.wait_for(lambda: cli.running("lk_app") == 2, timeout=120, what="scaled after unlock")
    new = [c for c in containers(**{"shoal.service.name": "lk_app"}) if c != cid]
    assert new and docker("exec", new[0], "cat", "/run/secrets/pw").encode() == SECRET

    # rotate the unlock key: the new one works after the next restart, the old one no longer
    out = cli.out("unlock-key", "--rotate")
    key2 = KEY_RE.search(out).group(0)
    assert key2 != key
    assert cli.out("unlock-key", "--rotate", "-q").strip().startswith("SWMKEY-1-")
    key3 = cli.out("unlock-key", "--rotate", "-q").strip()
    restart(cli)
    assert_locked(cli)
    for old in (key, key2):
        p = cli.run("unlock", env={"SHOAL_UNLOCK_KEY": old}, check=False)
        assert p.returncode == 1, f"an old unlock key still works ({p.stdout}{p.stderr})"
    cli.run("unlock", input=key3 + "\n")  # from stdin
    assert "lk_app" in cli.out("service", "ls")

    # autolock off: a restart needs no key
    out = cli.out("update", "--autolock", "false")
    assert not KEY_RE.search(out)
    restart(cli)
    assert "lk_app" in cli.out("service", "ls")


def test_init_autolock(locked_cluster, tmp_path):
    cli = locked_cluster
    key = cli.unlock_key
    assert "Autolock: True" in cli.out("info")
    cid = deploy(cli, tmp_path)
    # the key file alone does not open the secrets: the cluster key is sealed under the unlock key
    blob = (Path(cli.data_dir) / "manager" / "cluster.key").read_bytes()
    assert blob.startswith(b"locked:") and SECRET not in blob
    # and no private key lies in clear in the data dir (CA, node, manager API): a stolen disk
    # gives no TLS identity either
    for path in ("manager/ca.key", "certs/node.key", "certs/manager.key"):
        pem = (Path(cli.data_dir) / path).read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), path
    assert not list(Path(cli.data_dir).rglob("admin.*"))
    restart(cli)
    assert_locked(cli)
    p = cli.run("unlock", input="SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", check=False)
    assert p.returncode == 1 and "invalid" in p.stderr.lower(), p.stderr
    assert still_running(cid)
    cli.run("unlock", env={"SHOAL_UNLOCK_KEY": key})
    assert tls_port_open(cli)
    cli.wait_for(lambda: cli.running("lk_app") == 1, timeout=60, what="lk_app running after unlock")
    assert containers(**{"shoal.service.name": "lk_app"}) == [cid]
    # redeploy still works after unlock (the stack's secret re-sealed under the same cluster key)
    cli.out("stack", "rm", "lk")
    cli.wait_for(lambda: not containers(**{"shoal.service.name": "lk_app"}), timeout=120, what="lk removed")
