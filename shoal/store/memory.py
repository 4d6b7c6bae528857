"""The store's in-memory view, shared by its backends (SQLite, etcd): every object decoded
once, indexed by service, node and state, specs shared between tasks, and the bookkeeping of
a transaction (its rows, change feeds, observers, revision waiters).

Reads never touch the backend. A backend says how rows are loaded, written at commit and
read back after a rollback (`_begin`, `_commit`, `_rollback`, `_read_row`, `_rows_written`).
A row is `(kind, id, name, version, data, spec_key, renamed)`: the object's JSON without
its spec for a task (the spec is its own row, written once per spec: `_spec_changes`).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import sys
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

from shoal.model.objects import (ClusterObj, ConfigObj, NetworkObj, Node, NodeFacts, Obj, SecretObj, Service, Task,
                                 TaskStatus)
from shoal.model.specs import ServiceSpec
from shoal.store.base import ChangeFeed, Conflict, Store, check_spec

log = logging.getLogger("shoal.store")

KINDS: dict[str, type[Obj]] = {
    "service": Service,
    "task": Task,
    "node": Node,
    "config": ConfigObj,
    "secret": SecretObj,
    "network": NetworkObj,
    "nodefacts": NodeFacts,
    "cluster": ClusterObj,
}
KIND_OF = {cls: kind for kind, cls in KINDS.items()}

T = TypeVar("T", bound=Obj)

_NO_SPEC = {"spec"}
TASK_TEXTS_KEPT = 16_384  # see ViewStore._task_text
_setattr = object.__setattr__
_intern = sys.intern
# Every task (and task status) the store holds shares one "fields set" naming every field
# instead of a set of its own (a few hundred bytes each). Safe: pydantic's model_copy copies
# the set before updating it, and assigning a field only adds a name that is already in it.
# (Only model_dump(exclude_unset=True) of a stored task differs: every field counts as set.)
_TASK_FIELDS: set[str] = set(Task.model_fields)
_STATUS_FIELDS: set[str] = set(TaskStatus.model_fields)


def _spec_key(spec_json: str) -> str:
    return hashlib.sha256(spec_json.encode()).hexdigest()[:32]


def _i(s: Any) -> Any:
    return _intern(s) if type(s) is str else s


class _Spec:
    """One spec the tasks in memory use: its object (shared by those tasks), JSON, key, and how
    many of them use it (refs); stored: whether the `specs` table has its row (as committed)."""
    __slots__ = ("spec", "json", "key", "refs", "stored")

    def __init__(self, spec: ServiceSpec, spec_json: str, key: str, stored: bool = False):
        self.spec, self.json, self.key, self.refs, self.stored = spec, spec_json, key, 0, stored


def _name_of(obj: Obj) -> Optional[str]:
    if type(obj) is Task:
        return obj.service_id
    if isinstance(obj, (Service,)):
        return obj.spec.name
    if isinstance(obj, NetworkObj):
        return obj.spec.name
    if isinstance(obj, (ConfigObj, SecretObj)):
        return obj.name
    if isinstance(obj, Node):
        return obj.description.hostname
    if isinstance(obj, Task):
        return obj.service_id
    return None


class ViewStore(Store):
    """The view and the transaction bookkeeping; a subclass is the backend."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Obj]] = {k: {} for k in KINDS}
        self._tasks_by_service: dict[str, dict[str, Task]] = {}
        self._tasks_by_node: dict[str, dict[str, Task]] = {}
        self._pending_tasks: dict[str, Task] = {}  # tasks in state pending (what the scheduler places)
        # What changed since the orchestrator last looked (see take_changes): service ids whose
        # service or tasks were written, and whether any node was.
        self._changed_services: set[str] = set()
        self._nodes_changed = True
        # A counter bumped on every write of a service or one of its tasks, kept per service:
        # readers cache what they derive from a service's tasks by it (dispatcher endpoints).
        self._seq = 0
        self._service_seq: dict[str, int] = {}
        # The same per node (its tasks, any moving on or off it) and per kind of object: the
        # dispatcher keeps each node's view while neither moved.
        self._node_seq: dict[str, int] = {}
        self._kind_seq: dict[str, int] = {k: 0 for k in KINDS}
        # The specs of the tasks in memory (see _Spec), by key and by the id of their (shared)
        # object; other spec objects already seen (equal to one of those) by id, in _spec_alias,
        # so that a spec is turned into JSON and hashed once, not on every write of every task.
        self._specs: dict[str, _Spec] = {}
        self._spec_canon: dict[int, _Spec] = {}
        self._spec_alias: dict[int, tuple[ServiceSpec, _Spec]] = {}
        self._spec_touched: set[_Spec] = set()  # whose row may need writing or deleting
        self._spec_rows: Optional[dict[str, str]] = None  # while loading: spec rows by key
        self._feeds: list[ChangeFeed] = []
        self._observers: list[Callable[[list[tuple[Optional[Obj], Optional[Obj]]]], None]] = []
        self._changes: list[tuple[Optional[Obj], Optional[Obj]]] = []
        # Writes of the open transaction not sent to the backend yet, by (kind, id): None (a delete)
        # or the row (kind, id, name, version, data, spec_key, whether name may have changed).
        self._rows: dict[tuple[str, str], Optional[tuple]] = {}
        self._pending: set[tuple[str, str]] = set()  # (kind, id) written in the open transaction
        # The JSON of the tasks written last (the stored object and its row's text): the
        # assignment answers send a task right after it is written, and serialising it again
        # for them was 3.6 % of a deploy. Bounded: the answers' lag is seconds of writes.
        # (An OrderedDict: evicting a plain dict's oldest entry scans the holes its earlier
        # evictions left, O(entries) each time.)
        self._task_text: collections.OrderedDict[str, tuple[Task, str]] = collections.OrderedDict()
        self.rev = 0
        self._waiters: list[asyncio.Future] = []
        self._in_txn = False

    # -- the backend -------------------------------------------------------------
    def _begin(self) -> None:
        """A transaction starts."""

    def _commit(self, wrote: bool) -> None:
        """Write `self._rows` and `self._spec_changes()` atomically; bump `self.rev` if `wrote`."""
        raise NotImplementedError

    def _rollback(self) -> None:
        """The transaction failed: forget what it sent (the view is reloaded from `_read_row`)."""

    def _read_row(self, kind: str, obj_id: str) -> Optional[tuple[str, Optional[str]]]:
        """(data, spec_key) of an object as the backend has it, None if it has none."""
        raise NotImplementedError

    def _rows_written(self) -> None:
        """Called after each row is added to `self._rows` (a backend may send them early)."""

    def _spec_changes(self) -> tuple[list[tuple[str, str, str]], list[str]]:
        """(new spec rows (key, name, json), keys of spec rows to delete) the commit writes."""
        touched = self._spec_touched
        new = [(e.key, e.spec.name, e.json) for e in touched if e.refs > 0 and not e.stored]
        gone = [e.key for e in touched if e.refs <= 0 and e.stored]
        return new, gone

    # -- decoding and indexing -----------------------------------------------------
    def _decode(self, kind: str, data: str, spec_key: Optional[str]) -> Obj:
        if spec_key is None:
            return KINDS[kind].model_validate_json(data)
        e = self._specs.get(spec_key)
        if e is None:
            data_of_spec = self._spec_rows.get(spec_key) if self._spec_rows is not None else None
            if data_of_spec is None:
                raise ValueError(f"{kind} row refers to spec {spec_key}, which the store does not have")
            spec = ServiceSpec.model_validate_json(data_of_spec)
            # JSON as this version writes it (task_json sends it); the key stays the row's.
            e = self._specs[spec_key] = self._spec_canon[id(spec)] = _Spec(
                spec, spec.model_dump_json(), spec_key, stored=True)
        d = json.loads(data)
        # Validated from Python objects, the shared spec object kept as it is (a Task has no
        # field whose JSON form differs from its Python form: bytes, tuples...).
        d["spec"] = e.spec
        return KINDS[kind].model_validate(d)

    def _spec_entry(self, spec: ServiceSpec) -> _Spec:
        """The _Spec of this spec (object or equal one), created (refs 0) if new."""
        e = self._spec_canon.get(id(spec))
        if e is not None:  # the entry holds the object: the id is its
            return e
        hit = self._spec_alias.get(id(spec))
        if hit is not None and hit[0] is spec and self._specs.get(hit[1].key) is hit[1]:
            return hit[1]
        spec_json = spec.model_dump_json()
        key = _spec_key(spec_json)
        e = self._specs.get(key)
        if e is None:
            if self._spec_rows is None:  # a spec first seen in a write (not loading): check it once
                check_spec(spec)
            e = self._specs[key] = self._spec_canon[id(spec)] = _Spec(spec, spec_json, key)
            self._spec_touched.add(e)  # dropped at the next commit unless a task uses it
        else:
            if len(self._spec_alias) >= 4096:
                self._spec_alias.clear()
            self._spec_alias[id(spec)] = (spec, e)
        return e

    def _drop_spec(self, e: _Spec) -> None:
        if self._specs.get(e.key) is e:
            del self._specs[e.key]
        if self._spec_canon.get(id(e.spec)) is e:
            del self._spec_canon[id(e.spec)]

    def _index(self, kind: str, obj: Obj, quiet: bool = False) -> None:
        old = self._objects[kind].get(obj.id)
        self._objects[kind][obj.id] = obj
        self._kind_seq[kind] += 1
        if kind == "task":
            t: Task = obj  # type: ignore[assignment]
            d = t.__dict__
            # Share what many tasks have equal: the spec object, the fields set, repeated strings.
            e = self._spec_entry(t.spec)
            if d["spec"] is not e.spec:
                d["spec"] = e.spec
            if old is None or old.spec is not e.spec:  # type: ignore[attr-defined]
                e.refs += 1
                if not e.stored:
                    self._spec_touched.add(e)
                if old is not None:
                    e = self._spec_entry(old.spec)  # type: ignore[attr-defined]
                    e.refs -= 1
                    if e.refs <= 0:
                        self._spec_touched.add(e)
            _setattr(t, "__pydantic_fields_set__", _TASK_FIELDS)
            d["service_id"] = _i(d["service_id"])
            d["service_name"] = _i(d["service_name"])
            d["node_id"] = _i(d["node_id"])
            d["desired_state"] = _i(d["desired_state"])
            if d["not_before"] == 0.0:
                d["not_before"] = 0.0  # one float object (JSON gives each row its own)
            status = d["status"]
            if status.__pydantic_fields_set__ is not _STATUS_FIELDS:  # not seen yet
                _setattr(status, "__pydantic_fields_set__", _STATUS_FIELDS)
                sd = status.__dict__
                sd["state"] = _i(sd["state"])
                sd["message"] = _i(sd["message"])
                sd["err"] = _i(sd["err"])
                sd["health"] = _i(sd["health"])
                if sd["addresses"]:  # network names repeat (the addresses rarely do)
                    sd["addresses"] = {_i(k): v for k, v in sd["addresses"].items()}
            self._tasks_by_service.setdefault(t.service_id, {})[t.id] = t
            if not quiet:
                self._changed_services.add(t.service_id)
            self._seq += 1
            self._service_seq[t.service_id] = self._seq
            for feed in self._feeds:
                feed.tasks.add(t.id)
            prev_node = old.node_id if old is not None else None  # type: ignore[union-attr]
            if prev_node and prev_node != t.node_id:
                self._tasks_by_node.get(prev_node, {}).pop(t.id, None)
                self._node_seq[prev_node] = self._seq
            if t.node_id:
                self._tasks_by_node.setdefault(t.node_id, {})[t.id] = t
                self._node_seq[t.node_id] = self._seq
            if status.state == "pending":
                self._pending_tasks[t.id] = t
            else:
                self._pending_tasks.pop(t.id, None)
        elif kind == "service":
            if not quiet:
                self._changed_services.add(obj.id)
            self._seq += 1
            self._service_seq[obj.id] = self._seq
            for feed in self._feeds:
                feed.services.add(obj.id)
        elif kind == "node" and not quiet:
            self._nodes_changed = True
        elif kind == "network" and old is None and obj.spec.attachable:  # type: ignore[attr-defined]
            self._nodes_changed = True  # every node holds it: a full pass gives them their addresses

    def _unindex(self, kind: str, obj_id: str) -> None:
        obj = self._objects[kind].pop(obj_id, None)
        self._kind_seq[kind] += 1
        if kind == "task" and obj is not None:
            t: Task = obj  # type: ignore[assignment]
            e = self._spec_entry(t.spec)
            e.refs -= 1
            if e.refs <= 0:
                self._spec_touched.add(e)
            tasks = self._tasks_by_service.get(t.service_id)
            if tasks is not None:
                tasks.pop(t.id, None)
                if not tasks:
                    del self._tasks_by_service[t.service_id]
            self._pending_tasks.pop(t.id, None)
            self._changed_services.add(t.service_id)
            self._seq += 1
            if t.node_id:
                self._tasks_by_node.get(t.node_id, {}).pop(t.id, None)
                self._node_seq[t.node_id] = self._seq
            self._service_seq[t.service_id] = self._seq
            for feed in self._feeds:
                feed.tasks.add(t.id)
        elif kind == "service":
            self._changed_services.add(obj_id)
            self._seq += 1
            self._service_seq[obj_id] = self._seq
            for feed in self._feeds:
                feed.services.add(obj_id)
        elif kind == "node":
            self._nodes_changed = True

    # -- reads -----------------------------------------------------------------
    def get(self, cls: type[T], obj_id: str) -> Optional[T]:
        return self._objects[KIND_OF[cls]].get(obj_id)  # type: ignore[return-value]

    def all(self, cls: type[T]) -> list[T]:
        return list(self._objects[KIND_OF[cls]].values())  # type: ignore[arg-type]

    def by_name(self, cls: type[T], name: str) -> Optional[T]:
        for obj in self._objects[KIND_OF[cls]].values():
            if _name_of(obj) == name:
                return obj  # type: ignore[return-value]
        return None

    def tasks_of_service(self, service_id: str) -> list[Task]:
        return list(self._tasks_by_service.get(service_id, {}).values())

    def tasks_of_node(self, node_id: str) -> list[Task]:
        return list(self._tasks_by_node.get(node_id, {}).values())

    def count(self, cls: type[Obj]) -> int:
        return len(self._objects[KIND_OF[cls]])

    def pending_tasks(self) -> list[Task]:
        """Tasks in state pending (any desired state)."""
        return list(self._pending_tasks.values())

    def service_seq(self, service_id: str) -> int:
        """Changes whenever the service or one of its tasks is written (or deleted)."""
        return self._service_seq.get(service_id, 0)

    def node_seq(self, node_id: str) -> int:
        """Changes whenever a task on the node, or moving on or off it, is written (or deleted)."""
        return self._node_seq.get(node_id, 0)

    def kind_seq(self, cls: type[Obj]) -> int:
        """Changes whenever an object of that kind is written (or deleted)."""
        return self._kind_seq[KIND_OF[cls]]

    def task_json(self, t: Task) -> str:
        """The task as JSON, its spec inside (the spec serialised once per spec)."""
        got = self._task_text.get(t.id)
        body = got[1] if got is not None and got[0] is t else t.model_dump_json(exclude=_NO_SPEC)
        return f'{body[:-1]},"spec":{self._spec_entry(t.spec).json}}}'

    def service_ids_with_tasks(self) -> list[str]:
        return list(self._tasks_by_service)

    def change_feed(self) -> ChangeFeed:
        """A new feed of task and service changes, starting now (its reader must take() often)."""
        feed = ChangeFeed()
        self._feeds.append(feed)
        return feed

    def observe(self, fn: Callable[[list[tuple[Optional[Obj], Optional[Obj]]]], None]) -> None:
        self._observers.append(fn)

    def take_changes(self) -> tuple[set[str], bool]:
        """(ids of services whose service object or tasks were written, whether any node was)
        since the last call. For the orchestrator, the one consumer."""
        changed, nodes = self._changed_services, self._nodes_changed
        self._changed_services, self._nodes_changed = set(), False
        return changed, nodes

    # -- writes ----------------------------------------------------------------
    @contextlib.contextmanager
    def txn(self) -> Iterator[None]:
        """Group writes into one transaction of the backend (and one revision bump)."""
        if self._in_txn:
            yield
            return
        self._in_txn = True
        began = time.perf_counter()
        self._begin()
        pending: set[tuple[str, str]] = set()  # (kind, id) of every object written or deleted
        self._pending = pending
        self._rows = {}
        try:
            yield
            self._commit(bool(pending))
        except BaseException:
            self._rollback()
            self._changes = []
            self._in_txn = False
            self._rows = {}
            self._pending = set()
            # Reload the in-memory view of what we touched: the backend is the truth.
            for kind, obj_id in pending:
                row = self._read_row(kind, obj_id)
                self._unindex(kind, obj_id)
                if row:
                    self._index(kind, self._decode(kind, row[0], row[1]))
            # Specs first seen in the transaction and used by no task any more are forgotten.
            for e in [e for e in self._spec_touched if e.refs <= 0 and not e.stored]:
                self._drop_spec(e)
                self._spec_touched.discard(e)
            raise
        self._in_txn = False
        self._pending = set()
        # What the commit wrote of the specs (see _spec_changes).
        for e in self._spec_touched:
            if e.refs > 0:
                e.stored = True
            else:
                self._drop_spec(e)
        self._spec_touched.clear()
        if pending:
            self._notify()
            if self.on_commit_seconds is not None:
                self.on_commit_seconds(time.perf_counter() - began)
        if self._changes:
            changes, self._changes = self._changes, []
            for fn in self._observers:
                try:
                    fn(changes)
                except Exception:  # an observer never undoes a commit
                    log.exception("store observer failed")

    def _write(self, obj: T, expect_version: Optional[int] = None, quiet: bool = False) -> T:
        """obj (validated by Store.put) as its new version: a revision, the change feeds,
        service_seq; quiet writes are not reported by take_changes. The store takes `obj` as
        its own (Store.put's validated copy, which nobody else holds): a task is given its
        version in place, not copied once more."""
        if not self._in_txn:
            with self.txn():
                return self._put(obj, expect_version, quiet)
        return self._put(obj, expect_version, quiet)

    def _put(self, obj: T, expect_version: Optional[int], quiet: bool = False) -> T:
        kind = KIND_OF[type(obj)]
        current = self._objects[kind].get(obj.id)
        if expect_version is not None and current is not None and current.version != expect_version:
            raise Conflict(f"{kind} {obj.id} changed (version {current.version}, expected {expect_version})")
        now = time.time()
        update = {
            "version": (current.version if current else 0) + 1,
            "updated_at": now,
            "created_at": obj.created_at or (current.created_at if current else now),
        }
        spec_key = None
        if kind == "task":
            obj.__dict__.update(update)
            e = self._spec_entry(obj.spec)  # type: ignore[attr-defined]
            obj.__dict__["spec"] = e.spec  # the shared object of equal specs
            data = obj.model_dump_json(exclude=_NO_SPEC)
            spec_key = e.key
            texts = self._task_text
            texts.pop(obj.id, None)  # (re-inserted last: the oldest write is evicted first)
            texts[obj.id] = (obj, data)  # type: ignore[assignment]
            if len(texts) > TASK_TEXTS_KEPT:
                texts.popitem(last=False)
        else:
            obj = obj.model_copy(update=update)
            data = obj.model_dump_json()
        name = _name_of(obj)
        key = (kind, obj.id)
        prev = self._rows.get(key)
        renamed = current is None or _name_of(current) != name or (prev is not None and prev[6])
        # Sent to the backend at commit (or earlier, see _rows_written), in batches (the last
        # write of an object in a batch wins).
        self._rows[key] = (kind, obj.id, name, obj.version, data, spec_key, renamed)
        self._pending.add(key)
        if self._observers:
            self._changes.append((current, obj))
        self._index(kind, obj, quiet)
        self._rows_written()
        return obj

    def delete(self, cls: type[Obj], obj_id: str) -> None:
        kind = KIND_OF[cls]
        with self.txn():
            key = (kind, obj_id)
            if self._observers and (current := self._objects[kind].get(obj_id)) is not None:
                self._changes.append((current, None))
            self._rows[key] = None
            self._pending.add(key)
            self._unindex(kind, obj_id)

    # -- watching --------------------------------------------------------------
    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(self.rev)

    async def wait_for_change(self, since: int, timeout: float) -> int:
        """Return the revision once it is past `since`, or after `timeout`."""
        if self.rev > since:
            return self.rev
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return self.rev


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return " / ".join(line.strip() for line in text[:3] if "errors.pydantic.dev" not in line)[:500]


def _row_name(data: str) -> str:
    """What a row that does not load was, as far as its JSON tells (for the log)."""
    try:
        d = json.loads(data)
    except ValueError:
        return "unreadable JSON"
    if not isinstance(d, dict):
        return "not an object"
    spec = d.get("spec") if isinstance(d.get("spec"), dict) else {}
    for name in (d.get("name"), spec.get("name"), d.get("service_name"), (d.get("description") or {}).get("hostname")
                 if isinstance(d.get("description"), dict) else None):
        if isinstance(name, str) and name:
            return f"name {name}"
    return "no name"
