"""The orchestrator's full passes over every service: every 10 s in a small cluster, further
apart when a sweep over every service costs more than its share of the time (100,000 tasks)."""
from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

from shoal.manager import orchestrator as orch_mod
from shoal.manager.orchestrator import Orchestrator
from shoal.model.objects import Node, Service
from shoal.model.specs import ContainerSpec, ServiceSpec
from shoal.store.sqlite import SqliteStore


def _store(tmp_path, services: int) -> SqliteStore:
    st = SqliteStore(str(tmp_path / "s.db"))
    st.put(Node(id="n1", state="ready"))
    for i in range(services):
        st.put(Service(id=f"s{i}", spec=ServiceSpec(name=f"app_s{i}", container=ContainerSpec(image="busybox"),
                                                    replicas=2)))
    return st


def test_the_interval_follows_the_cost_of_a_sweep():
    o = Orchestrator.__new__(Orchestrator)
    for cost, every in ((0.0, 10.0), (0.2, 10.0), (2.5, 50.0), (30.0, 120.0)):
        o._full_cost = cost
        assert o.full_pass_every() == every


def test_a_sweep_carried_over_several_passes_records_its_cost(tmp_path, monkeypatch):
    st = _store(tmp_path, 5)
    o = Orchestrator(st)
    ticks = itertools.count()
    # a clock that moves a second each time the pass looks: one service per pass fits the budget
    monkeypatch.setattr(orch_mod, "time", SimpleNamespace(monotonic=lambda: float(next(ticks)),
                                                          perf_counter=time.perf_counter, time=time.time))
    o.tick(1000.0, budget=1.5)  # the first pass is full
    assert len(o._sweep) == 4 and o._full_cost == 0.0
    for _ in range(20):  # the rest, carried over (the clock moves elsewhere too: a pass may plan none)
        if not o._sweep:
            break
        assert o._full_cost == 0.0
        o.tick(1000.1, budget=1.5)
    assert not o._sweep and o._full_cost > 0.0
    # a removed service does not hold a sweep open
    o._full_cost = 0.0
    o.tick(1030.0, budget=1.5)
    assert len(o._sweep) == 4
    for i in range(5):
        st.delete(Service, f"s{i}")
    o.tick(1030.1, budget=1.5)
    assert not o._sweep
    st.close()


def test_a_pass_does_not_plan_a_service_again_for_the_tasks_it_wrote_itself(tmp_path, monkeypatch):
    """The tasks a plan creates are the plan done: the next incremental pass does not walk that
    service again (a deploy of 100 services × 1,000 tasks planned each one twice); a write by
    someone else (here a task's failure) still wakes it, and it replaces the task."""
    from shoal.core import task_states as ts
    from shoal.core.orchestrate import orchestrate as core_orchestrate
    from shoal.model.objects import TaskStatus

    st = _store(tmp_path, 2)
    o = Orchestrator(st)
    planned: list[str] = []

    def counting(svc, *a, **k):
        planned.append(svc.id)
        return core_orchestrate(svc, *a, **k)

    monkeypatch.setattr(orch_mod, "orchestrate", counting)
    o.tick(1000.0, budget=None)  # the first pass is full: both services get their tasks
    assert sorted(planned) == ["s0", "s1"] and len(st.tasks_of_service("s0")) == 2
    planned.clear()
    o.tick(1000.1, budget=None)
    assert planned == []
    t = next(t for t in st.tasks_of_service("s1") if t.status.state == ts.ASSIGNED)
    st.put(t.model_copy(update={"status": TaskStatus(state=ts.FAILED, timestamp=1000.2, err="exit 1")}))
    o.tick(1000.3, budget=None)
    assert planned == ["s1"]
    assert len([t for t in st.tasks_of_service("s1") if t.desired_state == ts.RUNNING]) == 2
    st.close()
