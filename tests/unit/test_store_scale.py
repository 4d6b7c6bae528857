"""The store at scale (issue 8: 100k tasks under 500 MB): what one task costs, kept in bounds.

Small versions of the 100k-task measurements, fast enough for the unit tests: the bytes a
stored task holds in memory (tracemalloc), the bytes of its row, and that a reopened store
shares one spec object between the tasks of a spec as a running one does.
"""
import gc
import os
import sqlite3
import tracemalloc

from shoal.model.objects import Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store import memory
from shoal.store.sqlite import SqliteStore as Store

N = 2000


def spec(i):
    return ServiceSpec(name=f"st_svc{i}", stack="st", labels={"a": "b" * 40, "c": "d" * 40},
                       container=ContainerSpec(image="registry.example.com/team/app:1.2.3",
                                               env={f"VAR{k}": "x" * 30 for k in range(20)}))


def fill(st):
    services = [st.put(Service(id=f"svc{i}", spec=spec(i))) for i in range(4)]
    with st.txn():
        for k in range(N):
            s = services[k % 4]
            t = st.put(Task(id=os.urandom(12).hex(), service_id=s.id, service_name=s.spec.name, slot=k + 1,
                            node_id=f"node{k % 50}", spec=s.spec, status=TaskStatus(state="assigned")))
            st.put(t.model_copy(update={"status": TaskStatus(
                state="running", message="started", container_id=os.urandom(32).hex(),
                addresses={"st_default": f"10.0.{k // 256}.{k % 256}"})}))


def test_memory_and_row_size_per_task(tmp_path, monkeypatch):
    # (the JSON of the last writes, kept for the assignment answers, is a bounded cache, not
    # a cost per task: measured apart below)
    monkeypatch.setattr(memory, "TASK_TEXTS_KEPT", 0)
    path = str(tmp_path / "s.db")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        st = Store(path)
        fill(st)
        gc.collect()
        per_task = (tracemalloc.get_traced_memory()[0] - before) / N
    finally:
        tracemalloc.stop()
    # Measured ~1.5 KB (the task and its status, their strings, the indexes); ~5 KB before the
    # shared fields sets and interned strings (and with the old versions of a transaction's
    # objects kept until the next one).
    assert per_task < 2000, per_task
    db = sqlite3.connect(path)
    rows = db.execute("SELECT count(*), avg(length(data)) FROM objects WHERE kind='task'").fetchone()
    specs = db.execute("SELECT count(*) FROM specs").fetchone()[0]
    db.close()
    assert rows[0] == N and specs == 4
    assert rows[1] < 700, rows[1]  # the task without its spec (~1.6 KB more with it)
    tasks = st.all(Task)
    assert len({id(t.spec) for t in tasks}) == 4
    st.close()
    st2 = Store(path)
    again = st2.all(Task)
    assert len({id(t.spec) for t in again}) == 4
    assert sorted(again, key=lambda t: t.id) == sorted(tasks, key=lambda t: t.id)


def test_the_json_kept_of_the_last_writes_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "TASK_TEXTS_KEPT", 100)
    st = Store(str(tmp_path / "s.db"))
    fill(st)
    assert len(st._task_text) == 100
    newest = sorted(st.all(Task), key=lambda t: t.slot)[-100:]
    assert set(st._task_text) == {t.id for t in newest}  # the last written are the ones kept
