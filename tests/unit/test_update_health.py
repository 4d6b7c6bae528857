"""Rolling updates and health: a new task counts as updated only once healthy (Swarm keeps a
task with a health check "starting" until then), and leftovers of an overtaken start-first
batch are stopped."""
from shoal.core.update import start_rollback, update_step
from shoal.model.specs import UpdateConfig
from test_reconcile_support import make_service, make_spec, make_task

START_FIRST = UpdateConfig(order="start-first", monitor=5)


def test_start_first_keeps_the_old_task_until_the_new_one_is_healthy():
    svc = make_service(make_spec(replicas=1, update_config=START_FIRST), spec_version=2)
    old = make_task(svc, tid="old", spec=make_spec(image="busybox:0"), spec_version=1, created=0)
    plan = update_step(svc, [old], now=10, id_factory=lambda: "new")
    assert [t.id for t in plan.create] == ["new"] and plan.shutdown == []
    svc = plan.service
    starting = make_task(svc, tid="new", created=10, health="starting")
    plan = update_step(svc, [old, starting], now=12)
    assert plan.shutdown == []  # running but not healthy yet: the old one stays
    healthy = make_task(svc, tid="new", created=10, health="healthy")
    plan = update_step(plan.service or svc, [old, healthy], now=14)
    assert plan.shutdown == ["old"]


def test_unhealthy_before_ever_healthy_is_a_failure():
    cfg = UpdateConfig(order="start-first", monitor=60, failure_action="rollback")
    svc = make_service(make_spec(replicas=1, update_config=cfg), spec_version=2,
                       previous_spec=make_spec(image="busybox:0", update_config=cfg))
    old = make_task(svc, tid="old", spec=make_spec(image="busybox:0"), spec_version=1, created=0)
    svc = update_step(svc, [old], now=10, id_factory=lambda: "new").service
    sick = make_task(svc, tid="new", created=10, health="unhealthy")
    plan = update_step(svc, [old, sick], now=20)
    assert plan.rollback and plan.service.update_status.state == "rollback_started"


def test_rollback_stops_the_overtaken_new_task():
    svc = make_service(make_spec(replicas=1, update_config=START_FIRST), spec_version=2,
                       previous_spec=make_spec(image="busybox:0", update_config=START_FIRST))
    old = make_task(svc, tid="old", spec=make_spec(image="busybox:0", update_config=START_FIRST),
                    spec_version=1, created=0)
    svc = update_step(svc, [old], now=10, id_factory=lambda: "new").service
    new = make_task(svc, tid="new", created=10, health="starting")
    rolled = start_rollback(svc, now=11)
    plan = update_step(rolled, [old, new], now=11)
    assert plan.shutdown == ["new"]
