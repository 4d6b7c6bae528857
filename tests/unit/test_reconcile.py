from hypothesis import given, settings, strategies as st

from shoal.core.deps import deps_status
from shoal.core.plan import apply_plan
from shoal.core.reconcile import reconcile
from shoal.model.specs import Dependency, HealthCheck, Placement, RestartPolicy
from test_reconcile_support import ids, make_node, make_service, make_spec, make_task

NODES = [make_node("n1"), make_node("n2")]


def rec(svc, tasks, nodes=NODES, now=100.0, **kw):
    return reconcile(svc, tasks, nodes, now, id_factory=ids(), **kw)


def test_creates_missing_slots_pending():
    svc = make_service(make_spec(replicas=3))
    plan = rec(svc, [make_task(svc, slot=2)])
    assert sorted(t.slot for t in plan.create) == [1, 3]
    t = plan.create[0]
    assert t.status.state == "pending" and t.desired_state == "running" and t.spec == svc.spec
    assert t.spec_version == svc.spec_version and t.node_id is None and t.not_before == 0


def test_scale_down_shuts_highest_slots_and_then_removes_them():
    svc = make_service(make_spec(replicas=2))
    tasks = [make_task(svc, slot=i, tid=f"s{i}") for i in range(1, 5)]
    plan = rec(svc, tasks)
    assert sorted(plan.shutdown) == ["s3", "s4"] and not plan.create and not plan.remove
    stopped = [t.model_copy(update={"status": t.status.model_copy(update={"state": "shutdown"}),
                                    "desired_state": "shutdown"}) if t.slot > 2 else t for t in tasks]
    assert sorted(rec(svc, stopped).remove) == ["s3", "s4"]


def test_restart_any_with_delay_and_attempts():
    svc = make_service(make_spec(restart_policy=RestartPolicy(condition="any", delay=5)))
    dead = make_task(svc, state="failed", ts=90.0, attempt=2, tid="old", exit_code=1)
    plan = rec(svc, [dead])
    (new,) = plan.create
    assert new.slot == 1 and new.attempt == 3 and new.not_before == 95.0
    assert plan.shutdown == ["old"]


def test_restart_conditions():
    for cond, state, code, restarts in [("any", "complete", 0, True), ("on-failure", "complete", 0, False),
                                        ("on-failure", "failed", 2, True), ("on-failure", "rejected", None, True),
                                        ("none", "failed", 1, False)]:
        svc = make_service(make_spec(restart_policy=RestartPolicy(condition=cond)))
        plan = rec(svc, [make_task(svc, state=state, exit_code=code, ts=99)])
        assert bool(plan.create) == restarts, (cond, state)


def test_max_attempts_without_window():
    svc = make_service(make_spec(restart_policy=RestartPolicy(max_attempts=3)))
    assert rec(svc, [make_task(svc, state="failed", attempt=2, ts=99)]).create
    assert not rec(svc, [make_task(svc, state="failed", attempt=3, ts=99)]).create


def test_max_attempts_with_window_counts_recent_restarts_only():
    svc = make_service(make_spec(restart_policy=RestartPolicy(max_attempts=2, window=60)))
    hist = [make_task(svc, state="failed", created=c, ts=c + 5, attempt=a, desired="shutdown")
            for c, a in ((0, 0), (10, 1), (20, 2))]
    last = make_task(svc, state="failed", created=30, ts=35, attempt=3)
    assert not rec(svc, hist + [last], now=1000).create  # 3 restarts within 60 s before it ended
    spaced = [make_task(svc, state="failed", created=c, ts=c + 5, attempt=a, desired="shutdown")
              for c, a in ((0, 0), (100, 1), (200, 2))]
    last = make_task(svc, state="failed", created=300, ts=305, attempt=3)
    assert rec(svc, spaced + [last], now=1000).create


def test_stopped_by_policy_restarts_on_spec_change():
    spec = make_spec(restart_policy=RestartPolicy(condition="none"))
    svc = make_service(spec)
    done = make_task(svc, state="complete", exit_code=0)
    assert rec(svc, [done]).is_empty()
    svc2 = svc.model_copy(update={"spec": spec.model_copy(update={"container": spec.container.model_copy(
        update={"image": "busybox:2"})}), "spec_version": 2})
    assert len(rec(svc2, [done]).create) == 1
    svc3 = svc.model_copy(update={"spec": spec.model_copy(update={"replicas": 1, "labels": {"a": "b"}}),
                                  "spec_version": 3})
    assert rec(svc3, [done]).is_empty()  # only service-level fields changed: not a task change


def test_history_limited_to_five_per_slot():
    svc = make_service()
    hist = [make_task(svc, state="failed", created=i, ts=i, desired="shutdown", tid=f"h{i}") for i in range(5)]
    last = make_task(svc, state="failed", created=10, ts=10, attempt=5, tid="last")
    plan = rec(svc, hist + [last])
    assert len(plan.create) == 1 and plan.remove == ["h0", "h1"]


def test_node_down_loses_its_tasks_and_replaces_them_at_once():
    """A task on a down node becomes unknown (it may still run there), and is replaced at once
    with no restart delay (it did not fail); on a node that is gone (removed) it is orphaned."""
    svc = make_service(make_spec(replicas=2))
    a, b = make_task(svc, slot=1, node_id="n1", tid="a"), make_task(svc, slot=2, node_id="n2", tid="b")
    nodes = [make_node("n1", state="down"), make_node("n2")]
    plan = rec(svc, [a, b], nodes=nodes)
    assert plan.lost == ["a"] and plan.orphan == [] and [t.slot for t in plan.create] == [1]
    assert plan.create[0].not_before == 0.0
    after = {t.id: t for t in apply_plan([a, b], plan, 100.0)}
    assert (after["a"].status.state, after["a"].desired_state) == ("unknown", "shutdown")
    # the next pass: the unknown task is left as it is (no second replacement)
    assert rec(svc, list(after.values()), nodes=nodes).is_empty()
    # the node comes back: the unknown task is stopped by its agent; nothing new meanwhile
    assert rec(svc, list(after.values()), nodes=[make_node("n1"), make_node("n2")]).is_empty()
    # a node that vanished from the list (removed)
    plan = rec(svc, [a, b], nodes=[make_node("n2")])
    assert plan.orphan == ["a"] and plan.lost == [] and len(plan.create) == 1
    unknown = after["a"]
    plan = rec(svc, [unknown, b, *[t for t in after.values() if t.id not in ("a", "b")]], nodes=[make_node("n2")])
    assert plan.orphan == ["a"] and plan.create == []


def test_drained_node_shut_down_and_replaced():
    svc = make_service()
    t = make_task(svc, node_id="n1", tid="a")
    plan = rec(svc, [t], nodes=[make_node("n1", availability="drain"), make_node("n2")])
    assert plan.shutdown == ["a"] and len(plan.create) == 1
    # stopping elsewhere (e.g. update stop-first) blocks the refill until it has stopped
    stopping = make_task(svc, node_id="n2", desired="shutdown")
    assert rec(svc, [stopping]).is_empty()
    stopped = make_task(svc, node_id="n2", desired="shutdown", state="shutdown")
    assert len(rec(svc, [stopped]).create) == 1


def test_global_one_per_eligible_node():
    spec = make_spec(mode="global", placement=Placement(constraints=["node.labels.web==yes"]))
    svc = make_service(spec)
    nodes = [make_node("a", labels={"web": "yes"}), make_node("b", labels={"web": "yes"}, availability="pause"),
             make_node("c"), make_node("d", labels={"web": "yes"}, availability="drain"),
             make_node("e", labels={"web": "yes"}, state="down")]
    on_c = make_task(svc, slot=0, node_id="c", tid="on_c")
    on_d = make_task(svc, slot=0, node_id="d", tid="on_d")
    on_e = make_task(svc, slot=0, node_id="e", tid="on_e")
    plan = rec(svc, [on_c, on_d, on_e], nodes=nodes)
    assert [(t.node_id, t.slot) for t in plan.create] == [("a", 0)]
    assert sorted(plan.shutdown) == ["on_c", "on_d"] and plan.lost == ["on_e"]


def test_replicated_job_runs_to_completion_with_max_concurrent():
    svc = make_service(make_spec(mode="replicated-job", replicas=5, max_concurrent=2,
                                 restart_policy=RestartPolicy(condition="on-failure", delay=0)))
    plan = rec(svc, [])
    assert [t.slot for t in plan.create] == [1, 2] and plan.create[0].desired_state == "complete"
    tasks = [make_task(svc, slot=1, state="complete", exit_code=0, desired="complete"),
             make_task(svc, slot=2, state="running", desired="complete")]
    assert [t.slot for t in rec(svc, tasks).create] == [3]
    tasks = [make_task(svc, slot=i, state="complete", exit_code=0, desired="complete") for i in range(1, 6)]
    assert rec(svc, tasks).is_empty()


def test_global_job_one_completion_per_node():
    svc = make_service(make_spec(mode="global-job"))
    done = make_task(svc, slot=0, node_id="n1", state="complete", exit_code=0, desired="complete")
    plan = rec(svc, [done])
    assert [t.node_id for t in plan.create] == ["n2"]


def test_dependency_hold_and_release():
    svc = make_service(make_spec(replicas=2))
    plan = rec(svc, [], deps=(False, "waiting for dependency app_db (service_healthy)"))
    assert all(t.status.state == "new" for t in plan.create)
    assert set(plan.hold) == {t.id for t in plan.create}
    assert plan.create[0].status.message == "waiting for dependency app_db (service_healthy)"
    tasks = apply_plan([], plan, 100)
    assert rec(svc, tasks, deps=(False, "waiting for dependency app_db (service_healthy)")).is_empty()
    released = rec(svc, tasks, deps=(True, ""))
    assert sorted(released.release) == sorted(t.id for t in tasks) and not released.create
    assert all(t.status.state == "pending" for t in apply_plan(tasks, released, 101))


def test_deps_status_conditions():
    db = make_service(make_spec("app_db", replicas=2, container=None) if False else make_spec(
        "app_db", replicas=2).model_copy(update={"container": make_spec().container.model_copy(
            update={"healthcheck": HealthCheck(test=["CMD", "true"])})}), sid="db")
    web = make_service(make_spec("app_web", depends_on=[Dependency(service="app_db", condition="service_healthy")]),
                       sid="web")
    by_name = {"app_db": db, "app_web": web}
    starting = [make_task(db, slot=1, health="healthy"), make_task(db, slot=2, health="starting")]
    assert deps_status(web, by_name, {"db": starting}) == (False, "waiting for dependency app_db (service_healthy)")
    healthy = [make_task(db, slot=i, health="healthy") for i in (1, 2)]
    assert deps_status(web, by_name, {"db": healthy}) == (True, "")
    started = web.model_copy(update={"spec": web.spec.model_copy(update={"depends_on": [Dependency(service="app_db")]})})
    assert deps_status(started, by_name, {"db": starting[:1]})[0]
    assert not deps_status(started, by_name, {"db": []})[0]
    migrate = make_service(make_spec("app_migrate", mode="replicated-job"), sid="mig")
    needs = web.model_copy(update={"spec": web.spec.model_copy(update={"depends_on": [
        Dependency(service="app_migrate", condition="service_completed_successfully")]})})
    by_name["app_migrate"] = migrate
    assert not deps_status(needs, by_name, {"mig": [make_task(migrate, state="running")]})[0]
    assert deps_status(needs, by_name, {"mig": [make_task(migrate, state="complete", exit_code=0)]})[0]
    assert not deps_status(needs, by_name, {"mig": [make_task(migrate, state="failed", exit_code=3)]})[0]
    missing = web.model_copy(update={"spec": web.spec.model_copy(update={"depends_on": [Dependency(service="nope")]})})
    assert "no such service" in deps_status(missing, by_name, {})[1]


# ---- idempotence ---------------------------------------------------------------------------

task_state = st.sampled_from(["new", "pending", "assigned", "running", "complete", "failed", "shutdown",
                              "rejected", "orphaned"])


@settings(max_examples=150, deadline=None)
@given(mode=st.sampled_from(["replicated", "global", "replicated-job", "global-job"]),
       replicas=st.integers(0, 6), max_conc=st.integers(0, 3),
       cond=st.sampled_from(["any", "on-failure", "none"]), max_attempts=st.integers(0, 3),
       window=st.sampled_from([0.0, 30.0]),
       node_states=st.lists(st.tuples(st.sampled_from(["ready", "down", "unknown"]),
                                      st.sampled_from(["active", "pause", "drain"])), min_size=0, max_size=4),
       raw=st.lists(st.tuples(st.integers(0, 8), st.integers(-1, 4), task_state,
                              st.sampled_from(["running", "shutdown", "complete"]), st.integers(0, 3),
                              st.floats(0, 100), st.booleans()), max_size=15),
       deps_ok=st.booleans())
def test_property_reconcile_is_idempotent(mode, replicas, max_conc, cond, max_attempts, window, node_states, raw,
                                          deps_ok):
    spec = make_spec(mode=mode, replicas=replicas, max_concurrent=max_conc,
                     restart_policy=RestartPolicy(condition=cond, max_attempts=max_attempts, window=window))
    svc = make_service(spec, spec_version=2)
    old_spec = spec.model_copy(update={"container": spec.container.model_copy(update={"image": "busybox:0"})})
    nodes = [make_node(f"n{i}", state=s, availability=a) for i, (s, a) in enumerate(node_states)]
    tasks = []
    for k, (slot, node, state, desired, attempt, ts, old) in enumerate(raw):
        node_id = f"n{node}" if node >= 0 and state not in ("new",) else None
        if mode.startswith("global"):
            slot = 0
            node_id = node_id or "n0"
        tasks.append(make_task(svc, slot=slot, node_id=node_id, state=state, desired=desired, attempt=attempt,
                               created=ts, ts=ts + 1, tid=f"k{k}", exit_code=0 if state == "complete" else 1,
                               spec=old_spec if old else spec, spec_version=1 if old else 2))
    deps = (True, "") if deps_ok else (False, "waiting for dependency x (service_started)")
    plan = reconcile(svc, tasks, nodes, 200.0, deps=deps, id_factory=ids())
    all_ids = plan.shutdown + plan.remove + plan.orphan + plan.release
    assert len(all_ids) == len(set(all_ids)) or set(plan.shutdown) & set(plan.orphan) == set()
    assert not set(plan.remove) & (set(plan.shutdown) | set(plan.orphan))
    after = apply_plan(tasks, plan, 200.0)
    again = reconcile(svc, after, nodes, 200.0, deps=deps, id_factory=ids())
    assert again.is_empty(), again
    if mode == "replicated":
        live = [t for t in after if t.status.state not in ("complete", "failed", "shutdown", "rejected", "orphaned")
                and t.desired_state == "running" and 1 <= t.slot <= replicas]
        assert len({t.slot for t in live}) == len(live) or any(  # one live task per slot ...
            t.spec_version == 1 for t in live)  # ... except old+new during a start-first update


def test_a_task_made_unvalidated_is_the_one_validation_would_make():
    """make_task skips pydantic's validation (the store validates every task it is given):
    what it makes must equal its validated form, field for field and type for type, for every
    service mode and an integer clock."""
    from shoal.core.plan import make_task
    from shoal.model.objects import Service, Task, TaskStatus
    from shoal.model.specs import ContainerSpec, ServiceSpec

    for mode in ("replicated", "global", "replicated-job", "global-job"):
        svc = Service(id="s1", spec=ServiceSpec(name="app_web", mode=mode, container=ContainerSpec(image="busybox")))
        t = make_task(svc, 1 if mode.startswith("replicated") else 0, 1700000000, node_id="n1", not_before=5, attempt=2)
        checked = Task.model_validate(t.model_dump())
        assert t == checked and t.model_dump_json() == checked.model_dump_json()
        assert {k: type(v) for k, v in t.__dict__.items() if k != "spec"} == \
            {k: type(v) for k, v in checked.__dict__.items() if k != "spec"}
        assert {k: type(v) for k, v in t.status.__dict__.items()} == \
            {k: type(v) for k, v in checked.status.__dict__.items()}
        # every field given, none left to model_construct's defaults (it asks inspect.signature
        # about each default factory, every time: 11 % of a deploy)
        assert t.model_fields_set == set(Task.model_fields)
        assert t.status.model_fields_set == set(TaskStatus.model_fields)


def test_a_bare_status_is_the_one_validation_would_make():
    from shoal.core.plan import bare_status
    from shoal.model.objects import TaskStatus

    s = bare_status("assigned", 1700000000, "scheduler assigned task to node")
    checked = TaskStatus.model_validate(s.model_dump())
    assert s == checked and {k: type(v) for k, v in s.__dict__.items()} == \
        {k: type(v) for k, v in checked.__dict__.items()}
    assert s.model_fields_set == set(TaskStatus.model_fields)


def test_an_unchecked_model_must_be_given_every_field():
    import pytest

    from shoal.model.objects import TaskStatus
    from shoal.model.unchecked import unchecked

    with pytest.raises(TypeError, match=r"missing \['addresses'"):
        unchecked(TaskStatus, state="new", timestamp=0.0, message="", err="", container_id=None,
                  exit_code=None, health=None)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        unchecked(TaskStatus, state="new", timestamp=0.0, message="", err="", container_id=None,
                  exit_code=None, health=None, addresses={}, colour="red")
