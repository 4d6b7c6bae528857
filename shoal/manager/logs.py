"""`service logs` through the manager: the agents own the containers, so logs flow back.

The manager never talks to an engine. A log request is queued for each node that
ran the service's tasks; the node's agent (long-polling for requests) streams the
lines back in a POST body, and the manager relays them to the waiting client.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Optional

from aiohttp import web

from shoal.manager.errors import NotFound
from shoal.manager.node_queues import NodeQueues
from shoal.model.objects import Service
from shoal.store import Store


class LogHub:
    def __init__(self, store: Store):
        self.store = store
        self._requests = NodeQueues()
        self._sinks: dict[str, asyncio.Queue] = {}
        self._nodes: dict[str, str] = {}  # request id -> the node asked

    async def requests_for(self, node_id: str, wait: float) -> list[dict]:
        return await self._requests.take(node_id, wait)

    async def receive(self, req_id: str, request: web.Request, node_id: str) -> None:
        sink = self._sinks.get(req_id)
        if sink is None or self._nodes.get(req_id) != node_id:  # a node answers only for itself
            raise NotFound("no such log request")
        try:
            async for line in request.content:
                await sink.put(line)
        finally:
            await sink.put(None)

    async def serve(self, request: web.Request, svc: Service) -> web.StreamResponse:
        follow = request.query.get("follow") in ("1", "true")
        tail: Optional[str] = request.query.get("tail")
        by_node: dict[str, list[dict]] = {}
        tasks = sorted(self.store.tasks_of_service(svc.id), key=lambda t: (t.slot, t.created_at))
        for t in tasks:
            if t.node_id and t.status.container_id:
                by_node.setdefault(t.node_id, []).append(
                    {"container_id": t.status.container_id, "name": f"{t.service_name}.{t.slot or t.node_id}.{t.id[:12]}",
                     "node": t.node_id})
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        sink: asyncio.Queue = asyncio.Queue()
        ids = []
        for node_id, containers in by_node.items():
            req_id = uuid.uuid4().hex
            ids.append(req_id)
            self._sinks[req_id] = sink
            self._nodes[req_id] = node_id
            await self._requests.put(node_id, {"id": req_id, "containers": containers, "follow": follow,
                                               "tail": tail})
        open_streams = len(ids)
        try:
            while open_streams:
                try:
                    line = await asyncio.wait_for(sink.get(), timeout=None if follow else 30)
                except asyncio.TimeoutError:
                    break
                if line is None:
                    open_streams -= 1
                    continue
                await resp.write(line)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for i in ids:
                self._sinks.pop(i, None)
                self._nodes.pop(i, None)
        return resp
