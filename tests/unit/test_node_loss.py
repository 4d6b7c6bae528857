"""Node liveness and loss on the manager's side (issue #13), without an engine: the pure
judgement, then an in-process manager whose nodes stop sending heartbeats."""
from __future__ import annotations

import asyncio
import time

import pytest


from shoal.core.liveness import HEARTBEAT_FAILURE, NEVER_HEARD, judge
from shoal.model.objects import Node, Service, Task

from test_reconcile_support import make_node


def test_judge_down_after_grace_periods_and_a_longer_grace_after_a_start():
    nodes = [make_node("a"), make_node("b"), make_node("c"), make_node("d", state="down")]
    seen = {"a": 100.0, "b": 95.0}
    # period 2 s x 3: b (silent 7 s) is down; a is not; c never heard from: 2 x 6 s after the start
    assert judge(nodes, seen, 102.0, started_at=90.0, period=2, grace=3) == [("b", HEARTBEAT_FAILURE)]
    assert judge(nodes, seen, 102.0, started_at=95.0, period=2, grace=3) == [("b", HEARTBEAT_FAILURE)]
    assert ("c", NEVER_HEARD) in judge(nodes, seen, 108.0, started_at=95.0, period=2, grace=3)
    # time the manager's loop was stuck does not count against the nodes
    assert judge(nodes, seen, 102.0, started_at=90.0, period=2, grace=3, stalled=2.0) == []




async def _until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def _keep_beating(beat, ctx, host: str) -> None:
    """One node's heartbeats every 0.1 s, until cancelled (the other node falls silent)."""
    while True:
        await beat(ctx, host)
        await asyncio.sleep(0.1)


async def _two_nodes_and_a_service(mgr, replicas: int):
    """Heartbeats every 0.2 s, nodes a and b joined and heard from, a service of `replicas`
    placed on them: (a's id, a's TLS context, b's id, b's context, the service, beat())."""
    st = mgr.server.store
    assert (await mgr.call("POST", "/v1/cluster/update", {"dispatcher_heartbeat": 0.2}))[0] == 200
    a_id, a = await mgr.join()
    b_id, b = await mgr.join()

    async def beat(ctx, host):
        return await mgr.node_call(ctx, "POST", "/v1/agent/heartbeat", {"description": {"hostname": host}})

    await beat(a, "a")
    await beat(b, "b")
    stack = {"name": "s", "services": [{"name": "s_web", "stack": "s", "container": {"image": "busybox"},
                                        "replicas": replicas}]}
    assert (await mgr.call("POST", "/v1/stacks/s", {"stack": stack}))[0] == 200
    svc = st.by_name(Service, "s_web")
    await _until(lambda: len([t for t in st.tasks_of_service(svc.id) if t.node_id]) == replicas)
    return a_id, a, b_id, b, svc, beat


async def test_a_silent_node_goes_down_its_tasks_become_unknown_and_are_replaced(mgr):
    st = mgr.server.store
    a_id, a, b_id, b, svc, beat = await _two_nodes_and_a_service(mgr, 4)
    on_b = [t.id for t in st.tasks_of_service(svc.id) if t.node_id == b_id]
    assert len(on_b) == 2  # spread 2/2 (the manager's own node has no agent here: not ready)
    for ctx, node in ((a, a_id), (b, b_id)):
        ups = [{"task_id": t.id, "state": "running"} for t in st.tasks_of_node(node)]
        assert (await mgr.node_call(ctx, "POST", "/v1/agent/status", {"updates": ups}))[0] == 200

    # a keeps beating, b falls silent: down after 3 periods (0.6 s), not before
    t0 = time.monotonic()
    beating = asyncio.create_task(_keep_beating(beat, a, "a"))
    try:
        await _until(lambda: st.get(Node, b_id).state == "down")
        assert time.monotonic() - t0 >= 0.5 and st.get(Node, a_id).state == "ready"
        assert st.get(Node, b_id).message == "heartbeat failure"
        # b's tasks: unknown (may still run there), desired shutdown; replaced on a
        await _until(lambda: all(st.get(Task, t).status.state == "unknown" for t in on_b))
        assert all(st.get(Task, t).desired_state == "shutdown" for t in on_b)
        await _until(lambda: len([t for t in st.tasks_of_service(svc.id)
                                  if t.node_id == a_id and t.desired_state == "running"]) == 4)
        _, view = await mgr.call("GET", "/v1/services/s_web")
        assert view["replicas_unknown"] == 2
        # b comes back: its agent stops the unknown tasks and says so; nothing else changes
        await beat(b, "b")
        assert st.get(Node, b_id).state == "ready"
        ups = [{"task_id": t, "state": "running"} for t in on_b]  # a late report: dropped
        ups += [{"task_id": t, "state": "shutdown", "message": "shutdown"} for t in on_b]
        assert (await mgr.node_call(b, "POST", "/v1/agent/status", {"updates": ups}))[0] == 200
        assert all(st.get(Task, t).status.state == "shutdown" for t in on_b)
        _, view = await mgr.call("GET", "/v1/services/s_web")
        assert view["replicas_unknown"] == 0
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def test_a_manager_restart_gives_nodes_time_to_report_back(mgr):
    st = mgr.server.store
    assert (await mgr.call("POST", "/v1/cluster/update", {"dispatcher_heartbeat": 0.2}))[0] == 200
    a_id, a = await mgr.join()
    await mgr.node_call(a, "POST", "/v1/agent/heartbeat", {"description": {"hostname": "a"}})
    assert st.get(Node, a_id).state == "ready"
    await mgr.stop()
    await mgr.start()
    st = mgr.server.store
    # not heard since the start: judged only after twice the usual grace (1.2 s here)
    await asyncio.sleep(0.8)
    assert st.get(Node, a_id).state == "ready"
    await mgr.node_call(a, "POST", "/v1/agent/heartbeat", {"description": {"hostname": "a"}})
    await asyncio.sleep(0.5)
    assert st.get(Node, a_id).state == "ready"


def test_the_heartbeat_period_stretches_with_the_number_of_nodes(tmp_path):
    """At most 200 heartbeats a second reach the manager: 1,000 nodes beat every 5 s (a busy
    manager must not find them late), and a node told a longer period is judged by it."""
    from shoal.manager.heartbeats import Heartbeats
    from shoal.model.objects import NodeDescription
    from shoal.store.sqlite import SqliteStore
    st = SqliteStore(str(tmp_path / "s.db"))
    hb = Heartbeats(st)
    for i in range(1000):
        st.put(Node(id=f"n{i}"))
        hb.beat(f"n{i}", NodeDescription(), "", "10.0.0.1", None)
    answer = hb.beat("n0", NodeDescription(), "", "10.0.0.1", None)
    assert answer["heartbeat_period"] == 5.0 and answer["down_after"] == 15.0
    for i in range(100, 1000):
        hb.forget(f"n{i}")
    assert hb.period() == 2.0
    now = time.time()
    assert hb._judging_period(now) == 5.0  # what n1 was told a moment ago still holds
    assert hb._judging_period(now + 20) == 2.0
    st.close()


async def test_a_node_that_left_stays_down_even_if_a_heartbeat_was_on_its_way(mgr):
    """`shoal leave` on a worker: its certificate is retired at once, so a heartbeat sent just
    before (or the agent's next one, before its daemon stops) cannot make it ready again."""
    st = mgr.server.store
    node_id, ctx = await mgr.join()
    hb = {"description": {"hostname": "w"}}
    assert (await mgr.node_call(ctx, "POST", "/v1/agent/heartbeat", hb))[0] == 200
    assert st.get(Node, node_id).state == "ready"
    assert (await mgr.node_call(ctx, "POST", "/v1/agent/leave", {}))[0] == 200
    status, _ = await mgr.node_call(ctx, "POST", "/v1/agent/heartbeat", hb)
    assert status == 403
    node = st.get(Node, node_id)
    assert (node.state, node.message) == ("down", "left the cluster")
    # a direct call past the API's check is refused as well (a request already past it)
    with pytest.raises(KeyError):
        mgr.server.heartbeats.beat(node_id, node.description, "", "", None)
    assert st.get(Node, node_id).state == "down"


async def test_a_silent_node_gets_no_new_tasks_before_it_is_judged_down(mgr):
    """A node not heard from for two periods is not judged down yet (three, and a new leader's
    grace) but gets no new tasks meanwhile: a scale right after it died places its replicas on
    the nodes that answer, and its running tasks are left alone."""
    st = mgr.server.store
    mgr.server.heartbeats.judging = False  # as during a new leader's grace: nothing judged down
    a_id, a, b_id, b, svc, beat = await _two_nodes_and_a_service(mgr, 2)
    on_b = {t.id for t in st.tasks_of_node(b_id)}
    assert len(on_b) == 1
    beating = asyncio.create_task(_keep_beating(beat, a, "a"))
    try:
        await asyncio.sleep(0.6)  # b silent for 3 periods; not judged (judging is off)
        assert st.get(Node, b_id).state == "ready" and mgr.server.heartbeats.silent(time.time()) == {b_id}
        assert (await mgr.call("POST", "/v1/services/s_web/scale", {"replicas": 6}))[0] == 200
        await _until(lambda: len([t for t in st.tasks_of_service(svc.id) if t.node_id]) == 6)
        assert {t.id for t in st.tasks_of_node(b_id)} == on_b  # none of the 4 new ones on b
        assert len(st.tasks_of_node(a_id)) == 5
        # b beats again: it takes new tasks again
        await beat(b, "b")
        assert mgr.server.heartbeats.silent(time.time()) == set()
        assert (await mgr.call("POST", "/v1/services/s_web/scale", {"replicas": 8}))[0] == 200
        await _until(lambda: len(st.tasks_of_node(b_id)) > 1)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


def test_a_new_leader_does_not_judge_a_node_by_heartbeats_it_heard_before_leading(tmp_path):
    """Found in the lab: a manager heard a node, the node's heartbeats then went to another
    manager, and when the first became the leader it judged the node down at once on its own
    stale time. Times heard before leading count no more than the store's: the node gets the
    new leader's grace."""
    from shoal.manager.heartbeats import Heartbeats
    from shoal.model.objects import NodeDescription, NodeFacts
    from shoal.store.sqlite import SqliteStore
    st = SqliteStore(str(tmp_path / "s.db"))
    hb = Heartbeats(st)
    st.put(Node(id="n1", state="ready"))
    hb.beat("n1", NodeDescription(), "", "10.0.0.1", None)
    heard_here = hb.last_seen["n1"]
    st.put(NodeFacts(id="n1", last_heartbeat=heard_here + 5.0), quiet=True)  # another manager's, before leading
    later = heard_here + 7.0  # past down_after (6 s) for what this manager heard itself
    hb.lead(later)
    assert hb.check(later) == [] and st.get(Node, "n1").state == "ready"
    assert hb.check(later + 6.0) == []  # the grace after leading: twice the limit
    assert hb.check(later + 13.0) == ["n1"]  # never heard since: down after the grace


def test_a_managers_own_agent_keeps_its_own_manager_first():
    """Heartbeat answers name the managers by address; a manager's agent stays on its own
    (127.0.0.1) and keeps the others as fallbacks; a worker's agent takes the list as it is."""
    from shoal.agent.client import ManagerList
    mine = ManagerList(["127.0.0.1:4343"], home="127.0.0.1:4343")
    mine.update(["10.0.0.1:4343", "10.0.0.2:4343"])
    assert mine.current() == "127.0.0.1:4343" and mine.addresses[1:] == ["10.0.0.1:4343", "10.0.0.2:4343"]
    worker = ManagerList(["10.0.0.9:4343"])
    worker.update(["10.0.0.1:4343", "10.0.0.2:4343"])
    assert worker.current() == "10.0.0.1:4343"
