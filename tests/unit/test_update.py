from hypothesis import given, settings, strategies as st

from shoal.core.orchestrate import orchestrate
from shoal.core.update import start_rollback, update_step
from shoal.model.specs import UpdateConfig
from test_reconcile_support import Sim, make_node, make_service, make_spec, make_task

NODES = [make_node(f"n{i}") for i in range(4)]


def converged(replicas=4, mode="replicated", **spec_kw):
    svc = make_service(make_spec(replicas=replicas, mode=mode, **spec_kw))
    sim = Sim(svc, NODES)
    sim.run(4)
    assert len(sim.running()) == (replicas if mode == "replicated" else len(NODES))
    assert sim.service.update_status is None
    return sim


def change_image(sim, image="busybox:2", **cfg):
    svc = sim.service
    spec = svc.spec.model_copy(update={"container": svc.spec.container.model_copy(update={"image": image})})
    if cfg:
        spec = spec.model_copy(update={"update_config": UpdateConfig(**cfg)})
    sim.service = svc.model_copy(update={"spec": spec, "previous_spec": svc.spec,
                                         "spec_version": svc.spec_version + 1})


def images(sim):
    return sorted(t.spec.container.image for t in sim.running())


def test_scale_is_not_an_update():
    sim = converged()
    sim.service = sim.service.model_copy(update={
        "spec": sim.service.spec.model_copy(update={"replicas": 6}), "spec_version": 2})
    sim.run(4)
    assert len(sim.running()) == 6 and sim.service.update_status is None


def test_rolling_update_stop_first_completes():
    sim = converged()
    change_image(sim, parallelism=2, monitor=2)
    sim.tick()
    assert sim.service.update_status.state == "updating"
    assert sim.service.update_status.message == "update in progress"
    sim.run(30)
    assert images(sim) == ["busybox:2"] * 4
    st_ = sim.service.update_status
    assert st_.state == "completed" and st_.message == "update completed" and st_.completed_at is not None
    assert orchestrate(sim.service, sim.tasks, NODES, sim.now).is_empty()  # converged: nothing more to do


def test_paused_update_cleared_when_spec_goes_back():
    sim = converged(replicas=2)
    sim.bad_images = {"busybox:bad"}
    change_image(sim, image="busybox:bad", monitor=5)
    sim.run(10)
    assert sim.service.update_status.state == "paused"
    change_image(sim, image="busybox:1")  # back to what the untouched slot runs
    sim.run(10)
    assert sim.service.update_status.state == "completed"
    assert images(sim) == ["busybox:1", "busybox:1"]


def test_update_delay_between_batches():
    sim = converged(replicas=2)
    change_image(sim, parallelism=1, delay=10, monitor=0)
    sim.run(6)
    assert images(sim) == ["busybox:1", "busybox:2"]
    assert sim.last_plan.wake_at is not None
    sim.run(15)
    assert images(sim) == ["busybox:2", "busybox:2"]


def test_failure_pauses_and_stays_paused():
    sim = converged()
    sim.bad_images = {"busybox:bad"}
    change_image(sim, image="busybox:bad", parallelism=1, monitor=5)
    sim.run(10)
    st_ = sim.service.update_status
    assert st_.state == "paused"
    assert st_.message.startswith("update paused due to failure or early termination of task ")
    old_running = sorted(t.id for t in sim.running() if t.spec.container.image == "busybox:1")
    assert len(old_running) == 3  # one slot was tried, the others untouched
    sim.run(10)
    assert sim.service.update_status.state == "paused"
    assert sorted(t.id for t in sim.running() if t.spec.container.image == "busybox:1") == old_running
    change_image(sim, image="busybox:3", parallelism=0, monitor=1)  # a new spec resumes
    sim.run(10)
    assert images(sim) == ["busybox:3"] * 4 and sim.service.update_status.state == "completed"


def test_failure_rollback():
    sim = converged()
    sim.bad_images = {"busybox:bad"}
    change_image(sim, image="busybox:bad", parallelism=1, monitor=5, failure_action="rollback")
    seen = set()
    for _ in range(40):
        sim.tick()
        if sim.service.update_status:
            seen.add(sim.service.update_status.state)
    assert "rollback_started" in seen
    assert sim.service.update_status.state == "rollback_completed"
    assert sim.service.update_status.message == "rollback completed"
    assert images(sim) == ["busybox:1"] * 4
    assert sim.service.spec.container.image == "busybox:1"
    assert sim.service.previous_spec.container.image == "busybox:bad"


def test_failure_continue_finishes():
    sim = converged(replicas=2)
    sim.bad_images = {"busybox:bad"}
    change_image(sim, image="busybox:bad", parallelism=1, monitor=1, failure_action="continue")
    sim.run(40)
    assert sim.service.update_status.state == "completed"


def test_unhealthy_within_monitor_is_a_failure():
    svc = make_service(make_spec(replicas=1, update_config=UpdateConfig(monitor=30)), spec_version=2)
    old = make_task(svc, tid="old", spec=make_spec(image="busybox:0"), spec_version=1, created=0)
    plan = update_step(svc, [old], now=10)
    state = plan.service.update_state
    assert plan.shutdown == ["old"]
    svc = plan.service
    new = make_task(svc, tid="new", created=11)
    stopped = old.model_copy(update={"desired_state": "shutdown",
                                     "status": old.status.model_copy(update={"state": "shutdown"})})
    plan = update_step(svc, [stopped, new], now=12)
    svc = plan.service
    assert svc.update_status.state == "updating" and plan.wake_at == 42
    sick = new.model_copy(update={"status": new.status.model_copy(update={"health": "unhealthy"})})
    plan = update_step(svc, [stopped, sick], now=20)
    assert plan.service.update_status.state == "paused"
    assert "task new" in plan.service.update_status.message
    assert state.spec_version == 2


def test_manual_rollback_helper():
    svc = make_service(make_spec(image="busybox:2"), spec_version=3, previous_spec=make_spec(image="busybox:1"))
    rb = start_rollback(svc, now=5)
    assert rb.spec.container.image == "busybox:1" and rb.previous_spec.container.image == "busybox:2"
    assert rb.spec_version == 4 and rb.update_status.state == "rollback_started"
    assert rb.update_state.rollback and rb.update_state.spec_version == 4
    rb.model_dump_json()  # bookkeeping is JSON-serialisable


def test_global_update():
    sim = converged(mode="global")
    change_image(sim, parallelism=2, monitor=1)
    sim.run(30)
    assert images(sim) == ["busybox:2"] * 4 and sim.service.update_status.state == "completed"


def test_orchestrate_waits_for_dependency_during_update():
    sim = converged(replicas=1)
    change_image(sim, order="start-first", monitor=0)
    plan = orchestrate(sim.service, sim.tasks, NODES, sim.now, deps=(False, "waiting for dependency db (service_started)"))
    assert plan.create and all(t.status.state == "new" for t in plan.create)
    assert set(plan.hold) == {t.id for t in plan.create}


# ---- properties ----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(replicas=st.integers(1, 7), parallelism=st.integers(0, 4), order=st.sampled_from(["stop-first", "start-first"]),
       delay=st.sampled_from([0.0, 2.0]), monitor=st.sampled_from([0.0, 3.0]))
def test_property_update_bounds(replicas, parallelism, order, delay, monitor):
    sim = converged(replicas=replicas)
    change_image(sim, parallelism=parallelism, order=order, delay=delay, monitor=monitor)
    p = parallelism or replicas
    checks = []

    def check(tasks):
        # a slot is in flight from the moment the update touches it (old told to stop, or new
        # task created) until a task of the new spec runs in it
        new_running = {t.slot for t in tasks if t.spec.container.image == "busybox:2" and t.status.state == "running"}
        touched = {t.slot for t in tasks if t.spec.container.image == "busybox:2"
                   or (t.desired_state == "shutdown" and t.status.state != "failed")}
        in_flight = touched - new_running
        assert len(in_flight) <= p
        alive = [t for t in tasks if t.status.state in ("pending", "assigned", "running")]
        running = [t for t in tasks if t.status.state == "running" and t.desired_state == "running"]
        if order == "stop-first":
            assert len(alive) <= replicas
        else:
            assert len(running) >= replicas
        checks.append(1)

    sim.after_plan = check
    for _ in range(60 + 10 * replicas):
        sim.tick()
        check(sim.tasks)
        if sim.service.update_status and sim.service.update_status.state == "completed":
            break
    assert sim.service.update_status.state == "completed"
    assert images(sim) == ["busybox:2"] * replicas
