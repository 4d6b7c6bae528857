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

import contextlib
import logging
import os
import sqlite3
import time
from typing import Optional

from shoal.model.objects import Task
from shoal.model.specs import ServiceSpec
from shoal.store.memory import _NO_SPEC, KINDS, ViewStore, _first_line, _row_name

log = logging.getLogger("shoal.store")

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

class SqliteStore(ViewStore):
    def __init__(self, path: str):
        super().__init__()
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        if "spec_key" not in {row[1] for row in self.db.execute("PRAGMA table_info(objects)")}:
            self.db.execute("ALTER TABLE objects ADD COLUMN spec_key TEXT")  # a store of an older version
        os.chmod(path, 0o600)
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

    # -- the backend -------------------------------------------------------------
    def _begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def _commit(self, wrote: bool) -> None:
        self._flush_rows()
        # Spec rows: of the specs first used, and of those no task uses any more.
        new, gone = self._spec_changes()
        if new:
            self.db.executemany("INSERT OR REPLACE INTO specs(key, name, data) VALUES (?,?,?)", new)
        if gone:
            self.db.executemany("DELETE FROM specs WHERE key=?", [(k,) for k in gone])
        if wrote:
            self.rev += 1
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rev', ?)", (str(self.rev),))
        self.db.execute("COMMIT")

    def _rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def _read_row(self, kind: str, obj_id: str) -> Optional[tuple[str, Optional[str]]]:
        row = self.db.execute("SELECT data, spec_key FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
        return (row[0], row[1]) if row else None

    def _rows_written(self) -> None:
        # A long transaction (the orchestrator's first pass over 100k tasks) sends its rows to
        # SQLite in batches: they need not all wait in memory.
        if len(self._rows) >= _FLUSH_ROWS:
            self._flush_rows()

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

    def close(self) -> None:
        self.db.close()


