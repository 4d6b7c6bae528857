"""Routes for node agents: each for the calling node only (the certificate's CN)."""
from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from shoal.manager.components import Components
from shoal.manager.errors import Forbidden
from shoal.manager.http.bodies import (KiB, MiB, ActionAnswerBody, HeartbeatBody, LeaveBody, PromotionBody, RenewBody,
                                       StatusBody, query_float, query_int, query_str)
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, CALLER, Route

# Answers are written in pieces of at most ANSWER_PIECE bytes. asyncio's TLS transport
# encrypts each write whole into a memory buffer of the connection's, and that buffer never
# shrinks: one 1 MB answer leaves ~1 MB on its connection until the connection closes
# (measured: 1,079 KB per connection after a 1 MB write; 89 KB after the same in 32 KiB
# pieces, written with the CPU time of 64 KiB ones; 72 KB in 16 KiB pieces, ~15 % more CPU).
# A thousand agents' long-lived connections made that ~100 MB of the manager's memory.
ANSWER_PIECE = 32 * 1024
# Answers above BIG_ANSWER go out BIG_ANSWERS_AT_ONCE at a time (each write waits for the
# connection to drain): a thousand nodes being sent endpoint deltas at once would otherwise
# each hold a plain and an encrypted copy in memory.
BIG_ANSWER = 64 * 1024
BIG_ANSWERS_AT_ONCE = 8
MAX_WAIT = 60.0


class AgentRoutes:
    def __init__(self, c: Components):
        self.c = c
        self._big_answers = asyncio.Semaphore(BIG_ANSWERS_AT_ONCE)

    def routes(self) -> list[Route]:
        wait = ("wait", "number", f"seconds to hold the request when nothing is new (0 to {MAX_WAIT:g})")
        return [
            Route("POST", "/v1/agent/heartbeat", self.heartbeat, "agent", HeartbeatBody, 4 * MiB),
            Route("GET", "/v1/agent/assignments", self.assignments, "agent", query=(
                ("digest", "string", "digest of the node's own part in the last answer the agent has "
                 "(then only changed tasks are sent, with every task id: `delta: true`)"),
                ("ep", "string", "the agent's position in the endpoint log, `epoch:seq` (empty: the whole table)"),
                ("pp", "string", "the agent's position in the overlay's peer log, `epoch:seq` (empty: the whole table)"),
                wait, ("rev", "integer", "-1 to answer at once"))),
            Route("POST", "/v1/agent/status", self.status, "agent", StatusBody, 8 * MiB),
            Route("POST", "/v1/agent/renew", self.renew, "agent", RenewBody, 32 * KiB),
            Route("POST", "/v1/agent/leave", self.leave, "agent", LeaveBody),
            Route("POST", "/v1/agent/promotion", self.promotion, "agent", PromotionBody),
            Route("GET", "/v1/agent/logs", self.log_requests, "agent", query=(wait,)),
            # the body is a stream of log lines: LogHub reads it with its own bounds
            Route("POST", "/v1/agent/logs/{req}", self.log_data, "agent"),
            Route("GET", "/v1/agent/actions", self.action_requests, "agent", query=(wait,)),
            Route("POST", "/v1/agent/actions/{req}", self.action_answer, "agent", ActionAnswerBody, 8 * MiB),
        ]

    @staticmethod
    def _node(request: web.Request) -> str:
        return request[CALLER].node_id

    async def heartbeat(self, request: web.Request) -> web.Response:
        body: HeartbeatBody = request[BODY]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        facts = None
        if body.facts is not None:
            facts = (body.facts.engine_subnets, body.facts.ports_in_use, body.facts.volumes, body.facts.attached)
        elif body.volumes is not None or body.engine_subnets is not None or body.ports_in_use is not None:
            facts = (body.engine_subnets or [], body.ports_in_use or {}, body.volumes or [], [])
        try:
            answer = self.c.heartbeats.beat(self._node(request), body.description, body.addr,
                                            peer[0] if isinstance(peer, tuple) else "", facts)
        except KeyError:
            raise Forbidden("this node is not a member of the cluster") from None
        return reply(answer)

    async def assignments(self, request: web.Request) -> web.StreamResponse:
        """Long poll: answer as soon as the node's own part changed, or (held back a little,
        see Dispatcher.news) when endpoints it has not seen exist; else after `wait` seconds."""
        node_id = self._node(request)
        since = query_int(request, "rev", -1, -1, 2**62)
        wait = query_float(request, "wait", 30.0, 0.0, MAX_WAIT)
        known = query_str(request, "digest", 128)
        ep = query_str(request, "ep", 128) or ""
        pp = query_str(request, "pp", 128) or ""
        deadline = time.monotonic() + wait
        d = self.c.dispatcher
        ev = d.waiter(node_id)
        while True:
            ev.clear()
            view = d.view(node_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or since < 0:
                break
            hold = d.news(node_id, view, known, ep, pp)
            if hold == 0:
                break
            if hold > 0:  # news, held back: the answer goes out then, whatever comes meanwhile
                await asyncio.sleep(min(hold, remaining))
                continue
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        parts, deflated = d.answer_parts(node_id, view, ep, known, pp,
                                         deflate=accepts_deflate(request.headers.get("Accept-Encoding", "")))
        headers = {"Content-Type": "application/json"}
        if deflated:
            headers["Content-Encoding"] = "deflate"
        size = sum(len(p) for p in parts)
        if size <= ANSWER_PIECE:
            return web.Response(body=b"".join(parts), headers=headers)
        # Longer answers (a full endpoint table, at scale) are streamed from the shared pieces,
        # the big ones a few at a time, so memory does not grow with nodes x answer size.
        resp = web.StreamResponse(headers=headers)
        resp.content_length = size
        async with self._big_answers if size >= BIG_ANSWER else contextlib.nullcontext():
            await resp.prepare(request)
            for piece in _pieces(parts, ANSWER_PIECE):
                await resp.write(piece)
            await resp.write_eof()
        return resp

    async def status(self, request: web.Request) -> web.Response:
        body: StatusBody = request[BODY]
        updates = [u.model_dump(exclude_none=True) for u in body.updates]
        return reply({"applied": await self.c.dispatcher.report_batched(self._node(request), updates)})

    async def renew(self, request: web.Request) -> web.Response:
        body: RenewBody = request[BODY]
        caller = request[CALLER]
        return reply(self.c.membership.renew(caller.node_id, caller.role, body.csr))

    async def promotion(self, request: web.Request) -> web.Response:
        """A promoted node's daemon asks for a manager's keys (and its etcd member, added now)."""
        body: PromotionBody = request[BODY]
        m = self.c.membership
        plan = m.promotion(self._node(request))
        member = await asyncio.to_thread(m.add_etcd_member, plan, body.etcd_peer_port) \
            if m.needs_etcd_member(plan) else None
        return reply(m.promoted(plan, member))

    async def leave(self, request: web.Request) -> web.Response:
        self.c.membership.left(self._node(request))
        self.c.heartbeats.forget(self._node(request))
        return reply({"left": True})

    async def log_requests(self, request: web.Request) -> web.Response:
        wait = query_float(request, "wait", 30.0, 0.0, MAX_WAIT)
        return reply(await self.c.log_hub.requests_for(self._node(request), wait))

    async def log_data(self, request: web.Request) -> web.Response:
        await self.c.log_hub.receive(request.match_info["req"], request, node_id=self._node(request))
        return reply({})

    async def action_requests(self, request: web.Request) -> web.Response:
        wait = query_float(request, "wait", 30.0, 0.0, MAX_WAIT)
        return reply(await self.c.actions.requests_for(self._node(request), wait))

    async def action_answer(self, request: web.Request) -> web.Response:
        body: ActionAnswerBody = request[BODY]
        taken = self.c.actions.answer(request.match_info["req"], body.model_dump(), node_id=self._node(request))
        return reply({"taken": taken})


def accepts_deflate(header: str) -> bool:
    """Whether an Accept-Encoding header takes `deflate` (named, or `*`, and not with q=0)."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("deflate", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip().rstrip("0").rstrip(".") in ("", "0"))
    return False


def _pieces(parts: list[bytes], size: int):
    """The parts as writes of at most `size` bytes: small parts joined (copied once), big ones
    cut (not copied)."""
    buf = bytearray()
    for p in parts:
        if len(buf) + len(p) <= size:
            buf += p
            continue
        if buf:
            yield buf
            buf = bytearray()
        view = memoryview(p)
        while len(view) > size:
            yield view[:size]
            view = view[size:]
        buf += view
    if buf:
        yield buf
