"""The SQLite store: durable writes, indexes, revisions, rollback on error."""
import asyncio

import pytest

from shoal.model.objects import ConfigObj, Service, Task
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store.sqlite import Conflict, Store


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
