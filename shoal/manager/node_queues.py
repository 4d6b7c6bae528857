"""Per-node mailboxes for work the manager hands to agents outside their assignments.

`service logs` and volume actions are requests, not desired state: each goes into its
node's queue, and the node's agent long-polls to take everything waiting.
"""
from __future__ import annotations

import asyncio


class NodeQueues:
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue] = {}

    async def put(self, node_id: str, item: dict) -> None:
        await self._queues.setdefault(node_id, asyncio.Queue()).put(item)

    async def take(self, node_id: str, wait: float) -> list[dict]:
        """Everything queued for the node, waiting up to `wait` seconds for a first item."""
        q = self._queues.setdefault(node_id, asyncio.Queue())
        try:
            first = await asyncio.wait_for(q.get(), timeout=wait)
        except asyncio.TimeoutError:
            return []
        out = [first]
        while not q.empty():
            out.append(q.get_nowait())
        return out
