"""A log of small JSON events that agents follow from a position: the endpoint log and the
overlay's peer log are both one of these.

Every node needs a table the manager keeps (the cluster's endpoints, the overlay's
peers) and that table is O(tasks): sent whole on every change, the manager sends
nodes x tasks bytes per change. So the table travels as events, and each agent asks for
the events after the position it has. Events are encoded once and kept as immutable byte
chunks (one per sync), so an answer is a list of shared chunks, never a copy per node.
When the log outgrows the live table it is compacted into a snapshot of the table
(positions at or after the snapshot still resume; older ones get the snapshot). A
position carries the log's epoch, which changes when the manager restarts: an agent with
another epoch gets the snapshot (``full``) and starts its table afresh.
"""
from __future__ import annotations

import bisect
import secrets
from dataclasses import dataclass
from typing import Callable, Optional

from shoal.manager.deflated import Item, Piece, PieceCache

COMPACT_MIN_EVENTS = 10_000  # never compact a log shorter than this
COMPACT_FACTOR = 2  # compact once the log holds more than this many events per live entry


def parse_position(pos: str) -> tuple[str, int]:
    """An agent's position in a log, "epoch:seq" ("" when it has none)."""
    epoch, _, seq = (pos or "").partition(":")
    try:
        return epoch, int(seq or 0)
    except ValueError:
        return "", 0


@dataclass
class Slice:
    """The events an agent at some position still needs, as shared JSON chunks."""
    epoch: str
    seq: int  # the position after these events
    full: bool  # a snapshot: the agent drops its table first
    chunks: list[bytes]

    def parts(self) -> list[bytes]:
        """`{"epoch":…,"seq":…,"full":…,"events":[…]}` as pieces (chunks shared, not copied)."""
        return self.items(lambda c: c)  # type: ignore[arg-type,return-value]

    def items(self, piece: Callable[[bytes], Piece]) -> list[Item]:
        """The same, each chunk as `piece` gives it (its compressed form, for a deflate body)."""
        out: list[Item] = [
            f'{{"epoch":"{self.epoch}","seq":{self.seq},"full":{"true" if self.full else "false"},"events":['.encode()]
        for i, c in enumerate(self.chunks):
            if i:
                out.append(b",")
            out.append(piece(c))
        out.append(b"]}")
        return out


class ChangeLog:
    """The chunks and positions; a subclass keeps the table and says what its snapshot is."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        # chunk i holds events (ends[i-1], ends[i]]; the first chunk is the snapshot at `base`.
        self.chunks: list[bytes] = []
        self.ends: list[int] = []
        self.base = 0
        self.events = 0  # events in the log (for compaction)
        # The log before the last compaction, kept until the next one: agents polling every
        # few seconds are all just behind a compaction point, and each would otherwise get
        # the whole table again (1,000 nodes x a 100,000-entry table).
        self._prev: Optional[tuple[list[bytes], list[int], int]] = None
        self._snap = 0  # 1 when chunks[0] is the snapshot
        self.pieces = PieceCache()  # the chunks' compressed forms, made when first sent

    def snapshot(self) -> list[str]:
        """The events that rebuild the current table from nothing."""
        raise NotImplementedError

    def live_entries(self) -> int:
        """How big the table is (compaction compares the log with it)."""
        raise NotImplementedError

    def append(self, events: list[str]) -> None:
        """One sync's events, as one chunk."""
        if not events:
            return
        self.seq += len(events)
        self.events += len(events)
        self.chunks.append(",".join(events).encode())
        self.ends.append(self.seq)
        if self.events > max(COMPACT_MIN_EVENTS, COMPACT_FACTOR * self.live_entries()):
            self.compact()

    def compact(self) -> None:
        """Replace the log by one snapshot of the table, at the current position."""
        parts = self.snapshot()
        if self.chunks:
            self._prev = (self.chunks, self.ends, self.base)
        self.chunks = [",".join(parts).encode()] if parts else []
        self.ends = [self.seq] if parts else []
        self._snap = len(self.chunks)
        self.base = self.seq
        self.events = len(parts)
        self.pieces.keep_only(self.chunks + (self._prev[0] if self._prev is not None else []))

    def has_news(self, epoch: str, seq: int) -> bool:
        return epoch != self.epoch or seq < self.seq

    def since(self, epoch: str, seq: int) -> Slice:
        """The events after position (epoch, seq), or the whole table when that position is
        unknown here (another epoch, or compacted away)."""
        if epoch == self.epoch and self.base <= seq <= self.seq:
            i = bisect.bisect_right(self.ends, seq)
            return Slice(self.epoch, self.seq, False, self.chunks[i:])
        if epoch == self.epoch and self._prev is not None and self._prev[2] <= seq < self.base:
            chunks, ends, _base = self._prev
            i = bisect.bisect_right(ends, seq)
            return Slice(self.epoch, self.seq, False, chunks[i:] + self.chunks[self._snap:])
        # The snapshot plus the events since: both replay to the same table.
        return Slice(self.epoch, self.seq, True, list(self.chunks))
