"""Issue 6 on the real engine: health checks count, and an unhealthy container is replaced."""
from __future__ import annotations

import pytest

from conftest import containers, docker

pytestmark = pytest.mark.integration

STACK = """
services:
  h:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 4; touch /tmp/ok; exec sleep 3600"]
    init: true
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ok"]
      interval: 1s
      timeout: 3s
      retries: 2
      start_period: 30s
    deploy:
      restart_policy:
        delay: 1s
"""
UNHEALTHY = "task: non-zero exit (1): dockerexec: unhealthy container"


def health(cid: str) -> str:
    return docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", cid, check=False).strip()


def test_unhealthy_container_is_replaced(cluster, tmp_path):
    path = tmp_path / "h.yml"
    path.write_text(STACK)
    cluster.out("stack", "deploy", "-c", str(path), "health")
    first = cluster.wait_for(lambda: containers(**{"shoal.service.name": "health_h"}), timeout=60)[0]
    # running but not yet healthy: REPLICAS does not count it
    if health(first) == "starting":
        replicas = [s for s in cluster.json_lines("service", "ls") if s["Name"] == "health_h"][0]["Replicas"]
        if health(first) == "starting":
            assert replicas == "0/1"
    cluster.wait_for(lambda: cluster.running("health_h") == 1 and health(first) == "healthy", timeout=60,
                     what="healthy")
    # break it: the container turns unhealthy, is stopped, and the task is replaced
    docker("exec", first, "rm", "/tmp/ok")
    cluster.wait_for(lambda: [c for c in containers(**{"shoal.service.name": "health_h"}) if c != first],
                     timeout=90, what="replacement")
    rows = cluster.json_lines("stack", "ps", "--no-trunc", "health")
    failed = [r for r in rows if r["CurrentState"].startswith("Failed")]
    assert failed and failed[0]["Error"].strip('"') == UNHEALTHY, rows
    assert failed[0]["Name"].strip() == "\\_ health_h.1"
    cluster.wait_for(lambda: cluster.running("health_h") == 1, timeout=60, what="replacement healthy")
    assert first not in containers(**{"shoal.service.name": "health_h"})
    cluster.run("stack", "rm", "health", check=False)
