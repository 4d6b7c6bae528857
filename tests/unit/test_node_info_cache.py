"""The orchestrator keeps each node's scheduling picture between passes: it must always be
what the scheduler would make from every task on the nodes."""
from __future__ import annotations

import pytest

from shoal.manager.node_infos import NodeInfoCache
from shoal.model.objects import Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, PortConfig, ResourceRequirements, ServiceSpec
from shoal.scheduler.nodeinfo import FAILURE_WINDOW, build_node_infos
from shoal.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path):
    st = SqliteStore(str(tmp_path / "store.db"))
    yield st
    st.close()


def _picture(infos):
    return {nid: (i.node.id, i.cpu_free, i.mem_free, i.total, i.by_service, i.ports, i.failures)
            for nid, i in sorted(infos.items())}


def _same(cache, store, nodes, batch, now):
    on_nodes = [t for n in nodes for t in store.tasks_of_node(n.id)]
    want = _picture(build_node_infos(nodes, on_nodes, now, skip=batch))
    got = _picture(cache.infos(nodes, batch, now))
    assert got == want
    return got


def test_kept_pictures_match_what_the_scheduler_would_make(store):
    nodes = [store.put(Node(id=f"n{i}", state="ready", description=NodeDescription(
        hostname=f"n{i}", nano_cpus=4_000_000_000, memory_bytes=8 << 30))) for i in range(3)]
    spec = ServiceSpec(name="s_web", stack="s", container=ContainerSpec(image="busybox"), replicas=3,
                       resources=ResourceRequirements(reservations={"nano_cpus": 500_000_000, "memory_bytes": 1 << 20}),
                       ports=[PortConfig(target=80, published=8080, mode="host")])
    svc = store.put(Service(id="svc", spec=spec))

    def task(tid, node, state, ts=1000.0):
        return store.put(Task(id=tid, service_id=svc.id, service_name=spec.name, slot=1, node_id=node, spec=spec,
                              status=TaskStatus(state=state, timestamp=ts)))

    task("a", "n0", "running")
    task("b", "n1", "assigned")
    task("c", "n1", "failed", ts=1000.0)  # a recent failure
    task("d", "n2", "shutdown")
    task("g", "n2", "pending")  # bound to its node (a global service's), placed by some pass
    cache = NodeInfoCache(store)
    now = 1010.0
    _same(cache, store, nodes, set(), now)
    _same(cache, store, nodes, {"g"}, now)  # this pass places it: not counted
    first = cache.infos(nodes, set(), now)
    again = cache.infos(nodes, set(), now)
    assert first["n0"] is not again["n0"]  # copies: the scheduler changes them
    first["n0"].add("x", 1, 1)
    assert _picture(cache.infos(nodes, set(), now)) == _same(cache, store, nodes, set(), now)

    # a task starts on n0, one ends on n2, n2's node object changes: each seen at once
    task("e", "n0", "starting")
    _same(cache, store, nodes, set(), now)
    t = store.get(Task, "a")
    store.put(t.model_copy(update={"status": TaskStatus(state="shutdown", timestamp=now)}))
    nodes[2] = store.put(nodes[2].model_copy(update={"description": nodes[2].description.model_copy(
        update={"nano_cpus": 2_000_000_000})}))
    _same(cache, store, nodes, set(), now)
    # a task moves from n1 to n0
    t = store.get(Task, "b")
    store.put(t.model_copy(update={"node_id": "n0"}))
    _same(cache, store, nodes, set(), now)
    # n1's failure leaves its window with time alone
    _same(cache, store, nodes, set(), 1000.0 + FAILURE_WINDOW + 1)
    # a node in another state this pass (the orchestrator's copy of a silent node)
    silent = [n.model_copy(update={"state": "unknown"}) if n.id == "n1" else n for n in nodes]
    _same(cache, store, silent, set(), now)
