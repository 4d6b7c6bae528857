"""A real browser on the demo: Debian's chromium, headless, driven over the DevTools protocol.

The demo stack (examples/todo/docker-stack.yml: two web replicas, Postgres, config, secret,
volume, placement on storage=raid) is deployed on a test cluster as scripts/setup.sh deploys
it.  Chromium opens http://localhost:8080, follows the "Add an item" link, types into the
form and clicks its button -- mouse and keyboard events, as a user -- then sees the item in
the list.  A screenshot of the list is kept in artifacts/browser-todo-list.png.
"""
from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from chromium import Chromium
from conftest import ARTIFACTS, ROOT, ShoalCli, containers, docker, http_get

pytestmark = pytest.mark.integration

URL = "http://localhost:8080"
# Not `todo`: that is the user's demo, whose volume todo_todo-db-data must not be touched.
STACK = "browser"
VOLUME = f"{STACK}_todo-db-data"
EXAMPLE = ROOT / "examples" / "todo"
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
