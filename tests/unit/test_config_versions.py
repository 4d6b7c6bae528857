"""Issue 4's rotation as versions, without an engine: pins, one update per change, rollback to the
old bytes, old versions kept while pinned and pruned after, each node sent exactly its pins."""
import base64
import json

import pytest

from shoal.agent import files
from shoal.core import task_states as ts
from shoal.core.file_versions import live_task_pins, pin_spec, spec_pins, unused_versions
from shoal.core.plan import make_task
from shoal.manager.http.views import config_view, secret_view
from shoal.manager.cluster import Cluster
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.errors import ApiError
from shoal.manager.keyring import Keyring
from shoal.manager.orchestrator import Orchestrator
from shoal.manager.version_pruner import VersionPruner
from shoal.model.objects import ConfigObj, Node, SecretObj, Service, Task, TaskStatus
from shoal.model.specs import ContainerSpec, FileObjectSpec, FileRef, ServiceSpec, StackSpec
from shoal.store.sqlite import SqliteStore as Store

SECRET_V1 = b"password=first-0123456789abcdef"
SECRET_V2 = b"password=second-fedcba9876543210"


@pytest.fixture
def cl(tmp_path):
    k = Keyring(str(tmp_path / "cluster.key"))
    k.create(autolock=False)
    return Cluster(Store(str(tmp_path / "store.db")), k, "node1")


def app_spec(image: str = "busybox", name: str = "s_app") -> ServiceSpec:
    return ServiceSpec(name=name, stack="s", replicas=2, container=ContainerSpec(
        image=image, configs=[FileRef(source="s_conf", target="/conf")],
        secrets=[FileRef(source="s_sec", target="/run/secrets/sec")]))


def stack(conf: bytes, sec: bytes, image: str = "busybox") -> StackSpec:
    return StackSpec(name="s", services=[app_spec(image)],
                     configs=[FileObjectSpec(name="s_conf", stack="s", data=conf)],
                     secrets=[FileObjectSpec(name="s_sec", stack="s", data=sec)])


def pins(spec: ServiceSpec) -> tuple[int, int]:
    return spec.container.configs[0].version, spec.container.secrets[0].version


def svc(cl) -> Service:
    return cl.store.by_name(Service, "s_app")


def conf(cl) -> ConfigObj:
    return cl.store.by_name(ConfigObj, "s_conf")


def put_task(cl, service: Service, node: str, state: str = ts.RUNNING, desired: str = ts.RUNNING) -> Task:
    t = make_task(service, 1, 0.0).model_copy(update={
        "node_id": node, "desired_state": desired, "status": TaskStatus(state=state)})
    return cl.store.put(t)


# ------------------------------------------------------------------------------ pinning
def test_pure_pins():
    spec = app_spec()
    assert spec_pins(spec) == set()  # unpinned: "current", pins nothing old
    pinned = pin_spec(spec, lambda kind, ref: 3 if kind == "config" else 5)
    assert pins(pinned) == (3, 5) and spec_pins(pinned) == {("config", "s_conf", 3), ("secret", "s_sec", 5)}
    assert pin_spec(pinned, lambda kind, ref: ref.version) is pinned  # no change: the same object
    done = make_task(Service(id="x", spec=pinned), 1, 0.0)
    done = done.model_copy(update={"status": TaskStatus(state=ts.SHUTDOWN)})
    assert live_task_pins([done]) == frozenset()
    kept = {("config", "s_conf"): [1, 2, 3]}
    assert unused_versions(kept, {("config", "s_conf", 2)}) == {("config", "s_conf"): {1, 3}}


def test_pinned_on_create_update_and_deploy(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    assert pins(svc(cl).spec) == (1, 1)  # create
    cl.update_config_data("s_conf", b"c2")
    assert pins(svc(cl).spec) == (2, 1)
    # an update that leaves the refs unpinned (a client building a spec afresh) pins the current version
    new = app_spec("busybox:2")
    assert pins(cl.update_service("s_app", new).spec) == (2, 1)
    # a redeploy whose file did not change: the spec already pins the current versions, nothing to do
    cl.deploy_stack(stack(b"c2", b"s1", image="busybox:2"))
    assert cl.deploy_stack(stack(b"c2", b"s1", image="busybox:2")) == []


def test_explicit_pin_must_still_exist(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    spec = svc(cl).spec
    bad = spec.model_copy(update={"container": spec.container.model_copy(update={
        "configs": [spec.container.configs[0].model_copy(update={"version": 7})]})})
    with pytest.raises(ApiError, match="s_conf has no version 7"):
        cl.update_service("s_app", bad)
    missing = spec.model_copy(update={"container": spec.container.model_copy(update={
        "configs": [FileRef(source="nope", target="/x")]})})
    with pytest.raises(ApiError, match="config not found: nope"):
        cl.update_service("s_app", missing)


# ----------------------------------------------------------------------------- rotation
def test_rotation_is_one_spec_update_with_the_bumped_pin(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    before = svc(cl)
    obj, msgs = cl.update_config_data("s_conf", b"c2")
    after = svc(cl)
    assert obj.data_version == 2 and obj.versions == [1, 2] and obj.data_at(1) == b"c1"
    assert msgs == ["Updating service s_app (config s_conf changed)"]
    assert after.spec_version == before.spec_version + 1
    assert after.previous_spec == before.spec  # the old pin, for rollback
    assert after.spec == before.spec.model_copy(update={"container": before.spec.container.model_copy(update={
        "configs": [before.spec.container.configs[0].model_copy(update={"version": 2})]})})
    assert after.spec.force_update == before.spec.force_update  # no forced update trick
    assert after.update_status.state == "updating"


def test_deploy_changing_data_and_spec_is_one_update(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    before = svc(cl)
    out = cl.deploy_stack(stack(b"c2", b"s2", image="busybox:2"))
    after = svc(cl)
    assert after.spec_version == before.spec_version + 1
    assert after.previous_spec == before.spec  # the real previous spec, not an intermediate one
    assert pins(after.spec) == (2, 2) and after.spec.container.image == "busybox:2"
    assert out == ["Updating secret s_sec", "Updating config s_conf", f"Updating service s_app (id: {after.id})"]


def test_other_stacks_users_roll_once(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    other = app_spec(name="t_other").model_copy(update={"stack": "t"})
    cl.deploy_stack(StackSpec(name="t", services=[other]))
    out = cl.deploy_stack(stack(b"c2", b"s1"))
    assert "Updating service t_other (config s_conf changed)" in out
    assert pins(cl.store.by_name(Service, "t_other").spec) == (2, 1)
    assert sum("s_app" in m for m in out) == 1


def test_rollback_goes_back_to_the_old_pin_and_update_keeps_it(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    cl.update_secret_data("s_sec", b"s2")
    assert pins(svc(cl).spec) == (1, 2)
    rolled = cl.rollback("s_app")
    assert pins(rolled.spec) == (1, 1) and pins(rolled.previous_spec) == (1, 2)
    # `service update` reads the spec back and posts it changed: the old pin is kept
    spec = rolled.spec.model_copy(update={"labels": {"x": "y"}})
    assert pins(cl.update_service("s_app", spec, rolled.version).spec) == (1, 1)
    # a redeploy declares "the objects as they are now": back onto the current version
    cl.deploy_stack(stack(b"c1", b"s2"))
    assert pins(svc(cl).spec) == (1, 2)


def test_legacy_unpinned_spec_keeps_old_bytes_for_rollback(cl):
    """A spec stored before pins existed (refs at 0) still rolls back to the bytes it ran."""
    cl.deploy_stack(stack(b"c1", b"s1"))
    s = svc(cl)
    cl.store.put(s.model_copy(update={"spec": app_spec()}))  # as an older Shoal stored it
    cl.update_config_data("s_conf", b"c2")
    assert pins(svc(cl).previous_spec) == (1, 0) and pins(svc(cl).spec) == (2, 0)


# ------------------------------------------------------------------------- keep and prune
def test_old_version_kept_while_pinned_then_pruned(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    old_task = put_task(cl, svc(cl), "n1")  # runs with v1
    cl.update_config_data("s_conf", b"c2")
    pruner = VersionPruner(cl.store)

    pruner.prune([])
    assert conf(cl).versions == [1, 2]  # the spec's previous_spec and a running task pin v1
    # the rolled service is updated again: previous_spec no longer pins v1, the task still does
    cl.update_service("s_app", svc(cl).spec.model_copy(update={"labels": {"a": "b"}}))
    cl.update_service("s_app", svc(cl).spec.model_copy(update={"labels": {"a": "c"}}))
    assert 1 not in {r.version for s in (svc(cl).spec, svc(cl).previous_spec) for r in s.container.configs}
    pruner.prune([svc(cl).id])
    assert conf(cl).versions == [1, 2]
    # shutting down (still running) keeps it; stopped (terminal) releases it
    cl.store.put(old_task.model_copy(update={"desired_state": ts.SHUTDOWN}))
    pruner.prune([svc(cl).id])
    assert conf(cl).versions == [1, 2]
    cl.store.put(cl.store.get(Task, old_task.id).model_copy(update={"status": TaskStatus(state=ts.SHUTDOWN)}))
    pruner.prune([svc(cl).id])
    assert conf(cl).versions == [2] and conf(cl).older_versions == {}
    pruner.prune([])
    assert pruner._task_pins is None  # nothing kept: nothing tracked, no task looked at


def test_pruner_counts_tasks_of_removed_services(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    t = put_task(cl, svc(cl), "n1")
    cl.update_secret_data("s_sec", b"s2")
    cl.remove_service("s_app")  # its task is still stopping on its node
    pruner = VersionPruner(cl.store)
    pruner.prune([])
    assert cl.store.by_name(SecretObj, "s_sec").versions == [1, 2]
    cl.store.delete(Task, t.id)
    pruner.prune([t.service_id])
    assert cl.store.by_name(SecretObj, "s_sec").versions == [2]


def test_orchestrator_rolls_and_prunes(cl):
    """End to end in the control loop, with a stand-in agent that runs and stops what it is told."""
    cl.store.put(Node(id="n1", state="ready", last_heartbeat=1e12))
    cl.deploy_stack(stack(b"c1", b"s1"))
    orch = Orchestrator(cl.store)
    now = 1000.0

    def settle():
        nonlocal now
        for _ in range(30):
            now += 10
            orch.tick(now)
            for t in cl.store.all(Task):
                if t.status.state == ts.ASSIGNED and t.desired_state == ts.RUNNING:
                    cl.store.put(t.model_copy(update={"status": TaskStatus(state=ts.RUNNING, timestamp=now)}))
                elif t.desired_state != ts.RUNNING and not ts.is_terminal(t.status.state):
                    cl.store.put(t.model_copy(update={"status": TaskStatus(state=ts.SHUTDOWN, timestamp=now)}))
    settle()
    assert {pins(t.spec) for t in cl.store.tasks_of_service(svc(cl).id) if t.desired_state == ts.RUNNING} == {(1, 1)}
    cl.update_config_data("s_conf", b"c2")
    settle()
    live = [t for t in cl.store.tasks_of_service(svc(cl).id) if t.desired_state == ts.RUNNING]
    assert len(live) == 2 and {pins(t.spec) for t in live} == {(2, 1)}
    assert svc(cl).update_status.state == "completed"
    assert conf(cl).versions == [1, 2]  # previous_spec still pins v1: a rollback needs it
    cl.update_service("s_app", svc(cl).spec.model_copy(update={"labels": {"a": "b"}}))
    settle()
    assert conf(cl).versions == [2]


# ------------------------------------------------------------------------------ dispatcher
def test_each_node_gets_exactly_the_versions_its_tasks_pin(cl):
    cl.deploy_stack(stack(b"c1", SECRET_V1))
    v1 = svc(cl)
    cl.update_config_data("s_conf", b"c2")
    cl.update_secret_data("s_sec", SECRET_V2)
    v2 = svc(cl)
    put_task(cl, v1, "n1")
    put_task(cl, v2, "n1")  # a rolling update midway: two versions on one node
    put_task(cl, v2, "n2")
    d = Dispatcher(cl.store, cl)

    def decoded(node):
        a = d.assignments(node)
        return {k: {(n, int(v)): base64.b64decode(b) for n, vs in a[k].items() for v, b in vs.items()}
                for k in ("configs", "secrets")}
    n1, n2 = decoded("n1"), decoded("n2")
    assert n1["configs"] == {("s_conf", 1): b"c1", ("s_conf", 2): b"c2"}
    assert n1["secrets"] == {("s_sec", 1): SECRET_V1, ("s_sec", 2): SECRET_V2}
    assert n2 == {"configs": {("s_conf", 2): b"c2"}, "secrets": {("s_sec", 2): SECRET_V2}}
    # a task made before pins existed (refs at 0) gets the current version
    legacy = make_task(Service(id=v1.id, spec=app_spec()), 2, 0.0).model_copy(update={
        "node_id": "n3", "status": TaskStatus(state=ts.ASSIGNED)})
    cl.store.put(legacy)
    assert decoded("n3") == {"configs": {("s_conf", 0): b"c2"}, "secrets": {("s_sec", 0): SECRET_V2}}


def test_agent_writes_each_task_its_own_version(tmp_path, cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    t1 = put_task(cl, svc(cl), "n1")
    cl.update_config_data("s_conf", b"c2")
    t2 = put_task(cl, svc(cl), "n1")
    answer = Dispatcher(cl.store, cl).assignments("n1")
    configs, secrets = files.decode_file_data(answer["configs"]), files.decode_file_data(answer["secrets"])
    cfg, sec = str(tmp_path / "cfg"), str(tmp_path / "sec")
    m1 = files.prepare_task_files(t1, configs, secrets, cfg, sec)
    m2 = files.prepare_task_files(t2, configs, secrets, cfg, sec)
    assert open(m1[0]["Source"], "rb").read() == b"c1"
    assert open(m2[0]["Source"], "rb").read() == b"c2"
    # a manager that does not version sends bare base64: that is version 0
    assert files.decode_file_data({"x": base64.b64encode(b"d").decode()}) == {("x", 0): b"d"}
    with pytest.raises(files.MissingFileData, match=r"config not found: s_conf \(version 2\)"):
        files.prepare_task_files(t2, {("s_conf", 1): b"c1"}, secrets, cfg, sec)


# ------------------------------------------------------------------------------- secrets
def test_secret_versions_stay_ciphertext_only(cl, tmp_path):
    cl.deploy_stack(stack(b"c1", SECRET_V1))
    put_task(cl, svc(cl), "n1")  # keeps v1 pinned
    cl.update_secret_data("s_sec", SECRET_V2)
    obj = cl.store.by_name(SecretObj, "s_sec")
    assert obj.versions == [1, 2] and cl.secret_bytes("s_sec", 1) == SECRET_V1
    assert cl.secret_bytes("s_sec", 2) == cl.secret_bytes("s_sec") == SECRET_V2
    assert cl.secret_bytes("s_sec", 9) is None
    view = json.dumps(secret_view(obj))
    assert json.loads(view)["versions"] == [1, 2]
    blobs = [obj.model_dump_json().encode(), view.encode()]
    for f in (tmp_path / "store.db", tmp_path / "store.db-wal"):
        if f.exists():
            blobs.append(f.read_bytes())
    for blob in blobs:
        for plain in (SECRET_V1, SECRET_V2):
            assert plain not in blob and base64.b64encode(plain)[4:-4] not in blob


def test_config_inspect_lists_versions_not_old_data(cl):
    cl.deploy_stack(stack(b"c1", b"s1"))
    cl.update_config_data("s_conf", b"c2")
    view = config_view(conf(cl))
    assert view["data_version"] == 2 and view["versions"] == [1, 2] and "older_versions" not in view
    assert base64.b64decode(view["data"]) == b"c2"
