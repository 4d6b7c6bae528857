"""The cluster store on one embedded SQLite file (one manager): every object as JSON.

The manager is the only writer. Reads are served from an in-memory copy (the store
is small next to RAM, and the orchestrator reads everything often); every write
goes to SQLite first, in a transaction committed with `synchronous=FULL` (the WAL is
synced at each commit), so a crash or a power loss loses nothing committed. A
global revision counter lets watchers (the dispatcher's long polls, the
orchestrator loop) wait for "anything changed since N".

Tasks carry a copy of their service's spec (as Swarm does), but every task of one service
version has the same one: a task row holds the task without its spec plus the key of the
spec (a hash of its JSON) in the `specs` table, written once; in memory the tasks of one key
share one spec object. Spec rows no task uses any more are deleted in the transaction that
drops the last such task (a count per key is kept in memory). Rows of older versions, with the
spec inside the task's JSON, are rewritten in the new form when the store is opened.

A row that does not load (a bug of an older version, a disk error) never stops the manager:
it is moved to the `quarantine` table with its error, logged with the object named, and the
rest loads.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    spec_key TEXT,  -- tasks: their spec, in `specs` (not in data); NULL in rows of older versions
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS objects_name ON objects (kind, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS specs (key TEXT PRIMARY KEY, name TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, error TEXT NOT NULL, at REAL NOT NULL
);
"""

# Rows are updated in place (an UPSERT keeps the rowid: INSERT OR REPLACE would delete the row
# and append a new one, rewriting every index). `name` rarely changes (never for a task), so it
# is set only when it did: leaving it out spares SQLite the write of the name index.
_UPSERT = ("INSERT INTO objects(kind, id, name, version, data, spec_key) VALUES (?,?,?,?,?,?) "
           "ON CONFLICT(kind, id) DO UPDATE SET version=excluded.version, data=excluded.data, "
           "spec_key=excluded.spec_key")
_UPSERT_RENAMED = _UPSERT + ", name=excluded.name"
# A long transaction (the orchestrator's first pass over 100k tasks) sends its rows to SQLite
# in batches of this many, not all at its end: they need not all wait in memory.
_FLUSH_ROWS = 2000

_NO_SPEC = {"spec"}
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


def _copy_task(t: Task, update: dict) -> Task:
    """t.model_copy(update=update), without its generic copies (the store's hot path); the copy
    gets the shared fields set (_index would give it anyway)."""
    if t.__pydantic_extra__ is not None or getattr(t, "__pydantic_private__", None) is not None:
        return t.model_copy(update=update)
    new = Task.__new__(Task)
    d = t.__dict__.copy()
    d.update(update)
    _setattr(new, "__dict__", d)
    _setattr(new, "__pydantic_fields_set__", _TASK_FIELDS)
    _setattr(new, "__pydantic_extra__", None)
    _setattr(new, "__pydantic_private__", None)
    return new


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


class SqliteStore(Store):
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if "spec_key" not in {row[1] for row in self.db.execute("PRAGMA table_info(objects)")}:
            self.db.execute("ALTER TABLE objects ADD COLUMN spec_key TEXT")  # a store of an older version
        os.chmod(path, 0o600)
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
        # Writes of the open transaction not sent to SQLite yet, by (kind, id): None (a delete)
        # or the row (kind, id, name, version, data, spec_key, whether name may have changed).
        self._rows: dict[tuple[str, str], Optional[tuple]] = {}
        self._pending: set[tuple[str, str]] = set()  # (kind, id) written in the open transaction
        self.rev = 0
        self._waiters: list[asyncio.Future] = []
        self._in_txn = False
        self._load()

    # -- loading ---------------------------------------------------------------
    def _load(self) -> None:
        # Spec rows are read as tasks refer to them (see _decode); those none does are deleted.
        self._spec_rows = dict(self.db.execute("SELECT key, data FROM specs"))
        old_rows: list[Task] = []  # tasks stored with their spec inside (older versions)
        by_version: dict[tuple[str, int], ServiceSpec] = {}
        bad: list[tuple[str, str, str, str]] = []
        for kind, obj_id, data, spec_key in self.db.execute("SELECT kind, id, data, spec_key FROM objects"):
            if kind not in KINDS:
                continue
            try:
                obj = self._decode(kind, data, spec_key)
            except ValueError as e:  # pydantic's ValidationError is one; so is bad JSON
                bad.append((kind, obj_id, data, _first_line(e)))
                continue
            if kind == "task" and spec_key is None:
                t: Task = obj  # type: ignore[assignment]
                same = by_version.get((t.service_id, t.spec_version))
                if same is not None and same == t.spec:  # spare hashing each copy of the spec
                    t.__dict__["spec"] = same
                else:
                    by_version[(t.service_id, t.spec_version)] = t.spec
                old_rows.append(t)
            self._index(kind, obj)
        if bad:
            self._quarantine(bad)
        row = self.db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()
        self.rev = int(row[0]) if row else 0
        unused = [(key,) for key in self._spec_rows if key not in self._specs]
        self._spec_rows = None
        # Rewrite old rows without their spec, write the specs they use, delete unused ones.
        if old_rows or unused or self._spec_touched:
            with self.txn():
                self.db.executemany("DELETE FROM specs WHERE key=?", unused)
                for t in old_rows:
                    t = self._objects["task"].get(t.id)  # type: ignore[assignment]
                    self._rows[("task", t.id)] = ("task", t.id, t.service_id, t.version,
                                                  t.model_dump_json(exclude=_NO_SPEC),
                                                  self._spec_entry(t.spec).key, False)
                    if len(self._rows) >= _FLUSH_ROWS:
                        self._flush_rows()

    def _quarantine(self, bad: list[tuple[str, str, str, str]]) -> None:
        """Set rows that do not load aside (never lost: `quarantined()` and the log name them)."""
        now = time.time()
        with contextlib.closing(self.db.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")
            for kind, obj_id, data, error in bad:
                cur.execute("INSERT INTO quarantine(kind, id, data, error, at) VALUES (?,?,?,?,?)",
                            (kind, obj_id, data, error, now))
                cur.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, obj_id))
            cur.execute("COMMIT")
        for kind, obj_id, data, error in bad:
            log.error("store: %s %s (%s) does not load and was set aside in the quarantine table: %s",
                      kind, obj_id, _row_name(data), error)

    def quarantined(self) -> list[dict]:
        return [{"kind": k, "id": i, "error": e, "at": at}
                for k, i, e, at in self.db.execute("SELECT kind, id, error, at FROM quarantine ORDER BY at")]

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
            if t.node_id:
                self._tasks_by_node.setdefault(t.node_id, {})[t.id] = t
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

    def _unindex(self, kind: str, obj_id: str) -> None:
        obj = self._objects[kind].pop(obj_id, None)
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
            if t.node_id:
                self._tasks_by_node.get(t.node_id, {}).pop(t.id, None)
            self._pending_tasks.pop(t.id, None)
            self._changed_services.add(t.service_id)
            self._seq += 1
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

    def task_json(self, t: Task) -> str:
        """The task as JSON, its spec inside (the spec serialised once per spec)."""
        body = t.model_dump_json(exclude=_NO_SPEC)
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
        """Group writes into one SQLite transaction (and one revision bump)."""
        if self._in_txn:
            yield
            return
        self._in_txn = True
        began = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        pending: set[tuple[str, str]] = set()  # (kind, id) of every object written or deleted
        self._pending = pending
        self._rows = {}
        try:
            yield
            self._flush()
            if pending:
                self.rev += 1
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rev', ?)", (str(self.rev),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._changes = []
            self._in_txn = False
            self._rows = {}
            self._pending = set()
            # Reload the in-memory view of what we touched: the DB is the truth.
            for kind, obj_id in pending:
                row = self.db.execute("SELECT data, spec_key FROM objects WHERE kind=? AND id=?",
                                      (kind, obj_id)).fetchone()
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
        # What the commit wrote of the specs (see _flush).
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
        service_seq; quiet writes are not reported by take_changes."""
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
            obj = _copy_task(obj, update)  # type: ignore[arg-type, assignment]
            e = self._spec_entry(obj.spec)  # type: ignore[attr-defined]
            obj.__dict__["spec"] = e.spec  # the shared object of equal specs
            data = obj.model_dump_json(exclude=_NO_SPEC)
            spec_key = e.key
        else:
            obj = obj.model_copy(update=update)
            data = obj.model_dump_json()
        name = _name_of(obj)
        key = (kind, obj.id)
        prev = self._rows.get(key)
        renamed = current is None or _name_of(current) != name or (prev is not None and prev[6])
        # Written to SQLite at commit (or every _FLUSH_ROWS writes), in batches (the last write
        # of an object in a batch wins).
        self._rows[key] = (kind, obj.id, name, obj.version, data, spec_key, renamed)
        self._pending.add(key)
        if self._observers:
            self._changes.append((current, obj))
        self._index(kind, obj, quiet)
        if len(self._rows) >= _FLUSH_ROWS:
            self._flush_rows()
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

    def _flush(self) -> None:
        """Write what the transaction wrote and did not write yet (at its end)."""
        self._flush_rows()
        # Spec rows: of the specs first used, and of those no task uses any more.
        touched = self._spec_touched
        if touched:
            new = [(e.key, e.spec.name, e.json) for e in touched if e.refs > 0 and not e.stored]
            gone = [(e.key,) for e in touched if e.refs <= 0 and e.stored]
            if new:
                self.db.executemany("INSERT OR REPLACE INTO specs(key, name, data) VALUES (?,?,?)", new)
            if gone:
                self.db.executemany("DELETE FROM specs WHERE key=?", gone)

    def _flush_rows(self) -> None:
        rows, self._rows = self._rows, {}
        if not rows:
            return
        dels = [k for k, r in rows.items() if r is None]
        same = [r[:6] for r in rows.values() if r is not None and not r[6]]
        renamed = [r[:6] for r in rows.values() if r is not None and r[6]]
        if dels:
            self.db.executemany("DELETE FROM objects WHERE kind=? AND id=?", dels)
        if same:
            self.db.executemany(_UPSERT, same)
        if renamed:
            self.db.executemany(_UPSERT_RENAMED, renamed)

    def meta_get(self, key: str) -> Optional[bytes]:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def meta_set(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

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

    def close(self) -> None:
        self.db.close()



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
