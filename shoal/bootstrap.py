"""Creating a cluster on this node (`shoal init`), and leaving it (`shoal leave`).

`init` writes the CA, this node's and the local admin's certificates, the cluster
key and cluster.json, then starts the daemon in the background and waits until its
API answers. The daemon holds the manager and the node agent.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from shoal import pki
from shoal.ids import new_id
from shoal.manager.keyring import Keyring
from shoal.paths import DEFAULT_PORT, Layout


class AlreadyInCluster(Exception):
    pass


def read_cluster(layout: Layout) -> Optional[dict]:
    try:
        with open(layout.cluster_file) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def local_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                addrs.add(parts[parts.index("inet") + 1].split("/")[0])
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(addrs)


def advertise_address() -> str:
    for a in local_addresses():
        if not a.startswith("127.") and not a.startswith("172.17.") and not a.startswith("10.21"):
            return a
    return "127.0.0.1"


def create_cluster(layout: Layout, advertise_addr: Optional[str], port: int = DEFAULT_PORT,
                   autolock: bool = False) -> dict:
    if read_cluster(layout) is not None:
        raise AlreadyInCluster("This node is already part of a swarm. Use \"shoal leave\" to leave this "
                               "swarm and join another one.")
    os.makedirs(layout.root, exist_ok=True)
    os.chmod(layout.root, 0o700)
    cluster_id, node_id = new_id(), new_id()
    addr = advertise_addr or advertise_address()
    ca = pki.make_ca()
    pki.write_pair(ca, layout.ca_cert, layout.ca_key)
    hosts = sorted(set(local_addresses() + [addr, "localhost", socket.gethostname()]))
    pki.write_pair(pki.issue(ca, node_id, "manager", hosts), layout.manager_cert, layout.manager_key)
    pki.write_pair(pki.issue(ca, node_id, "node-manager"), layout.node_cert, layout.node_key)
    pki.write_pair(pki.issue(ca, "admin", "admin"), layout.admin_cert, layout.admin_key)
    unlock_key = Keyring(layout.cluster_key).create(autolock)
    info = {"cluster_id": cluster_id, "node_id": node_id, "advertise_addr": addr,
            "manager_url": f"https://127.0.0.1:{port}", "port": port, "created_at": time.time()}
    tmp = layout.cluster_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, layout.cluster_file)
    return {**info, "unlock_key": unlock_key}


def daemon_pid(layout: Layout) -> Optional[int]:
    try:
        pid = int(open(layout.pidfile).read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        if b"shoal" not in cmd:
            return None
    except OSError:
        return None
    return pid


def start_daemon(layout: Layout, wait: float = 30.0) -> int:
    pid = daemon_pid(layout)
    if pid:
        return pid
    logf = open(layout.log, "ab")
    env = dict(os.environ, SHOAL_DATA_DIR=layout.root)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "--data-dir", layout.root, "daemon"],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env, close_fds=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Shoal daemon exited with {proc.returncode}; see {layout.log}")
        if os.path.exists(layout.socket) and _answers(layout.socket):
            return proc.pid
        time.sleep(0.1)
    raise RuntimeError(f"the Shoal daemon did not answer within {wait:.0f}s; see {layout.log}")


def _answers(sock_path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(sock_path)
        s.sendall(b"GET /v1/info HTTP/1.0\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False
    finally:
        s.close()


def stop_daemon(layout: Layout, timeout: float = 30.0) -> bool:
    pid = daemon_pid(layout)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def forget_cluster(layout: Layout) -> None:
    """After `leave --force`: the last manager's state goes with it, as in Swarm.

    The store, keys, certificates, task files and cluster.json are removed (a later
    `init` in the same data dir starts a new cluster); the daemon's log stays.
    """
    import shutil
    for sub in ("manager", "certs", "agent"):
        shutil.rmtree(layout.p(sub), ignore_errors=True)
    for path in (layout.cluster_file, layout.socket, layout.pidfile):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
