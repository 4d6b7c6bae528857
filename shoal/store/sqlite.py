"""The cluster store: every object as JSON in one embedded SQLite file.

The manager is the only writer. Reads are served from an in-memory copy (the store
is small next to RAM, and the orchestrator reads everything often); every write
goes to SQLite first, in a transaction, so a crash loses nothing committed. A
global revision counter lets watchers (the dispatcher's long polls, the
orchestrator loop) wait for "anything changed since N".
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from typing import Callable, Iterator, Optional, TypeVar

from shoal.model.objects import ConfigObj, NetworkObj, Node, Obj, SecretObj, Service, Task

KINDS: dict[str, type[Obj]] = {
    "service": Service,
    "task": Task,
    "node": Node,
    "config": ConfigObj,
    "secret": SecretObj,
    "network": NetworkObj,
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
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS objects_name ON objects (kind, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class Conflict(Exception):
    """A write was based on an outdated version of the object."""


def _name_of(obj: Obj) -> Optional[str]:
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


class Store:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
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
        # Serialised specs by object identity: tasks share their service's spec object, so the
        # (large) spec is turned into JSON once, not on every write of every task.
        self._spec_json: dict[int, tuple[object, str]] = {}
        self._rows: dict[tuple[str, str], Optional[tuple]] = {}  # writes of the open transaction
        self.rev = 0
        self._waiters: list[asyncio.Future] = []
        self._in_txn = False
        self._load()

    # -- loading ---------------------------------------------------------------
    def _load(self) -> None:
        specs: dict[tuple[str, int], object] = {}
        for kind, data in self.db.execute("SELECT kind, data FROM objects"):
            cls = KINDS.get(kind)
            if cls is None:
                continue
            obj = cls.model_validate_json(data)
            if kind == "task":  # share one spec object between the tasks of a service version
                t: Task = obj  # type: ignore[assignment]
                key = (t.service_id, t.spec_version)
                same = specs.get(key)
                if same is not None and same == t.spec:
                    t.spec = same  # type: ignore[assignment]
                else:
                    specs[key] = t.spec
            self._index(kind, obj)
        row = self.db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()
        self.rev = int(row[0]) if row else 0

    def _index(self, kind: str, obj: Obj) -> None:
        old = self._objects[kind].get(obj.id)
        self._objects[kind][obj.id] = obj
        if kind == "task":
            t: Task = obj  # type: ignore[assignment]
            self._tasks_by_service.setdefault(t.service_id, {})[t.id] = t
            self._changed_services.add(t.service_id)
            self._seq += 1
            self._service_seq[t.service_id] = self._seq
            prev_node = old.node_id if old is not None else None  # type: ignore[union-attr]
            if prev_node and prev_node != t.node_id:
                self._tasks_by_node.get(prev_node, {}).pop(t.id, None)
            if t.node_id:
                self._tasks_by_node.setdefault(t.node_id, {})[t.id] = t
            if t.status.state == "pending":
                self._pending_tasks[t.id] = t
            else:
                self._pending_tasks.pop(t.id, None)
        elif kind == "service":
            self._changed_services.add(obj.id)
            self._seq += 1
            self._service_seq[obj.id] = self._seq
        elif kind == "node":
            self._nodes_changed = True

    def _unindex(self, kind: str, obj_id: str) -> None:
        obj = self._objects[kind].pop(obj_id, None)
        if kind == "task" and obj is not None:
            t: Task = obj  # type: ignore[assignment]
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
        elif kind == "service":
            self._changed_services.add(obj_id)
            self._seq += 1
            self._service_seq[obj_id] = self._seq
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
        """The task as JSON (its spec serialised once per spec object)."""
        return self._json("task", t)

    def service_ids_with_tasks(self) -> list[str]:
        return list(self._tasks_by_service)

    def take_changes(self) -> tuple[set[str], bool]:
        """(ids of services whose service object or tasks were written, whether any node was)
        since the last call. For the orchestrator, the one consumer."""
        changed, nodes = self._changed_services, self._nodes_changed
        self._changed_services, self._nodes_changed = set(), False
        return changed, nodes

    def _json(self, kind: str, obj: Obj) -> str:
        if kind != "task":
            return obj.model_dump_json()
        spec = obj.spec  # type: ignore[attr-defined]
        hit = self._spec_json.get(id(spec))
        if hit is None or hit[0] is not spec:
            if len(self._spec_json) > 4096:
                self._spec_json.clear()
            hit = self._spec_json[id(spec)] = (spec, spec.model_dump_json())
        body = obj.model_dump_json(exclude={"spec"})
        return f'{body[:-1]},"spec":{hit[1]}}}'

    # -- writes ----------------------------------------------------------------
    @contextlib.contextmanager
    def txn(self) -> Iterator[None]:
        """Group writes into one SQLite transaction (and one revision bump)."""
        if self._in_txn:
            yield
            return
        self._in_txn = True
        self.db.execute("BEGIN IMMEDIATE")
        pending: list[tuple[str, Optional[Obj], str]] = []
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
            self._in_txn = False
            self._rows = {}
            # Reload the in-memory view of what we touched: the DB is the truth.
            for kind, _obj, obj_id in pending:
                row = self.db.execute("SELECT data FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
                self._unindex(kind, obj_id)
                if row:
                    self._index(kind, KINDS[kind].model_validate_json(row[0]))
            raise
        self._in_txn = False
        if pending:
            self._notify()

    def put(self, obj: T, expect_version: Optional[int] = None) -> T:
        kind = KIND_OF[type(obj)]
        with self.txn():
            current = self._objects[kind].get(obj.id)
            if expect_version is not None and current is not None and current.version != expect_version:
                raise Conflict(f"{kind} {obj.id} changed (version {current.version}, expected {expect_version})")
            now = time.time()
            obj = obj.model_copy(update={
                "version": (current.version if current else 0) + 1,
                "updated_at": now,
                "created_at": obj.created_at or (current.created_at if current else now),
            })
            # Written to SQLite at commit, in one batch (the last write of an object wins).
            self._rows[(kind, obj.id)] = (kind, obj.id, _name_of(obj), obj.version, self._json(kind, obj))
            self._pending.append((kind, obj, obj.id))
            self._index(kind, obj)
        return obj

    def delete(self, cls: type[Obj], obj_id: str) -> None:
        kind = KIND_OF[cls]
        with self.txn():
            self._rows[(kind, obj_id)] = None
            self._pending.append((kind, None, obj_id))
            self._unindex(kind, obj_id)

    def _flush(self) -> None:
        rows, self._rows = self._rows, {}
        if not rows:
            return
        puts = [r for r in rows.values() if r is not None]
        dels = [k for k, r in rows.items() if r is None]
        if dels:
            self.db.executemany("DELETE FROM objects WHERE kind=? AND id=?", dels)
        if puts:
            self.db.executemany(
                "INSERT OR REPLACE INTO objects(kind, id, name, version, data) VALUES (?,?,?,?,?)", puts)

    def update(self, cls: type[T], obj_id: str, fn: Callable[[T], T]) -> Optional[T]:
        obj = self.get(cls, obj_id)
        if obj is None:
            return None
        return self.put(fn(obj))

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

