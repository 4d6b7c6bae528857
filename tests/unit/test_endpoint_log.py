"""The endpoint log and the agent's table: deltas replay to the manager's table, in O(changes)."""
from __future__ import annotations

import asyncio
import json

import pytest

from shoal.protocol.endpoint_table import EndpointTable
from shoal.manager import change_log
from shoal.manager.cluster import Cluster
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.endpoint_log import EndpointLog
from shoal.manager.errors import Forbidden
from shoal.manager.keyring import Keyring
from shoal.model.objects import Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, NetworkAttachment, ServiceSpec
from shoal.store.sqlite import SqliteStore as Store


@pytest.fixture
def store(tmp_path):
    st = Store(str(tmp_path / "store.db"))
    yield st
    st.close()


def _service(st: Store, name: str = "web", sid: str = "svc1") -> Service:
    spec = ServiceSpec(name=f"app_{name}", stack="app", container=ContainerSpec(image="busybox"), replicas=2,
                       networks=[NetworkAttachment(network="app_default")])
    return st.put(Service(id=sid, spec=spec, virtual_ips={"app_default": "10.211.0.2"}))


def _task(st: Store, svc: Service, tid: str, node: str = "n1", state: str = "running", ip: str = "10.210.0.5") -> Task:
    return st.put(Task(id=tid, service_id=svc.id, service_name=svc.spec.name, slot=1, node_id=node,
                       spec=svc.spec, status=TaskStatus(state=state, addresses={"app_default": ip})))


def _replay(table: EndpointTable, log: EndpointLog) -> None:
    sl = log.since(*_pos(table))
    assert table.apply(json.loads(b"".join(sl.parts())))  is not None


def _pos(table: EndpointTable) -> tuple[str, int]:
    return table.epoch, table.seq


def _backends(entries: list[dict]) -> dict[str, list[str]]:
    """Service name -> its replicas' addresses on app_default."""
    return {e["name"]: sorted(b["addresses"]["app_default"] for b in e["backends"]) for e in entries}


def _kinds(events: list) -> list[str]:
    return ["+" if isinstance(e[0], int) else e[0] for e in events]


def test_deltas_replay_to_the_managers_table(store):
    log = EndpointLog(store)
    agent = EndpointTable()
    svc = _service(store)
    _task(store, svc, "t1")
    _task(store, svc, "t2", state="starting", ip="10.210.0.6")
    log.sync()
    _replay(agent, log)
    assert _backends(agent.entries()) == {"app_web": ["10.210.0.5"]}
    assert agent.entries()[0]["virtual_ips"] == {"app_default": "10.211.0.2"}

    first = agent.seq
    t2 = store.get(Task, "t2")
    store.put(t2.model_copy(update={"status": t2.status.model_copy(update={"state": "running"})}))
    log.sync()
    sl = log.since(agent.epoch, agent.seq)
    assert not sl.full
    events = json.loads(b"".join(sl.parts()))["events"]
    assert _kinds(events) == ["+"]  # one replica changed: one event, not the table
    assert len(b"".join(sl.chunks)) < 40
    agent.apply(json.loads(b"".join(sl.parts())))
    assert agent.seq > first
    assert _backends(agent.entries()) == {"app_web": ["10.210.0.5", "10.210.0.6"]}

    # a replica that stops running, and one that is deleted, leave the table
    t1 = store.get(Task, "t1")
    store.put(t1.model_copy(update={"desired_state": "shutdown"}))
    store.delete(Task, "t2")
    log.sync()
    _replay(agent, log)
    assert _backends(agent.entries()) == {"app_web": []}
    assert _backends(agent.entries()) == _backends(log.table())

    store.delete(Service, svc.id)
    log.sync()
    _replay(agent, log)
    assert agent.entries() == [] == log.table()


def test_unhealthy_replicas_are_not_backends(store):
    log = EndpointLog(store)
    svc = _service(store)
    t = _task(store, svc, "t1")
    store.put(t.model_copy(update={"status": t.status.model_copy(update={"health": "unhealthy"})}))
    log.sync()
    assert _backends(log.table()) == {"app_web": []}


def test_unknown_position_gets_the_whole_table(store):
    log = EndpointLog(store)
    svc = _service(store)
    _task(store, svc, "t1")
    log.sync()
    sl = log.since("another-epoch", 5)
    assert sl.full
    fresh = EndpointTable()
    fresh.meta[99] = {"name": "stale"}
    fresh.epoch = "another-epoch"
    fresh.apply(json.loads(b"".join(sl.parts())))
    assert _backends(fresh.entries()) == {"app_web": ["10.210.0.5"]}


def test_compaction_keeps_positions_after_it_and_resets_older_ones(store, monkeypatch):
    monkeypatch.setattr(change_log, "COMPACT_MIN_EVENTS", 10)
    log = EndpointLog(store)
    svc = _service(store)
    early = EndpointTable()
    _replay(early, log)
    late = EndpointTable()
    for i in range(30):  # a replica flapping (healthy, unhealthy…): the log grows, the table does not
        t = _task(store, svc, "t1", state="running", ip=f"10.210.0.{i + 2}")
        if i % 2:
            store.put(t.model_copy(update={"status": t.status.model_copy(update={"health": "unhealthy"})}))
        log.sync()
        if i == 25:
            _replay(late, log)
        if i == 27:
            behind = EndpointTable()
            _replay(behind, log)
    # just behind the last compaction: still a delta, from the log kept before it
    just_behind = log.since(*_pos(behind))
    behind.apply(json.loads(b"".join(just_behind.parts())))
    assert log.events <= 2 * 10 + 5  # compacted
    sl = log.since(*_pos(early))
    assert sl.full  # its position was compacted away (two compactions ago)
    early.apply(json.loads(b"".join(sl.parts())))
    late_slice = log.since(*_pos(late))
    late.apply(json.loads(b"".join(late_slice.parts())))
    assert _backends(early.entries()) == _backends(late.entries()) == _backends(log.table())
    assert _backends(behind.entries()) == _backends(log.table())


def test_a_restarted_manager_starts_a_new_epoch_from_the_store(store):
    svc = _service(store)
    _task(store, svc, "t1")
    a, b = EndpointLog(store), EndpointLog(store)
    assert a.epoch != b.epoch
    agent = EndpointTable()
    _replay(agent, a)
    sl = b.since(*_pos(agent))
    assert sl.full
    agent.apply(json.loads(b"".join(sl.parts())))
    assert _backends(agent.entries()) == {"app_web": ["10.210.0.5"]}


# ------------------------------------------------------------------------------ dispatcher
def _cluster(tmp_path, store):
    kr = Keyring(str(tmp_path / "key"))
    kr.create(False)
    return Dispatcher(store, Cluster(store, kr, "mgr"))


def _node(store, nid):
    store.put(Node(id=nid, state="ready", description=NodeDescription(hostname=nid)))


def test_answers_carry_own_tasks_and_endpoint_deltas(tmp_path, store):
    d = _cluster(tmp_path, store)
    _node(store, "n1")
    _node(store, "n2")
    svc = _service(store)
    _task(store, svc, "t1", node="n1")
    a = d.assignments("n1")
    assert [t["id"] for t in a["tasks"]] == ["t1"]
    assert a["endpoints"]["full"] and _kinds(a["endpoints"]["events"]) == ["s", "+"]
    v = d.view("n1")
    assert d.news("n1", v, a["digest"], a["ep"], a["pp"]) == -1  # nothing new

    _task(store, svc, "t2", node="n2", ip="10.210.0.6")  # another node's replica: endpoint news only for n1
    v = d.view("n1")
    assert v.own_key == a["digest"]
    assert d.news("n1", v, a["digest"], a["ep"], a["pp"]) >= 0
    b = d.assignments("n1", a["ep"], pp=a["pp"])
    assert _kinds(b["endpoints"]["events"]) == ["+"] and not b["endpoints"]["full"]
    assert [t["id"] for t in b["tasks"]] == ["t1"]

    # the node's own task changes: news at once
    t1 = store.get(Task, "t1")
    store.put(t1.model_copy(update={"desired_state": "shutdown"}))
    assert d.news("n1", d.view("n1"), b["digest"], b["ep"], b["pp"]) == 0


def test_polls_are_woken_only_for_their_node(tmp_path, store):
    d = _cluster(tmp_path, store)
    for n in ("n1", "n2"):
        _node(store, n)
    svc = _service(store)
    _task(store, svc, "t1", node="n1", state="assigned")
    d.sync()
    e1, e2 = d.waiter("n1"), d.waiter("n2")
    d.assignments("n1")
    d.assignments("n2")
    e1.clear()
    e2.clear()
    t1 = store.get(Task, "t1")
    store.put(t1.model_copy(update={"desired_state": "shutdown"}))  # not a backend: no endpoint news
    d.sync()
    assert e1.is_set() and not e2.is_set()


def test_reports_from_many_nodes_share_one_commit(tmp_path, store):
    d = _cluster(tmp_path, store)
    _node(store, "n1")
    _node(store, "n2")
    svc = _service(store)
    _task(store, svc, "t1", node="n1", state="assigned")
    _task(store, svc, "t2", node="n2", state="assigned")
    rev = store.rev

    async def go():
        return await asyncio.gather(
            d.report_batched("n1", [{"task_id": "t1", "state": "running"}]),
            d.report_batched("n2", [{"task_id": "t2", "state": "running"}]),
            d.report_batched("n2", [{"task_id": "t1", "state": "running"}]),  # not its task
            return_exceptions=True)

    ok1, ok2, bad = asyncio.run(go())
    assert (ok1, ok2) == (1, 1)
    assert isinstance(bad, Forbidden)
    assert store.rev == rev + 1
    assert store.get(Task, "t1").status.state == store.get(Task, "t2").status.state == "running"


def test_own_tasks_are_sent_as_deltas_on_the_answer_the_agent_has(tmp_path, store):
    d = _cluster(tmp_path, store)
    _node(store, "n1")
    svc = _service(store)
    for i in range(3):
        _task(store, svc, f"t{i}", node="n1", state="assigned")
    a = d.assignments("n1")
    assert not a["delta"] and len(a["tasks"]) == 3
    t1 = store.get(Task, "t1")
    store.put(t1.model_copy(update={"desired_state": "shutdown"}))
    b = d.assignments("n1", a["ep"], known=a["digest"])
    assert b["delta"] and [t["id"] for t in b["tasks"]] == ["t1"]
    assert sorted(b["task_ids"]) == ["t0", "t1", "t2"]
    store.delete(Task, "t2")
    c = d.assignments("n1", b["ep"], known=b["digest"])
    assert c["delta"] and c["tasks"] == [] and sorted(c["task_ids"]) == ["t0", "t1"]
    # an agent that lost an answer asks with an older digest: it gets everything
    e = d.assignments("n1", b["ep"], known=a["digest"])
    assert not e["delta"] and sorted(t["id"] for t in e["tasks"]) == ["t0", "t1"]


def test_a_position_just_before_a_compaction_still_gets_a_delta(store, monkeypatch):
    monkeypatch.setattr(change_log, "COMPACT_MIN_EVENTS", 4)
    log = EndpointLog(store)
    svc = _service(store)
    agent = EndpointTable()
    _replay(agent, log)
    base = log.base
    for i in range(6):  # a replica flapping: events pile up over a table of one: compaction
        t = _task(store, svc, "t1", state="running", ip=f"10.210.0.{i + 2}")
        if i % 2:
            store.put(t.model_copy(update={"status": t.status.model_copy(update={"health": "unhealthy"})}))
        log.sync()
        if log.base > base:
            break
    assert log.base > base
    sl = log.since(*_pos(agent))
    assert not sl.full
    agent.apply(json.loads(b"".join(sl.parts())))
    assert _backends(agent.entries()) == _backends(log.table())


def test_a_task_placed_elsewhere_is_peer_news_not_own_news(tmp_path, store):
    """The overlay's peers travel as a log beside the endpoints: a placement on another node
    is one small peer event for this node (held back as endpoint news is), never its whole
    network again, and never a change of its own part."""
    d = _cluster(tmp_path, store)
    _node(store, "n1")
    store.put(Node(id="n2", state="ready", addr="192.168.50.3", description=NodeDescription(hostname="n2")))
    svc = _service(store)
    store.put(_task(store, svc, "t1", node="n1").model_copy(update={"addresses": {"app_default": "10.210.0.5"}}))
    d.sync()
    a = d.assignments("n1")
    assert a["peers"]["full"]
    t2 = _task(store, svc, "t2", node="n2", state="assigned", ip="10.210.0.6")
    store.put(t2.model_copy(update={"addresses": {"app_default": "10.210.0.6"}}))
    d.sync()
    v = d.view("n1")
    assert v.own_key == a["digest"]  # not n1's own news
    assert d.news("n1", v, a["digest"], a["ep"], a["pp"]) >= 0  # but news
    b = d.assignments("n1", a["ep"], known=a["digest"], pp=a["pp"])
    net = d.peers.net_num["app_default"]
    assert not b["peers"]["full"] and b["peers"]["events"] == [[net, "10.210.0.6", d.peers.node_num["n2"]]]
    assert d.news("n1", d.view("n1"), b["digest"], b["ep"], b["pp"]) == -1


def test_a_node_taking_its_address_on_a_network_changes_no_other_nodes_answer(tmp_path, store):
    """A network spanning many nodes is rewritten as each takes its address: each node is sent,
    and woken for, its own address only (the others travel in the peer log). With every node
    sent every holder's address on each such write, 1,000 nodes made ~10^6 answers."""
    from shoal.model.objects import NetworkObj

    d = _cluster(tmp_path, store)
    for n in ("n1", "n2", "n3"):
        _node(store, n)
    net = store.put(NetworkObj(id="w1", spec={"name": "app_default", "driver": "overlay"}, subnet="10.210.0.0/24",
                               gateway="10.210.0.1", vni=4097, node_addresses={"n1": "10.210.0.2"}))
    svc = _service(store)
    for i, n in enumerate(("n1", "n2", "n3")):
        _task(store, svc, f"t{i}", node=n, state="assigned", ip=f"10.210.0.{10 + i}")
    d.sync()
    a = d.assignments("n1")
    (sent,) = a["networks"]
    assert sent["node_addresses"] == {"n1": "10.210.0.2"} and sent["subnet"] == "10.210.0.0/24"
    keys = {n: d.view(n).own_key for n in ("n1", "n2", "n3")}
    assert d._network_wakes() == set()

    net = store.put(net.model_copy(update={"node_addresses": {**net.node_addresses, "n2": "10.210.0.3"}}))
    assert d._network_wakes() == {"n2"}  # (n1 hears of n2's address as peer news, paced)
    after = {n: d.view(n).own_key for n in ("n1", "n2", "n3")}
    assert after["n1"] == keys["n1"] == a["digest"] and after["n3"] == keys["n3"] and after["n2"] != keys["n2"]
    assert d.assignments("n2")["networks"][0]["node_addresses"] == {"n2": "10.210.0.3"}

    # the network itself changes (not only its holders): every node's view changes
    store.put(net.model_copy(update={"spec": net.spec.model_copy(update={"labels": {"x": "y"}})}))
    assert d._network_wakes() is None
    assert d.view("n1").own_key != a["digest"]


def test_a_nodes_view_is_kept_until_something_of_it_is_written(tmp_path, store):
    """A long poll looks at its node's view on every wake; the view is made again only when one
    of the node's tasks, or a network, config or secret, was written since."""
    from shoal.model.objects import ConfigObj, NetworkObj

    d = _cluster(tmp_path, store)
    for n in ("n1", "n2"):
        _node(store, n)
    svc = _service(store)
    _task(store, svc, "t1", node="n1")
    first = d.view("n1")
    again = d.view("n1")
    assert again.tasks is first.tasks and again.own_key == first.own_key  # kept

    _task(store, svc, "t2", node="n2", ip="10.210.0.6")  # another node's task
    assert d.view("n1").tasks is first.tasks
    assert d.view("n1").rev == store.rev  # the answer's revision is the store's now

    t1 = store.get(Task, "t1")
    store.put(t1.model_copy(update={"desired_state": "shutdown"}))  # its own task
    v = d.view("n1")
    assert v.tasks is not first.tasks and v.own_key != first.own_key and v.tasks[0].desired_state == "shutdown"

    store.put(t1.model_copy(update={"version": store.get(Task, "t1").version, "node_id": "n2"}))  # moved off it
    assert [t.id for t in d.view("n1").tasks] == [] and "t1" in [t.id for t in d.view("n2").tasks]

    kept = d.view("n2")
    store.put(NetworkObj(id="w9", spec={"name": "other", "driver": "overlay"}, subnet="10.211.0.0/24",
                         gateway="10.211.0.1", vni=4099))
    assert d.view("n2").tasks is not kept.tasks  # made again (networks are part of every view)
    kept = d.view("n2")
    store.put(ConfigObj(id="c1", name="conf", data=b"hi"))
    assert d.view("n2").tasks is not kept.tasks
