"""Issue 6 on the real engine: jobs (replicated-job) and one-shot services with `--wait`."""
from __future__ import annotations

import time

import pytest

from _sampler import ContainerSampler
from conftest import containers

pytestmark = pytest.mark.integration

JOB = """
services:
  job:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 2; echo done"]
    deploy:
      mode: replicated-job
      replicas: 3
      max_concurrent: 1
"""

ONESHOT = """
services:
  once:
    image: shoal/busybox:latest
    command: ["echo", "hello"]
    deploy:
      restart_policy:
        condition: none
  setup:
    image: shoal/busybox:latest
    command: ["sh", "-c", "sleep 1; exit 0"]
    deploy:
      restart_policy:
        condition: on-failure
  server:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 2s
"""


def test_replicated_job_runs_to_completion_once(cluster, tmp_path):
    path = tmp_path / "job.yml"
    path.write_text(JOB)
    with ContainerSampler("jobs_job") as s:
        p = cluster.run("stack", "deploy", "--wait", "--timeout", "180", "-c", str(path), "jobs", timeout=240,
                        check=False)
        assert p.returncode == 0, p.stdout + p.stderr
    counts = s.counts()
    assert max(counts) <= 1, f"max_concurrent 1 exceeded: {counts}"
    svc = [x for x in cluster.json_lines("service", "ls") if x["Name"] == "jobs_job"][0]
    assert svc["Mode"] == "replicated job" and "(3/3 completed)" in svc["Replicas"], svc
    rows = cluster.json_lines("stack", "ps", "jobs")
    assert sorted(r["Name"] for r in rows) == ["jobs_job.1", "jobs_job.2", "jobs_job.3"]
    assert all(r["CurrentState"].startswith("Complete") and r["DesiredState"] == "Complete" for r in rows), rows
    # completed tasks are never restarted
    time.sleep(6)
    assert len(cluster.json_lines("stack", "ps", "jobs")) == 3
    assert not containers(**{"shoal.service.name": "jobs_job"})
    cluster.run("stack", "rm", "jobs", check=False)


def test_wait_returns_for_completed_one_shot_services(cluster, tmp_path):
    path = tmp_path / "once.yml"
    path.write_text(ONESHOT)
    t0 = time.monotonic()
    p = cluster.run("stack", "deploy", "--wait", "--timeout", "120", "-c", str(path), "once", timeout=180,
                    check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.monotonic() - t0 < 110
    assert "all services converged" in p.stdout
    rows = {r["Name"]: r for r in cluster.json_lines("stack", "ps", "once")}
    assert rows["once_once.1"]["CurrentState"].startswith("Complete")
    # on-failure: converged while it runs (it may be a server); it then completes, once
    assert rows["once_setup.1"]["CurrentState"].split()[0] in ("Running", "Complete")
    assert rows["once_server.1"]["CurrentState"].startswith("Running")
    cluster.wait_for(lambda: [r for r in cluster.json_lines("stack", "ps", "once")
                              if r["Name"] == "once_setup.1" and r["CurrentState"].startswith("Complete")],
                     timeout=60, what="setup completed")
    time.sleep(3)
    names = [r["Name"] for r in cluster.json_lines("stack", "ps", "once")]
    assert names.count("once_once.1") == 1 and names.count("once_setup.1") == 1
    cluster.run("stack", "rm", "once", check=False)
