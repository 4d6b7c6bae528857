import pytest

from shoal.core import task_states as ts


def test_forward_only_and_terminal_sinks():
    for actor, table in ts.TRANSITIONS.items():
        for old, news in table.items():
            assert old not in ts.TERMINAL
            for new in news:
                assert ts.RANK[new] > ts.RANK[old], (actor, old, new)
    for s in ts.TERMINAL:
        for actor in ts.TRANSITIONS:
            assert not any(ts.can_move(actor, s, n) for n in ts.ORDER if n != s)


def test_actors():
    assert ts.can_move(ts.ORCHESTRATOR, ts.NEW, ts.PENDING)
    assert ts.can_move(ts.SCHEDULER, ts.PENDING, ts.ASSIGNED)
    assert not ts.can_move(ts.SCHEDULER, ts.NEW, ts.ASSIGNED)  # held tasks are never placed
    assert ts.can_move(ts.AGENT, ts.RUNNING, ts.FAILED)
    assert not ts.can_move(ts.AGENT, ts.PENDING, ts.RUNNING)
    assert ts.can_move(ts.MANAGER, ts.RUNNING, ts.ORPHANED)
    with pytest.raises(ts.InvalidTransition, match="agent may not move a task from running to pending"):
        ts.check_move(ts.AGENT, ts.RUNNING, ts.PENDING)


def test_sets_partition_states():
    assert ts.ACTIVE | ts.TERMINAL == set(ts.ORDER)
    assert not ts.ACTIVE & ts.TERMINAL
    assert ts.ON_NODE < ts.ACTIVE
    assert ts.title("running") == "Running" and ts.is_terminal("orphaned") and ts.is_active("new")


def test_plan_application_respects_the_table():
    """Whatever apply_plan does to a task is a move some actor may make."""
    from shoal.core.plan import Plan, apply_plan
    from test_reconcile_support import make_service, make_task
    svc = make_service()
    tasks = [make_task(svc, state=s, tid=s) for s in ("new", "pending", "running", "starting")]
    plan = Plan(shutdown=["new", "pending", "running"], lost=["running"], orphan=["starting"])
    for before, after in zip(tasks, apply_plan(tasks, plan, 1.0)):
        old, new = before.status.state, after.status.state
        assert ts.can_move(ts.ORCHESTRATOR, old, new) or ts.can_move(ts.MANAGER, old, new)
    assert [t.status.state for t in apply_plan(tasks, plan, 1.0)] == ["shutdown", "shutdown", "unknown", "orphaned"]


def test_plan_writes_refuse_a_move_the_table_does_not_allow():
    from shoal.core.plan import Plan, plan_writes
    from test_reconcile_support import make_service, make_task
    svc = make_service()
    done = make_task(svc, state="complete", tid="c")
    # a release of a task that is not new, or a lost task that already ended: nothing written
    assert plan_writes(Plan(release=["c"], lost=["c"]), {"c": done}, 1.0) == ([], [])


def test_the_store_lets_a_writer_make_exactly_the_moves_some_actor_may_make():
    """can_move_any reads a table made once (the store asks it on every task write): it
    answers as asking each actor's table would, for every pair of states."""
    states = set(ts.ORDER) | {s for t in ts.TRANSITIONS.values() for s in t} | {"no-such-state"}
    for old in states:
        for new in states:
            some_actor = any(ts.can_move(actor, old, new) for actor in ts.TRANSITIONS)
            assert ts.can_move_any(old, new) == (old == new or some_actor), (old, new)
