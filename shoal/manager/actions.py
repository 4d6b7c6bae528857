"""Manager → agent actions: ask a node's agent to do one thing on its engine and answer.

The manager never talks to an engine, and it cannot reach an agent (agents dial in).
So an action is queued for the node; the node's agent long-polls
``GET /v1/agent/actions``, runs each action on its engine and posts the answer to
``POST /v1/agent/actions/{id}``; the API handler that called :meth:`ActionHub.call`
gets it back, or an :class:`ActionTimeout` when the node does not answer in time.

Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "...",
"status": 409}``; a failed action raises :class:`ActionFailed` with the agent's words.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from shoal.manager.errors import ApiError
from shoal.manager.node_queues import NodeQueues

DEFAULT_TIMEOUT = 30.0


class ActionTimeout(ApiError):
    status = 504


class ActionFailed(ApiError):
    pass


class ActionHub:
    def __init__(self) -> None:
        self._requests = NodeQueues()
        self._waiting: dict[str, tuple[asyncio.Future, str]] = {}  # request id -> (answer, node asked)

    async def call(self, node_id: str, kind: str, args: dict[str, Any] | None = None,
                   timeout: float = DEFAULT_TIMEOUT, node_name: str = "") -> Any:
        """Run action `kind` on `node_id`'s agent; its result, or ActionFailed / ActionTimeout."""
        req_id = uuid.uuid4().hex
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = (fut, node_id)
        await self._requests.put(node_id, {"id": req_id, "kind": kind, "args": args or {}})
        try:
            answer = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise ActionTimeout(f"node {node_name or node_id} did not answer {kind} within {timeout:.0f}s "
                                "(is its agent running?)") from None
        finally:
            self._waiting.pop(req_id, None)
        if not answer.get("ok"):
            raise ActionFailed(answer.get("error") or f"{kind} failed on node {node_name or node_id}",
                               int(answer.get("status") or 400))
        return answer.get("result")

    async def requests_for(self, node_id: str, wait: float) -> list[dict]:
        """The agent's long poll: the actions queued for its node (waits up to `wait` for one)."""
        out = await self._requests.take(node_id, wait)
        # Drop actions whose caller gave up meanwhile: nobody would read their answer.
        return [a for a in out if a["id"] in self._waiting]

    def answer(self, req_id: str, answer: dict, node_id: str) -> bool:
        """An agent's answer; False when nobody waits for it any more (timed out), or when the
        action was asked of another node (a node answers only for itself)."""
        entry = self._waiting.get(req_id)
        if entry is None or entry[1] != node_id or entry[0].done():
            return False
        fut = entry[0]
        fut.set_result(answer if isinstance(answer, dict) else {"ok": False, "error": "malformed answer"})
        return True
