"""A real manager in-process for unit tests (store, CA, orchestrator, HTTP on its unix socket
and TLS), no engine and no agent: user calls over the socket, node calls over TLS with
certificates got through the real join route."""
from __future__ import annotations

import json
import socket
import ssl

import aiohttp
import pytest

from shoal import pki
from shoal.bootstrap import create_cluster
from shoal.manager.server import ManagerServer
from shoal.paths import Layout


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Manager:
    def __init__(self, tmp_path):
        self.layout = Layout(str(tmp_path / "m"))
        self.port = _port()
        self.info = create_cluster(self.layout, "127.0.0.1", self.port)
        self.server: ManagerServer | None = None

    async def start(self) -> None:
        self.server = ManagerServer(self.layout, self.info, "127.0.0.1", self.port)
        await self.server.start()
        self.user = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.layout.socket))

    async def stop(self) -> None:
        await self.user.close()
        assert self.server is not None
        await self.server.stop()

    async def call(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.user.request(method, "http://localhost" + path, data=data,
                                     headers={"Content-Type": "application/json"}) as r:
            text = await r.read()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def join(self) -> tuple[str, ssl.SSLContext]:
        """A node joined through the real join route: (node id, its client TLS context)."""
        _, tok = await self.call("POST", "/v1/join-tokens/worker", {})
        key = pki.new_key()
        ctx = pki.client_context(self.layout.ca_cert)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"https://127.0.0.1:{self.port}/v1/join", ssl=ctx, server_hostname=pki.MANAGER_NAME,
                              json={"token": tok["token"], "csr": pki.make_csr(key).decode(),
                                    "hostname": "w1", "advertise_addr": "127.0.0.1"}) as r:
                assert r.status == 200, await r.text()
                ans = await r.json()
        d = self.layout.p("w-" + ans["node_id"][:6])
        pki.write_pair(pki.KeyPair(ans["cert"].encode(), pki.key_pem(key)), d + "/n.crt", d + "/n.key")
        self.files = {ans["node_id"]: (d + "/n.crt", d + "/n.key")}  # the last join's certificate and key
        return ans["node_id"], pki.client_context(self.layout.ca_cert, d + "/n.crt", d + "/n.key")

    async def node_call(self, ctx: ssl.SSLContext, method: str, path: str, body=None) -> tuple[int, object]:
        async with aiohttp.ClientSession() as s:
            async with s.request(method, f"https://127.0.0.1:{self.port}{path}", ssl=ctx, json=body,
                                 server_hostname=pki.MANAGER_NAME) as r:
                return r.status, await r.json(content_type=None)




@pytest.fixture
async def mgr(tmp_path):
    m = Manager(tmp_path)
    await m.start()
    yield m
    await m.stop()
