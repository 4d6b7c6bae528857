"""Who is already listening on a port? (for published-port conflict detection)"""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Iterable, Iterator, Optional

_TCP_LISTEN = "0A"
_UDP_UNCONN = "07"

# sock_diag (linux/inet_diag.h): the kernel lists the sockets in the states asked for.
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NETLINK_SOCK_DIAG = 4
_STATES = {"tcp": (socket.IPPROTO_TCP, 1 << 10), "udp": (socket.IPPROTO_UDP, 1 << 7)}  # LISTEN; UDP unconnected


def _listening(proto: str) -> Iterable[tuple[int, str, int]]:
    """(port, local address, inode) of every listening TCP / bound UDP socket.

    Asked of the kernel with sock_diag, which walks the listening sockets only: reading
    /proc/net/tcp walks the whole established-connection hash table, sized by the
    machine's memory (~5 ms per file on a 24 GB host, on every heartbeat of every node)."""
    if proto not in _STATES:
        return []
    try:
        return _diag(proto)
    except OSError:
        return list(_proc_listening(proto))


def _diag(proto: str) -> list[tuple[int, str, int]]:
    ipproto, states = _STATES[proto]
    out: list[tuple[int, str, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as s:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            req = struct.pack("=BBBxI48x", family, ipproto, 0, states)
            s.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, seq, 0) + req)
            out.extend(_diag_answers(s, family))
    return out


def _diag_answers(s: socket.socket, family: int) -> Iterator[tuple[int, str, int]]:
    """Read one dump's messages: each an inet_diag_msg (family, state, id, …, inode)."""
    while True:
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + 16)
                raise OSError(-err, "sock_diag refused the request")
            body = off + 16
            port = struct.unpack_from("!H", data, body + 4)[0]
            raw = data[body + 8: body + 8 + (4 if family == socket.AF_INET else 16)]
            inode = struct.unpack_from("=I", data, body + 68)[0]
            yield port, socket.inet_ntop(family, raw) if family == socket.AF_INET else _v6(raw), inode
            off += (length + 3) & ~3
        if not data:
            return


def _v6(raw: bytes) -> str:
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(x) for x in raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def _proc_listening(proto: str) -> Iterator[tuple[int, str, int]]:
    """The same from /proc/net (where sock_diag is unavailable)."""
    files = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6")}[proto]
    state = _TCP_LISTEN if proto == "tcp" else _UDP_UNCONN
    for name in files:
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            if len(f) < 10 or f[3] != state:
                continue
            addr, hexport = f[1].rsplit(":", 1)
            yield int(hexport, 16), _addr(addr), int(f[9])


def _sockets(proto: str, port: int) -> list[tuple[str, int]]:
    """(local address, inode) of listening/bound sockets on ``port``."""
    return [(addr, ino) for p, addr, ino in _listening(proto) if p == port]


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    # /proc prints IPv6 as four host-order 32-bit words
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    b = b"".join(words)
    if b[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(x) for x in b[12:])
    import ipaddress
    return str(ipaddress.IPv6Address(b))


# socket inode -> (pid, command) of the process last found holding it: every heartbeat looks
# for the owners of the node's listening sockets, and a walk over every process's descriptors
# costs ~50 ms on a busy host (the joining node's first heartbeat waited for it). A kept
# owner is checked (the process still holds the socket) before it is used.
_KNOWN: dict[int, tuple[int, str]] = {}
_UNSEEN: set[int] = set()  # sockets no visible process holds (another PID namespace's): not looked for again


def _fd_targets(pid: str | int) -> Iterator[str]:
    """What each open descriptor of process `pid` points at (nothing once it is gone)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return
    for fd in fds:
        try:
            yield os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue


def _holds(pid: int, target: str) -> bool:
    return any(t == target for t in _fd_targets(pid))


def _owners(inodes: Iterable[int]) -> dict[int, tuple[int, str]]:
    wanted = {f"socket:[{i}]": i for i in inodes if i and i not in _UNSEEN}
    out: dict[int, tuple[int, str]] = {}
    for target, ino in list(wanted.items()):
        known = _KNOWN.get(ino)
        if known is not None and _holds(known[0], target):
            out[ino] = known
            del wanted[target]
    if wanted:
        found = _walk(wanted)
        out.update(found)
        if len(_KNOWN) + len(_UNSEEN) > 4096:
            _KNOWN.clear()
            _UNSEEN.clear()
        _KNOWN.update(found)
        _UNSEEN.update(i for i in wanted.values() if i not in found)
    return out


def _walk(wanted: dict[str, int]) -> dict[int, tuple[int, str]]:
    """Owners of the sockets in `wanted` (link target -> inode), from every process's descriptors."""
    out: dict[int, tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for target in _fd_targets(pid):
            ino = wanted.get(target)
            if ino is not None and ino not in out:
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    comm = "?"
                out[ino] = (int(pid), comm)
        if len(out) == len(wanted):
            break
    return out


def check_port_free(proto: str, port: int) -> Optional[str]:
    """None if no socket of this node (host network namespace) listens on ``port``/``proto``
    on any address; otherwise a message naming the process, e.g.
    ``"tcp port 8080 is in use by nginx (pid 412) on 0.0.0.0"``. A published port takes
    the port on every local address, so a listener on any address is a conflict."""
    socks = _sockets(proto, port)
    if not socks:
        return None
    owners = _owners(i for _, i in socks)
    parts = []
    for addr, ino in socks:
        pid, comm = owners.get(ino, (None, None))
        who = f"{comm} (pid {pid})" if pid else "an unknown process"
        parts.append(f"{who} on {addr}")
    # de-duplicate while keeping order
    seen, uniq = set(), []
    for p in parts:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return f"{proto} port {port} is in use by " + ", ".join(uniq)


def ports_in_use() -> dict[str, str]:
    """Every listening TCP / bound UDP port of this node: ``{"tcp/8080": "tcp port 8080 is in use by …"}``.

    Agents report it so the manager can refuse, at deploy, a published port that another
    process on some node already holds.
    """
    found: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for proto in ("tcp", "udp"):
        for port, addr, ino in _listening(proto):
            found.setdefault((proto, port), []).append((addr, ino))
    owners = _owners(i for socks in found.values() for _, i in socks)
    out = {}
    for (proto, port), socks in found.items():
        who = []
        for addr, ino in socks:
            pid, comm = owners.get(ino, (None, None))
            w = f"{comm} (pid {pid}) on {addr}" if pid else f"an unknown process on {addr}"
            if w not in who:
                who.append(w)
        out[f"{proto}/{port}"] = f"{proto} port {port} is in use by " + ", ".join(who)
    return out
