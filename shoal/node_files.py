"""The node's own small files: cluster.json (which cluster, which role) and the daemon's pid.

Apart from bootstrap (which carries the cryptography) so that a CLI command that only needs
to know whether this node is in a cluster, or whether its daemon runs, starts quickly
(`shoal join` on a node whose daemon waits for a cluster).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from shoal.paths import Layout


def read_cluster(layout: Layout) -> Optional[dict]:
    try:
        with open(layout.cluster_file) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_cluster(layout: Layout, info: dict) -> None:
    tmp = layout.cluster_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, layout.cluster_file)


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
