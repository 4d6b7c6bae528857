"""The web dashboard in a real browser (issue #16): Debian's chromium, driven by playwright
with its executable_path (no browser download), logs in with the link `shoal dashboard`
prints, sees the stack's tasks on the node, watches a killed container's card be replaced,
scales the service from the page and reads its logs.

Screenshots go to artifacts/dashboard-*.png.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from chromium import chromium_binary
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


def browser_page(p):
    """A headless chromium of Debian's, trusting the cluster's own certificate."""
    browser = p.chromium.launch(executable_path=chromium_binary(),
                                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
    page = browser.new_context(ignore_https_errors=True, viewport={"width": 1024, "height": 768}).new_page()
    page.csp_violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and page.csp_violations.append(m.text))
    return browser, page


def wait_js(page, expression: str, what: str, timeout: float = 30):
    """Poll a JavaScript expression until it is truthy (page.evaluate goes through DevTools,
    as the page's strict CSP forbids playwright's own eval-based wait_for_function)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = page.evaluate(expression)
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def goto(page, cli: ShoalCli, path: str = "") -> None:
    """Open a fresh login link (or `path` on the manager). Chromium aborts a navigation with
    ERR_NETWORK_CHANGED when the host's interfaces change under it, as the engine's veth
    pairs do when containers start: a user would reload; the test opens a new link."""
    for attempt in range(5):
        url = cli.out("dashboard").splitlines()[0]
        assert url.startswith("https://") and "/dashboard/login?token=" in url
        try:
            page.goto(url.split("/dashboard/")[0] + path if path else url)
            return
        except Exception as e:  # playwright's Error
            if "ERR_NETWORK_CHANGED" not in str(e) or attempt == 4:
                raise
            time.sleep(0.5)


def test_log_in_see_the_stack_live_scale_and_read_logs(cluster: ShoalCli, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright
    cli = cluster
    path = tmp_path / "dash.yml"
    path.write_text(STACK)
    cli.run("stack", "deploy", "-c", str(path), "--wait", "--timeout", "60", "dash")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser, page = browser_page(p)
        try:
            goto(page, cli)
            assert urlparse(page.url).path == "/dashboard/"
            ids = wait_js(page, f"(() => {{ const r = {RUNNING}; return r.length === 2 && r; }})()",
                          "two running cards of dash_web")
            expect(page.locator("#live")).to_have_text("live", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard-cluster.png"))

            # a killed container: its card is replaced on the page, with no reload
            victim = containers(**{"shoal.service.name": "dash_web"})[0]
            killed_at = time.monotonic()
            docker("kill", victim)
            wait_js(page, f"(() => {{ const r = {RUNNING}; return r.length === 2 && "
                          f"r.some(id => !{json.dumps(ids)}.includes(id)); }})()", "a new card for the killed one")
            replaced_after = time.monotonic() - killed_at
            assert page.locator('.card[data-service="dash_web"]').count() >= 2

            # scale from the Services tab, confirming in the page's dialog
            page.click('nav a[data-tab="services"]')
            page.click('button[data-scale="dash_web"]')
            expect(page.locator("#confirm")).to_be_visible()
            page.fill("#confirm-replicas", "3")
            page.click("#confirm-ok")
            expect(page.locator('tr[data-service="dash_web"] td.replicas')).to_have_text(re.compile(r"^3/3"),
                                                                                          timeout=60_000)

            # the service's tasks and its live logs: every replica's lines
            page.click('tr[data-service="dash_web"]')
            wait_js(page, "document.querySelector('#logs').textContent.split('hello from').length > 3",
                    "every replica's lines in the logs")
            logs = page.locator("#logs").text_content()
            page.screenshot(path=str(ARTIFACTS / "dashboard-services.png"))
            assert page.csp_violations == []  # the page lives within its own strict policy
        finally:
            browser.close()
    assert json.loads(cli.out("service", "inspect", "dash_web"))[0]["spec"]["replicas"] == 3
    assert replaced_after < 10, replaced_after  # the restart delay is 1 s; the page follows the events
    assert logs.count("hello from") >= 3  # the three running replicas (and the killed one)
    print(f"card replaced {replaced_after:.1f} s after the kill")
    cli.run("stack", "rm", "dash")


def test_the_page_without_a_session_says_how_to_log_in(cluster: ShoalCli):
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as p:
        browser, page = browser_page(p)
        try:
            goto(page, cluster, "/dashboard/")
            expect(page.locator("#login")).to_be_visible(timeout=30_000)
            assert "shoal dashboard" in page.locator("#login").text_content()
        finally:
            browser.close()
