"""Who is already listening on a port? (for published-port conflict detection)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

_TCP_LISTEN = "0A"
_UDP_UNCONN = "07"


def _listening(proto: str) -> Iterable[tuple[int, str, int]]:
    """(port, local address, inode) of every listening TCP / bound UDP socket."""
    files = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6"), "sctp": ()}[proto]
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
