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
        self.rev = 0
        self._waiters: list[asyncio.Future] = []
        self._in_txn = False
        self._load()

    # -- loading ---------------------------------------------------------------
    def _load(self) -> None:
        for kind, data in self.db.execute("SELECT kind, data FROM objects"):
            cls = KINDS.get(kind)
            if cls is None:
                continue
            obj = cls.model_validate_json(data)
            self._index(kind, obj)
        row = self.db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()
        self.rev = int(row[0]) if row else 0

    def _index(self, kind: str, obj: Obj) -> None:
        self._objects[kind][obj.id] = obj
        if kind == "task":
            t: Task = obj  # type: ignore[assignment]
            self._tasks_by_service.setdefault(t.service_id, {})[t.id] = t
            for nid, tasks in list(self._tasks_by_node.items()):
                if t.id in tasks and nid != t.node_id:
                    del tasks[t.id]
            if t.node_id:
                self._tasks_by_node.setdefault(t.node_id, {})[t.id] = t

    def _unindex(self, kind: str, obj_id: str) -> None:
        obj = self._objects[kind].pop(obj_id, None)
        if kind == "task" and obj is not None:
            t: Task = obj  # type: ignore[assignment]
            self._tasks_by_service.get(t.service_id, {}).pop(t.id, None)
            if t.node_id:
                self._tasks_by_node.get(t.node_id, {}).pop(t.id, None)

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
        try:
            yield
            if pending:
                self.rev += 1
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rev', ?)", (str(self.rev),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._in_txn = False
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
            self.db.execute(
                "INSERT OR REPLACE INTO objects(kind, id, name, version, data) VALUES (?,?,?,?,?)",
                (kind, obj.id, _name_of(obj), obj.version, obj.model_dump_json()),
            )
            self._pending.append((kind, obj, obj.id))
            self._index(kind, obj)
        return obj

    def delete(self, cls: type[Obj], obj_id: str) -> None:
        kind = KIND_OF[cls]
        with self.txn():
            self.db.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, obj_id))
            self._pending.append((kind, None, obj_id))
            self._unindex(kind, obj_id)

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

