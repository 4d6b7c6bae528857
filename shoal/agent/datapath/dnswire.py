"""Minimal DNS wire format (RFC 1035): parse queries, build answers. No dependencies.

Only what a stub-resolver-facing server needs: the header, the question section (names
with or without compression), A / AAAA / PTR answers, response codes. Anything after
the question (e.g. an EDNS OPT record) is ignored; answers carry no OPT record, which is
valid for EDNS clients (RFC 6891 section 7).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

OPCODE_QUERY = 0

_HEADER = struct.Struct(">HHHHHH")


class DnsFormatError(ValueError):
    pass


@dataclass
class Question:
    name: str  # lower case, no trailing dot ("" is the root)
    qtype: int
    qclass: int = CLASS_IN


@dataclass
class Message:
    id: int
    flags: int
    questions: list[Question] = field(default_factory=list)
    question_bytes: bytes = b""  # the question section as received (echoed in answers)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)


@dataclass
class Record:
    name: str
    rtype: int
    ttl: int
    rdata: bytes
    rclass: int = CLASS_IN


def read_name(data: bytes, off: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at ``off``; return it and the offset after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if off >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise DnsFormatError("truncated compression pointer")
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            jumps += 1
            if jumps > 32:
                raise DnsFormatError("compression loop")
            continue
        if n & 0xC0:
            raise DnsFormatError("unsupported label type")
        off += 1
        if n == 0:
            break
        label = data[off:off + n]
        if len(label) != n:
            raise DnsFormatError("truncated label")
        total += n + 1
        if total > 255:
            raise DnsFormatError("name too long")
        labels.append(label.decode("ascii", errors="replace").lower())
        off += n
    return ".".join(labels), (end if end >= 0 else off)


def encode_name(name: str) -> bytes:
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError(f"bad DNS label in {name!r}")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("name too long")
    return bytes(out)


def parse_message(data: bytes) -> Message:
    if len(data) < _HEADER.size:
        raise DnsFormatError("short message")
    mid, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(data)
    off = _HEADER.size
    questions = []
    for _ in range(qd):
        name, off = read_name(data, off)
        if off + 4 > len(data):
            raise DnsFormatError("truncated question")
        qtype, qclass = struct.unpack_from(">HH", data, off)
        off += 4
        questions.append(Question(name, qtype, qclass))
    return Message(mid, flags, questions, data[_HEADER.size:off])


def header_id(data: bytes) -> int:
    return struct.unpack_from(">H", data)[0] if len(data) >= 2 else -1


def build_response(query: Message, rcode: int, answers: list[Record] = (),
                   authoritative: bool = True, recursion_available: bool = True) -> bytes:
    """An answer to ``query``: same id, opcode, RD bit and question section."""
    flags = 0x8000 | (query.flags & 0x7800) | (query.flags & 0x0100) | (rcode & 0xF)
    if authoritative:
        flags |= 0x0400
    if recursion_available:
        flags |= 0x0080
    body = bytearray()
    for r in answers:
        body += encode_name(r.name)
        body += struct.pack(">HHIH", r.rtype, r.rclass, max(0, r.ttl), len(r.rdata))
        body += r.rdata
    head = _HEADER.pack(query.id, flags, len(query.questions), len(answers), 0, 0)
    return head + query.question_bytes + bytes(body)


def error_response(data: bytes, rcode: int) -> bytes:
    """A header-only error answer for a message we could not parse (FORMERR etc.)."""
    mid = header_id(data)
    if mid < 0:
        return b""
    flags = 0x8000 | (rcode & 0xF)
    return _HEADER.pack(mid, flags, 0, 0, 0, 0)


def a_record(name: str, ip: str, ttl: int) -> Record:
    return Record(name, TYPE_A, ttl, ipaddress.IPv4Address(ip).packed)


def ptr_record(name: str, target: str, ttl: int) -> Record:
    return Record(name, TYPE_PTR, ttl, encode_name(target))


def build_query(name: str, qtype: int = TYPE_A, mid: int = 0x4242, rd: bool = True) -> bytes:
    """A standard query (used by tests and health checks)."""
    flags = 0x0100 if rd else 0
    return (_HEADER.pack(mid, flags, 1, 0, 0, 0) + encode_name(name)
            + struct.pack(">HH", qtype, CLASS_IN))


def parse_answer_ips(data: bytes) -> tuple[int, list[str]]:
    """(rcode, A-record addresses) of a response (used by tests)."""
    mid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    off = _HEADER.size
    for _ in range(qd):
        _, off = read_name(data, off)
        off += 4
    ips = []
    for _ in range(an):
        _, off = read_name(data, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack_from(">HHIH", data, off)
        off += 10
        if rtype == TYPE_A and rdlen == 4:
            ips.append(str(ipaddress.IPv4Address(data[off:off + 4])))
        off += rdlen
    return flags & 0xF, ips
