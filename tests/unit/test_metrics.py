"""Prometheus metrics (issue #16): swarmkit's names, counted from the store, fed by the
components, served on a plain-HTTP listener apart from the API."""
from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from manager_inproc import mgr  # noqa: F401 (fixture)
from shoal.agent.metrics import AgentMetrics, call_of
from shoal.manager.metrics import ManagerMetrics
from shoal.metrics_listener import MetricsListener, parse_addr
from shoal.model.objects import Node, Service, Task, TaskStatus
from shoal.store.sqlite import SqliteStore


def samples(registry) -> dict[tuple[str, tuple], float]:
    """Every sample of the registry's text exposition, parsed back by Prometheus' own parser."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_engine_calls_group_by_kind_not_by_id():
    assert call_of("/v1.43/containers/3f9a0c/start?t=1") == "/containers/{id}/start"
    assert call_of("/containers/json") == "/containers/json"
    assert call_of("/containers/create") == "/containers/create"
    assert call_of("/networks/shop_default") == "/networks/{id}"
    assert call_of("/exec/abc/json") == "/exec/{id}/json"
    assert call_of("/version") == "/version"


def test_metrics_addresses():
    assert parse_addr("127.0.0.1:9323") == ("127.0.0.1", 9323)
    assert parse_addr("[::1]:9323") == ("::1", 9323)
    assert parse_addr("off") is None and parse_addr("") is None
    for bad in ("9323", "localhost:9323", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ValueError, match="metrics address"):
            parse_addr(bad)


def test_counts_come_from_the_store_and_the_scheduling_delay_from_its_commits(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    m = ManagerMetrics()
    m.watch(st)
    st.on_commit_seconds = m.store_write.observe
    st.put(Node(id="n1", state="ready"))
    st.put(Node(id="n2", state="down"))
    svc = Service(id="s1", spec={"name": "web", "container": {"image": "busybox"}})
    st.put(svc)
    import time
    t = Task(id="t1", service_id="s1", service_name="web", slot=1, node_id="n1", spec=svc.spec,
             created_at=time.time() - 3, status=TaskStatus(state="assigned"))
    st.put(t)
    s = samples(m.registry)
    assert s[("swarm_manager_nodes", (("state", "ready"),))] == 1
    assert s[("swarm_manager_nodes", (("state", "down"),))] == 1
    assert s[("swarm_manager_nodes", (("state", "disconnected"),))] == 0
    assert s[("swarm_manager_tasks_total", (("state", "assigned"),))] == 1
    assert s[("swarm_manager_tasks_total", (("state", "running"),))] == 0
    assert s[("swarm_manager_services_total", ())] == 1 and s[("swarm_manager_secrets_total", ())] == 0
    assert s[("swarm_manager_leader", ())] == 1
    assert s[("swarm_store_write_tx_latency_seconds_count", ())] == 4
    assert s[("swarm_dispatcher_scheduling_delay_seconds_count", ())] == 0
    st.put(st.get(Task, "t1").model_copy(update={"status": TaskStatus(state="running")}))
    s = samples(m.registry)
    assert s[("swarm_dispatcher_scheduling_delay_seconds_count", ())] == 1
    assert 3 <= s[("swarm_dispatcher_scheduling_delay_seconds_sum", ())] < 60
    assert s[("swarm_manager_tasks_total", (("state", "running"),))] == 1
    st.put(st.get(Task, "t1").model_copy(update={"status": TaskStatus(state="running", health="healthy")}))
    assert samples(m.registry)[("swarm_dispatcher_scheduling_delay_seconds_count", ())] == 1  # once a task
    st.close()


async def test_a_managers_components_feed_its_metrics(mgr):  # noqa: F811
    node_id, ctx = await mgr.join()
    await mgr.call("POST", "/v1/configs", {"name": "conf", "data": "aGk="})
    status, _ = await mgr.node_call(ctx, "POST", "/v1/agent/heartbeat", {
        "description": {"hostname": "w1"}, "addr": "127.0.0.1"})
    status, _ = await mgr.node_call(ctx, "GET", "/v1/agent/assignments?rev=-1")
    assert status == 200
    s = samples(mgr.server.metrics.registry)
    assert s[("swarm_manager_configs_total", ())] == 1
    assert s[("swarm_manager_nodes", (("state", "ready"),))] >= 1
    assert s[("shoal_dispatcher_assignments_total", (("kind", "full"),))] >= 1
    assert s[("shoal_dispatcher_heartbeats_total", ())] >= 1
    assert s[("swarm_store_write_tx_latency_seconds_count", ())] >= 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_listener_serves_the_registry_and_survives_a_taken_port(caplog):
    m = AgentMetrics()
    m.engine_call("POST", "/v1.43/containers/abc/start", 0.02, True)
    m.engine_call("GET", "/containers/abc/json", 0.001, False)
    m.task_starts.inc()
    port = _free_port()
    first = MetricsListener(m.registry, f"127.0.0.1:{port}")
    await first.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
        got = {(x.name, tuple(sorted(x.labels.items()))): x.value
               for fam in text_string_to_metric_families(text) for x in fam.samples}
        assert got[("shoal_engine_call_seconds_count", (("call", "/containers/{id}/start"), ("method", "POST")))] == 1
        assert got[("shoal_engine_call_errors_total", (("call", "/containers/{id}/json"), ("method", "GET")))] == 1
        assert got[("shoal_agent_task_starts_total", ())] == 1
        second = MetricsListener(m.registry, f"127.0.0.1:{port}")
        await second.start()  # the port is taken: logged, not raised
        assert second.runner is None and "cannot listen" in caplog.text
    finally:
        await first.stop()


def test_task_counts_follow_every_commit_and_match_a_recount(tmp_path):
    """Counted as the store commits, checked against counting the store afresh, through
    creates, state changes, a transaction rolled back and deletions."""
    st = SqliteStore(str(tmp_path / "s.db"))
    svc = Service(id="s1", spec={"name": "web", "container": {"image": "busybox"}})
    st.put(svc)
    st.put(Task(id="old", service_id="s1", service_name="web", slot=9, spec=svc.spec,
                status=TaskStatus(state="complete")))
    m = ManagerMetrics()
    m.watch(st)  # after the first writes: they are counted from the store

    def recount() -> dict:
        from collections import Counter as C
        return {k: v for k, v in C(t.status.state for t in st.all(Task)).items()}

    def counted() -> dict:
        return {k: v for k, v in m.counts.tasks.items() if v}

    for i in range(5):
        st.put(Task(id=f"t{i}", service_id="s1", service_name="web", slot=i + 1, spec=svc.spec,
                    status=TaskStatus(state="pending")))
    with st.txn():
        for i in range(3):
            t = st.get(Task, f"t{i}")
            st.put(t.model_copy(update={"status": TaskStatus(state="assigned")}))
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(st.get(Task, "t4").model_copy(update={"status": TaskStatus(state="assigned")}))
            raise RuntimeError("rolled back")
    st.delete(Task, "old")
    st.delete(Task, "t0")
    assert counted() == recount() == {"assigned": 2, "pending": 2}
    st.close()
