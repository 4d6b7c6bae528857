"""`service logs` through the manager: the agents own the containers, so logs flow back.

The manager never talks to an engine. A log request is queued for each node that
ran the service's tasks; the node's agent (long-polling for requests) streams the
lines back in a POST body, and the manager relays them to the waiting client.

Bounded at every step: the lines waiting between the agents and a client are at most
QUEUE_LINES; when they are, the manager stops reading the agents' uploads, so TCP's own
backpressure slows the agents down to the client's pace (a slow reader gets a slow stream,
not a growing buffer). When the client goes away (its connection closes, noticed within
IDLE_CHECK seconds even when no line comes), the uploads are ended: the agents see their
POST end and stop following the containers' logs.
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

QUEUE_LINES = 1000
IDLE_CHECK = 2.0


class _Relay:
    """One `service logs` client: its queue, and the agents' uploads feeding it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_LINES)
        self.uploads: set[asyncio.Task] = set()


class LogHub:
    def __init__(self, store: Store):
        self.store = store
        self._requests = NodeQueues()
        self._relays: dict[str, _Relay] = {}  # request id -> the relay it feeds
        self._nodes: dict[str, str] = {}  # request id -> the node asked

    def stats(self) -> dict:
        """What is open now (for `shoal info` and tests): relays, uploads, lines queued."""
        relays = set(self._relays.values())
        return {"log_relays": len(relays), "log_uploads": sum(len(r.uploads) for r in relays),
                "log_lines_queued": sum(r.queue.qsize() for r in relays)}

    async def requests_for(self, node_id: str, wait: float) -> list[dict]:
        return await self._requests.take(node_id, wait)

    async def receive(self, req_id: str, request: web.Request, node_id: str) -> None:
        """An agent's upload of one request's lines (its POST body, as long as it follows)."""
        relay = self._relays.get(req_id)
        if relay is None or self._nodes.get(req_id) != node_id:  # a node answers only for itself
            raise NotFound("no such log request")
        me = asyncio.current_task()
        assert me is not None
        relay.uploads.add(me)
        try:
            async for line in request.content:
                await relay.queue.put(line)  # waits while the client is behind: backpressure
        finally:
            relay.uploads.discard(me)
        await relay.queue.put(None)  # this node is done (not reached when the client went away)

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
        relay = _Relay()
        ids = []
        for node_id, containers in by_node.items():
            req_id = uuid.uuid4().hex
            ids.append(req_id)
            self._relays[req_id] = relay
            self._nodes[req_id] = node_id
            await self._requests.put(node_id, {"id": req_id, "containers": containers, "follow": follow,
                                               "tail": tail})
        open_streams = len(ids)
        idle = 0.0
        try:
            while open_streams:
                try:
                    line = await asyncio.wait_for(relay.queue.get(), timeout=IDLE_CHECK)
                except asyncio.TimeoutError:
                    idle += IDLE_CHECK
                    if request.transport is None or request.transport.is_closing():
                        break  # the client went away while nothing was said
                    if not follow and idle >= 30:
                        break
                    continue
                idle = 0.0
                if line is None:
                    open_streams -= 1
                    continue
                await resp.write(line)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for i in ids:
                self._relays.pop(i, None)
                self._nodes.pop(i, None)
            # end the agents' uploads: their POSTs end, and they stop following the logs
            for upload in list(relay.uploads):
                upload.cancel()
        return resp
