"""The node's `/metrics` listener: Prometheus text over plain HTTP, apart from the mutual-TLS
API (a scraper holds no node certificate), on 127.0.0.1:9323 unless `--metrics-addr` says
otherwise (the port Docker documents for the engine's own metrics).

One registry a node: the manager's metrics and the agent's, whichever this node runs.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from typing import Optional

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shoal.paths import Layout

log = logging.getLogger("shoal.metrics")

DEFAULT_METRICS_ADDR = "127.0.0.1:9323"
OFF = ("", "off", "none")


def parse_addr(value: str) -> Optional[tuple[str, int]]:
    """(host, port) of `HOST:PORT` (`[::1]:9323` for IPv6); None for "", "off" or "none"."""
    v = value.strip()
    if v.lower() in OFF:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics address {value!r} must be HOST:PORT (e.g. {DEFAULT_METRICS_ADDR}), or off")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"metrics address {value!r}: {host!r} is not an IP address") from None
    return host, int(port)


def configured_addr(layout: Layout) -> str:
    """What `init`/`join --metrics-addr` recorded for this node, or the default."""
    try:
        with open(layout.metrics_addr) as f:
            return f.read().strip()
    except FileNotFoundError:
        return DEFAULT_METRICS_ADDR


def record_addr(layout: Layout, value: str) -> None:
    parse_addr(value)  # refuse a bad one before anything is written
    os.makedirs(layout.root, exist_ok=True)
    with open(layout.metrics_addr, "w") as f:
        f.write(value.strip() + "\n")


class MetricsListener:
    def __init__(self, registry: CollectorRegistry, addr: str):
        self.registry = registry
        self.addr = addr
        self.runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        """Listen; a port already taken is logged, not fatal (the node runs without metrics)."""
        where = parse_addr(self.addr)
        if where is None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, where[0], where[1]).start()
            log.info("metrics on http://%s/metrics", self.addr)
        except OSError as e:
            log.error("metrics: cannot listen on %s: %s (no metrics served)", self.addr, e)
            await self.runner.cleanup()
            self.runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
