"""`shoal init` (issue #12): the advertise address it chooses and says, and a failed init
that leaves nothing behind (no daemon holding the port, no half-made cluster)."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from conftest import LOCK_PATH, ShoalCli, _destroy, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def node_lock():
    import fcntl
    lock = open(LOCK_PATH, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield lock
    lock.close()


def test_a_failed_init_leaves_nothing_behind(engine, busybox, tmp_path, node_lock):
    port = free_port()
    holder = socket.socket()
    holder.bind(("0.0.0.0", port))
    holder.listen()
    cli = ShoalCli(str(tmp_path / "d"))
    try:
        p = cli.run("init", "--port", str(port), check=False)
    finally:
        holder.close()
    assert p.returncode == 1 and "address already in use" in p.stderr and "not created" in p.stderr, p.stderr
    assert sorted(x.name for x in Path(cli.data_dir).iterdir()) == ["shoal.log"]  # no cluster.json, keys, socket
    assert "shoal" not in subprocess.run(["pgrep", "-af", f"--data-dir {cli.data_dir} daemon"],
                                         capture_output=True, text=True).stdout
    # the same port, now free: init works at once
    out = cli.out("init", "--port", str(port))
    cli.lock = node_lock
    try:
        assert out.startswith("Shoal cluster initialized: current node (")
        route = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout
        src = route.split()[route.split().index("src") + 1]
        assert f"Advertise address: {src} (the address of the default route's interface)" in out, out
        assert "shoal join --token SHLTKN-1-" in out and f"{src}:{port}" in out
    finally:
        _destroy(cli)
