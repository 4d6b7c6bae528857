"""Prometheus metrics on the real engine (issue #16): scraped from the node's own listener,
parsed with Prometheus' text parser, and following the cluster as it changes."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ShoalCli, _destroy, _new_cluster, containers, docker, free_port

pytestmark = pytest.mark.integration

STACK = """
services:
  web:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 3
      restart_policy:
        delay: 1s
"""


@pytest.fixture(scope="module")
def metered(engine, busybox, tmp_path_factory):
    port = free_port()
    cli = _new_cluster(tmp_path_factory.mktemp("cluster"), ("--metrics-addr", f"127.0.0.1:{port}"))
    cli.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield cli
    _destroy(cli)


def scrape(cli) -> dict[tuple, float]:
    with urllib.request.urlopen(cli.metrics_url, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def running(m: dict) -> float:
    return m[("swarm_manager_tasks_total", (("state", "running"),))]


def test_metrics_follow_a_deploy_and_a_killed_container(metered, tmp_path):
    cli = metered
    m = scrape(cli)
    assert m[("swarm_node_manager", ())] == 1 and m[("swarm_manager_leader", ())] == 1
    assert m[("swarm_manager_nodes", (("state", "ready"),))] == 1
    assert m[("swarm_manager_services_total", ())] == 0 and running(m) == 0
    path = Path(tmp_path, "m.yml")
    path.write_text(STACK)
    cli.run("stack", "deploy", "-c", str(path), "--wait", "--timeout", "60", "m")
    m = scrape(cli)
    assert m[("swarm_manager_services_total", ())] == 1 and m[("swarm_manager_networks_total", ())] == 1
    assert running(m) == 3
    assert m[("shoal_scheduler_placements_total", ())] >= 3
    assert m[("swarm_dispatcher_scheduling_delay_seconds_count", ())] >= 3
    assert m[("shoal_agent_task_starts_total", ())] >= 3
    assert m[("shoal_engine_call_seconds_count", (("call", "/containers/{id}/start"), ("method", "POST")))] >= 3
    assert m[("shoal_orchestrator_pass_seconds_count", ())] >= 1
    assert m[("swarm_store_write_tx_latency_seconds_count", ())] >= 3
    starts = m[("shoal_agent_task_starts_total", ())]
    docker("kill", containers(**{"shoal.service.name": "m_web"})[0])
    cli.wait_for(lambda: (lambda m: running(m) == 3 and m[("swarm_manager_tasks_total", (("state", "failed"),))] >= 1
                          and m[("shoal_agent_task_starts_total", ())] >= starts + 1)(scrape(cli)),
                 timeout=60, what="the metrics to show the failed task and its replacement")
    cli.run("stack", "rm", "m")
    cli.wait_for(lambda: scrape(cli)[("swarm_manager_services_total", ())] == 0, timeout=30)


def test_a_bad_metrics_address_is_refused_before_anything_is_made(metered, tmp_path):
    other = ShoalCli(str(tmp_path / "other"))
    p = other.run("init", "--metrics-addr", "localhost:9323", check=False)
    assert p.returncode != 0 and "--metrics-addr" in p.stderr and "not an IP address" in p.stderr, p
    assert not (tmp_path / "other" / "cluster.json").exists()
