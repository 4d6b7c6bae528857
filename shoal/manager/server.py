"""Wires the manager together: store, keyring, cluster ops, dispatcher, orchestrator, HTTP API.

It listens on TCP with mutual TLS (agents, remote admins) and on a root-only unix
socket in the data dir (the local CLI).
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import gc
import logging
import os
from typing import Optional

from aiohttp import web

from shoal import pki
from shoal.manager.api import ManagerApi
from shoal.manager.cluster import Cluster
from shoal.manager.dispatcher import Dispatcher
from shoal.manager.keyring import Keyring, Locked
from shoal.manager.logs import LogHub
from shoal.manager.orchestrator import Orchestrator
from shoal.paths import Layout
from shoal.store.sqlite import SqliteStore

log = logging.getLogger("shoal.manager")

# asyncio gives every TLS connection a 256 KiB read buffer, zero-filled at once: with a
# thousand nodes (two connections each: heartbeats and the long poll) that alone was 500 MB
# of the manager's memory. Requests to the manager are small; 16 KiB reads are plenty.
asyncio.sslproto.SSLProtocol.max_size = 16 * 1024


class ManagerServer:
    def __init__(self, layout: Layout, cluster_info: dict, listen: str, port: int):
        self.layout = layout
        self.info = cluster_info
        self.listen = listen
        self.port = port
        self.runner: Optional[web.AppRunner] = None
        self.orch_task: Optional[asyncio.Task] = None
        self.dispatch_task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        L = self.layout
        self.store = SqliteStore(L.store)
        # The store keeps every object in memory (100,000 tasks are millions of objects): keep
        # what was loaded out of the collector's scans, and collect the youngest generation less
        # often; the manager makes few reference cycles.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        self.keyring = Keyring(L.cluster_key)
        try:
            self.keyring.load()
        except Locked:
            log.warning("the cluster is autolocked: waiting for `shoal unlock`")
        self.cluster = Cluster(self.store, self.keyring, self.info["node_id"])
        self.dispatcher = Dispatcher(self.store, self.cluster)
        self.api = ManagerApi(self.store, self.cluster, self.dispatcher, self.keyring,
                              {k: v for k, v in self.info.items() if k != "unlock_key"},
                              on_unlock=self._start_orchestrator)
        # Volume-aware placement: the scheduler sees where the agents' heartbeats found each volume.
        self.orchestrator = Orchestrator(self.store, volume_nodes=self.api.volumes.volume_nodes)
        self.api.log_hub = LogHub(self.store)
        app = web.Application(middlewares=[self.api.middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes(self.api.routes())
        # Long polls (agents, logs) would hold shutdown for their whole wait: give them 1 s.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        ctx = pki.server_context(L.ca_cert, L.manager_cert, L.manager_key)
        await web.TCPSite(self.runner, self.listen, self.port, ssl_context=ctx, reuse_address=True).start()
        if os.path.exists(L.socket):
            os.unlink(L.socket)
        await web.UnixSite(self.runner, L.socket).start()
        os.chmod(L.socket, 0o600)
        self.dispatch_task = asyncio.create_task(self.dispatcher.run())
        if self.keyring.unlocked:
            self._start_orchestrator()
        log.info("manager listening on %s:%d and %s", self.listen, self.port, L.socket)

    def _start_orchestrator(self) -> None:
        if self.orch_task is None:
            self.orch_task = asyncio.create_task(self.orchestrator.run())

    async def stop(self) -> None:
        for task in (self.orch_task, self.dispatch_task):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.runner:
            await self.runner.cleanup()
        self.store.close()
