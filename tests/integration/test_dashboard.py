"""The web dashboard in a real browser (issue #16): Debian's chromium logs in with the link
`shoal dashboard` prints, sees the stack's tasks on the node, watches a killed container's
card be replaced, scales the service from the page and reads its logs.

Screenshots go to artifacts/dashboard-*.png.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from chromium import Chromium
from conftest import ARTIFACTS, ShoalCli, containers, docker

pytestmark = pytest.mark.integration

STACK = """
services:
  web:
    image: shoal/busybox:latest
    command: ["sh", "-c", "echo hello from $$(hostname); exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 2
      restart_policy:
        delay: 1s
"""

RUNNING = ("[...document.querySelectorAll('.card[data-service=\"dash_web\"][data-state=\"running\"]')]"
           ".map(c => c.dataset.taskId)")


async def until(browser: Chromium, expression: str, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await browser.js(expression)
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_log_in_see_the_stack_live_scale_and_read_logs(cluster: ShoalCli, tmp_path: Path):
    cli = cluster
    path = tmp_path / "dash.yml"
    path.write_text(STACK)
    cli.run("stack", "deploy", "-c", str(path), "--wait", "--timeout", "60", "dash")
    url = cli.out("dashboard").splitlines()[0]
    assert url.startswith("https://") and "/dashboard/login?token=" in url
    ARTIFACTS.mkdir(exist_ok=True)
    (tmp_path / "profile").mkdir()

    async def scenario() -> dict:
        b = Chromium(tmp_path / "profile")
        seen: dict = {}
        try:
            await b.start()
            await b.send("Page.enable")
            await b.send("Runtime.enable")
            await b.send("Page.navigate", url=url)
            await b.loaded()
            assert await b.js("location.pathname") == "/dashboard/"
            ids = await until(b, f"(() => {{ const r = {RUNNING}; return r.length === 2 && r; }})()",
                              "two running cards of dash_web")
            assert await b.js("document.querySelector('#live').textContent") in ("live", "offline")
            await until(b, "document.querySelector('#live').textContent === 'live'", "the live stream")
            hostname = await b.js("document.querySelector('.node h2').textContent")
            await b.screenshot(ARTIFACTS / "dashboard-cluster.png")

            # a killed container: its card is replaced on the page, with no reload
            victim = containers(**{"shoal.service.name": "dash_web"})[0]
            killed_at = time.monotonic()
            docker("kill", victim)
            await until(b, f"(() => {{ const r = {RUNNING}; return r.length === 2 && "
                           f"r.some(id => !{json.dumps(ids)}.includes(id)); }})()",
                        "a new running card replacing the killed one", timeout=30)
            seen["replaced_after"] = time.monotonic() - killed_at
            assert await b.js("document.querySelectorAll('.card[data-service=\"dash_web\"]').length") >= 2

            # scale from the Services tab, confirming in the page's dialog
            await b.click('nav a[data-tab="services"]')
            await until(b, "location.hash === '#services' && !document.querySelector('#services').hidden",
                        "the Services tab")
            await until(b, "!!document.querySelector('button[data-scale=\"dash_web\"]')", "the scale button")
            await b.click('button[data-scale="dash_web"]')
            await until(b, "document.querySelector('#confirm').open", "the confirmation dialog")
            await b.js("document.querySelector('#confirm-replicas').select()")
            await b.send("Input.insertText", text="3")
            await b.click("#confirm-ok")
            await until(b, "document.querySelector('tr[data-service=\"dash_web\"] td.replicas')"
                           ".textContent.startsWith('3/3')", "3/3 replicas on the page", timeout=60)

            # the service's tasks and its live logs
            await b.click('tr[data-service="dash_web"]')
            seen["logs"] = await until(b, "(() => { const t = document.querySelector('#logs').textContent; "
                                          "return t.split('hello from').length > 3 && t; })()",
                                "every replica's lines in the service's logs")
            seen["hostname"] = hostname
            await b.screenshot(ARTIFACTS / "dashboard-services.png")
            return seen
        finally:
            await b.close()

    seen = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert json.loads(cli.out("service", "inspect", "dash_web"))[0]["spec"]["replicas"] == 3
    assert seen["replaced_after"] < 10, seen  # the restart delay is 1 s; the page follows the events
    assert seen["logs"].count("hello from") >= 3  # the three running replicas (and the killed one)
    print(f"card replaced {seen['replaced_after']:.1f} s after the kill")
    cli.run("stack", "rm", "dash")


def test_the_page_without_a_session_says_how_to_log_in(cluster: ShoalCli, tmp_path: Path):
    url = cluster.out("dashboard").splitlines()[0]
    base = url.split("/dashboard/")[0]
    (tmp_path / "profile").mkdir()

    async def scenario() -> str:
        b = Chromium(tmp_path / "profile")
        try:
            await b.start()
            await b.send("Page.enable")
            await b.send("Runtime.enable")
            await b.send("Page.navigate", url=base + "/dashboard/")
            await b.loaded()
            return await until(b, "(() => { const p = document.querySelector('#login'); "
                                  "return !p.hidden && p.textContent; })()", "the login hint")
        finally:
            await b.close()

    assert "shoal dashboard" in asyncio.run(asyncio.wait_for(scenario(), 120))
