"""Issue 6 on the real engine: `depends_on` is honoured (Swarm ignores it)."""
from __future__ import annotations

import time

import pytest

from _sampler import ContainerSampler
from conftest import containers

pytestmark = pytest.mark.integration

STACK = """
services:
  db:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 8; touch /tmp/ready; exec sleep 3600"]
    init: true
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 1s
      timeout: 3s
      retries: 60
  app:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    depends_on:
      db:
        condition: service_healthy
  migrate:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 2; echo migrated"]
    deploy:
      restart_policy:
        condition: none
  after-migrate:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
    depends_on:
      migrate:
        condition: service_completed_successfully
"""

CYCLE = """
services:
  a:
    image: shoal/busybox:latest
    depends_on: [b]
  b:
    image: shoal/busybox:latest
    depends_on:
      c:
        condition: service_started
  c:
    image: shoal/busybox:latest
    depends_on: [a]
"""


def test_service_healthy_gates_the_dependant(cluster, tmp_path):
    path = tmp_path / "deps.yml"
    path.write_text(STACK)
    with ContainerSampler("deps", label="com.docker.stack.namespace") as s:
        cluster.out("stack", "deploy", "-c", str(path), "deps")
        # meanwhile, `stack ps` says what the dependant waits for
        def waiting():
            rows = [r for r in cluster.json_lines("stack", "ps", "--no-trunc", "deps") if r["Name"] == "deps_app.1"]
            return rows and rows[0]["CurrentState"].startswith("New") and \
                "waiting for dependency deps_db (service_healthy)" in rows[0]["Error"]
        cluster.wait_for(waiting, timeout=60, what="deps_app waiting for deps_db")
        assert not containers(**{"shoal.service.name": "deps_app"})
        cluster.wait_for(lambda: cluster.running("deps_app") == 1, timeout=120, what="deps_app running")
        # `--wait` on the whole stack (the one-shot migrate included) converges and returns 0
        p = cluster.run("stack", "deploy", "--wait", "--timeout", "120", "-c", str(path), "deps", timeout=180,
                        check=False)
        assert p.returncode == 0, p.stdout + p.stderr
    app_seen = [seen for _, seen in s.samples if any(x.service == "deps_app" for x in seen)]
    assert app_seen, "the sampler never saw deps_app"
    for seen in app_seen:
        db = [x for x in seen if x.service == "deps_db"]
        assert db and all(x.health == "healthy" for x in db), f"deps_app ran before deps_db was healthy: {seen}"
    assert any(x.service == "deps_db" and x.health == "starting" for _, seen in s.samples for x in seen)
    # service_completed_successfully: after-migrate ran only once migrate had finished
    mig = [seen for _, seen in s.samples if any(x.service == "deps_migrate" for x in seen)]
    aft = [i for i, (_, seen) in enumerate(s.samples) if any(x.service == "deps_after-migrate" for x in seen)]
    assert aft
    assert not any(any(x.service == "deps_migrate" for x in s.samples[i][1]) for i in aft)
    assert mig or True  # migrate may be too quick to be sampled
    ps = {r["Name"]: r for r in cluster.json_lines("stack", "ps", "deps")}
    assert ps["deps_migrate.1"]["CurrentState"].startswith("Complete")
    # a one-shot service that completed is not restarted
    time.sleep(3)
    assert [r["Name"] for r in cluster.json_lines("stack", "ps", "deps")].count("deps_migrate.1") == 1
    cluster.run("stack", "rm", "deps", check=False)


def test_cycle_is_an_error_naming_the_services(cluster, tmp_path):
    path = tmp_path / "cycle.yml"
    path.write_text(CYCLE)
    p = cluster.run("stack", "deploy", "-c", str(path), "cyc", check=False)
    assert p.returncode != 0
    assert "dependency cycle" in p.stderr
    assert all(n in p.stderr for n in ("a", "b", "c")) and " -> " in p.stderr, p.stderr
    assert not [s for s in cluster.json_lines("service", "ls") if s["Name"].startswith("cyc_")]
