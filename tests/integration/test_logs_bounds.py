"""`service logs -f` cannot exhaust the manager (issue #12): a client that goes away ends the
agent's upload, and a slow reader slows the stream down instead of filling a buffer."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shoal.cli.api_client import Api
from shoal.paths import Layout

pytestmark = pytest.mark.integration

STACK = """
services:
  chatty:
    image: shoal/busybox:latest
    command: ["sh", "-c", "i=0; while true; do echo line $$i of a service that never stops talking; i=$$((i+1)); done"]
    init: true
    stop_grace_period: 1s
"""


def stats(cluster) -> dict:
    return Api(Layout(cluster.data_dir)).get("/v1/info")


def manager_rss_mib(cluster) -> float:
    pid = int(open(os.path.join(cluster.data_dir, "shoal.pid")).read())
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_upload_lines(cluster) -> str:
    log = open(os.path.join(cluster.data_dir, "shoal.log")).read()
    return "\n".join(line for line in log.splitlines() if "log upload" in line)


def logs_client(cluster) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shoal", "service", "logs", "-f", "lb_chatty"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=cluster.env)


@pytest.fixture(scope="module")
def chatty(cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("lb")
    (d / "s.yml").write_text(STACK)
    cluster.out("stack", "deploy", "-c", str(d / "s.yml"), "--wait", "--timeout", "60", "lb")
    yield cluster
    cluster.run("stack", "rm", "lb", check=False)


def test_a_client_that_goes_away_ends_the_agents_upload(chatty):
    cluster = chatty
    p = logs_client(cluster)
    try:
        assert p.stdout.readline().startswith(b"lb_chatty.1.")
        s = stats(cluster)
        assert s["log_relays"] == 1 and s["log_uploads"] == 1
    finally:
        p.kill()
        p.wait()
    # The manager drops its relay first; the agent hears of it a moment later.
    deadline = time.monotonic() + 15
    ended = False
    while time.monotonic() < deadline:
        s = stats(cluster)
        ended = "ended" in agent_upload_lines(cluster)
        if s["log_relays"] == 0 and s["log_uploads"] == 0 and ended:
            break
        time.sleep(0.2)
    assert s["log_relays"] == 0 and s["log_uploads"] == 0 and s["log_lines_queued"] == 0, s
    assert ended, agent_upload_lines(cluster)  # the agent stopped following


def test_a_slow_reader_gets_a_slow_stream_not_a_growing_buffer(chatty):
    cluster = chatty
    before = manager_rss_mib(cluster)
    p = logs_client(cluster)
    queued = []
    try:
        for _ in range(40):  # about 4 s, reading 1 KB now and then while the service writes MB/s
            p.stdout.read(1024)
            queued.append(stats(cluster)["log_lines_queued"])
            time.sleep(0.1)
        grown = manager_rss_mib(cluster) - before
    finally:
        p.kill()
        p.wait()
    assert max(queued) <= 1000, queued
    assert grown < 40, f"the manager grew by {grown:.0f} MiB behind a slow reader"


ECHO = """
services:
  echo:
    image: shoal/busybox:latest
    command: ["sh", "-c", "echo hello from $$(hostname); exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 3
"""


def test_following_shows_every_replica_on_a_node(cluster, tmp_path):
    """`service logs -f` with several running replicas on one node: each one's lines, not only
    the first container's (whose log, followed, never ends)."""
    (tmp_path / "e.yml").write_text(ECHO)
    cluster.out("stack", "deploy", "-c", str(tmp_path / "e.yml"), "--wait", "--timeout", "60", "lbe")
    p = subprocess.Popen([sys.executable, "-m", "shoal", "service", "logs", "-f", "lbe_echo"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=cluster.env)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            line = p.stdout.readline().decode()
            if "hello from" in line:
                seen.add(line.split("|", 1)[0].strip())
    finally:
        p.kill()
        p.wait()
        cluster.run("stack", "rm", "lbe", check=False)
    assert len(seen) == 3, seen
