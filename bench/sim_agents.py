"""Simulated node agents: N nodes in one asyncio process, speaking the real agent protocol.

    python bench/sim_agents.py --data-dir DIR --nodes 100 [--port 4343] [--stats FILE]

Each simulated node joins the cluster through the real join path, as `shoal join` does: it
fetches the CA and checks it against the join token's digest, makes its own key and a CSR,
and presents the token (`POST /v1/join`); the manager creates the node and signs its
certificate (CN = node id, OU = node-worker). Then it talks mutual TLS to the manager
exactly like `shoal/agent/agent.py` (checking the manager API's name): heartbeats at the
period the manager answers (the first one makes the node ready; facts once), long-poll
`GET /v1/agent/assignments?digest=…&ep=…&wait=25` (keeping the endpoint table from the
manager's log, as the real agent does), and `POST /v1/agent/status`. Every task
assigned to it with a "run" desired state is reported `running` at once (fake container
id, a fake address per network) and every task the manager wants stopped is reported
`shutdown` — no container is ever started (its address: one in the task's network's subnet,
as a real container's). The nodes carry the engine label `sim=true`, so a bench stack
constrained to `engine.labels.sim == true` lands on them only, never on the daemon's real
node. The join token is `--token`, or read from the manager with `shoal join-token -q worker`.

Progress is written as JSON to `--stats` (every 0.25 s, and at exit): nodes registered,
distinct tasks seen (assigned), tasks whose `running` report the manager acknowledged, and
when the last of each happened (UNIX time), plus errors.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import ipaddress
import signal
import ssl
import subprocess
import sys
import struct
import time
import zlib
from typing import Any, Optional

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shoal import pki  # noqa: E402
from shoal.manager.deflated import adler32_combine  # noqa: E402
from shoal.protocol.endpoint_table import EndpointTable  # noqa: E402
from shoal.protocol.peer_table import PeerTable  # noqa: E402

try:  # faster decoding of big assignment answers, when available (the driver only)
    import orjson

    def _loads(b: bytes) -> Any:
        return orjson.loads(b)
except ImportError:  # pragma: no cover
    def _loads(b: bytes) -> Any:
        return json.loads(b)

RUN = ("running", "ready", "complete")
STOP = ("shutdown", "remove")
ON_NODE = ("assigned", "accepted", "preparing", "ready", "starting")
TERMINAL = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")


class Stats:
    def __init__(self, n: int):
        self.nodes = n
        self.registered = 0
        self.seen: dict[str, float] = {}  # task id -> first time it was in an assignment
        self.running = 0
        self.last_seen_at = 0.0
        self.last_running_at = 0.0
        self.stopped = 0
        self.errors = 0
        self.last_error = ""
        self.polls = 0
        self.bytes = 0
        self.decoded = 0
        self.table: Optional[EndpointTable] = None  # one node's full endpoint table

    def dump(self) -> dict:
        return {"nodes": self.nodes, "registered": self.registered, "seen": len(self.seen),
                "running": self.running, "last_seen_at": self.last_seen_at,
                "last_running_at": self.last_running_at, "stopped": self.stopped,
                "errors": self.errors, "last_error": self.last_error, "polls": self.polls,
                "bytes": self.bytes, "decoded": self.decoded, "time": time.time(),
                "pieces_inflated": SHARED.inflated, "pieces_skimmed": SHARED.skimmed, "answers_whole": SHARED.whole,
                "table_backends": sum(len(b) for b in self.table.backends.values()) if self.table else 0}


async def join_nodes(host: str, port: int, token: str, n: int, out_dir: str, prefix: str = "sim",
                     concurrency: int = 32) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    """Join n nodes through the real join path: (CA path, [(node id, hostname, cert path, key
    path, address)]). The CA is fetched unverified and pinned by the token's digest."""
    digest, _ = pki.parse_token(token)
    url = f"https://{host}:{port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/v1/join/ca", ssl=pki.unverified_context()) as r:
            ca_pem = await r.read()
    if not pki.same_secret(pki.ca_digest(ca_pem), digest):
        raise SystemExit("the manager's CA does not match the join token's digest")
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    ca_path = os.path.join(out_dir, "ca.crt")
    with open(ca_path, "wb") as f:
        f.write(ca_pem)
    ctx = pki.client_context(ca_path)
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)

    async def one(s: aiohttp.ClientSession, i: int) -> tuple[str, str, str, str, str]:
        hostname = f"{prefix}-{i:05d}"
        addr = f"10.99.{i // 250}.{i % 250 + 1}"
        key = pki.new_key()
        async with gate:
            async with s.post(url + "/v1/join", server_hostname=pki.MANAGER_NAME,
                              json={"token": token, "csr": pki.make_csr(key).decode(), "hostname": hostname,
                                    "advertise_addr": addr}) as r:
                if r.status != 200:
                    raise SystemExit(f"join of {hostname} refused: {r.status} {await r.text()}")
                ans = await r.json()
        cert, keyp = os.path.join(out_dir, f"{hostname}.crt"), os.path.join(out_dir, f"{hostname}.key")
        pki.write_pair(pki.KeyPair(ans["cert"].encode(), pki.key_pem(key)), cert, keyp)
        return ans["node_id"], hostname, cert, keyp, addr

    async with aiohttp.ClientSession(connector=connector) as s:
        nodes = await asyncio.gather(*(one(s, i) for i in range(n)))
    return ca_path, list(nodes)


def read_token(data_dir: str) -> str:
    p = subprocess.run([sys.executable, "-m", "shoal", "--data-dir", data_dir, "join-token", "-q", "worker"],
                       capture_output=True, text=True, timeout=60,
                       cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if p.returncode != 0:
        raise SystemExit(f"cannot read the join token: {p.stderr}")
    return p.stdout.strip()


class SharedPieces:
    """Reads a deflated answer without inflating the pieces every node is sent alike.

    The manager compresses each chunk of its endpoint and peer logs once and sends those
    bytes to every node (shoal/manager/deflated.py): each piece a run of deflate blocks ended
    by a full flush (`00 00 ff ff`), between stored blocks of the answer's own bytes (its
    tasks, positions, framing). A real node inflates its own answers on its own CPU; here one
    process stands in for all the nodes, and inflating every answer made it as busy as the
    manager (36 % of its time at 1,000 nodes x 100,000 tasks), so that it, not the manager,
    set the pace of the deploy's second half. So each distinct piece is inflated once (its
    length and Adler-32 remembered), the stored blocks are read as they are, and the whole is
    checked against the stream's own Adler-32; an answer that does not read so (None) is
    inflated whole by the caller. Node 0, which keeps the tables, always inflates whole."""

    def __init__(self, limit: int = 256 << 20):
        self.known: dict[bytes, tuple[int, int]] = {}  # piece -> (inflated length, Adler-32)
        self.size = 0
        self.limit = limit
        self.inflated = 0  # pieces inflated (each distinct one once)
        self.skimmed = 0  # pieces read from what was remembered
        self.whole = 0  # answers that did not read so (inflated whole)

    @staticmethod
    def _block_start(body: bytes, at: int) -> bool:
        """Does a stored block, or the stream's final empty block and trailer, start at `at`?"""
        if body[at:at + 2] == b"\x03\x00" and at + 6 == len(body):
            return True
        if at + 5 > len(body) or body[at] & 0x07:
            return False
        n, check = struct.unpack_from("<HH", body, at + 1)
        return n ^ check == 0xFFFF

    def skim(self, body: bytes) -> Optional[tuple[bytes, int]]:
        """(the answer's stored bytes, in order, without the shared pieces; the length of the
        whole inflated answer), or None."""
        if len(body) < 8 or (body[0] << 8 | body[1]) % 31 or body[0] & 0x0F != 8 or body[1] & 0x20:
            return None
        out: list[bytes] = []
        adler, total, at, end = 1, 0, 2, len(body)
        while at < end:
            if body[at:at + 2] == b"\x03\x00" and at + 6 == end:  # the final block, then the Adler-32
                if int.from_bytes(body[at + 2:], "big") != adler:
                    return None
                return b"".join(out), total
            if body[at] & 0x07 == 0:  # a stored block
                if at + 5 > end:
                    return None
                n, check = struct.unpack_from("<HH", body, at + 1)
                if n ^ check != 0xFFFF or at + 5 + n > end:
                    return None
                data = body[at + 5:at + 5 + n]
                out.append(data)
                adler = zlib.adler32(data, adler)
                total += n
                at += 5 + n
                continue
            cut = at  # a piece: up to the full flush followed by a block
            while True:
                cut = body.find(b"\x00\x00\xff\xff", cut)
                if cut < 0:
                    return None
                if self._block_start(body, cut + 4):
                    break
                cut += 1
            piece = body[at:cut + 4]
            got = self.known.get(piece)
            if got is None:
                d = zlib.decompressobj(-15)
                raw = d.decompress(piece)
                if d.unused_data or d.unconsumed_tail or d.eof:
                    return None
                got = (len(raw), zlib.adler32(raw))
                if self.size + len(piece) > self.limit:
                    self.known.clear()
                    self.size = 0
                self.known[piece] = got
                self.size += len(piece)
                self.inflated += 1
            else:
                self.skimmed += 1
            adler = adler32_combine(adler, got[1], got[0])
            total += got[0]
            at = cut + 4
        return None


SHARED = SharedPieces()


def split_answer(body: bytes, full: bool) -> dict:
    """An assignments answer, decoded except (unless `full`) for the endpoint and peer events.

    Every simulated node receives every byte the manager sends, but only node 0 decodes the
    endpoint events (and keeps the table): each real node decodes its own on its own CPU,
    while here one process would decode them for all 1,000 (10^8 events at 100,000 replicas)
    and measure itself instead of the manager."""
    if full:
        return _loads(body)
    i = body.find(b',"endpoints":')
    j = body.rfind(b',"digest":')
    k = body.rfind(b',"peers":', i, j) if i >= 0 else -1
    if i < 0 or j < i:
        return _loads(body)
    data = _loads(body[:i] + b"}")
    data.update(_loads(b"{" + body[j + 1:]))
    for key, at in (("endpoints", i + 13), ("peers", k + 9)):
        m = re.match(rb'\{"epoch":"([^"]*)","seq":(\d+)', body[at:at + 100]) if at > 8 else None
        data[key] = {"epoch": m.group(1).decode(), "seq": int(m.group(2))} if m else {}
    return data


class EndpointPosition(EndpointTable):
    """Follows the manager's endpoint log without keeping the table."""

    def apply(self, update: dict) -> bool:
        self.epoch, self.seq = update.get("epoch", ""), int(update.get("seq", 0))
        return bool(update.get("events"))


class PeerPosition(PeerTable):
    """Follows the manager's peer log without keeping the table."""

    def apply(self, update: dict) -> bool:
        self.epoch, self.seq = update.get("epoch", ""), int(update.get("seq", 0))
        return bool(update.get("events"))


class SimAgent:
    def __init__(self, node_id: str, hostname: str, ctx: ssl.SSLContext, url: str, stats: Stats, index: int,
                 addr: str = ""):
        self.node_id, self.hostname, self.url, self.stats, self.index = node_id, hostname, url, stats, index
        self.addr = addr
        self.subnets: dict[str, ipaddress.IPv4Network] = {}  # network name -> its subnet (from answers)
        self.ctx = ctx
        self.session: Optional[aiohttp.ClientSession] = None
        self.reported: dict[str, str] = {}
        self.registered = asyncio.Event()
        # One node keeps the whole endpoint table, as every real agent does (and the driver checks
        # it at the end); the others only follow their position in the log: a thousand copies
        # of a 100,000-replica table would not fit in one process, while each real node holds one.
        self.endpoints = EndpointTable() if index == 0 else EndpointPosition()
        self.peer_table = PeerTable() if index == 0 else PeerPosition()

    def description(self) -> dict:
        return {"hostname": self.hostname, "os": "linux", "arch": "x86_64",
                "nano_cpus": 64 * 10**9, "memory_bytes": 256 << 30,
                "engine_version": "sim", "engine_labels": {"sim": "true"}}

    async def call(self, method: str, path: str, *, json_body: Any = None, params: Optional[dict] = None,
                   timeout: float = 60, raw: bool = False) -> Any:
        assert self.session is not None
        async with self.session.request(method, self.url + path, json=json_body, params=params,
                                        server_hostname=pki.MANAGER_NAME,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            body = await r.read()  # as sent (the session does not inflate: see SharedPieces)
            self.stats.bytes += len(body)
            if r.headers.get("Content-Encoding", "").lower() == "deflate":
                skimmed = SHARED.skim(body) if raw and self.index != 0 else None
                if skimmed is None:
                    SHARED.whole += self.index != 0
                    body = zlib.decompress(body)
                    self.stats.decoded += len(body)
                else:
                    body, total = skimmed
                    self.stats.decoded += total
            else:
                self.stats.decoded += len(body)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {body[:200]!r}")
            return body if raw else _loads(body)

    def _error(self, e: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{self.hostname}: {type(e).__name__}: {e}"[:300]

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx, limit=4),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                                             auto_decompress=False)
        try:
            await asyncio.gather(self.heartbeats(), self.assignments())
        finally:
            await self.session.close()

    async def heartbeats(self) -> None:
        period = 2.0
        facts: Optional[dict] = {"engine_subnets": [], "ports_in_use": {}, "volumes": []}  # once
        while True:
            try:
                body: dict = {"description": self.description(), "addr": self.addr}
                if facts is not None:
                    body["facts"] = facts
                r = await self.call("POST", "/v1/agent/heartbeat", json_body=body)
                facts = None
                period = float(r.get("heartbeat_period", 2.0))
                if not self.registered.is_set():
                    self.registered.set()
                    self.stats.registered += 1
            except Exception as e:  # noqa: BLE001 - a benchmark driver keeps going
                self._error(e)
                period = 1.0
            await asyncio.sleep(period)

    async def assignments(self) -> None:
        await self.registered.wait()
        digest = ""
        while True:
            try:
                body = await self.call("GET", "/v1/agent/assignments",
                                       params={"digest": digest, "ep": self.endpoints.position,
                                               "pp": self.peer_table.position,
                                               "wait": "25", "rev": "0"}, timeout=90, raw=True)
                data = split_answer(body, full=self.index == 0)
            except Exception as e:  # noqa: BLE001
                self._error(e)
                await asyncio.sleep(1)
                continue
            self.stats.polls += 1
            digest = data.get("digest", "")
            for n in data.get("networks") or []:
                if n.get("subnet"):
                    self.subnets[n["spec"]["name"]] = ipaddress.ip_network(n["subnet"])
            try:
                self.endpoints.apply(data.get("endpoints") or {})
                self.peer_table.apply(data.get("peers") or {})
                await self.apply(data.get("tasks") or [])
            except Exception as e:  # noqa: BLE001 - never let one node's bug stop it
                self._error(e)
                await asyncio.sleep(1)

    async def apply(self, tasks: list[dict]) -> None:
        now = time.time()
        updates, running = [], 0
        seen = self.stats.seen
        for t in tasks:
            tid = t["id"]
            if tid not in seen:
                seen[tid] = now
                self.stats.last_seen_at = now
            state = t["status"]["state"]
            if state in TERMINAL:
                continue
            if t["desired_state"] in RUN and state in ON_NODE and self.reported.get(tid) != "running":
                nets = [a["network"] for a in t["spec"].get("networks", [])]
                h = zlib.crc32(tid.encode())
                # the manager's addresses, as a real engine's IPAM is told (older managers: made up)
                addresses = t.get("addresses") or {
                    n: str(self.subnets[n].network_address + 2 + h % (self.subnets[n].num_addresses - 4))
                    for n in nets if n in self.subnets}
                updates.append({"task_id": tid, "state": "running", "timestamp": now,
                                "message": "started (simulated)",
                                "container_id": "sim" + tid.ljust(61, "0"), "addresses": addresses})
                self.reported[tid] = "running"
                running += 1
            elif t["desired_state"] in STOP and self.reported.get(tid) != "shutdown":
                updates.append({"task_id": tid, "state": "shutdown", "timestamp": now,
                                "message": "shutdown (simulated)"})
                self.reported[tid] = "shutdown"
        if not updates:
            return
        for attempt in range(5):
            try:
                await self.call("POST", "/v1/agent/status", json_body={"updates": updates})
                break
            except Exception as e:  # noqa: BLE001
                self._error(e)
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            for u in updates:  # let the next answer retry them
                self.reported.pop(u["task_id"], None)
            return
        if running:
            self.stats.running += running
            self.stats.last_running_at = time.time()
        self.stats.stopped += len(updates) - running


async def run(args: argparse.Namespace) -> None:
    info_path = os.path.join(args.data_dir, "cluster.json")
    port = args.port
    if port is None and os.path.exists(info_path):
        with open(info_path) as f:
            port = int(json.load(f).get("port", 4343))
    url = f"https://127.0.0.1:{port or 4343}"
    cert_dir = args.cert_dir or os.path.join(args.data_dir, "sim-certs")
    token = args.token or read_token(args.data_dir)
    t0 = time.time()
    ca, nodes = await join_nodes("127.0.0.1", port or 4343, token, args.nodes, cert_dir)
    print(f"sim: {len(nodes)} nodes joined (token, CSR, certificate) in {time.time() - t0:.1f} s", flush=True)
    stats = Stats(len(nodes))
    agents = []
    for i, (nid, host, cert, key, addr) in enumerate(nodes):
        agents.append(SimAgent(nid, host, pki.client_context(ca, cert, key), url, stats, i, addr))
    stats.table = agents[0].endpoints if agents else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def start(a: SimAgent) -> None:
        await asyncio.sleep(random.uniform(0, args.ramp))  # no thundering herd of TLS handshakes
        await a.run()

    tasks = [asyncio.create_task(start(a)) for a in agents]

    async def write_stats() -> None:
        while True:
            if args.stats:
                tmp = args.stats + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(stats.dump(), f)
                os.replace(tmp, args.stats)
            await asyncio.sleep(0.25)

    writer = asyncio.create_task(write_stats())
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.cancel()
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(stats.dump(), f)
    print(f"sim: {json.dumps(stats.dump())}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("SHOAL_DATA_DIR", "/var/lib/shoal"))
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--port", type=int, default=None, help="manager port (default: from cluster.json)")
    ap.add_argument("--cert-dir", default=None, help="where node certificates go (default: DATA_DIR/sim-certs)")
    ap.add_argument("--stats", default=None, help="JSON progress file")
    ap.add_argument("--token", default=None, help="worker join token (default: `shoal join-token -q worker`)")
    ap.add_argument("--ramp", type=float, default=3.0, help="seconds over which the nodes connect")
    args = ap.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
