"""An HTTP `Content-Encoding: deflate` body put together from pieces compressed once.

At 1,000 nodes x 100,000 replicas the endpoint and peer logs are most of what the manager
sends (5.9 GB to the nodes in one deploy), and every node is sent the same chunks. So each
chunk is compressed once, on its own (a fresh compressor, flushed to a byte boundary: a
block sequence any deflate stream may continue), and an answer is the zlib header, its
pieces in order, an empty final block and the Adler-32 of the whole, combined from the
pieces' own. The rest of an answer (its framing, the node's own part) is only stored in the
stream: compressing it per answer cost the manager more CPU (zlib at ~140 MB/s, 4 % of the
manager in a 100,000-task deploy) than sending its bytes saved, and a node's secrets are
then never compressed beside bytes an attacker might influence (CRIME/BREACH).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterable, Union

MOD_ADLER = 65521
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary (header check bits included)
FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed codes
SMALL = 64 * 1024  # chunks up to this are compressed harder (level 6), bigger ones fast (level 1)


@dataclass(frozen=True)
class Piece:
    """Deflate blocks (byte-aligned, none final) and the Adler-32 and size of what they hold."""
    blocks: bytes
    adler: int
    size: int


def compressed(raw: bytes, level: int = -1) -> Piece:
    if level < 0:
        level = 6 if len(raw) <= SMALL else 1
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    return Piece(z.compress(raw) + z.flush(zlib.Z_FULL_FLUSH), zlib.adler32(raw), len(raw))


def stored(raw: bytes) -> Piece:
    """`raw` as stored blocks, written out (no compressor): each a byte of header (not
    final, type 0: the stream is byte-aligned where it starts), its length, the length's
    complement, then up to 65,535 bytes as they are."""
    view = memoryview(raw)
    blocks = bytearray()
    for at in range(0, len(raw), 0xFFFF):
        chunk = view[at:at + 0xFFFF]
        blocks += b"\x00" + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF)
        blocks += chunk
    return Piece(bytes(blocks), zlib.adler32(raw), len(raw))


def adler32_combine(first: int, second: int, second_len: int) -> int:
    """The Adler-32 of A+B from those of A and B and B's length. Adler-32 is the pair
    (a = 1 + sum of bytes, b = sum of the running a's); continuing over B from A's state
    adds a_A - 1 to each of B's len(B) running a's."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % MOD_ADLER
    b = (b1 + b2 + second_len * (a1 - 1)) % MOD_ADLER
    return (b << 16) | a


Item = Union[bytes, Piece]


def zlib_stream(items: Iterable[Item]) -> list[bytes]:
    """The body: `items` in order, each either a Piece compressed once (shared) or the
    answer's own bytes (consecutive ones stored together)."""
    out = [ZLIB_HEADER]
    adler = 1
    own: list[bytes] = []

    def flush_own() -> None:
        nonlocal adler
        if own:
            raw = b"".join(own)
            own.clear()
            p = stored(raw)
            out.append(p.blocks)
            adler = adler32_combine(adler, p.adler, p.size)

    for it in items:
        if isinstance(it, Piece):
            flush_own()
            out.append(it.blocks)
            adler = adler32_combine(adler, it.adler, it.size)
        elif it:
            own.append(it)
    flush_own()
    out.append(FINAL_BLOCK + adler.to_bytes(4, "big"))
    return out


class PieceCache:
    """The compressed form of each chunk of a log, kept while the log holds the chunk
    (chunks are immutable bytes, told apart by identity: the cache holds each chunk, so
    an id is not reused while it is here)."""

    def __init__(self) -> None:
        self._pieces: dict[int, tuple[bytes, Piece]] = {}

    def piece(self, chunk: bytes) -> Piece:
        got = self._pieces.get(id(chunk))
        if got is None:
            got = self._pieces[id(chunk)] = (chunk, compressed(chunk))
        return got[1]

    def keep_only(self, chunks: Iterable[bytes]) -> None:
        live = {id(c) for c in chunks}
        for k in [k for k in self._pieces if k not in live]:
            del self._pieces[k]

    def __len__(self) -> int:
        return len(self._pieces)
