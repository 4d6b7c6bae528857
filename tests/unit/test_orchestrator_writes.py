"""A task the orchestrator creates and places in the same pass is written once (assigned), not
once as pending and again as assigned; one it cannot place is written once too, pending with
the scheduler's reason; nothing of a pass that failed is written by the next."""
from __future__ import annotations

import pytest

from shoal.core import task_states as ts
from shoal.manager import orchestrator as orch_mod
from shoal.manager.orchestrator import Orchestrator
from shoal.model.objects import Node, Service, Task
from shoal.model.specs import ContainerSpec, Placement, ServiceSpec
from shoal.store.sqlite import SqliteStore


def _store(tmp_path, replicas: int = 3, **spec) -> tuple[SqliteStore, list[list[tuple]]]:
    st = SqliteStore(str(tmp_path / "s.db"))
    st.put(Node(id="n1", state="ready"))
    st.put(Service(id="s1", spec=ServiceSpec(name="app_web", container=ContainerSpec(image="busybox"),
                                             replicas=replicas, **spec)))
    commits: list[list[tuple]] = []
    st.observe(lambda changes: commits.append(
        [(o and o.status.state, n and n.status.state) for o, n in changes if type(o or n) is Task]))
    return st, commits


def test_a_task_placed_in_the_pass_that_made_it_is_written_once(tmp_path):
    st, commits = _store(tmp_path)
    Orchestrator(st).tick(1000.0, budget=None)
    tasks = st.tasks_of_service("s1")
    assert len(tasks) == 3
    assert all(t.version == 1 and t.status.state == ts.ASSIGNED and t.node_id == "n1" for t in tasks)
    assert commits == [[(None, ts.ASSIGNED)] * 3]
    st.close()


def test_a_task_no_node_can_take_is_written_once_pending_with_the_reason(tmp_path):
    st, commits = _store(tmp_path, placement=Placement(constraints=["node.labels.disk == ssd"]))
    Orchestrator(st).tick(1000.0, budget=None)
    tasks = st.tasks_of_service("s1")
    assert len(tasks) == 3
    assert all(t.version == 1 and t.status.state == ts.PENDING and t.node_id is None for t in tasks)
    assert all(t.status.err == "no suitable node (scheduling constraints not satisfied on 1 node)" for t in tasks)
    assert commits == [[(None, ts.PENDING)] * 3]
    st.close()


def test_tasks_beyond_the_pass_window_are_written_pending_and_placed_by_the_next(tmp_path, monkeypatch):
    st, commits = _store(tmp_path, replicas=5)
    monkeypatch.setattr(orch_mod, "SCHEDULE_BATCH", 2)
    o = Orchestrator(st)
    o.tick(1000.0)
    states = sorted(t.status.state for t in st.tasks_of_service("s1"))
    assert states == [ts.ASSIGNED] * 2 + [ts.PENDING] * 3
    for _ in range(5):
        o.tick(1000.1)
    assert all(t.status.state == ts.ASSIGNED for t in st.tasks_of_service("s1"))
    st.close()


def test_a_failed_pass_leaves_no_task_for_the_next_to_write(tmp_path, monkeypatch):
    st, _ = _store(tmp_path)
    o = Orchestrator(st)

    def fail(*a, **k):
        raise RuntimeError("the pass fails after planning")

    monkeypatch.setattr(o, "_place", fail)
    with pytest.raises(RuntimeError):
        o.tick(1000.0, budget=None)
    assert st.tasks_of_service("s1") == []
    monkeypatch.undo()
    monkeypatch.setattr(o, "_collect_removed", fail)  # fails before anything is scheduled
    with pytest.raises(RuntimeError):
        o.tick(1000.1, budget=None)
    monkeypatch.undo()
    o.tick(1011.0, budget=None)  # (a full pass: the failed ones' changes were taken with them)
    assert len(st.tasks_of_service("s1")) == 3  # the plan's, not the failed passes' as well
    st.close()
