"""Assignment answers go out in pieces of at most ANSWER_PIECE bytes: asyncio's TLS transport
keeps, for the life of a connection, a buffer as large as the largest write it encrypted."""
from __future__ import annotations

import asyncio.sslproto
import json

from shoal.manager.http import agent_routes
from shoal.manager.http.agent_routes import _pieces

from manager_inproc import mgr  # noqa: F401 - the fixture


def test_pieces_keep_every_byte_in_order_and_are_never_longer_than_asked():
    parts = [b"a" * 3, b"b" * 40, b"", b"c" * 7, b"d" * 100, b"e"]
    for size in (1, 5, 16, 64, 1000):
        pieces = [bytes(p) for p in _pieces(parts, size)]
        assert b"".join(pieces) == b"".join(parts)
        assert all(0 < len(p) <= size for p in pieces)
    # a big part is cut without a copy: its pieces are views of it
    big = b"z" * 100
    assert any(isinstance(p, memoryview) and p.obj is big for p in _pieces([b"a", big], 16))


async def test_a_long_answer_reaches_the_node_whole_in_short_tls_writes(mgr, monkeypatch):  # noqa: F811
    monkeypatch.setattr(agent_routes, "ANSWER_PIECE", 64)
    writes: list[int] = []
    real = asyncio.sslproto._SSLProtocolTransport.write

    def write(self, data):
        writes.append(len(data))
        return real(self, data)

    monkeypatch.setattr(asyncio.sslproto._SSLProtocolTransport, "write", write)
    _node_id, ctx = await mgr.join()
    writes.clear()  # the join's own answers
    status, answer = await mgr.node_call(ctx, "GET", "/v1/agent/assignments?rev=-1")
    assert status == 200 and "tasks" in answer and "peers" in answer and "digest" in answer
    assert len(json.dumps(answer)) > 4 * 64  # long enough to be cut
    assert len(writes) >= 4 and max(writes) <= 64 + 512  # a piece (the first one with the headers)
