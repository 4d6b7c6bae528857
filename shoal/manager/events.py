"""The cluster's events: what `shoal events` streams and reads back.

The store calls `record` after each commit with what it wrote; `shoal.core.events` turns
that into events as JSON text, kept in memory (the last `KEEP` of them, as text: a reader
decodes the few it reads) and appended to `<data>/events.jsonl`, so that they survive a
manager restart: at start the file's newest `KEEP` events no older than `MAX_AGE` are read
back, and the file is rewritten to those once it holds twice as many. Readers follow a
sequence number and wait on an asyncio event.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from typing import Iterable, Optional

from shoal.core.events import encode, events_json, matches
from shoal.model.objects import Obj

log = logging.getLogger("shoal.events")

KEEP = 10_000  # events kept (memory and file)
MAX_AGE = 7 * 86400.0  # seconds an event is kept at most across restarts


class EventLog:
    def __init__(self, path: Optional[str], keep: int = KEEP, max_age: float = MAX_AGE):
        self.path = path
        self.keep = keep
        self.max_age = max_age
        self._lines: deque[str] = deque(maxlen=keep)  # the kept events, as JSON lines, oldest first
        self.seq = 0  # of the newest event
        self._lines_in_file = 0
        self._waiters: list[asyncio.Future] = []
        self._file = None  # kept open for appending (a commit does not pay an open and a close)
        self._load()

    @property
    def events(self) -> list[dict]:
        """The kept events, oldest first."""
        return [json.loads(line) for line in self._lines]

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path or not os.path.exists(self.path):
            return
        cutoff = time.time() - self.max_age
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    self._lines_in_file += 1
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
                    if isinstance(ev, dict) and ev.get("time", 0) >= cutoff:
                        self._lines.append(line if line.endswith("\n") else line + "\n")
                        self.seq = ev.get("seq", 0)
        except OSError as e:
            log.warning("events: cannot read %s: %s", self.path, e)
        if self._lines_in_file > len(self._lines):
            self._rewrite()

    def _rewrite(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(self._lines)
            if self._file is not None:
                self._file.close()
                self._file = None
            os.replace(tmp, self.path)
            self._lines_in_file = len(self._lines)
        except OSError as e:
            log.warning("events: cannot rewrite %s: %s", self.path, e)

    def _append(self, lines: list[str]) -> None:
        if not self.path:
            return
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write("".join(lines))
            self._file.flush()  # to the kernel: a crash of the manager loses none of them
            self._lines_in_file += len(lines)
        except OSError as e:
            log.warning("events: cannot append to %s: %s", self.path, e)
            self._file = None
        if self._lines_in_file >= 2 * self.keep:
            self._rewrite()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- recording -----------------------------------------------------------------------
    def record(self, changes: Iterable[tuple[Optional[Obj], Optional[Obj]]]) -> None:
        """The store's observer (after each commit)."""
        now = time.time()
        texts = [text for old, new in changes for text in events_json(old, new, now)]
        if texts:
            self._add(texts)

    def add(self, evs: list[dict]) -> None:
        """Record events made as dicts (numbered as the log numbers them)."""
        self._add([encode({k: v for k, v in ev.items() if k != "seq"}) for ev in evs])

    def _add(self, texts: list[str]) -> None:
        """Number the events (JSON objects as text) and keep them."""
        seq = self.seq
        lines = []
        for text in texts:
            seq += 1
            lines.append(f'{text[:-1]},"seq":{seq}}}\n')
        self.seq = seq
        self._lines.extend(lines)
        self._append(lines)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- reading -------------------------------------------------------------------------
    def since(self, after_seq: int, since: Optional[float], until: Optional[float],
              filters: dict[str, list[str]]) -> list[dict]:
        """The kept events after `after_seq`, from `since` until `until`, that match `filters`
        (only those after `after_seq` are decoded: a follower reads the few new ones)."""
        newer = []
        for line in reversed(self._lines):
            ev = json.loads(line)
            if ev["seq"] <= after_seq:
                break
            newer.append(ev)
        out = []
        for ev in reversed(newer):
            if since is not None and ev["time"] < since:
                continue
            if until is not None and ev["time"] > until:
                break
            if matches(ev, filters):
                out.append(ev)
        return out

    async def wait(self, seq: int, timeout: float) -> None:
        """Return once an event newer than `seq` exists, or after `timeout`."""
        if self.seq > seq:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
