"""What happened, in `docker events` terms, from an object's version before and after a write.

The store calls its observers with (old, new) pairs after each commit; this module turns a
pair into events (type, action, actor id and name, attributes), so that `shoal events`
reports what every writer did — the API, the orchestrator, the heartbeats — without any of
them having to remember to. Pure: no clock (the caller passes `now`), no IO.

Types and actions (Docker's where it has them):
- service: create, update, remove; `update` with `updatestate.new` = updating, paused,
  completed, rollback_started, rollback_paused, rollback_completed as an update moves on.
- task (beyond Docker, which only has containers): its new state as the action (pending,
  assigned, running, complete, failed, shutdown, rejected, orphaned…), with the service,
  slot, node, desired state, message, error and exit code; a pending task's new reason too.
- node: create (joined), remove, update with `state.new` (ready, down…) or
  `availability.new` (active, pause, drain) or `role.new`.
- config, secret: create, remove, update (a new version: `version`).
- network: create, remove.
- volume: create, remove, as a node's engine reports them (`node`).
"""
from __future__ import annotations

import json
from typing import Any, Optional

from shoal.model.objects import ConfigObj, NetworkObj, Node, NodeFacts, Obj, SecretObj, Service, Task

TYPES = ("service", "task", "node", "config", "secret", "network", "volume")
FILTER_KEYS = ("type", "event", "action", "id", "name", "node", "service", "stack")


def event(now: float, type_: str, action: str, actor_id: str, name: str, **attributes: Any) -> dict:
    attrs = {"name": name}
    attrs.update({k: str(v) for k, v in attributes.items() if v not in (None, "")})
    return {"time": now, "type": type_, "action": action, "id": actor_id, "name": name, "attributes": attrs}


def events_of(old: Optional[Obj], new: Optional[Obj], now: float) -> list[dict]:
    obj = new if new is not None else old
    if obj is None:
        return []
    fn = _BY_TYPE.get(type(obj))
    return fn(old, new, now) if fn else []


def _service(old: Optional[Service], new: Optional[Service], now: float) -> list[dict]:
    s = new or old
    assert s is not None
    name = s.spec.name
    if old is None:
        return [event(now, "service", "create", s.id, name, stack=s.spec.stack)]
    if new is None:
        return [event(now, "service", "remove", s.id, name, stack=s.spec.stack)]
    out = []
    if new.spec != old.spec:
        out.append(event(now, "service", "update", s.id, name, stack=s.spec.stack))
    was = old.update_status.state if old.update_status else ""
    now_state = new.update_status.state if new.update_status else ""
    if now_state and now_state != was:
        out.append(event(now, "service", "update", s.id, name, stack=s.spec.stack,
                         **{"updatestate.old": was, "updatestate.new": now_state,
                            "updatestate.message": new.update_status.message if new.update_status else ""}))
    return out


def _task_action(old: Optional[Task], new: Optional[Task]) -> Optional[str]:
    """The action of a task's event (None: the write is no event)."""
    if new is None:
        return None  # tasks are pruned from history, not "removed" by anyone
    st = new.status
    if old is not None and old.status.state == st.state and old.status.err == st.err:
        if old.desired_state == new.desired_state:
            return None
        return "desired"  # only the desired state moved (the orchestrator asks it to stop)
    return st.state


def _task_attributes(new: Task) -> tuple:
    st = new.status
    return (("service", new.service_name), ("stack", new.spec.stack), ("slot", new.slot or None),
            ("node", new.node_id), ("desired", new.desired_state), ("message", st.message),
            ("error", st.err), ("exitcode", st.exit_code))


def _task(old: Optional[Task], new: Optional[Task], now: float) -> list[dict]:
    action = _task_action(old, new)
    if action is None:
        return []
    assert new is not None
    name = new.name
    attrs = {"name": name}
    for k, v in _task_attributes(new):
        if v is not None and v != "":
            attrs[k] = v if type(v) is str else str(v)
    return [{"time": now, "type": "task", "action": action, "id": new.id, "name": name, "attributes": attrs}]


def _task_json(old: Optional[Task], new: Optional[Task], now: float) -> Optional[str]:
    """_task's event as JSON text, written out directly: a deploy of 100,000 tasks records
    ~300,000 task events, and building each as a dict to encode it cost 2.5 times as much."""
    action = _task_action(old, new)
    if action is None:
        return None
    assert new is not None
    q = _quote
    name = q(new.name)
    attrs = [f'"name":{name}']
    for k, v in _task_attributes(new):
        if v is not None and v != "":
            attrs.append(f'"{k}":{q(v if type(v) is str else str(v))}')
    # (json writes a number as its repr)
    return (f'{{"time":{now!r},"type":"task","action":{q(action)},"id":{q(new.id)},"name":{name},'
            f'"attributes":{{{",".join(attrs)}}}}}')


def _compact_encoder():
    """json.dumps(…, separators=(",", ":")) with the C encoder made once: JSONEncoder.encode
    makes one per call, 40 % of the time of encoding a small event."""
    enc = json.JSONEncoder(separators=(",", ":"))
    c_make = getattr(json.encoder, "c_make_encoder", None)
    if c_make is None:  # (an interpreter without the C accelerator)
        return enc.encode
    it = c_make(None, enc.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda obj: "".join(it(obj, 0))


encode = _compact_encoder()
_quote = json.encoder.encode_basestring_ascii  # a str as JSON text, as `encode` writes it


def events_json(old: Optional[Obj], new: Optional[Obj], now: float) -> list[str]:
    """events_of's events as compact JSON text, one object each (what the event log keeps)."""
    if type(new if new is not None else old) is Task:
        line = _task_json(old, new, now)  # type: ignore[arg-type]
        return [line] if line is not None else []
    return [encode(ev) for ev in events_of(old, new, now)]


def _node(old: Optional[Node], new: Optional[Node], now: float) -> list[dict]:
    n = new or old
    assert n is not None
    name = n.description.hostname or n.id
    if old is None:
        return [event(now, "node", "create", n.id, name, role=n.role)]
    if new is None:
        return [event(now, "node", "remove", n.id, name)]
    out = []
    for field in ("state", "availability", "role"):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            out.append(event(now, "node", "update", n.id, name, **{f"{field}.old": a, f"{field}.new": b}))
    return out


def _file(kind: str):
    def fn(old, new, now: float) -> list[dict]:
        o = new or old
        if old is None:
            return [event(now, kind, "create", o.id, o.name, version=o.data_version)]
        if new is None:
            return [event(now, kind, "remove", o.id, o.name)]
        if new.data_version != old.data_version or new.labels != old.labels:
            return [event(now, kind, "update", o.id, o.name, version=new.data_version)]
        return []
    return fn


def _network(old: Optional[NetworkObj], new: Optional[NetworkObj], now: float) -> list[dict]:
    if old is None and new is not None:
        return [event(now, "network", "create", new.id, new.spec.name, stack=new.spec.stack, driver=new.spec.driver,
                      subnet=new.subnet)]
    if new is None and old is not None:
        return [event(now, "network", "remove", old.id, old.spec.name, stack=old.spec.stack)]
    return []


def _volumes(old: Optional[NodeFacts], new: Optional[NodeFacts], now: float) -> list[dict]:
    before = {v.name for v in old.volumes} if old else set()
    after = {v.name for v in new.volumes} if new else set()
    node = (new or old).id  # type: ignore[union-attr]
    if old is None or new is None:
        return []  # a node's first report, or its removal: not a volume's birth or death
    return ([event(now, "volume", "create", v, v, node=node) for v in sorted(after - before)]
            + [event(now, "volume", "remove", v, v, node=node) for v in sorted(before - after)])


_BY_TYPE = {Service: _service, Task: _task, Node: _node, ConfigObj: _file("config"), SecretObj: _file("secret"),
            NetworkObj: _network, NodeFacts: _volumes}


def matches(ev: dict, filters: dict[str, list[str]]) -> bool:
    """`docker events --filter`: the same key ORs, different keys AND. Keys (FILTER_KEYS):
    type, name (the actor's name, or its service or stack), id (a prefix), event or action,
    node, service, stack."""
    for key, values in filters.items():
        if not values:
            continue
        attrs = ev["attributes"]
        if key == "type":
            ok = ev["type"] in values
        elif key in ("event", "action"):
            ok = ev["action"] in values
        elif key == "id":
            ok = any(ev["id"].startswith(v) for v in values)
        elif key == "name":
            ok = any(v in (ev["name"], attrs.get("service"), attrs.get("stack")) for v in values)
        else:
            ok = attrs.get(key) in values
        if not ok:
            return False
    return True
