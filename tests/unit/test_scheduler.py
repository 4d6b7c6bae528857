from collections import Counter

from hypothesis import given, settings, strategies as st

from shoal.model.specs import Mount, Placement, PortConfig, ResourceRequirements, Resources
from shoal.scheduler import schedule
from shoal.scheduler.filters import (ConstraintFilter, HostPortFilter, MaxReplicasFilter, ReadyFilter,
                                     ResourceFilter, SchedulingContext, VolumeFilter)
from shoal.scheduler.nodeinfo import build_node_infos
from test_reconcile_support import CPU, GiB, make_node, make_service, make_spec, make_task


def pending(service, n, start=1, prefix="p"):
    return [make_task(service, slot=i, state="pending", node_id=None, tid=f"{prefix}{i}")
            for i in range(start, start + n)]


def test_spreads_evenly_and_is_deterministic():
    svc = make_service()
    nodes = [make_node(f"n{i}") for i in range(3)]
    res = schedule(pending(svc, 7), nodes, [], now=0)
    counts = Counter(res.assignments.values())
    assert sorted(counts.values()) == [2, 2, 3]
    assert counts["n0"] == 3  # tie-break by node id
    assert res.assignments == schedule(pending(svc, 7), nodes, [], now=0).assignments


def test_fewest_tasks_of_service_then_total():
    svc, other = make_service(sid="a"), make_service(make_spec("other"), sid="b")
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    existing = [make_task(svc, node_id="n1"), make_task(other, node_id="n2"), make_task(other, node_id="n2")]
    res = schedule(pending(svc, 2), nodes, existing, now=0)
    assert res.assignments["p1"] == "n3"  # no tasks at all
    assert res.assignments["p2"] == "n2"  # n1 already has one of this service


def test_recent_failures_sort_last():
    svc = make_service()
    nodes = [make_node("n1"), make_node("n2")]
    failed = [make_task(svc, state="failed", node_id="n1", ts=900 + i) for i in range(5)]
    res = schedule(pending(svc, 1), nodes, failed, now=1000)
    assert res.assignments == {"p1": "n2"}
    old = [make_task(svc, state="failed", node_id="n1", ts=100 + i) for i in range(5)]
    assert schedule(pending(svc, 1), nodes, old, now=1000).assignments == {"p1": "n1"}


def test_resources_never_overcommitted_in_a_batch():
    spec = make_spec(resources=ResourceRequirements(reservations=Resources(nano_cpus=CPU, memory_bytes=GiB)))
    svc = make_service(spec)
    nodes = [make_node("n1", cpus=2), make_node("n2", cpus=1)]
    res = schedule(pending(svc, 5), nodes, [], now=0)
    assert Counter(res.assignments.values()) == {"n1": 2, "n2": 1}
    assert res.unplaced == {"p4": "no suitable node (insufficient resources on 2 nodes)",
                            "p5": "no suitable node (insufficient resources on 2 nodes)"}


def test_reasons_most_frequent_first_and_singular():
    spec = make_spec(resources=ResourceRequirements(reservations=Resources(memory_bytes=16 * GiB)),
                     placement=Placement(constraints=["node.labels.disk==ssd"]))
    svc = make_service(spec)
    nodes = [make_node("a", labels={"disk": "ssd"}), make_node("b", mem_gib=32), make_node("c", mem_gib=32),
             make_node("d", state="down")]
    res = schedule(pending(svc, 1), nodes, [], now=0)
    assert res.unplaced["p1"] == ("no suitable node (scheduling constraints not satisfied on 2 nodes; "
                                  "1 node not available for new tasks; insufficient resources on 1 node)")
    assert schedule(pending(svc, 1), [], [], now=0).unplaced["p1"] == "no suitable node"


def test_drained_and_paused_nodes_get_nothing():
    svc = make_service()
    nodes = [make_node("n1", availability="drain"), make_node("n2", availability="pause"), make_node("n3")]
    res = schedule(pending(svc, 3), nodes, [], now=0)
    assert set(res.assignments.values()) == {"n3"}


def test_constraints_and_spread_preferences():
    spec = make_spec(placement=Placement(constraints=["node.role!=manager"], preferences=["spread=node.labels.zone"]))
    svc = make_service(spec)
    nodes = ([make_node(f"a{i}", labels={"zone": "a"}) for i in range(4)] + [make_node("b0", labels={"zone": "b"})]
             + [make_node("m", role="manager", labels={"zone": "c"}), make_node("nolabel")])
    res = schedule(pending(svc, 6), nodes, [], now=0)
    per_zone = Counter({"a0": "a", "a1": "a", "a2": "a", "a3": "a", "b0": "b", "nolabel": ""}[n]
                       for n in res.assignments.values())
    assert per_zone == {"a": 2, "b": 2, "": 2}
    assert "m" not in res.assignments.values()


def test_host_ports_and_max_replicas():
    spec = make_spec(ports=[PortConfig(target=80, published=8080, mode="host")])
    svc = make_service(spec)
    nodes = [make_node("n1"), make_node("n2")]
    res = schedule(pending(svc, 3), nodes, [], now=0)
    assert sorted(res.assignments.values()) == ["n1", "n2"]
    assert res.unplaced["p3"] == "no suitable node (host-mode port already in use on 2 nodes)"
    spec2 = make_spec(placement=Placement(max_replicas_per_node=1))
    res = schedule(pending(make_service(spec2), 3), nodes, [], now=0)
    assert res.unplaced["p3"] == "no suitable node (max replicas per node limit exceed)"


def test_volume_pins_to_its_node():
    spec = make_spec()
    spec = spec.model_copy(update={"container": spec.container.model_copy(
        update={"mounts": [Mount(type="volume", source="app_db", target="/data")]})})
    svc = make_service(spec)
    nodes = [make_node("n1"), make_node("n2"), make_node("n3")]
    res = schedule(pending(svc, 2), nodes, [], now=0, volume_nodes={"app_db": {"n2"}})
    assert set(res.assignments.values()) == {"n2"}
    res = schedule(pending(svc, 1), [make_node("n1"), make_node("n2", state="down")], [], now=0,
                   volume_nodes={"app_db": {"n2"}})
    assert res.unplaced["p1"] == "no suitable node (1 node not available for new tasks; volume app_db is on another node)"


def test_preassigned_global_tasks_checked_on_their_node_only():
    spec = make_spec(resources=ResourceRequirements(reservations=Resources(nano_cpus=8 * CPU)), mode="global")
    svc = make_service(spec)
    t1 = make_task(svc, slot=0, state="pending", node_id="big", tid="g1")
    t2 = make_task(svc, slot=0, state="pending", node_id="small", tid="g2")
    res = schedule([t1, t2], [make_node("big", cpus=16), make_node("small", cpus=2)], [], now=0)
    assert res.assignments == {"g1": "big"}
    assert res.unplaced == {"g2": "no suitable node (insufficient resources on 1 node)"}


def test_non_pending_tasks_are_ignored():
    svc = make_service()
    t = make_task(svc, state="new", node_id=None, tid="held")
    res = schedule([t], [make_node("n1")], [], now=0)
    assert res.assignments == {} and res.unplaced == {}


def test_existing_reservations_count():
    spec = make_spec(resources=ResourceRequirements(reservations=Resources(memory_bytes=6 * GiB)))
    svc = make_service(spec)
    running = make_task(svc, node_id="n1")
    done = make_task(svc, node_id="n2", state="shutdown")
    res = schedule(pending(svc, 1), [make_node("n1"), make_node("n2")], [running, done], now=0)
    assert res.assignments == {"p1": "n2"}


def test_filter_objects_directly():
    svc = make_service(make_spec(placement=Placement(constraints=["node.hostname==H1"])))
    t = make_task(svc, state="pending", node_id=None)
    ctx = SchedulingContext()
    infos = build_node_infos([make_node("n1", hostname="h1"), make_node("n2")], [], 0)
    f = ConstraintFilter()
    assert f.set_task(t, ctx)
    assert f.check(infos["n1"]) and not f.check(infos["n2"])
    assert f.explain(1) == "scheduling constraints not satisfied on 1 node"
    assert ReadyFilter().explain(3) == "3 nodes not available for new tasks"
    assert not ResourceFilter().set_task(t, ctx)
    assert not HostPortFilter().set_task(t, ctx)
    assert not MaxReplicasFilter().set_task(t, ctx)
    assert not VolumeFilter().set_task(t, ctx)


# ---- properties ----------------------------------------------------------------------------

node_st = st.builds(
    lambda i, cpus, mem, zone, disk, state, avail: make_node(
        f"n{i}", cpus=cpus, mem_gib=mem, labels={k: v for k, v in (("zone", zone), ("disk", disk)) if v},
        state=state, availability=avail),
    st.integers(0, 10**6), st.integers(0, 8), st.integers(0, 16), st.sampled_from(["a", "b", None]),
    st.sampled_from(["ssd", "hdd", None]), st.sampled_from(["ready", "ready", "ready", "down"]),
    st.sampled_from(["active", "active", "active", "drain"]))


@settings(max_examples=60, deadline=None)
@given(nodes=st.lists(node_st, min_size=0, max_size=12, unique_by=lambda n: n.id),
       services=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 3), st.integers(0, 4),
                                   st.sampled_from([[], ["node.labels.disk==ssd"], ["node.labels.zone!=a"]]),
                                   st.sampled_from([[], ["node.labels.zone"]]), st.integers(0, 3)),
                         min_size=1, max_size=4))
def test_property_no_constraint_or_reservation_violated(nodes, services):
    from shoal.core.constraints import node_matches, parse_constraints
    all_pending, specs = [], {}
    for k, (n, cpu, mem, cons, prefs, maxr) in enumerate(services):
        spec = make_spec(f"s{k}", resources=ResourceRequirements(
            reservations=Resources(nano_cpus=cpu * CPU // 2, memory_bytes=mem * GiB // 2)),
            placement=Placement(constraints=cons, preferences=prefs, max_replicas_per_node=maxr))
        svc = make_service(spec, sid=f"s{k}")
        specs[svc.id] = spec
        all_pending += pending(svc, n, prefix=f"s{k}-")
    res = schedule(all_pending, nodes, [], now=0)
    assert set(res.assignments) | set(res.unplaced) == {t.id for t in all_pending}
    by_id = {n.id: n for n in nodes}
    used = {n.id: [0, 0] for n in nodes}
    per = Counter()
    for t in all_pending:
        nid = res.assignments.get(t.id)
        if nid is None:
            assert res.unplaced[t.id].startswith("no suitable node")
            continue
        node = by_id[nid]
        assert node.state == "ready" and node.availability == "active"
        assert node_matches(parse_constraints(t.spec.placement.constraints), node)
        r = t.spec.resources.reservations
        used[nid][0] += r.nano_cpus
        used[nid][1] += r.memory_bytes
        per[(t.service_id, nid)] += 1
        if t.spec.placement.max_replicas_per_node:
            assert per[(t.service_id, nid)] <= t.spec.placement.max_replicas_per_node
    for nid, (cpu, mem) in used.items():
        assert cpu <= by_id[nid].description.nano_cpus and mem <= by_id[nid].description.memory_bytes


@settings(max_examples=60, deadline=None)
@given(n_nodes=st.integers(1, 20), n_tasks=st.integers(0, 120), batches=st.integers(1, 3))
def test_property_spread_even_within_one(n_nodes, n_tasks, batches):
    svc = make_service()
    nodes = [make_node(f"n{i:02d}") for i in range(n_nodes)]
    placed = []
    per_batch = n_tasks // batches + 1
    start = 1
    while start <= n_tasks:
        n = min(per_batch, n_tasks - start + 1)
        res = schedule(pending(svc, n, start=start), nodes, placed, now=0)
        placed += [make_task(svc, slot=int(tid[1:]), node_id=nid, tid=tid) for tid, nid in res.assignments.items()]
        start += n
    counts = Counter(t.node_id for t in placed)
    values = [counts.get(n.id, 0) for n in nodes]
    assert max(values) - min(values) <= 1
    assert len(placed) == n_tasks
