"""The dashboard's routes on an in-process manager (issue #16): a one-time link, a session
cookie, reads with it only, changes with it and the page's header only, never a secret's data."""
from __future__ import annotations

import base64
import json

import aiohttp

from manager_inproc import mgr  # noqa: F401 (fixture)
from shoal import pki
from shoal.manager.dashboard.sessions import Sessions

SECRET = b"hunter2-the-secret-bytes"


def browser(m) -> aiohttp.ClientSession:
    """A browser trusting the cluster's CA, with no client certificate."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def get(s: aiohttp.ClientSession, m, path: str, **kw):
    async with s.get(f"https://127.0.0.1:{m.port}{path}", ssl=pki.client_context(m.layout.ca_cert),
                     server_hostname=pki.MANAGER_NAME, allow_redirects=False, **kw) as r:
        return r.status, dict(r.headers), await r.read()


async def post(s: aiohttp.ClientSession, m, path: str, body, headers=None):
    async with s.post(f"https://127.0.0.1:{m.port}{path}", ssl=pki.client_context(m.layout.ca_cert),
                      server_hostname=pki.MANAGER_NAME, json=body, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def test_a_one_time_link_a_cookie_and_nothing_without_them(mgr):  # noqa: F811
    m = mgr
    await m.call("POST", "/v1/secrets", {"name": "pw", "data": base64.b64encode(SECRET).decode()})
    stack = {"name": "p", "services": [{"name": "p_web", "stack": "p", "container": {"image": "busybox"},
                                        "replicas": 2}]}
    assert (await m.call("POST", "/v1/stacks/p", {"stack": stack}))[0] == 200
    m.server.orchestrator.tick(__import__("time").time())  # its tasks, now
    status, link = await m.call("POST", "/v1/dashboard/login-link", {})
    assert status == 200 and link["url"].startswith("https://127.0.0.1:") and "/dashboard/login?token=" in link["url"]
    async with browser(m) as s:
        status, _, body = await get(s, m, "/dashboard/api/state")
        assert status == 403 and b"shoal dashboard" in body
        status, headers, _ = await get(s, m, "/dashboard/login?token=not-a-token")
        assert status == 403
        status, headers, _ = await get(s, m, link["path"])
        assert status == 303 and headers["Location"] == "/dashboard/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie, cookie
        status, _, raw = await get(s, m, "/dashboard/api/state")
        assert status == 200
        state = json.loads(raw)
        assert [x["name"] for x in state["services"]] == ["p_web"] and state["services"][0]["replicas_desired"] == 2
        assert state["stacks"] == [{"name": "p", "services": 1}]
        assert [x["name"] for x in state["secrets"]] == ["pw"]
        assert SECRET not in raw and base64.b64encode(SECRET) not in raw  # never the secret's data
        assert len([t for t in state["tasks"] if t["service"] == "p_web"]) == 2
        # changing needs the page's own header too
        sid = state["services"][0]["id"]
        status, body = await post(s, m, f"/dashboard/api/services/{sid}/scale", {"replicas": 3})
        assert status == 403 and "X-Shoal-Dashboard" in body["message"]
        status, body = await post(s, m, f"/dashboard/api/services/{sid}/scale", {"replicas": 3},
                                  {"X-Shoal-Dashboard": "1"})
        assert status == 200 and body["replicas"] == 3
        status, body = await post(s, m, f"/dashboard/api/services/{sid}/scale", {"replicas": -1},
                                  {"X-Shoal-Dashboard": "1"})
        assert status == 400
        status, headers, page = await get(s, m, "/dashboard/")
        assert status == 200 and b"<title>Shoal</title>" in page
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        status, headers, js = await get(s, m, "/dashboard/static/app.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert (await get(s, m, "/dashboard/static/../server.py"))[0] in (403, 404)
    async with browser(m) as s:  # the link is spent
        assert (await get(s, m, link["path"]))[0] == 403


async def test_a_node_certificate_is_not_a_dashboard_session(mgr):  # noqa: F811
    _, ctx = await mgr.join()
    status, _ = await mgr.node_call(ctx, "GET", "/dashboard/api/state")
    assert status == 403


def test_tokens_are_spent_once_and_expire():
    now = [1000.0]
    s = Sessions(clock=lambda: now[0])
    t = s.new_token()
    session = s.redeem(t)
    assert session and s.valid(session)
    assert s.redeem(t) is None  # once
    late = s.new_token()
    now[0] += 301
    assert s.redeem(late) is None  # five minutes
    now[0] += 12 * 3600
    assert not s.valid(session)
    assert not s.valid("") and not s.valid("made-up")


async def test_the_openapi_document_lists_the_dashboard_and_events_routes(mgr):  # noqa: F811
    status, doc = await mgr.call("GET", "/openapi.json")
    assert status == 200, doc
    assert {"/dashboard/api/state", "/dashboard/api/events", "/v1/events", "/v1/dashboard/login-link"} <= set(doc["paths"])
    assert doc["paths"]["/dashboard/api/services/{ref}/scale"]["post"]["tags"] == ["dashboard"]
