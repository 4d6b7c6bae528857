"""The join's HTTPS connection to a manager: no Nagle stall between a request's headers and
its body (http.client writes them apart; the body waited for the manager's delayed ACK, 40 ms
of every join)."""
from __future__ import annotations

import socket
import time

from shoal import pki
from shoal.bootstrap import _ManagerConnection, _request

from manager_inproc import mgr  # noqa: F401 - the fixture


async def test_the_join_connection_sends_without_nagle(mgr):  # noqa: F811
    import asyncio
    conn = _ManagerConnection("127.0.0.1", mgr.port, pki.unverified_context(), 5)
    await asyncio.to_thread(conn.connect)
    try:
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn.close()
    # a request with a body (the CSR's POST) answers without waiting for a delayed ACK
    t0 = time.monotonic()
    status, _ = await asyncio.to_thread(_request, "127.0.0.1", mgr.port, pki.unverified_context(), "POST",
                                        "/v1/join", {"token": "SHLTKN-1-x-y", "csr": "nope"})
    assert status in (400, 403) and time.monotonic() - t0 < 1.0
