"""The CLI's HTTP client (written on the socket module) against a real aiohttp server on a
unix socket, as the daemon's."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web

from shoal.cli.api_client import Api, ApiFailure
from shoal.paths import Layout


@pytest.fixture
def daemon(tmp_path):
    """An aiohttp app on <data>/shoal.sock, in a thread of its own."""
    layout = Layout(str(tmp_path))
    seen: list[tuple[str, str, bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path_qs, body))
        return web.json_response({"method": request.method, "got": json.loads(body) if body else None,
                                  "big": "x" * 200_000})

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"message": "no such service: web"}, status=404)

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no length: chunked
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f'{{"n":{i}}}\n'.encode())
            await asyncio.sleep(0.05)
        await resp.write(b'{"n":3,"half')  # a line cut across two writes
        await resp.write(b'":true}\n')
        await resp.write_eof()
        return resp

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes([web.route("*", "/v1/echo", echo), web.get("/v1/missing", refuse), web.get("/v1/stream", stream)])
    runner = web.AppRunner(app)
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.UnixSite(runner, layout.socket).start())
        started.set()
        loop.run_forever()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert started.wait(10)
    yield Api(layout), seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    th.join(10)


def test_json_calls_and_answers(daemon):
    api, seen = daemon
    got = api.post("/v1/echo?x=1", {"name": "wébapp", "n": [1, 2]})
    assert got["method"] == "POST" and got["got"] == {"name": "wébapp", "n": [1, 2]} and len(got["big"]) == 200_000
    assert seen[-1][:2] == ("POST", "/v1/echo?x=1")
    assert api.get("/v1/echo")["got"] is None and seen[-1][2] == b""
    assert api.delete("/v1/echo")["method"] == "DELETE"


def test_an_error_answer_is_an_api_failure_with_its_message(daemon):
    api, _ = daemon
    with pytest.raises(ApiFailure) as e:
        api.get("/v1/missing")
    assert e.value.status == 404 and e.value.message == "no such service: web"


def test_a_stream_gives_whole_lines_as_they_come(daemon):
    api, _ = daemon
    lines = [json.loads(ln) for ln in api.stream("/v1/stream")]
    assert lines == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3, "half": True}]


def test_no_daemon_is_said_plainly(tmp_path):
    with pytest.raises(ApiFailure) as e:
        Api(Layout(str(tmp_path))).get("/v1/info")
    assert "Cannot connect to the Shoal daemon" in e.value.message
