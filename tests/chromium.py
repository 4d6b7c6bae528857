"""A headless Debian chromium driven over the DevTools protocol (no browser download, no
driver): start it, navigate, evaluate JavaScript, click as a mouse does, take screenshots.
Shared by the browser tests (the demo app, the dashboard)."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1024,768", "--remote-debugging-port=0",
                  # the dashboard is served with the cluster's own certificate
                  "--ignore-certificate-errors"]



def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian's chromium is missing: apt-get install -y chromium (scripts/test.sh installs it)")


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
