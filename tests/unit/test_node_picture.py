"""The scheduler's picture kept from the store's changes equals the one built from every task."""
from __future__ import annotations

import random

import pytest

from shoal.core import task_states as ts
from shoal.manager.node_picture import NodePicture
from shoal.model.objects import Node, NodeDescription, Task, TaskStatus
from shoal.model.specs import ServiceSpec
from shoal.scheduler.nodeinfo import FAILURE_WINDOW, build_node_infos
from shoal.store.sqlite import SqliteStore

STATES = [ts.NEW, ts.PENDING, ts.ASSIGNED, ts.RUNNING, ts.UNKNOWN, ts.FAILED, ts.SHUTDOWN, ts.COMPLETE]


def _spec(i: int) -> ServiceSpec:
    return ServiceSpec.model_validate({
        "name": f"app_s{i}", "container": {"image": "busybox"},
        "resources": {"reservations": {"nano_cpus": 100_000_000 * (i + 1), "memory_bytes": (i + 1) << 20}},
        "ports": [{"target": 80, "published": 8000 + i % 2, "mode": "host"}] if i % 3 == 0 else []})


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for nid in a:
        x, y = a[nid], b[nid]
        assert (x.cpu_free, x.mem_free, x.total, x.by_service, x.ports, x.failures) == \
               (y.cpu_free, y.mem_free, y.total, y.by_service, y.ports, y.failures), nid


@pytest.mark.parametrize("seed", range(5))
def test_kept_picture_equals_the_built_one(tmp_path, seed):
    rnd = random.Random(seed)
    st = SqliteStore(str(tmp_path / "s.db"))
    nodes = [st.put(Node(id=f"n{i}", state="ready", description=NodeDescription(nano_cpus=4 * 10**9,
                                                                                memory_bytes=1 << 33)))
             for i in range(4)]
    specs = [_spec(i) for i in range(4)]
    pic = NodePicture(st)
    now = 10_000.0
    tasks: dict[str, Task] = {}
    for step in range(300):
        r = rnd.random()
        if r < 0.5 or not tasks:  # a new task (sometimes placed already)
            i = rnd.randrange(4)
            t = Task(id=f"t{step}", service_id=f"s{i}", service_name=f"app_s{i}", slot=1, spec=specs[i],
                     node_id=rnd.choice([None, "n0", "n1", "n2", "n3", "gone"]),
                     status=TaskStatus(state=rnd.choice([ts.NEW, ts.PENDING]), timestamp=now))
        elif r < 0.9:  # it moves (any node, any state: the picture must not care how)
            old = tasks[rnd.choice(sorted(tasks))]
            t = old.model_copy(update={"node_id": rnd.choice([old.node_id, "n0", "n3"]), "status": TaskStatus(
                state=rnd.choice(STATES), timestamp=now - rnd.choice([0, FAILURE_WINDOW + 1]))})
        else:
            tid = rnd.choice(sorted(tasks))
            st.delete(Task, tid)
            del tasks[tid]
            continue
        with st.txn():
            st._write(t, None, False)  # (any move: what the picture follows, not what may happen)
        tasks[t.id] = st.get(Task, t.id)
        if step % 7 == 0:
            if rnd.random() < 0.2:
                pic.reload()
            skip = [x for x in tasks.values() if x.status.state == ts.PENDING and rnd.random() < 0.5]
            on_nodes = [x for n in nodes for x in st.tasks_of_node(n.id)]
            _same(pic.infos(nodes, now, skip=skip),
                  build_node_infos(nodes, on_nodes, now, skip={x.id for x in skip}))
    st.close()
