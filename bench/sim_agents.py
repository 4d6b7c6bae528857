"""Simulated node agents: N nodes in one asyncio process, speaking the real agent protocol.

    python bench/sim_agents.py --data-dir DIR --nodes 100 [--port 4343] [--stats FILE]

Each simulated node has its own TLS client certificate (CN = node id, OU = node-worker)
and talks mutual TLS to the real manager exactly like `shoal/agent/agent.py`:
heartbeat every 5 s (the first one registers the node), long-poll
`GET /v1/agent/assignments?digest=…&ep=…&wait=25` (keeping the endpoint table from the
manager's log, as the real agent does), and `POST /v1/agent/status`. Every task
assigned to it with a "run" desired state is reported `running` at once (fake container
id, a fake address per network) and every task the manager wants stopped is reported
`shutdown` — no container is ever started. The nodes carry the engine label `sim=true`, so a
bench stack constrained to `engine.labels.sim == true` lands on them only, never on the
daemon's real node.

SHORTCUT (documented): Shoal has no `shoal join` yet, so the certificates are issued
directly from the cluster CA in the data dir (`certs/ca.crt` + `manager/ca.key`), i.e. the
driver must run as the manager's owner on the manager's machine. This is a benchmark
short-cut, not a way to add nodes.

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
import signal
import ssl
import sys
import time
import uuid
import zlib
from typing import Any, Optional

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shoal import pki  # noqa: E402
from shoal.protocol.endpoint_table import EndpointTable  # noqa: E402

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
        self.table: Optional[EndpointTable] = None  # one node's full endpoint table

    def dump(self) -> dict:
        return {"nodes": self.nodes, "registered": self.registered, "seen": len(self.seen),
                "running": self.running, "last_seen_at": self.last_seen_at,
                "last_running_at": self.last_running_at, "stopped": self.stopped,
                "errors": self.errors, "last_error": self.last_error, "polls": self.polls,
                "bytes": self.bytes, "time": time.time(),
                "table_backends": sum(len(b) for b in self.table.backends.values()) if self.table else 0}


def issue_certs(data_dir: str, n: int, out_dir: str, prefix: str = "sim") -> list[tuple[str, str, str, str]]:
    """(node id, hostname, cert path, key path) for n simulated nodes, signed by the cluster CA."""
    with open(os.path.join(data_dir, "certs", "ca.crt"), "rb") as c, \
            open(os.path.join(data_dir, "manager", "ca.key"), "rb") as k:
        ca = pki.KeyPair(c.read(), k.read())
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    out = []
    for i in range(n):
        node_id = uuid.uuid4().hex[:25]
        host = f"{prefix}-{i:05d}"
        pair = pki.issue(ca, node_id, "node-worker")
        cert, key = os.path.join(out_dir, f"{host}.crt"), os.path.join(out_dir, f"{host}.key")
        pki.write_pair(pair, cert, key)
        out.append((node_id, host, cert, key))
    return out


def split_answer(body: bytes, full: bool) -> dict:
    """An assignments answer, decoded except (unless `full`) for the endpoint events.

    Every simulated node receives every byte the manager sends, but only node 0 decodes the
    endpoint events (and keeps the table): each real node decodes its own on its own CPU,
    while here one process would decode them for all 1,000 (10^8 events at 100,000 replicas)
    and measure itself instead of the manager."""
    if full:
        return _loads(body)
    i = body.find(b',"endpoints":')
    j = body.rfind(b',"digest":')
    if i < 0 or j < i:
        return _loads(body)
    data = _loads(body[:i] + b"}")
    data.update(_loads(b"{" + body[j + 1:]))
    m = re.match(rb'\{"epoch":"([^"]*)","seq":(\d+)', body[i + 13:i + 100])
    data["endpoints"] = {"epoch": m.group(1).decode(), "seq": int(m.group(2))} if m else {}
    return data


class EndpointPosition(EndpointTable):
    """Follows the manager's endpoint log without keeping the table."""

    def apply(self, update: dict) -> bool:
        self.epoch, self.seq = update.get("epoch", ""), int(update.get("seq", 0))
        return bool(update.get("events"))


class SimAgent:
    def __init__(self, node_id: str, hostname: str, ctx: ssl.SSLContext, url: str, stats: Stats, index: int):
        self.node_id, self.hostname, self.url, self.stats, self.index = node_id, hostname, url, stats, index
        self.ctx = ctx
        self.session: Optional[aiohttp.ClientSession] = None
        self.reported: dict[str, str] = {}
        self.registered = asyncio.Event()
        # One node keeps the whole endpoint table, as every real agent does (and the driver checks
        # it at the end); the others only follow their position in the log: a thousand copies
        # of a 100,000-replica table would not fit in one process, while each real node holds one.
        self.endpoints = EndpointTable() if index == 0 else EndpointPosition()

    def description(self) -> dict:
        return {"hostname": self.hostname, "os": "linux", "arch": "x86_64",
                "nano_cpus": 64 * 10**9, "memory_bytes": 256 << 30,
                "engine_version": "sim", "engine_labels": {"sim": "true"}}

    async def call(self, method: str, path: str, *, json_body: Any = None, params: Optional[dict] = None,
                   timeout: float = 60, raw: bool = False) -> Any:
        assert self.session is not None
        async with self.session.request(method, self.url + path, json=json_body, params=params,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            body = await r.read()
            self.stats.bytes += len(body)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {body[:200]!r}")
            return body if raw else _loads(body)

    def _error(self, e: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{self.hostname}: {type(e).__name__}: {e}"[:300]

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx, limit=4),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        try:
            await asyncio.gather(self.heartbeats(), self.assignments())
        finally:
            await self.session.close()

    async def heartbeats(self) -> None:
        period = 5.0
        while True:
            try:
                r = await self.call("POST", "/v1/agent/heartbeat",
                                    json_body={"description": self.description(), "addr": f"10.99.{self.index // 250}.{self.index % 250 + 1}"})
                period = float(r.get("heartbeat_period", 5.0))
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
                                               "wait": "25", "rev": "0"}, timeout=90, raw=True)
                data = split_answer(body, full=self.index == 0)
            except Exception as e:  # noqa: BLE001
                self._error(e)
                await asyncio.sleep(1)
                continue
            self.stats.polls += 1
            digest = data.get("digest", "")
            try:
                self.endpoints.apply(data.get("endpoints") or {})
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
                updates.append({"task_id": tid, "state": "running", "timestamp": now,
                                "message": "started (simulated)",
                                "container_id": "sim" + tid.ljust(61, "0"),
                                "addresses": {n: f"10.{200 + h % 9}.{(h >> 8) % 256}.{h % 250 + 2}" for n in nets}})
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
    t0 = time.time()
    nodes = issue_certs(args.data_dir, args.nodes, cert_dir)
    print(f"sim: issued {len(nodes)} node certificates in {time.time() - t0:.1f} s", flush=True)
    ca = os.path.join(args.data_dir, "certs", "ca.crt")
    stats = Stats(len(nodes))
    agents = []
    for i, (nid, host, cert, key) in enumerate(nodes):
        agents.append(SimAgent(nid, host, pki.client_context(ca, cert, key), url, stats, i))
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
    ap.add_argument("--ramp", type=float, default=3.0, help="seconds over which the nodes connect")
    args = ap.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
