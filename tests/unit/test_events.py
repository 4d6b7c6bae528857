"""`shoal events` (issue #16): events from the store's writes, the kept log, the route, the CLI's forms."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from manager_inproc import mgr  # noqa: F401 (fixture)
from shoal.cli.events_cmd import event_line, parse_when
from shoal.core.events import events_of, matches
from shoal.manager.events import EventLog
from shoal.model.objects import ConfigObj, Node, Service, Task, TaskStatus, UpdateStatus
from shoal.store.sqlite import SqliteStore

SPEC = {"name": "shop_web", "stack": "shop", "container": {"image": "busybox"}}


def svc(**spec) -> Service:
    return Service(id="s1", spec={**SPEC, **spec})


def task(state: str, desired: str = "running", **status) -> Task:
    return Task(id="t1", service_id="s1", service_name="shop_web", slot=2, node_id="n1", spec=svc().spec,
                desired_state=desired, status=TaskStatus(state=state, **status))


def test_service_create_update_remove_and_its_update_states():
    [ev] = events_of(None, svc(), 10.0)
    assert (ev["type"], ev["action"], ev["id"], ev["time"]) == ("service", "create", "s1", 10.0)
    assert ev["attributes"] == {"name": "shop_web", "stack": "shop"}
    old, new = svc(), svc(container={"image": "busybox:2"})
    assert [e["action"] for e in events_of(old, new, 1)] == ["update"]
    moving = new.model_copy(update={"update_status": UpdateStatus(state="updating")})
    [ev] = events_of(new, moving, 1)
    assert ev["attributes"]["updatestate.new"] == "updating" and "updatestate.old" not in ev["attributes"]
    done = moving.model_copy(update={"update_status": UpdateStatus(state="rollback_completed", message="rolled back")})
    [ev] = events_of(moving, done, 1)
    assert (ev["attributes"]["updatestate.old"], ev["attributes"]["updatestate.new"]) == (
        "updating", "rollback_completed")
    assert events_of(done, done, 1) == []  # nothing moved: no event
    assert [e["action"] for e in events_of(done, None, 1)] == ["remove"]


def test_task_events_follow_its_state_and_its_desired_state():
    [ev] = events_of(None, task("pending"), 1)
    assert ev["action"] == "pending" and ev["attributes"]["service"] == "shop_web" and ev["attributes"]["slot"] == "2"
    [ev] = events_of(task("starting"), task("failed", err="exit 3", exit_code=3), 1)
    assert ev["action"] == "failed" and ev["attributes"]["error"] == "exit 3" and ev["attributes"]["exitcode"] == "3"
    [ev] = events_of(task("running"), task("running", desired="shutdown"), 1)
    assert ev["action"] == "desired" and ev["attributes"]["desired"] == "shutdown"
    assert events_of(task("running"), task("running", health="healthy"), 1) == []  # not a state change
    assert events_of(task("complete"), None, 1) == []  # pruned history is not an event


def test_node_and_config_events():
    a = Node(id="n1", state="ready")
    [ev] = events_of(a, a.model_copy(update={"state": "down"}), 1)
    assert ev["type"] == "node" and ev["attributes"]["state.old"] == "ready" and ev["attributes"]["state.new"] == "down"
    [ev] = events_of(a, a.model_copy(update={"availability": "drain"}), 1)
    assert ev["attributes"]["availability.new"] == "drain"
    c = ConfigObj(id="c1", name="app_conf", data=b"x")
    assert [e["action"] for e in events_of(None, c, 1)] == ["create"]
    [ev] = events_of(c, c.model_copy(update={"data": b"y", "data_version": 2}), 1)
    assert ev["action"] == "update" and ev["attributes"]["version"] == "2"
    assert "data" not in json.dumps(ev) or "y" not in ev["attributes"].values()  # bytes are never in an event


def test_filters_or_within_a_key_and_across_keys():
    ev = events_of(None, task("running"), 1)[0]
    assert matches(ev, {"type": ["task"], "service": ["shop_web"]})
    assert matches(ev, {"type": ["service", "task"]})
    assert matches(ev, {"name": ["shop"]})  # the stack's name matches its tasks
    assert matches(ev, {"id": ["t"]})
    assert not matches(ev, {"type": ["task"], "event": ["failed"]})
    assert not matches(ev, {"node": ["n2"]})


def ev(t: float) -> dict:
    return {"time": t, "type": "service", "action": "create", "id": "s", "name": "x", "attributes": {"name": "x"}}


def test_the_log_keeps_its_newest_events_across_a_restart(tmp_path):
    path = str(tmp_path / "events.jsonl")
    now = time.time()
    log = EventLog(path, keep=5)
    log.add([ev(now + i) for i in range(8)])
    assert log.seq == 8 and [e["seq"] for e in log.events] == [4, 5, 6, 7, 8]
    again = EventLog(path, keep=5)
    assert again.seq == 8 and [e["seq"] for e in again.events] == [4, 5, 6, 7, 8]
    assert sum(1 for _ in open(path)) == 5  # rewritten to what is kept
    again.add([ev(now + 9)])
    assert again.seq == 9
    with open(path, "a") as f:
        f.write('{"time": 1, "cut')  # a line cut by a crash
    assert [e["seq"] for e in EventLog(path, keep=5).events] == [5, 6, 7, 8, 9]


def test_the_file_is_rewritten_when_it_holds_twice_what_is_kept(tmp_path):
    path = str(tmp_path / "events.jsonl")
    log = EventLog(path, keep=3)
    for i in range(10):
        log.add([ev(time.time())])
        assert sum(1 for _ in open(path)) < 6
    seqs = [json.loads(line)["seq"] for line in open(path)]
    assert seqs[-3:] == [8, 9, 10] and seqs == sorted(seqs)  # the kept events, as written


def test_old_events_are_dropped_at_start(tmp_path):
    path = str(tmp_path / "events.jsonl")
    EventLog(path).add([ev(time.time() - 30 * 86400), ev(time.time())])
    assert len(EventLog(path, max_age=7 * 86400).events) == 1


def test_since_until_and_filters_over_the_log():
    log = EventLog(None)
    log.add([ev(10), ev(20), {**ev(30), "type": "task"}, ev(40)])
    assert [e["time"] for e in log.since(0, 15, 35, {})] == [20, 30]
    assert [e["time"] for e in log.since(0, None, None, {"type": ["task"]})] == [30]
    assert [e["time"] for e in log.since(2, None, None, {})] == [30, 40]


def test_the_store_tells_its_observers_what_each_commit_wrote(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    seen: list[list] = []
    st.observe(lambda changes: seen.append([(o and o.version, n and n.version) for o, n in changes]))
    st.put(Node(id="n1"))
    n = st.get(Node, "n1")
    with st.txn():
        st.put(n.model_copy(update={"state": "down"}))
        st.put(Node(id="n2"))
    with pytest.raises(RuntimeError):
        with st.txn():
            st.put(Node(id="n3"))
            raise RuntimeError("rolled back")
    st.delete(Node, "n2")
    assert seen == [[(None, 1)], [(1, 2), (None, 1)], [(1, None)]]
    st.close()


def test_a_failing_observer_does_not_undo_the_commit(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    st.observe(lambda changes: 1 / 0)
    st.put(Node(id="n1"))
    assert st.get(Node, "n1") is not None
    st.close()


async def test_the_route_streams_kept_events_then_new_ones(mgr):  # noqa: F811
    since = time.time() - 1
    await mgr.call("POST", "/v1/configs", {"name": "conf", "data": "aGk="})
    until = time.time() + 2

    async def read() -> list[dict]:
        async with mgr.user.get("http://localhost/v1/events", params={
                "since": repr(since), "until": repr(until), "filters": json.dumps({"type": ["config"]})}) as r:
            assert r.status == 200
            return [json.loads(line) for line in (await r.read()).splitlines() if line.strip()]

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.3)
    await mgr.call("DELETE", "/v1/configs/conf")
    got = await asyncio.wait_for(reader, 10)
    assert [(e["type"], e["action"], e["name"]) for e in got] == [("config", "create", "conf"),
                                                                  ("config", "remove", "conf")]
    assert all("aGk" not in json.dumps(e) and "hi" not in e["attributes"].values() for e in got)
    status, body = await mgr.call("GET", "/v1/events?filters=" + json.dumps({"colour": ["red"]}))
    assert status == 400 and "colour" in body["message"]


def test_when_forms_and_the_text_line():
    now = 1_000_000.0
    assert parse_when("1733270400.5", now) == 1733270400.5
    assert parse_when("10m", now) == now - 600
    assert parse_when("2026-12-03T17:06:00Z", now) == 1796317560.0
    with pytest.raises(ValueError, match="neither"):
        parse_when("yesterday", now)
    line = event_line({"time": 1796317560.25, "type": "service", "action": "create", "id": "abc",
                       "attributes": {"stack": "shop", "name": "shop_web"}})
    assert line.split(" ", 1)[1] == "service create abc (name=shop_web, stack=shop)"
    assert ".250000000" in line.split(" ")[0]


@pytest.mark.parametrize("kw", [
    dict(slot=3, node_id="n1", status=TaskStatus(state="running", message="started", exit_code=0)),
    dict(slot=0, node_id=None, status=TaskStatus(state="failed", err="boom \u00e9", exit_code=137)),
    dict(slot=2, node_id="n2", status=TaskStatus(state="pending", message="")),
])
def test_task_events_and_their_lines_are_what_the_generic_paths_make(kw):
    """Task events are built and encoded on fast paths of their own (a deploy records hundreds of
    thousands): the same as core.events.event() and json.dumps make."""
    from shoal.core.events import encode as _encode
    from shoal.core.events import event, events_json
    from shoal.model.specs import ServiceSpec
    spec = ServiceSpec.model_validate({"name": "app_web", "stack": "app", "container": {"image": "busybox"}})
    new = Task(id="t1", service_id="s", service_name="app_web", spec=spec, **kw)
    st = new.status
    (got,) = events_of(None, new, 5.5)
    assert got == event(5.5, "task", st.state, new.id, new.name, service=new.service_name, stack="app",
                        slot=new.slot or None, node=new.node_id, desired=new.desired_state,
                        message=st.message, error=st.err, exitcode=st.exit_code)
    for value in (got, 1e300, -0.0, 1 / 3, {"a": [1, 2.5, None, True, "\u00e9\n"]}):
        assert _encode(value) == json.dumps(value, separators=(",", ":"))
    # the text the log keeps, written directly, is the event's JSON, byte for byte, whatever
    # moved (the state, only the desired state, nothing: no event) and whatever the clock
    stopping = new.model_copy(update={"desired_state": "shutdown"})
    moved = new.model_copy(update={"status": st.model_copy(update={"state": "shutdown", "message": 'say "hi"\\'})})
    for old, now_ in ((None, new), (new, stopping), (new, moved), (new, new), (new, None)):
        for clock in (5.5, 1700000000.123456, 7, 1e-7):
            want = [json.dumps(e, separators=(",", ":")) for e in events_of(old, now_, clock)]
            assert events_json(old, now_, clock) == want
