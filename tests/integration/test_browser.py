"""A real browser on the demo: Debian's chromium, headless, driven over the DevTools protocol.

The demo stack (examples/todo/docker-stack.yml: two web replicas, Postgres, config, secret,
volume, placement on storage=raid) is deployed on a test cluster as scripts/setup.sh deploys
it.  Chromium opens http://localhost:8080, follows the "Add an item" link, types into the
form and clicks its button -- mouse and keyboard events, as a user -- then sees the item in
the list.  A screenshot of the list is kept in artifacts/browser-todo-list.png.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ARTIFACTS, ROOT, ShoalCli, containers, docker, http_get

pytestmark = pytest.mark.integration

URL = "http://localhost:8080"
# Not `todo`: that is the user's demo, whose volume todo_todo-db-data must not be touched.
STACK = "browser"
VOLUME = f"{STACK}_todo-db-data"
EXAMPLE = ROOT / "examples" / "todo"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1024,768", "--remote-debugging-port=0"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian's chromium is missing: apt-get install -y chromium (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def demo(cluster: ShoalCli, images) -> ShoalCli:
    """The demo stack, set up as scripts/setup.sh does."""
    cli = cluster
    cli.out("config", "create", "todo-list-config", str(EXAMPLE / "configs" / "config.json"))
    cli.out("secret", "create", "todo-list-secret", str(EXAMPLE / "secrets" / "secrets.json"))
    cli.out("node", "update", "--label-add", "storage=raid", cli.out("node", "ls", "-q").split()[0])
    docker("volume", "rm", VOLUME, check=False)  # left by an interrupted run
    cli.out("stack", "deploy", "-c", str(EXAMPLE / "docker-stack.yml"), "--wait", "--timeout", "300", STACK,
            timeout=360)
    cli.wait_for(lambda: (r := http_get(URL + "/", timeout=10))[0] == 200 and "items to do" in r[1],
                 timeout=180, interval=1, what="the demo app on :8080")
    yield cli
    cli.run("stack", "rm", STACK, check=False)
    cli.wait_for(lambda: not containers(**{"com.docker.stack.namespace": STACK}), timeout=120,
                 what="the stack's containers to go")
    docker("volume", "rm", VOLUME, check=False)


class Chromium:
    """One headless chromium with a DevTools websocket to its page."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self.session = None
        self.ids = itertools.count(1)
        self.events: asyncio.Queue = asyncio.Queue()
        self.pending: dict[int, asyncio.Future] = {}
        self.reader: asyncio.Task | None = None
        self.log = None

    async def start(self) -> None:
        import aiohttp
        log = open(self.profile.parent / "chromium.log", "wb+")
        self.log = log
        self.proc = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        # Chromium writes its port to DevToolsActivePort in the profile once it listens.
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"chromium did not start: {log.read().decode(errors='replace')[-3000:]}")
            await asyncio.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                await self.events.put(data)

    async def send(self, method: str, **params) -> dict:
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send_json({"id": i, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def loaded(self, timeout: float = 30) -> None:
        """Wait for the next Page.loadEventFired."""
        deadline = time.monotonic() + timeout
        while True:
            ev = await asyncio.wait_for(self.events.get(), max(0.1, deadline - time.monotonic()))
            if ev["method"] == "Page.loadEventFired":
                return

    async def js(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = await self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert box, f"no element {selector}"
        x, y = box
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log is not None:
            self.log.close()


def test_add_an_item_through_the_form_in_chromium(demo: ShoalCli, tmp_path: Path):
    item = f"Water the plants {os.getpid()}"
    shot = ARTIFACTS / "browser-todo-list.png"
    ARTIFACTS.mkdir(exist_ok=True)

    async def scenario() -> str:
        browser = Chromium(tmp_path / "profile")
        (tmp_path / "profile").mkdir()
        try:
            await browser.start()
            await browser.send("Page.enable")
            await browser.send("Runtime.enable")

            await browser.send("Page.navigate", url=URL + "/")
            await browser.loaded()
            home = await browser.js("document.body.innerText")
            assert re.search(r"You have \d+ items to do\.", home), home

            await browser.click('a[href="/new"]')
            await browser.loaded()
            assert await browser.js("location.pathname") == "/new"

            await browser.click('input[name="item"]')
            await browser.send("Input.insertText", text=item)
            assert await browser.js('document.querySelector(\'input[name="item"]\').value') == item
            await browser.click('button[type="submit"]')
            await browser.loaded()  # POST /new answers 303 -> /list

            assert await browser.js("location.pathname") == "/list"
            listed = await browser.js("document.body.innerText")
            await browser.screenshot(shot)
            return listed
        finally:
            await browser.close()

    listed = asyncio.run(asyncio.wait_for(scenario(), 300))
    assert item in listed, listed
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # And the server agrees: the item is in the database, whichever replica answers.
    status, body = http_get(URL + "/list", timeout=10)
    assert status == 200 and item in body
