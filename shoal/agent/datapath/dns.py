"""Service-name DNS for Shoal networks.

One :class:`DnsServer` per node listens (UDP and TCP, port 53) on the gateway address of
every Shoal network. Containers are created with ``Dns: [<gateway of their first
network>]``; Docker's embedded resolver (127.0.0.11) answers container names itself and
forwards every other question to that address *from inside the container's network
namespace*, so the question reaches the gateway of the container's network with the
container's own address as source (checked on Docker 20.10, see docs/datapath.md).

For a question arriving on network N's gateway (plus, when the source address is a
known container, that container's other networks, in order):

* ``<svc>`` / ``<stack>_<svc>`` / a network alias -> the service's VIP on N (endpoint
  mode vip) or the addresses of its running replicas on N (dnsrr);
* ``tasks.<svc>`` / ``tasks.<stack>_<svc>`` -> the running replicas' addresses on N;
* reverse (PTR) questions for VIPs -> the service name;
* other names in the service namespace (one label, ``tasks.<label>``, or reverse names
  inside Shoal's ranges) -> NXDOMAIN; services not attached to N are invisible;
* everything else is forwarded to the host's resolvers (``/etc/resolv.conf``).

Answers use a TTL of 1 s (configurable) so names follow replicas as they come and go.

Nothing a container sends can exhaust the process (which is the node's agent): questions
Shoal answers are answered at once, without a task; forwarded ones go through one UDP
socket per upstream (question ids remapped), at most MAX_FORWARDS in flight in all and
MAX_FORWARDS_PER_SOURCE per client address — beyond, the answer is SERVFAIL at once; at
most MAX_TCP_CLIENTS TCP connections are served at a time. A normal container resolving
names never comes near these bounds (its resolver sends a few questions at a time).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
from typing import Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from shoal.agent.datapath import dnswire as w
from shoal.agent.datapath.view import CONTAINER_SUPERNET, VIP_SUPERNET

log = logging.getLogger(__name__)

IP_FREEBIND = 15  # linux/in.h: bind to an address the node does not carry (yet)
MAX_FORWARDS = 256  # forwarded questions in flight, in all
MAX_FORWARDS_PER_SOURCE = 32  # ... from one client address
MAX_TCP_CLIENTS = 64


class DnsService(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str  # full name, e.g. "shop_web"
    stack: Optional[str] = None  # "shop": also answers to "web"
    aliases: list[str] = Field(default_factory=list)  # extra names on this network
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    vip: Optional[str] = None  # the service's VIP on this network
    tasks: list[str] = Field(default_factory=list)  # running replicas' addresses on this network

    def names(self) -> list[str]:
        out = [self.name.lower()]
        if self.stack and self.name.startswith(self.stack + "_"):
            out.append(self.name[len(self.stack) + 1:].lower())
        out += [a.lower() for a in self.aliases]
        return out


class DnsNetwork(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    gateway: str  # where the DNS server listens for this network
    services: list[DnsService] = Field(default_factory=list)


class DnsView(BaseModel):
    model_config = ConfigDict(extra="forbid")
    networks: list[DnsNetwork] = Field(default_factory=list)
    # container address -> names of all its networks, first network first (optional):
    # lets a container on several networks resolve services of each of them.
    clients: dict[str, list[str]] = Field(default_factory=dict)


# --- resolution (pure) -------------------------------------------------------------------

_RANGES = [ipaddress.IPv4Network(CONTAINER_SUPERNET), ipaddress.IPv4Network(VIP_SUPERNET)]


def _reverse_ip(name: str) -> Optional[ipaddress.IPv4Address]:
    if not name.endswith(".in-addr.arpa"):
        return None
    parts = name[: -len(".in-addr.arpa")].split(".")
    if len(parts) != 4:
        return None
    try:
        return ipaddress.IPv4Address(".".join(reversed(parts)))
    except ValueError:
        return None


def in_namespace(name: str) -> bool:
    """Names Shoal answers authoritatively (never forwarded)."""
    if name and "." not in name:
        return True
    if name.startswith("tasks.") and name[6:] and "." not in name[6:]:
        return True
    ip = _reverse_ip(name)
    return ip is not None and any(ip in r for r in _RANGES)


class Answer(BaseModel):
    rcode: int = w.RCODE_NOERROR
    ips: list[str] = Field(default_factory=list)
    ptr: Optional[str] = None


def resolve(view: DnsView, gateway: str, client: Optional[str], name: str,
            qtype: int = w.TYPE_A) -> Optional[Answer]:
    """Answer ``name`` for a question that reached ``gateway`` from ``client``.
    None means "not ours: forward it"."""
    name = name.lower().rstrip(".")
    if not in_namespace(name):
        return None
    by_name = {n.name: n for n in view.networks}
    nets: list[DnsNetwork] = [n for n in view.networks if n.gateway == gateway][:1]
    for other in view.clients.get(client or "", []):
        n = by_name.get(other)
        if n is not None and n not in nets:
            nets.append(n)

    ip = _reverse_ip(name)
    if ip is not None:
        for net in nets:
            for s in net.services:
                if s.vip and ipaddress.IPv4Address(s.vip) == ip:
                    return Answer(ptr=s.name)
        return Answer(rcode=w.RCODE_NXDOMAIN)

    tasks_query = name.startswith("tasks.")
    key = name[6:] if tasks_query else name
    for net in nets:
        exact = [s for s in net.services if s.name.lower() == key]
        found = exact or [s for s in net.services if key in s.names()]
        if not found:
            continue
        ips: list[str] = []
        for s in sorted(found, key=lambda s: s.name):
            if not tasks_query and s.endpoint_mode == "vip" and s.vip:
                ips.append(s.vip)
            else:
                ips.extend(s.tasks)
        seen: set[str] = set()
        ips = [x for x in ips if not (x in seen or seen.add(x))]
        return Answer(ips=ips)
    return Answer(rcode=w.RCODE_NXDOMAIN)


# --- the server ------------------------------------------------------------------------

def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        for ln in open(path):
            f = ln.split()
            if len(f) >= 2 and f[0] == "nameserver":
                out.append(f[1].split("%")[0])
    except OSError:
        pass
    return out


ViewSource = Union[DnsView, Callable[[], DnsView]]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer", addr: str):
        self.server, self.addr = server, addr
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, peer):
        resp, q = self.server.respond(data, self.addr, peer[0], tcp=False)
        if q is not None:
            if self.server.admit(peer[0]):
                self.server._spawn(self._forward(data, q, peer))
                return
            resp = w.build_response(q, w.RCODE_SERVFAIL, authoritative=False)
        self._send(resp, peer)

    async def _forward(self, data, q, peer):
        try:
            resp = await self.server.forward(data, q, tcp=False)
        finally:
            self.server.release(peer[0])
        self._send(resp, peer)

    def _send(self, resp, peer):
        if resp and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(resp, peer)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """One UDP socket to one upstream resolver, shared by every forwarded question: each is
    sent with an id of its own (the client's id restored in the answer)."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.pending: dict[int, asyncio.Future] = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        fut = self.pending.pop(w.header_id(data), None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc):
        pass  # an ICMP error: the question times out

    def connection_lost(self, exc):
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("upstream socket closed"))
        self.pending.clear()

    async def ask(self, data: bytes, timeout: float) -> bytes:
        assert self.transport is not None
        mid = random.randrange(65536)
        while mid in self.pending:
            mid = random.randrange(65536)
        fut = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        try:
            self.transport.sendto(struct.pack(">H", mid) + data[2:])
            resp = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(mid, None)
        return data[:2] + resp[2:]


class DnsServer:
    """Service-name DNS for the Shoal networks of this node.

    ``view`` is a :class:`DnsView` or a callable returning the current one (called for
    every question). ``await start()`` listens on every network's gateway, ``await
    update(view)`` swaps the data and adds/removes listeners for networks that
    appeared/disappeared, ``await stop()`` closes everything. Sockets use IP_FREEBIND, so
    a gateway address may be listed before its bridge exists.
    """

    def __init__(self, view: Optional[ViewSource] = None, *, port: int = 53,
                 upstreams: Optional[list[str]] = None, ttl: int = 1,
                 forward_timeout: float = 2.0, extra_listen: Optional[list[str]] = None):
        self._view: ViewSource = view if view is not None else DnsView()
        self.port = port
        self.ttl = ttl
        self.forward_timeout = forward_timeout
        self._upstreams = upstreams
        self.extra_listen = list(extra_listen or [])
        self._udp: dict[str, asyncio.DatagramTransport] = {}
        self._tcp: dict[str, asyncio.base_events.Server] = {}
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self._inflight = 0
        self._inflight_by_source: dict[str, int] = {}
        self._upstream: dict[str, _UpstreamProtocol] = {}
        self._upstream_lock = asyncio.Lock()
        self.upstream_port = 53
        self._tcp_clients = 0
        self.refused = 0  # questions answered SERVFAIL because the bounds were reached
        self.forwarded = 0  # questions let through to an upstream

    # -- data ---------------------------------------------------------------------------
    @property
    def view(self) -> DnsView:
        return self._view() if callable(self._view) else self._view

    def set_view(self, view: ViewSource) -> None:
        """Swap the data only (listeners are reconciled by :meth:`update`/:meth:`start`)."""
        self._view = view

    @property
    def addresses(self) -> list[str]:
        return sorted(self._udp)

    def upstreams(self) -> list[str]:
        ups = self._upstreams if self._upstreams is not None else host_resolvers()
        mine = set(self._udp) | {n.gateway for n in self.view.networks}
        return [u for u in ups if u not in mine] or []

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self._reconcile()

    async def update(self, view: Optional[ViewSource] = None) -> None:
        if view is not None:
            self._view = view
        await self._reconcile()

    async def stop(self) -> None:
        async with self._lock:
            for addr in list(self._udp):
                await self._close(addr)
        for up in self._upstream.values():
            if up.transport is not None:
                up.transport.close()
        self._upstream.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _reconcile(self) -> None:
        async with self._lock:
            want = {n.gateway for n in self.view.networks} | set(self.extra_listen)
            for addr in set(self._udp) - want:
                await self._close(addr)
            for addr in sorted(want - set(self._udp)):
                try:
                    await self._open(addr)
                except OSError as e:
                    log.error("DNS: cannot listen on %s:%d: %s", addr, self.port, e)

    def _socket(self, addr: str, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.bind((addr, self.port))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    async def _open(self, addr: str) -> None:
        loop = asyncio.get_running_loop()
        us = self._socket(addr, socket.SOCK_DGRAM)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, addr), sock=us)
        try:
            ts = self._socket(addr, socket.SOCK_STREAM)
            ts.listen(64)
            server = await asyncio.start_server(
                lambda r, wr: self._tcp_client(r, wr, addr), sock=ts)
        except BaseException:
            transport.close()
            raise
        self._udp[addr] = transport
        self._tcp[addr] = server
        log.info("DNS: listening on %s:%d", addr, self.port)

    async def _close(self, addr: str) -> None:
        t = self._udp.pop(addr, None)
        if t is not None:
            t.close()
        s = self._tcp.pop(addr, None)
        if s is not None:
            s.close()
            await s.wait_closed()

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          addr: str) -> None:
        peer = (writer.get_extra_info("peername") or ("", 0))[0]
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            self.refused += 1
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), timeout=10)
                (n,) = struct.unpack(">H", head)
                data = await asyncio.wait_for(reader.readexactly(n), timeout=10)
                resp = await self.handle(data, addr, peer, tcp=True)
                if resp:
                    writer.write(struct.pack(">H", len(resp)) + resp)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    # -- bounds on forwarding -------------------------------------------------------------
    def admit(self, source: Optional[str]) -> bool:
        """May a question from `source` be forwarded now? (Then `release` it when answered.)"""
        src = source or ""
        if self._inflight >= MAX_FORWARDS or self._inflight_by_source.get(src, 0) >= MAX_FORWARDS_PER_SOURCE:
            self.refused += 1
            return False
        self._inflight += 1
        self._inflight_by_source[src] = self._inflight_by_source.get(src, 0) + 1
        self.forwarded += 1
        return True

    def release(self, source: Optional[str]) -> None:
        src = source or ""
        self._inflight -= 1
        left = self._inflight_by_source.get(src, 1) - 1
        if left > 0:
            self._inflight_by_source[src] = left
        else:
            self._inflight_by_source.pop(src, None)

    # -- answering ----------------------------------------------------------------------
    async def handle(self, data: bytes, local: str, client: Optional[str],
                     tcp: bool = False) -> bytes:
        """The response bytes for query ``data`` that reached ``local`` from ``client``."""
        resp, q = self.respond(data, local, client, tcp)
        if q is None:
            return resp
        if not self.admit(client):
            return w.build_response(q, w.RCODE_SERVFAIL, authoritative=False)
        try:
            return await self.forward(data, q, tcp)
        finally:
            self.release(client)

    def respond(self, data: bytes, local: str, client: Optional[str],
                tcp: bool = False) -> tuple[bytes, Optional[w.Message]]:
        """(the answer, None) for a question answered here, or (b"", the question) for one to
        forward. Never raises: a question it cannot answer gets an error code."""
        try:
            q = w.parse_message(data)
        except (w.DnsFormatError, ValueError, IndexError, struct.error):
            return w.error_response(data, w.RCODE_FORMERR), None
        if q.is_response:
            return b"", None
        if q.opcode != w.OPCODE_QUERY:
            return w.build_response(q, w.RCODE_NOTIMP), None
        if len(q.questions) != 1:
            return w.build_response(q, w.RCODE_FORMERR), None
        question = q.questions[0]
        try:
            ans = resolve(self.view, local, client, question.name, question.qtype)
        except Exception:  # a broken view must not kill the server
            log.exception("DNS: lookup of %s failed", question.name)
            return w.build_response(q, w.RCODE_SERVFAIL), None
        if ans is None:
            return b"", q
        if question.qclass not in (w.CLASS_IN, w.TYPE_ANY):
            return w.build_response(q, w.RCODE_REFUSED), None
        try:
            records = []
            if ans.ptr and question.qtype in (w.TYPE_PTR, w.TYPE_ANY):
                records.append(w.ptr_record(question.name, ans.ptr, self.ttl))
            if question.qtype in (w.TYPE_A, w.TYPE_ANY):
                ips = list(ans.ips)
                random.shuffle(ips)  # spread clients that take the first address
                records += [w.a_record(question.name, ip, self.ttl) for ip in ips]
            resp = w.build_response(q, ans.rcode, records)
            if not tcp and len(resp) > 512:
                # too many replicas for classic UDP: truncate, the client retries over TCP
                per = len(w.encode_name(question.name)) + 10 + 4
                fit = max(0, (512 - 12 - len(q.question_bytes)) // per)
                resp = w.build_response(q, ans.rcode, records[:fit])
                resp = resp[:2] + bytes([resp[2] | 0x02]) + resp[3:]
        except ValueError as e:  # a name that is no DNS name (a label over 63 bytes…)
            log.warning("DNS: cannot answer %s: %s", question.name, e)
            return w.build_response(q, w.RCODE_SERVFAIL), None
        return resp, None

    async def forward(self, data: bytes, q: w.Message, tcp: bool) -> bytes:
        for up in self.upstreams():
            try:
                if tcp:
                    resp = await asyncio.wait_for(self._forward_tcp(data, up), self.forward_timeout)
                else:
                    resp = await (await self._upstream_of(up)).ask(data, self.forward_timeout)
                if resp and w.header_id(resp) == q.id:
                    return resp
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("DNS: upstream %s failed: %s", up, e)
        return w.build_response(q, w.RCODE_SERVFAIL, authoritative=False)

    async def _upstream_of(self, upstream: str) -> _UpstreamProtocol:
        async with self._upstream_lock:  # one socket per upstream, however many ask at once
            proto = self._upstream.get(upstream)
            if proto is None or proto.transport is None or proto.transport.is_closing():
                proto = _UpstreamProtocol()
                await asyncio.get_running_loop().create_datagram_endpoint(lambda: proto,
                                                                          remote_addr=(upstream, self.upstream_port))
                self._upstream[upstream] = proto
            return proto

    async def _forward_tcp(self, data: bytes, upstream: str) -> bytes:
        reader, writer = await asyncio.open_connection(upstream, 53)
        try:
            writer.write(struct.pack(">H", len(data)) + data)
            await writer.drain()
            (n,) = struct.unpack(">H", await reader.readexactly(2))
            return await reader.readexactly(n)
        finally:
            writer.close()
