"""Routes for a node that is joining: it has no certificate yet, only a join token.

`GET /v1/join/ca` hands out the CA certificate to anyone: the joining node checks it
against the digest its token carries before it trusts this manager (so a man in the
middle gains nothing). `POST /v1/join` takes the token and a certificate signing
request, over TLS the joining node now verifies, and answers with the node's identity
and certificate.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from shoal import pki

from shoal.manager.components import Components
from shoal.manager.errors import ApiError
from shoal.manager.http.bodies import JoinBody
from shoal.manager.http.reply import reply
from shoal.manager.http.route import BODY, Route


class JoinRoutes:
    def __init__(self, c: Components):
        self.c = c

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/join/ca", self.ca, "join"),
            Route("POST", "/v1/join", self.join, "join", JoinBody),
        ]

    async def ca(self, request: web.Request) -> web.Response:
        return web.Response(body=self.c.membership.ca.ca_pem, content_type="application/x-pem-file")

    async def join(self, request: web.Request) -> web.Response:
        body: JoinBody = request[BODY]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        m = self.c.membership
        plan = m.plan_join(body.token, body.advertise_addr, peer[0] if isinstance(peer, tuple) else "")
        try:
            pki.check_csr(body.csr.encode())  # before an etcd member is added for it
        except pki.PkiError as e:
            raise ApiError(str(e)) from None
        member = await asyncio.to_thread(m.add_etcd_member, plan, body.etcd_peer_port) \
            if m.needs_etcd_member(plan) else None
        return reply(m.join(plan, body.csr, body.hostname, body.availability, member))
