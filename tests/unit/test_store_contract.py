"""The store's contract, run against every implementation: SQLite (one manager) and etcd (a
real etcd member, Debian's binary; issue #15). What a manager component may rely on,
whichever store holds the cluster: objects and their versions survive a reopen, indexes
follow writes, a failed transaction leaves nothing, conflicts are refused, specs are stored
once and pruned, a bad row is set aside and the rest loads."""
from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest

from etcd_server import EtcdServer
from shoal.model.objects import ConfigObj, Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store import Conflict
from shoal.store.base import InvalidObject
from shoal.store.etcd import EtcdStore, _b64
from shoal.store.sqlite import SqliteStore

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


class Backend:
    """Opens (and reopens) one store of a kind, and reaches under it as only a test may."""

    def __init__(self, kind: str, tmp_path, etcd: EtcdServer | None):
        self.kind = kind
        self.path = str(tmp_path / "store.db")
        self.etcd = etcd
        self.prefix = f"/test{next(_prefixes)}/"
        self.opened: list = []

    def open(self):
        st = SqliteStore(self.path) if self.kind == "sqlite" else EtcdStore(self.etcd.url, prefix=self.prefix)
        self.opened.append(st)
        return st

    def raw_put(self, kind: str, obj_id: str, data: str) -> None:
        """A row as a buggy older version might have written it."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.path)
            db.execute("INSERT OR REPLACE INTO objects(kind, id, name, version, data) VALUES (?,?,?,?,?)",
                       (kind, obj_id, None, 1, data))
            db.commit()
            db.close()
        else:
            st = EtcdStore(self.etcd.url, prefix=self.prefix)
            st.client.txn([], [{"request_put": {"key": _b64(st._okey(kind, obj_id)), "value": _b64(data)}}])
            st.close()

    def spec_rows(self) -> int:
        if self.kind == "sqlite":
            db = sqlite3.connect(self.path)
            n = db.execute("SELECT COUNT(*) FROM specs").fetchone()[0]
            db.close()
            return n
        st = EtcdStore(self.etcd.url, prefix=self.prefix)
        n = sum(1 for _ in st.client.range_prefix(st.prefix + b"s/"))
        st.close()
        return n

    def close(self) -> None:
        for st in self.opened:
            st.close()


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path, request.getfixturevalue("etcd") if request.param == "etcd" else None)
    yield b
    b.close()


def svc(name="s_web", sid="svc1", image="busybox"):
    return Service(id=sid, spec=ServiceSpec(name=name, container=ContainerSpec(image=image)))


def task(i, node=None, service=None, state="pending"):
    s = service or svc()
    return Task(id=f"t{i}", service_id=s.id, service_name=s.spec.name, slot=i, node_id=node, spec=s.spec,
                status=TaskStatus(state=state))


def test_objects_versions_and_indexes_survive_a_reopen(backend):
    st = backend.open()
    st.put(svc())
    st.put(task(1, "n1"))
    st.put(task(2, "n2", state="running"))
    st.put(ConfigObj(id="c1", name="cfg", data=b"\x00\xffbytes"))
    st.put(Node(id="n1", state="ready", description=NodeDescription(hostname="lab1")))
    rev = st.rev
    st.close()
    again = backend.open()
    assert again.rev == rev
    assert again.get(ConfigObj, "c1").data == b"\x00\xffbytes"
    assert again.by_name(Service, "s_web").id == "svc1" and again.by_name(Node, "lab1").id == "n1"
    assert sorted(t.id for t in again.tasks_of_service("svc1")) == ["t1", "t2"]
    assert [t.id for t in again.tasks_of_node("n2")] == ["t2"]
    assert [t.id for t in again.pending_tasks()] == ["t1"]
    assert again.get(Task, "t2").status.state == "running" and again.get(Task, "t2").version == 1
    # the tasks of one spec share one spec object, in the store that wrote them and after a reopen
    assert again.get(Task, "t1").spec is again.get(Task, "t2").spec
    assert '"image":"busybox"' in again.task_json(again.get(Task, "t1"))


def test_versions_move_and_an_outdated_write_is_refused(backend):
    st = backend.open()
    a = st.put(svc())
    b = st.put(a)
    assert (a.version, b.version) == (1, 2) and b.created_at == a.created_at
    with pytest.raises(Conflict):
        st.put(a, expect_version=1)
    assert backend.open().get(Service, "svc1").version == 2


def test_indexes_follow_moves_and_deletes(backend):
    st = backend.open()
    t = st.put(task(1, "n1"))
    st.put(t.model_copy(update={"node_id": "n2"}))
    assert st.tasks_of_node("n1") == [] and [x.id for x in st.tasks_of_node("n2")] == ["t1"]
    st.delete(Task, "t1")
    assert st.tasks_of_node("n2") == [] and st.tasks_of_service("svc1") == []
    assert backend.open().get(Task, "t1") is None


def test_a_failed_transaction_leaves_nothing(backend):
    st = backend.open()
    st.put(svc())
    st.put(task(1, "n1"))
    rev = st.rev
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(task(2))
            st.put(st.get(Task, "t1").model_copy(update={"node_id": "n9"}))
            raise RuntimeError("boom")
    assert st.get(Task, "t2") is None and st.rev == rev
    assert st.get(Task, "t1").node_id == "n1" and st.tasks_of_node("n9") == []
    again = backend.open()
    assert again.get(Task, "t2") is None and again.get(Task, "t1").node_id == "n1"


def test_an_empty_transaction_writes_no_revision(backend):
    st = backend.open()
    rev = st.rev
    with st.txn():
        pass
    assert st.rev == rev


def test_a_transaction_bigger_than_one_backend_commit(backend):
    """The orchestrator's first pass writes thousands of tasks in one transaction (etcd takes
    128 operations per transaction: the store commits it in parts)."""
    st = backend.open()
    s = st.put(svc())
    with st.txn():
        for i in range(600):
            st.put(task(i, f"n{i % 7}", service=s))
    assert st.count(Task) == 600
    again = backend.open()
    assert again.count(Task) == 600 and len(again.tasks_of_node("n3")) == len(st.tasks_of_node("n3"))
    assert backend.spec_rows() == 1


def test_specs_are_stored_once_and_pruned_with_their_last_task(backend):
    st = backend.open()
    v1 = st.put(svc())
    v2 = svc(image="busybox:2")
    for i in range(3):
        st.put(task(i, "n1", service=v1))
    st.put(task(9, "n1", service=v2))
    assert backend.spec_rows() == 2
    st.delete(Task, "t9")
    assert backend.spec_rows() == 1
    assert backend.open().get(Task, "t0").spec.container.image == "busybox"


def test_a_row_that_does_not_load_is_set_aside_and_the_rest_loads(backend):
    st = backend.open()
    st.put(svc())
    st.close()
    backend.raw_put("config", "bad", '{"id": "bad", "name": "cfg", "data": 12}')
    again = backend.open()
    assert again.get(Service, "svc1") is not None and again.get(ConfigObj, "bad") is None
    assert [(q["kind"], q["id"]) for q in again.quarantined()] == [("config", "bad")]
    assert backend.open().get(ConfigObj, "bad") is None  # set aside, not loaded again


def test_meta_values_persist(backend):
    st = backend.open()
    assert st.meta_get("k") is None
    st.meta_set("k", b"\x00\x01v")
    assert backend.open().meta_get("k") == b"\x00\x01v"


def test_feeds_observers_and_waiters_follow_commits(backend):
    st = backend.open()
    feed = st.change_feed()
    seen = []
    st.observe(lambda changes: seen.append([(a and a.id, b and b.id) for a, b in changes]))

    async def go():
        rev = st.rev
        waiter = asyncio.ensure_future(st.wait_for_change(rev, 5))
        await asyncio.sleep(0.01)
        st.put(svc())
        assert await waiter > rev

    asyncio.run(go())
    st.put(task(1))
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(task(2))
            raise RuntimeError("rolled back: not observed")
    assert seen == [[(None, "svc1")], [(None, "t1")]]
    tasks, services = feed.take()
    assert "t1" in tasks and services == {"svc1"}  # (a rolled-back write may be named: readers re-read)


def test_the_state_table_and_the_models_hold_for_every_writer(backend):
    st = backend.open()
    t = st.put(task(1, "n1", state="running"))
    with pytest.raises(InvalidObject, match="no actor may move"):
        st.put(t.model_copy(update={"status": TaskStatus(state="pending")}))
    node = Node(id="n1", state="ready", description=NodeDescription(hostname="x"))
    with pytest.raises(InvalidObject, match="labels.zone"):
        st.put(node.model_copy(update={"labels": {"zone": 1}}))
    assert backend.open().get(Node, "n1") is None and backend.open().quarantined() == []


# -- etcd only: another writer -----------------------------------------------------------------
def test_etcd_two_writers_never_overwrite_each_other_silently(etcd, tmp_path):
    """Two managers on one etcd: a write based on what the other has changed since is refused
    (Conflict), and the loser's view is reloaded with the winner's object."""
    b = Backend("etcd", tmp_path, etcd)
    a, c = b.open(), b.open()
    a.put(svc())
    c2 = b.open()  # sees a's service
    c2.put(c2.get(Service, "svc1").model_copy(update={"spec": svc(image="busybox:other").spec}))
    with pytest.raises(Conflict):
        a.put(a.get(Service, "svc1").model_copy(update={"spec": svc(image="busybox:mine").spec}))
    assert a.get(Service, "svc1").spec.container.image == "busybox:other"
    assert b.open().get(Service, "svc1").spec.container.image == "busybox:other"
    with pytest.raises(Conflict):  # c never saw svc1: creating it again is refused too
        c.put(svc(image="busybox:again"))
    b.close()


async def _until(pred, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "the follower's view did not catch up"
        await asyncio.sleep(0.02)


def test_etcd_a_second_manager_follows_what_the_first_commits(etcd, tmp_path):
    """Manager B's view follows manager A's commits through the watch: objects, indexes, specs
    it never saw, deletes; its observers, change feed and revision waiters hear of them; and
    B can then write on top of them without a conflict."""
    b = Backend("etcd", tmp_path, etcd)
    first, second = b.open(), b.open()
    seen: list = []
    second.observe(lambda changes: seen.extend((x and x.id, y and y.id) for x, y in changes))
    feed = second.change_feed()

    async def go():
        follower = asyncio.create_task(second.follow())
        try:
            rev = second.rev
            waiter = asyncio.ensure_future(second.wait_for_change(rev, 10))
            s = first.put(svc())
            with first.txn():
                for i in range(150):  # more than one etcd transaction, a spec B never saw
                    first.put(task(i, f"n{i % 3}", service=s))
            assert await waiter > rev
            await _until(lambda: second.count(Task) == 150)
            assert len(second.tasks_of_node("n1")) == 50 and second.get(Service, "svc1").version == 1
            assert second.get(Task, "t7").spec is second.get(Task, "t8").spec  # shared, as its own
            first.put(first.get(Task, "t7").model_copy(update={"node_id": "n9"}))
            first.delete(Task, "t8")
            await _until(lambda: second.get(Task, "t8") is None and second.tasks_of_node("n9") != [])
            assert [t.id for t in second.tasks_of_node("n9")] == ["t7"]
            assert ("t8", None) in seen and (None, "svc1") in seen
            tasks, services = feed.take()
            assert {"t7", "t8", "t0"} <= tasks and services == {"svc1"}
            # B writes on what it followed: no conflict; A follows back
            first_follows = asyncio.create_task(first.follow())
            second.put(second.get(Service, "svc1").model_copy(update={"spec": svc(image="busybox:b").spec}))
            await _until(lambda: first.get(Service, "svc1").spec.container.image == "busybox:b")
            first.put(first.get(Service, "svc1"))  # A's view has B's version: accepted
            first_follows.cancel()
            await asyncio.gather(first_follows, return_exceptions=True)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    asyncio.run(go())
    b.close()


def test_etcd_a_follower_that_missed_events_reads_the_difference(etcd, tmp_path):
    b = Backend("etcd", tmp_path, etcd)
    first = b.open()
    first.put(svc())
    for i in range(3):
        first.put(task(i, "n1"))
    second = b.open()
    first.delete(Task, "t0")  # B does not follow: it misses these
    first.put(task(5, "n2"))
    first.put(first.get(Task, "t1").model_copy(update={"node_id": "n3"}))
    second._resync()  # what a broken or compacted watch leads to
    assert second.get(Task, "t0") is None and second.get(Task, "t5").node_id == "n2"
    assert [t.id for t in second.tasks_of_node("n3")] == ["t1"]
    assert sorted(t.id for t in second.tasks_of_service("svc1")) == ["t1", "t2", "t5"]
    b.close()


def test_etcd_writes_of_services_and_networks_are_serialised_across_managers(etcd, tmp_path):
    """What the API checks on a manager's view before it creates a service, a network, a config
    or a secret -- the name is free, a subnet, VIP or port is not given -- must still hold when
    it commits: such commits compare one key every one of them bumps, so a manager whose view
    lacks another's such commit is refused (Conflict), not silently given a duplicate. Writes
    of tasks and nodes alone are not serialised."""
    b = Backend("etcd", tmp_path, etcd)
    a, c = b.open(), b.open()  # neither follows the other
    a.put(svc())
    with pytest.raises(Conflict, match="at the same moment"):  # another service, same name, other id
        c.put(svc(sid="svc2"))
    assert c.get(Service, "svc2") is None and b.open().get(Service, "svc2") is None
    c.put(Node(id="n1", description=NodeDescription(hostname="h1")))  # not serialised: accepted
    fresh = b.open()  # a view that has a's commit writes on top of it
    fresh.put(ConfigObj(id="c1", name="conf", data=b"x"))
    with pytest.raises(Conflict):
        a.put(ConfigObj(id="c2", name="conf", data=b"y"))  # a has not seen fresh's config
    assert b.open().count(ConfigObj) == 1
    b.close()


def test_etcd_several_members_are_tried_in_turn(etcd, tmp_path):
    """`--store etcd://h1:2379,h2:2379,…`: a member that does not answer is passed over."""
    from shoal.store.etcd import parse_store_url
    ep = parse_store_url(f"etcd://127.0.0.1:1,127.0.0.1:{etcd.client_port}")
    assert (ep.url, ep.more) == ("http://127.0.0.1:1", (f"http://127.0.0.1:{etcd.client_port}",))
    st = EtcdStore(ep, prefix="/several/")
    st.put(svc())
    assert st.client.url == f"http://127.0.0.1:{etcd.client_port}"
    assert EtcdStore(f"etcd://127.0.0.1:1,127.0.0.1:{etcd.client_port}", prefix="/several/").get(Service, "svc1")
    for bad in ("etcd://", "etcd://h1:x,h2:2379", "etcd://h1:2379,"):
        with pytest.raises(ValueError, match="etcd://HOST:PORT"):
            parse_store_url(bad)
    st.close()


def test_a_tasks_json_is_its_own_whether_remembered_from_its_write_or_not(backend, monkeypatch):
    """task_json reuses the text of the task's last write (the answers send a task right after
    it is written): it must be that object's JSON, for the object written, one not written
    (same id, other content) and one whose text was forgotten."""
    import json

    from shoal.store import memory
    monkeypatch.setattr(memory, "TASK_TEXTS_KEPT", 3)
    st = backend.open()

    def want(t):
        return {**json.loads(t.model_dump_json(exclude={"spec"})), "spec": json.loads(t.spec.model_dump_json())}
    written = [st.put(task(i, "n1")) for i in range(1, 6)]  # t1, t2 forgotten; t3-t5 remembered
    for t in written:
        assert json.loads(st.task_json(t)) == want(t)
        assert json.loads(st.task_json(st.get(Task, t.id))) == want(t)
    moved = written[-1].model_copy(update={"node_id": "n9"})  # not written: its own text
    assert json.loads(st.task_json(moved))["node_id"] == "n9"
    again = st.put(moved.model_copy(update={"status": moved.status.model_copy(update={"state": "assigned"})}))
    assert json.loads(st.task_json(again)) == want(again) and json.loads(st.task_json(written[-1])) == want(written[-1])
