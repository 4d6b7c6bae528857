"""The manager's side of the overlay (issue #14): who holds which address on a network that
spans nodes (AddressBook), and which peers each node is told (the peer log, PeerLog, and the
agent's copy of it, PeerTable)."""
from __future__ import annotations

import pytest

from shoal.manager.addresses import AddressBook
from shoal.manager.allocator import AllocationError, allocate_address
import json

from shoal.manager import change_log
from shoal.manager.peers import PeerLog
from shoal.model.objects import NetworkObj, Node, Service, Task, TaskStatus
from shoal.protocol.peer_table import PeerTable
from shoal.store.sqlite import SqliteStore

NET = "shop_default"


@pytest.fixture
def st(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    s.put(NetworkObj(id="n1", spec={"name": NET, "driver": "overlay"}, subnet="10.0.9.0/29", gateway="10.0.9.1",
                     vni=4097))
    for nid, addr in (("a", "192.168.50.2"), ("b", "192.168.50.3"), ("c", "192.168.50.4")):
        s.put(Node(id=nid, state="ready", addr=addr))
    s.put(Service(id="s1", spec={"name": "shop_web", "container": {"image": "busybox"},
                                 "networks": [{"network": NET}]}))
    yield s
    s.close()


def task(st, tid: str, state: str = "pending", **kw) -> Task:
    svc = st.get(Service, "s1")
    t = Task(id=tid, service_id="s1", service_name="shop_web", slot=int(tid[1:]), spec=svc.spec,
             status=TaskStatus(state=state), **kw)
    return st.put(t)


def give(st, book: AddressBook, t: Task, node: str) -> str:
    """Place the task as the orchestrator does: its addresses from the book, written with it."""
    addresses = book.for_task(t, node)
    st.put(t.model_copy(update={"node_id": node, "addresses": addresses, "status": TaskStatus(state="assigned")}))
    return addresses[NET]


def test_addresses_are_unique_include_the_nodes_and_run_out_visibly(st):
    """A /29 has 6 host addresses, one the gateway's: 5 for tasks and their nodes."""
    book = AddressBook(st)
    got = {}
    for i, node in enumerate(("a", "b", "a")):
        t = task(st, f"t{i + 1}")
        got[t.id] = give(st, book, t, node)
    holders = st.get(NetworkObj, "n1").node_addresses
    assert set(holders) == {"a", "b"}  # each node running a task holds an address too
    every = list(got.values()) + list(holders.values())
    assert len(set(every)) == 5 and "10.0.9.1" not in every
    with pytest.raises(AllocationError, match=f"network {NET}: no free address left in 10.0.9.0/29"):
        book.for_task(task(st, "t9"), "c")


def test_an_ended_tasks_address_is_given_again_later_not_at_once(st):
    book = AddressBook(st)
    ip1 = give(st, book, task(st, "t1"), "a")
    st.put(st.get(Task, "t1").model_copy(update={"status": TaskStatus(state="shutdown")}))
    ip2 = give(st, book, task(st, "t2"), "a")
    assert ip2 != ip1  # the cursor moves on: other nodes may still hold an entry for ip1
    # the /29's other addresses (a's own among them) go first; then ip1 is taken again
    later = [give(st, book, task(st, f"t{i}"), "a") for i in range(3, 5)]
    assert ip1 not in later
    assert give(st, book, task(st, "t5"), "a") == ip1
    with pytest.raises(AllocationError):
        give(st, book, task(st, "t6"), "a")


def test_a_wanted_address_is_refused_when_another_task_holds_it(st):
    book = AddressBook(st)
    ip = give(st, book, task(st, "t1"), "a")
    svc = st.get(Service, "s1")
    spec = svc.spec.model_copy(update={"networks": [svc.spec.networks[0].model_copy(update={"ipv4_address": ip})]})
    t2 = st.put(Task(id="t2", service_id="s1", service_name="shop_web", slot=2, spec=spec))
    with pytest.raises(AllocationError, match="already in use"):
        book.for_task(t2, "b")


def test_settling_gives_back_the_addresses_of_nodes_that_hold_the_network_no_more(st):
    book = AddressBook(st)
    book.ensure_node("a", [NET])
    book.ensure_node("b", [NET])
    book.settle_nodes({NET: {"b", "c"}})
    held = st.get(NetworkObj, "n1").node_addresses
    assert set(held) == {"b", "c"} and len(set(held.values())) == 2


def test_the_search_starts_after_the_last_address_given():
    taken = {"10.0.0.2"}
    ip, nxt = allocate_address("10.0.0.0/29", "10.0.0.1", taken.__contains__)
    assert ip == "10.0.0.3"
    ip2, _ = allocate_address("10.0.0.0/29", "10.0.0.1", taken.__contains__, nxt)
    assert ip2 == "10.0.0.4"


def placed(st, tid: str, node: str, ip: str, state: str = "running") -> None:
    t = st.get(Task, tid) or task(st, tid)
    if t.status.state == "pending":
        t = st.put(t.model_copy(update={"node_id": node, "addresses": {NET: ip}, "status": TaskStatus(state="assigned")}))
    if state != "assigned":
        st.put(t.model_copy(update={"status": TaskStatus(state=state)}))


def follow(log: PeerLog, table: PeerTable) -> dict:
    """One poll of an agent at the table's position: the slice it gets, applied."""
    log.sync()
    got = json.loads(b"".join(log.since(table.epoch, table.seq).parts()))
    table.apply(got)
    return got


def test_each_node_is_told_every_endpoint_on_other_nodes_with_that_nodes_address(st):
    placed(st, "t1", "a", "10.0.9.2")
    placed(st, "t2", "b", "10.0.9.3", state="assigned")  # placed, not running yet: a peer already
    net = st.get(NetworkObj, "n1")
    st.put(net.model_copy(update={"node_addresses": {"a": "10.0.9.5", "b": "10.0.9.6"}}))
    log = PeerLog(st)
    want_a = [["10.0.9.3", "192.168.50.3"], ["10.0.9.6", "192.168.50.3"]]
    want_c = sorted([["10.0.9.2", "192.168.50.2"], ["10.0.9.3", "192.168.50.3"],
                     ["10.0.9.5", "192.168.50.2"], ["10.0.9.6", "192.168.50.3"]])
    assert log.peers(NET, "a") == want_a and log.peers(NET, "c") == want_c
    agent = PeerTable()
    assert follow(log, agent)["full"]
    assert [list(p) for p in agent.peers(NET, "a")] == want_a
    assert [list(p) for p in agent.peers(NET, "c")] == want_c


def test_peers_follow_tasks_ending_and_nodes_going_down_as_small_deltas(st):
    placed(st, "t1", "a", "10.0.9.2")
    placed(st, "t2", "b", "10.0.9.3")
    log = PeerLog(st)
    agent = PeerTable()
    follow(log, agent)
    st.put(st.get(Task, "t2").model_copy(update={"status": TaskStatus(state="failed")}))
    got = follow(log, agent)
    assert not got["full"] and got["events"] == [["-", log.net_num[NET], "10.0.9.3"]]
    assert agent.peers(NET, "a") == []
    assert follow(log, agent)["events"] == []  # nothing moved: nothing sent
    placed(st, "t3", "b", "10.0.9.4")
    follow(log, agent)
    assert agent.peers(NET, "a") == [("10.0.9.4", "192.168.50.3")]
    st.put(st.get(Node, "b").model_copy(update={"state": "down"}))
    got = follow(log, agent)
    assert got["events"] == [["n", log.node_num["b"], "b", ""]]  # one event, not the network again
    assert agent.peers(NET, "a") == []  # a down node's endpoints are not peers
    st.put(st.get(Node, "b").model_copy(update={"state": "ready"}))
    follow(log, agent)
    assert agent.peers(NET, "a") == [("10.0.9.4", "192.168.50.3")]


def test_an_address_handed_from_an_ended_task_to_a_new_one_stays(st):
    """The new holder's entry is written before the old holder's end is seen: the old one's
    removal must not take the new one's entry with it."""
    placed(st, "t1", "a", "10.0.9.2")
    log = PeerLog(st)
    agent = PeerTable()
    follow(log, agent)
    placed(st, "t2", "b", "10.0.9.2")
    log.sync()  # t2 first
    st.put(st.get(Task, "t1").model_copy(update={"status": TaskStatus(state="shutdown")}))
    follow(log, agent)
    assert agent.peers(NET, "c") == [("10.0.9.2", "192.168.50.3")]
    assert log.peers(NET, "c") == [["10.0.9.2", "192.168.50.3"]]


def test_a_network_that_goes_takes_its_entries_and_an_agent_never_sees_its_own(st):
    placed(st, "t1", "a", "10.0.9.2")
    placed(st, "t2", "b", "10.0.9.3")
    log = PeerLog(st)
    agent = PeerTable()
    follow(log, agent)
    assert agent.peers(NET, "b") == [("10.0.9.2", "192.168.50.2")]
    log_net = log.net_num[NET]
    for tid in ("t1", "t2"):
        st.delete(Task, tid)
    st.delete(NetworkObj, "n1")
    got = follow(log, agent)
    assert ["wx", log_net] in got["events"]
    assert agent.peers(NET, "b") == [] and NET not in agent.at


def test_a_compacted_log_replays_to_the_same_table_from_any_position(st, monkeypatch):
    monkeypatch.setattr(change_log, "COMPACT_MIN_EVENTS", 6)
    log = PeerLog(st)
    early, late = PeerTable(), PeerTable()
    follow(log, early)
    for i in range(2, 7):
        placed(st, f"t{i}", "ab"[i % 2], f"10.0.9.{i}")
        follow(log, late)
        if i < 6:
            st.put(st.get(Task, f"t{i}").model_copy(update={"status": TaskStatus(state="complete")}))
    got = follow(log, early)  # from before the compaction: the snapshot
    follow(log, late)
    fresh = PeerTable()
    follow(log, fresh)
    want = [("10.0.9.6", "192.168.50.2")]
    assert early.peers(NET, "c") == late.peers(NET, "c") == fresh.peers(NET, "c") == want
    assert log.base > 1 and got["seq"] == log.seq


def test_another_epoch_starts_the_agents_table_afresh(st):
    placed(st, "t1", "a", "10.0.9.2")
    agent = PeerTable()
    follow(PeerLog(st), agent)
    agent.at[NET]["10.0.9.99"] = 1  # something an older manager said
    got = follow(PeerLog(st), agent)  # a restarted manager: a new epoch
    assert got["full"] and agent.peers(NET, "c") == [("10.0.9.2", "192.168.50.2")]


def test_a_manager_leading_again_never_gives_an_address_another_leader_gave(st):
    """Found in the lab: a manager led (its address book loaded), another led meanwhile and
    gave a new task an address, then the first led again and gave that address once more
    (the new task failed to start). Each leadership starts with a fresh book."""
    import asyncio

    from shoal.manager.orchestrator import Orchestrator
    orch = Orchestrator(st)
    first = give(st, orch.addresses, task(st, "t1"), "a")  # this manager's first leadership
    # the other manager's leadership: it gives t2 the next address, which this one never saw
    other = give(st, AddressBook(st), task(st, "t2"), "b")

    async def lead_briefly():
        run = asyncio.ensure_future(orch.run())
        await asyncio.sleep(0)  # run() starts: a new leadership
        run.cancel()
    asyncio.run(lead_briefly())
    again = give(st, orch.addresses, task(st, "t3"), "c")
    assert again not in (first, other)
