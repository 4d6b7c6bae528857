"""Issue 5 without Docker: constraint enforcement, volume-aware placement inputs, the
manager→agent action channel and the agent's volume actions (on a fake engine)."""
from __future__ import annotations

import asyncio

import pytest

from shoal.agent.engine import NotFound
from shoal.agent.volumes import VolumeActions
from shoal.core.plan import apply_plan
from shoal.core.reconcile import reconcile
from shoal.manager.actions import ActionFailed, ActionHub, ActionTimeout
from shoal.manager.volumes import VolumeRegistry
from shoal.model.specs import Mount, Placement
from shoal.scheduler import schedule
from shoal.store.sqlite import SqliteStore as Store
from test_reconcile_support import ids, make_node, make_service, make_spec, make_task


def with_mount(spec, **mount):
    return spec.model_copy(update={"container": spec.container.model_copy(
        update={"mounts": [Mount(type="volume", target="/data", **mount)]})})


# ---- constraint enforcement ------------------------------------------------------------

def test_label_removed_moves_running_task_then_idempotent():
    svc = make_service(make_spec(placement=Placement(constraints=["node.labels.storage == raid"])))
    t = make_task(svc, node_id="n1", tid="a")
    labelled = [make_node("n1", labels={"storage": "raid"})]
    assert reconcile(svc, [t], labelled, 10.0, id_factory=ids()).is_empty()
    bare = [make_node("n1")]
    plan = reconcile(svc, [t], bare, 10.0, id_factory=ids())
    assert plan.shutdown == ["a"] and len(plan.create) == 1
    after = apply_plan([t], plan, 10.0)
    assert reconcile(svc, after, bare, 10.0, id_factory=ids()).is_empty()
    res = schedule([x for x in after if x.status.state == "pending"], bare, after, 10.0)
    assert list(res.unplaced.values()) == ["no suitable node (scheduling constraints not satisfied on 1 node)"]


def test_paused_node_keeps_tasks_places_nothing():
    svc = make_service(make_spec(replicas=2))
    t = make_task(svc, node_id="n1", tid="a")
    nodes = [make_node("n1", availability="pause")]
    plan = reconcile(svc, [t], nodes, 10.0, id_factory=ids())
    assert plan.shutdown == [] and len(plan.create) == 1
    after = apply_plan([t], plan, 10.0)
    res = schedule([x for x in after if x.status.state == "pending"], nodes, after, 10.0)
    assert list(res.unplaced.values()) == ["no suitable node (1 node not available for new tasks)"]


# ---- volume filter ---------------------------------------------------------------------

def test_volume_filter_skips_global_and_network_volumes():
    nodes = [make_node("n1"), make_node("n2")]
    where = {"app_db": {"n2"}}
    nfs = make_service(with_mount(make_spec(), source="app_db", volume_driver_opts={"type": "nfs"}))
    t = make_task(nfs, state="pending", node_id=None, tid="p")
    assert schedule([t], nodes, [], 0, volume_nodes=where).assignments == {"p": "n1"}
    glob = make_service(with_mount(make_spec(mode="global"), source="app_db"))
    t = make_task(glob, slot=0, state="pending", node_id="n1", tid="g")
    assert schedule([t], nodes, [], 0, volume_nodes=where).assignments == {"g": "n1"}


def test_volume_conflicts_with_constraint_explained():
    spec = with_mount(make_spec(placement=Placement(constraints=["node.hostname==n1"])), source="app_db")
    t = make_task(make_service(spec), state="pending", node_id=None, tid="p")
    res = schedule([t], [make_node("n1"), make_node("n2")], [], 0, volume_nodes={"app_db": {"n2"}})
    assert res.unplaced["p"] == ("no suitable node (scheduling constraints not satisfied on 1 node; "
                                 "volume app_db is on another node)")


# ---- volume registry -------------------------------------------------------------------

def test_registry_persists_and_feeds_scheduler(tmp_path):
    from shoal.manager.heartbeats import Heartbeats
    from shoal.model.objects import Node, NodeDescription, VolumeFact
    store = Store(str(tmp_path / "s.db"))
    for n in ("n1", "n2", "gone"):
        store.put(Node(id=n, addr="10.0.0.1"))
    hb = Heartbeats(store)
    vol = lambda name, **kw: VolumeFact(name=name, **kw)  # noqa: E731
    hb.beat("n1", NodeDescription(), "", "10.0.0.1",
            ([], {}, [vol("app_db"), vol("share", options={"type": "nfs"})]))
    hb.beat("n2", NodeDescription(), "", "10.0.0.1", ([], {}, [vol("app_db"), vol("plug", driver="rexray")]))
    hb.beat("gone", NodeDescription(), "", "10.0.0.1", ([], {}, [vol("old")]))
    store.delete(Node, "gone")
    reg = VolumeRegistry(store)
    assert reg.volume_nodes() == {"app_db": {"n1", "n2"}}
    reg.forget("n2", ["app_db"])
    store.close()
    store = Store(str(tmp_path / "s.db"))
    again = VolumeRegistry(store)
    assert again.volume_nodes() == {"app_db": {"n1"}}
    assert again.nodes_of("plug") == ["n2"] and again.nodes_of("old") == []
    store.close()


# ---- action channel --------------------------------------------------------------------

async def test_action_hub_round_trip_failure_and_timeout():
    hub = ActionHub()

    async def agent(answer):
        reqs = await hub.requests_for("n1", 5)
        assert [r["kind"] for r in reqs] == ["volume.rm"]
        assert not hub.answer(reqs[0]["id"], {"ok": True, "result": "forged"}, node_id="n2")  # not n2's to answer
        assert hub.answer(reqs[0]["id"], answer, node_id="n1")

    task = asyncio.create_task(agent({"ok": True, "result": {"removed": "v"}}))
    assert await hub.call("n1", "volume.rm", {"name": "v"}, timeout=5) == {"removed": "v"}
    await task
    task = asyncio.create_task(agent({"ok": False, "error": "volume v is in use", "status": 409}))
    with pytest.raises(ActionFailed) as e:
        await hub.call("n1", "volume.rm", {"name": "v"}, timeout=5)
    assert e.value.status == 409 and "in use" in str(e.value)
    await task
    with pytest.raises(ActionTimeout):
        await hub.call("n2", "volume.rm", {"name": "v"}, timeout=0.05)
    assert await hub.requests_for("n2", 0.05) == []  # the caller gave up: not handed out
    assert not hub.answer("nope", {"ok": True}, node_id="n1")


# ---- agent volume actions on a fake engine ----------------------------------------------

class FakeVolumes:
    def __init__(self, vols):
        self.vols = {v["Name"]: v for v in vols}

    async def list(self, filters=None, labels=None):
        return list(self.vols.values())

    async def inspect(self, name):
        if name not in self.vols:
            raise NotFound(404, f"get {name}: no such volume")
        return self.vols[name]

    async def remove(self, name, force=False):
        self.vols.pop(name)


class FakeContainers:
    def __init__(self, users):
        self.users = users

    async def list(self, filters=None, labels=None, all=True):
        name = filters["volume"][0]
        return [{"Names": [f"/{c}"], "Labels": {}, "State": "running"} for c in self.users.get(name, [])]


class FakeEngine:
    def __init__(self, vols, users):
        self.volumes, self.containers = FakeVolumes(vols), FakeContainers(users)


def _vol(name, **labels):
    return {"Name": name, "Driver": "local", "Labels": labels, "Mountpoint": f"/v/{name}"}


async def test_agent_volume_actions():
    eng = FakeEngine([_vol("s_db", **{"com.docker.stack.namespace": "s"}),
                      _vol("s_cache", **{"com.docker.stack.namespace": "s"}),
                      _vol("t_old", **{"com.docker.stack.namespace": "t"}),
                      _vol("users_own")], {"s_db": ["s_db.1.abc"]})
    va = VolumeActions(eng, "n1")
    assert sorted(v["name"] for v in await va.list()) == ["s_cache", "s_db", "t_old"]
    r = await va.handle("volume.rm", {"name": "s_db"})
    assert not r["ok"] and r["status"] == 409 and "s_db.1.abc (running)" in r["error"]
    r = await va.handle("volume.rm", {"name": "users_own"})
    assert not r["ok"] and r["status"] == 403
    assert (await va.handle("volume.rm", {"name": "nope"}))["status"] == 404
    r = await va.handle("volume.prune", {"keep": ["s_cache"], "labels": {"com.docker.stack.namespace": "s"}})
    assert r == {"ok": True, "result": {"removed": [], "kept": ["s_cache", "s_db"]}}
    r = await va.handle("volume.prune", {"keep": []})
    assert r["result"]["removed"] == ["s_cache", "t_old"] and "users_own" in eng.volumes.vols
    r = await va.handle("volume.inspect", {"name": "s_db"})
    assert r["ok"] and r["result"]["Node"] == "n1" and r["result"]["UsedBy"] == ["s_db.1.abc (running)"]
    assert (await va.handle("volume.format", {}))["status"] == 501


def test_a_task_that_ran_tells_where_its_volume_is_before_any_heartbeat(tmp_path):
    from shoal.model.objects import Node, Service, Task, TaskStatus
    store = Store(str(tmp_path / "s.db"))
    for n in ("n1", "n2"):
        store.put(Node(id=n))
    spec = with_mount(make_spec(), source="app_db")
    store.put(Service(id="svc", spec=spec))
    store.put(Task(id="t1", service_id="svc", service_name=spec.name, slot=1, node_id="n2", spec=spec,
                   status=TaskStatus(state="running", container_id="c1")))
    assert VolumeRegistry(store).volume_nodes() == {"app_db": {"n2"}}
    store.close()


def test_registry_infers_volumes_from_each_tasks_own_mounts(tmp_path):
    """A task of an older version without the volume (the book's v4 database) does not pin the
    new version's volume (v5) to its node; a task that mounted it does."""
    from shoal.model.objects import Node, TaskStatus
    store = Store(str(tmp_path / "s.db"))
    for n in ("n1", "n2"):
        store.put(Node(id=n, addr="10.0.0.1"))
    v5 = with_mount(make_spec(name="db"), source="app_db")
    svc = store.put(make_service(v5))
    old = make_task(svc, node_id="n2", tid="old", spec=make_spec(name="db"), desired="shutdown")
    old = old.model_copy(update={"status": TaskStatus(state="shutdown", container_id="c-old")})
    store.put(old)
    assert VolumeRegistry(store).volume_nodes() == {}
    new = make_task(svc, node_id="n1", tid="new")
    store.put(new.model_copy(update={"status": TaskStatus(state="running", container_id="c-new")}))
    assert VolumeRegistry(store).volume_nodes() == {"app_db": {"n1"}}
    store.close()
