"""The SQLite store: durable writes, indexes, revisions, rollback on error."""
import asyncio
import json
import random
import sqlite3

import pytest

import shoal.store.sqlite as sqlite_store
from shoal.model.objects import ConfigObj, Node, NodeDescription, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store import Conflict
from shoal.store.sqlite import SqliteStore as Store


def svc(name="s_web"):
    return Service(id="svc1", spec=ServiceSpec(name=name, container=ContainerSpec(image="busybox")))


def task(i, node=None):
    s = svc()
    return Task(id=f"t{i}", service_id=s.id, service_name=s.spec.name, slot=i, node_id=node, spec=s.spec)


def test_put_get_and_reload(tmp_path):
    path = str(tmp_path / "store.db")
    st = Store(path)
    st.put(svc())
    st.put(task(1, "n1"))
    st.put(ConfigObj(id="c1", name="cfg", data=b"\x00\xffbytes"))
    assert st.by_name(Service, "s_web").id == "svc1"
    rev = st.rev
    st.close()
    st2 = Store(path)
    assert st2.rev == rev
    assert st2.get(ConfigObj, "c1").data == b"\x00\xffbytes"
    assert [t.id for t in st2.tasks_of_node("n1")] == ["t1"]
    assert [t.id for t in st2.tasks_of_service("svc1")] == ["t1"]


def test_versions_and_conflicts(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    a = st.put(svc())
    assert a.version == 1
    b = st.put(a)
    assert b.version == 2 and b.created_at == a.created_at
    with pytest.raises(Conflict):
        st.put(a, expect_version=1)


def test_reindex_when_task_moves_node(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    t = st.put(task(1, "n1"))
    st.put(t.model_copy(update={"node_id": "n2"}))
    assert st.tasks_of_node("n1") == []
    assert [x.id for x in st.tasks_of_node("n2")] == ["t1"]
    st.delete(Task, "t1")
    assert st.tasks_of_node("n2") == [] and st.tasks_of_service("svc1") == []


def test_failed_transaction_leaves_nothing(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    st.put(svc())
    rev = st.rev
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(task(1))
            raise RuntimeError("boom")
    assert st.get(Task, "t1") is None and st.rev == rev
    st.close()
    assert Store(str(tmp_path / "s.db")).get(Task, "t1") is None


def test_empty_transaction_does_not_bump_revision(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    rev = st.rev
    with st.txn():
        pass
    assert st.rev == rev


def test_wait_for_change():
    async def go(tmp):
        st = Store(tmp)
        rev = st.rev
        waiter = asyncio.create_task(st.wait_for_change(rev, 5))
        await asyncio.sleep(0.01)
        st.put(svc())
        assert await waiter == rev + 1
        assert await st.wait_for_change(st.rev, 0.05) == st.rev
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(os.path.join(d, "s.db")))


# -- specs stored once, tasks sharing objects -------------------------------------------------
def spec_rows(path):
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, data FROM specs"))
    finally:
        db.close()


def task_rows(path):
    db = sqlite3.connect(path)
    try:
        return {i: (data, key) for i, data, key in
                db.execute("SELECT id, data, spec_key FROM objects WHERE kind='task'")}
    finally:
        db.close()


def svc_task(i, image="busybox", node="n1", state="running", service_id="svc1", name="s_web"):
    spec = ServiceSpec(name=name, container=ContainerSpec(image=image))
    return Task(id=f"t{i}", service_id=service_id, service_name=name, slot=i, node_id=node, spec=spec,
                status=TaskStatus(state=state, message="started", addresses={"s_default": f"10.0.0.{i}"}))


def test_specs_stored_once_and_shared(tmp_path):
    path = str(tmp_path / "s.db")
    st = Store(path)
    with st.txn():
        for i in range(10):
            st.put(svc_task(i))  # ten equal specs, ten objects
        for i in range(10, 13):
            st.put(svc_task(i, image="nginx"))
    rows = spec_rows(path)
    assert len(rows) == 2
    tasks = task_rows(path)
    assert len(tasks) == 13
    for data, key in tasks.values():
        assert "spec" not in json.loads(data) and key in rows
    busy = [st.get(Task, f"t{i}") for i in range(10)]
    assert all(t.spec is busy[0].spec for t in busy)  # one object in memory
    assert st.get(Task, "t10").spec is st.get(Task, "t12").spec is not busy[0].spec
    assert {json.loads(d)["container"]["image"] for d in rows.values()} == {"busybox", "nginx"}


def test_reopened_store_gives_equal_objects(tmp_path):
    path = str(tmp_path / "s.db")
    st = Store(path)
    st.put(svc())
    st.put(Node(id="n1", description=NodeDescription(hostname="h1")))
    with st.txn():
        for i in range(5):
            st.put(svc_task(i, node=f"n{i % 2}", image="busybox" if i < 3 else "nginx"))
    before = {cls: sorted(st.all(cls), key=lambda o: o.id) for cls in (Service, Node, Task)}
    rev = st.rev
    st.close()
    st2 = Store(path)
    assert st2.rev == rev
    for cls, objs in before.items():
        assert sorted(st2.all(cls), key=lambda o: o.id) == objs
    t = [st2.get(Task, f"t{i}") for i in range(5)]
    assert t[0].spec is t[1].spec is t[2].spec and t[3].spec is t[4].spec and t[0].spec is not t[3].spec
    assert [x.id for x in st2.tasks_of_node("n1")] == ["t1", "t3"]
    assert st2.get(Task, "t1").status.addresses == {"s_default": "10.0.0.1"}
    # written again after reopening: still one spec row each
    st2.put(t[0].model_copy(update={"desired_state": "shutdown"}))
    st2.put(svc_task(9))  # a new spec object equal to a stored one
    assert st2.get(Task, "t9").spec is t[0].spec
    assert len(spec_rows(path)) == 2


def old_format_db(path, tasks, services=()):
    """A store as the versions before the specs table wrote it."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE objects (kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT, version INTEGER NOT NULL,
                              data TEXT NOT NULL, PRIMARY KEY (kind, id));
        CREATE INDEX objects_name ON objects (kind, name);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    """)
    for s in services:
        db.execute("INSERT INTO objects VALUES ('service', ?, ?, ?, ?)", (s.id, s.spec.name, s.version, s.model_dump_json()))
    for t in tasks:
        db.execute("INSERT INTO objects VALUES ('task', ?, ?, ?, ?)", (t.id, t.service_id, t.version, t.model_dump_json()))
    db.execute("INSERT INTO meta VALUES ('rev', '7')")
    db.commit()
    db.close()


def test_old_format_store_loads_and_is_migrated(tmp_path):
    path = str(tmp_path / "s.db")
    tasks = [svc_task(i, image="busybox" if i < 4 else "nginx").model_copy(update={"version": 3, "created_at": 5.0})
             for i in range(6)]
    old_format_db(path, tasks, [svc()])
    st = Store(path)
    assert st.rev == 7  # migrating is no change
    assert sorted(st.all(Task), key=lambda t: t.id) == tasks
    assert st.get(Service, "svc1") is not None
    t = [st.get(Task, f"t{i}") for i in range(6)]
    assert all(x.spec is t[0].spec for x in t[:4]) and t[4].spec is t[5].spec is not t[0].spec
    rows = spec_rows(path)
    assert len(rows) == 2
    for data, key in task_rows(path).values():
        assert "spec" not in json.loads(data) and key in rows
    assert json.loads(st.task_json(t[0])) == json.loads(tasks[0].model_dump_json())
    st.put(t[0].model_copy(update={"desired_state": "shutdown"}))
    st.close()
    st2 = Store(path)
    assert st2.get(Task, "t0").desired_state == "shutdown"
    assert sorted(st2.all(Task), key=lambda t: t.id)[1:] == tasks[1:]


def test_task_json_has_the_spec_inside_as_before(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    t = st.put(svc_task(1))
    js = st.task_json(t)
    # exactly what the store always sent: the task's fields, then its spec
    body = t.model_dump_json(exclude={"spec"})
    assert js == f'{body[:-1]},"spec":{t.spec.model_dump_json()}}}'
    assert json.loads(js) == json.loads(t.model_dump_json())
    assert Task.model_validate_json(js) == t
    # a task the store does not hold (an old version), of a spec it never saw
    other = svc_task(2, image="alpine")
    assert json.loads(st.task_json(other)) == json.loads(other.model_dump_json())


def test_spec_rows_pruned(tmp_path):
    path = str(tmp_path / "s.db")
    st = Store(path)
    with st.txn():
        for i in range(3):
            st.put(svc_task(i))
        st.put(svc_task(3, image="nginx"))
    assert len(spec_rows(path)) == 2
    # the last task of a spec moves to another spec: the row goes in the same transaction
    st.put(svc_task(3, image="alpine"))
    assert {json.loads(d)["container"]["image"] for d in spec_rows(path).values()} == {"busybox", "alpine"}
    # deleted, one by one
    st.delete(Task, "t0")
    st.delete(Task, "t1")
    assert len(spec_rows(path)) == 2
    st.delete(Task, "t2")
    assert {json.loads(d)["container"]["image"] for d in spec_rows(path).values()} == {"alpine"}
    # deleted and put back in one transaction: kept
    with st.txn():
        st.delete(Task, "t3")
        st.put(svc_task(3, image="alpine"))
    assert len(spec_rows(path)) == 1
    assert len(st._specs) == 1  # nothing left behind in memory either
    # a row no task refers to (a crash, an older version) is pruned when the store opens
    st.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO specs VALUES ('orphan', 'x', '{}')")
    db.commit()
    db.close()
    st = Store(path)
    assert list(spec_rows(path)) == [st._spec_entry(st.get(Task, "t3").spec).key]
    assert st.get(Task, "t3").spec.container.image == "alpine"


def test_rollback_restores_specs(tmp_path):
    path = str(tmp_path / "s.db")
    st = Store(path)
    st.put(svc_task(1))
    rows = spec_rows(path)
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(svc_task(2, image="nginx"))  # a new spec
            st.delete(Task, "t1")  # the last task of the old one
            raise RuntimeError("boom")
    assert spec_rows(path) == rows
    assert st.get(Task, "t2") is None and st.get(Task, "t1") is not None
    assert len(st._specs) == 1
    st.put(svc_task(3))
    st.delete(Task, "t1")
    st.delete(Task, "t3")
    assert spec_rows(path) == {} and st._specs == {}
    st.close()
    assert Store(path).all(Task) == []


def test_long_transaction_flushed_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_FLUSH_ROWS", 3)
    path = str(tmp_path / "s.db")
    st = Store(path)
    feed = st.change_feed()
    rev = st.rev
    with pytest.raises(RuntimeError):
        with st.txn():
            for i in range(10):
                st.put(svc_task(i))
            raise RuntimeError("boom")
    assert st.all(Task) == [] and st.rev == rev and task_rows(path) == {} and spec_rows(path) == {}
    with st.txn():
        for i in range(10):
            t = st.put(svc_task(i))
            st.put(t.model_copy(update={"desired_state": "shutdown"}))
        st.delete(Task, "t0")
    assert st.rev == rev + 1
    assert sorted(task_rows(path)) == sorted(f"t{i}" for i in range(1, 10))
    tasks, _ = feed.take()
    assert tasks == {f"t{i}" for i in range(10)}
    st.close()
    st2 = Store(path)
    assert {t.id: (t.version, t.desired_state) for t in st2.all(Task)} == {f"t{i}": (2, "shutdown") for i in range(1, 10)}


def test_name_column_follows_renames(tmp_path):
    path = str(tmp_path / "s.db")
    st = Store(path)
    n = st.put(Node(id="n1", description=NodeDescription(hostname="h1")))
    st.put(n.model_copy(update={"description": NodeDescription(hostname="h2")}))
    db = sqlite3.connect(path)
    assert db.execute("SELECT name, version FROM objects WHERE kind='node'").fetchall() == [("h2", 2)]
    db.close()
    st.close()
    assert Store(path).by_name(Node, "h2").id == "n1"


def test_shared_fields_set_is_safe(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    fresh = Task(id="t1", service_id="svc1", service_name="s_web", spec=svc().spec)
    assert fresh.model_fields_set == {"id", "service_id", "service_name", "spec"}
    a = st.put(fresh)
    b = st.put(svc_task(2))
    all_fields = set(Task.model_fields)
    assert a.model_fields_set == all_fields and a.model_fields_set is b.model_fields_set
    assert a.status.model_fields_set is b.status.model_fields_set
    # copies get a set of their own, and updating it leaves the shared one alone
    c = a.model_copy(update={"desired_state": "shutdown"})
    assert c.model_fields_set is not a.model_fields_set
    c.node_id = "n9"
    assert a.model_fields_set == all_fields and a.node_id is None and b.node_id == "n1"
    s = a.status.model_copy(update={"state": "running"})
    assert s.model_fields_set == set(TaskStatus.model_fields) and a.status.state == "new"
    # models made outside the store keep their own sets (exclude_unset as ever)
    assert TaskStatus(state="running").model_dump(exclude_unset=True) == {"state": "running"}
    assert Task(id="x", service_id="s", service_name="n", spec=svc().spec).model_dump(
        exclude_unset=True, exclude={"spec"}) == {"id": "x", "service_id": "s", "service_name": "n"}
    # and stored ones dump every field
    assert set(a.model_dump(exclude_unset=True)) == all_fields
    assert st.get(Task, "t1") == a and a == fresh.model_copy(update={
        "version": 1, "created_at": a.created_at, "updated_at": a.updated_at})


def check_specs(st, path):
    """The spec bookkeeping agrees with the tasks in memory and with the database."""
    used: dict = {}
    for t in st.all(Task):
        key = st._spec_entry(t.spec).key
        assert st._specs[key].spec is t.spec  # one object per spec
        used[key] = used.get(key, 0) + 1
    assert {k: e.refs for k, e in st._specs.items()} == used
    assert set(spec_rows(path)) == set(used)
    assert {i: key for i, (_d, key) in task_rows(path).items()} == {
        t.id: st._spec_entry(t.spec).key for t in st.all(Task)}


def test_spec_bookkeeping_random_operations(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_FLUSH_ROWS", 4)
    rnd = random.Random(8)
    path = str(tmp_path / "s.db")
    st = Store(path)
    images = ["a", "b", "c", "d"]
    for step in range(60):
        try:
            with st.txn():
                for _ in range(rnd.randint(1, 8)):
                    i = rnd.randrange(12)
                    if rnd.random() < 0.3:
                        st.delete(Task, f"t{i}")
                    elif rnd.random() < 0.5 and st.get(Task, f"t{i}") is not None:
                        t = st.get(Task, f"t{i}")
                        st.put(t.model_copy(update={"attempt": t.attempt + 1}))
                    else:
                        st.put(svc_task(i, image=rnd.choice(images), node=f"n{i % 3}"))
                if rnd.random() < 0.25:
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
        check_specs(st, path)
        if step % 20 == 19:
            tasks = sorted(st.all(Task), key=lambda t: t.id)
            st.close()
            st = Store(path)
            assert sorted(st.all(Task), key=lambda t: t.id) == tasks
            check_specs(st, path)


def test_quiet_write_is_not_reported_by_take_changes(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    st.put(svc())
    t = st.put(task(1, "n1"))
    st.take_changes()
    feed = st.change_feed()
    rev, seq = st.rev, st.service_seq("svc1")
    t2 = st.put(t.model_copy(update={"status": TaskStatus(state="pending")}), quiet=True)
    assert st.take_changes() == (set(), False)
    # otherwise a write like any other
    assert t2.version == 2 and st.get(Task, "t1") is t2 and st.rev == rev + 1
    assert st.service_seq("svc1") > seq and feed.take() == ({"t1"}, set())
    st.put(t2)
    assert st.take_changes() == ({"svc1"}, False)


# -- the one validated write path, and loads that survive a bad row (issue #12) -------------

def test_put_refuses_what_its_model_refuses(tmp_path):
    """model_copy(update=…) skips validation: the store's put does not, so nothing that would
    fail the next load is ever written (a label that is not a string, a non-finite number)."""
    from shoal.store import InvalidObject
    st = Store(str(tmp_path / "s.db"))
    node = st.put(Node(id="n1", description=NodeDescription(hostname="h1")))
    with pytest.raises(InvalidObject, match="labels.zone"):
        st.put(node.model_copy(update={"labels": {"zone": 1}}))
    s = st.put(svc())
    bad = s.spec.model_copy(update={"container": s.spec.container.model_copy(
        update={"stop_grace_period": float("inf")})})
    with pytest.raises(InvalidObject, match="stop_grace_period"):
        st.put(s.model_copy(update={"spec": bad}))
    with pytest.raises(InvalidObject, match="replicas"):
        st.put(s.model_copy(update={"spec": s.spec.model_copy(update={"replicas": 10**20})}))
    t = st.put(task(1, "n1"))
    with pytest.raises(InvalidObject, match="status.exit_code"):
        st.put(t.model_copy(update={"status": t.status.model_copy(update={"exit_code": "x"})}))
    # a task of a spec never seen before: its spec is checked once
    with pytest.raises(InvalidObject, match="stop_grace_period"):
        st.put(t.model_copy(update={"id": "t2", "spec": bad}))
    st.close()
    st2 = Store(str(tmp_path / "s.db"))  # what was stored still loads, unchanged
    assert st2.get(Node, "n1").labels == {} and st2.get(Service, "svc1").spec.replicas == 1
    assert st2.quarantined() == []


def test_a_bad_row_is_quarantined_and_the_rest_loads(tmp_path, caplog):
    path = str(tmp_path / "s.db")
    st = Store(path)
    st.put(svc())
    st.put(task(1, "n1"))
    st.put(Node(id="n1", description=NodeDescription(hostname="h1")))
    st.close()
    db = sqlite3.connect(path)
    row = json.loads(db.execute("SELECT data FROM objects WHERE kind='service'").fetchone()[0])
    row["spec"]["container"]["stop_grace_period"] = None  # how an overflowed float was stored
    db.execute("UPDATE objects SET data=? WHERE kind='service'", (json.dumps(row),))
    db.execute("INSERT INTO objects(kind, id, name, version, data) VALUES ('node','n2','x',1,'{not json')")
    db.commit()
    db.close()
    with caplog.at_level("ERROR", logger="shoal.store"):
        st2 = Store(path)
    assert st2.get(Service, "svc1") is None
    assert st2.get(Node, "n1") is not None and [t.id for t in st2.tasks_of_node("n1")] == ["t1"]
    q = {(r["kind"], r["id"]): r["error"] for r in st2.quarantined()}
    assert set(q) == {("service", "svc1"), ("node", "n2")}
    assert "stop_grace_period" in q[("service", "svc1")]
    assert "service svc1 (name s_web)" in caplog.text and "node n2" in caplog.text
    st2.close()
    st3 = Store(path)  # set aside once: the next load is clean and keeps the quarantine
    assert len(st3.quarantined()) == 2


def test_no_writer_may_move_a_task_against_the_state_table(tmp_path):
    from shoal.store import InvalidObject
    st = Store(str(tmp_path / "s.db"))
    t = st.put(task(1, "n1").model_copy(update={"status": TaskStatus(state="running")}))
    for bad in ("starting", "pending", "new"):  # backwards
        with pytest.raises(InvalidObject, match=f"from running to {bad}"):
            st.put(t.model_copy(update={"status": TaskStatus(state=bad)}))
    t = st.put(t.model_copy(update={"status": TaskStatus(state="unknown")}))  # node down
    with pytest.raises(InvalidObject, match="from unknown to running"):
        st.put(t.model_copy(update={"status": TaskStatus(state="running")}))
    st.put(t.model_copy(update={"status": TaskStatus(state="shutdown")}))  # the node reports back


def test_commits_are_durable(tmp_path):
    st = Store(str(tmp_path / "s.db"))
    assert st.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_put_all_checks_every_object_before_writing_any(tmp_path):
    """An agent's report is applied whole or not at all (put_all): an invalid object, or a move
    no actor may make, anywhere in the batch writes nothing; a valid batch writes each object
    once, quiet or not as asked."""
    from shoal.store import InvalidObject
    st = Store(str(tmp_path / "store.db"))
    st.put(svc())
    for i in (1, 2):
        st.put(task(i, "n1").model_copy(update={"status": TaskStatus(state="assigned")}))
    rev = st.rev
    running = st.get(Task, "t1").model_copy(update={"status": TaskStatus(state="running")})
    bad = st.get(Task, "t2").model_copy(update={"status": TaskStatus.model_construct(state="running", exit_code="x")})
    with st.txn(), pytest.raises(InvalidObject, match="exit_code"):
        st.put_all([running, bad], [True, True])
    back = st.get(Task, "t2").model_copy(update={"status": TaskStatus(state="pending")})  # assigned -> pending
    with st.txn(), pytest.raises(InvalidObject, match="from assigned to pending"):
        st.put_all([running, back], [True, True])
    assert st.rev == rev and st.get(Task, "t1").status.state == "assigned"
    # in one batch, a task's later update is checked against its earlier one
    starting = running.model_copy(update={"status": TaskStatus(state="starting")})
    with st.txn():
        st.put_all([starting, running], [True, False])
    assert st.get(Task, "t1").status.state == "running" and st.rev == rev + 1
    assert st.take_changes()[0] == {"svc1"}
    st.close()
