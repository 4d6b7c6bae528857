"""`shoal events` on the real engine (issue #16): a deploy, an update, a killed container and a
rollback, read back in order with --since/--until, streamed live, and kept across a restart."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import containers, docker

pytestmark = pytest.mark.integration

STACK = """
services:
  web:
    image: shoal/busybox:latest
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    deploy:
      replicas: 2
      restart_policy:
        delay: 1s
      update_config:
        parallelism: 1
        monitor: 1s
"""


def actions(events: list[dict], type_: str) -> list[str]:
    out = []
    for e in events:
        if e["type"] != type_:
            continue
        new = e["attributes"].get("updatestate.new")
        out.append(f"{e['action']}:{new}" if new else e["action"])
    return out


def test_a_deploy_update_kill_and_rollback_read_back_in_order(cluster, tmp_path):
    cli = cluster
    path = Path(tmp_path, "ev.yml")
    path.write_text(STACK)
    t0 = time.time()
    live = subprocess.Popen([sys.executable, "-m", "shoal", "events", "--format", "json", "--filter", "name=ev"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env)
    try:
        time.sleep(1)  # the stream is open before anything happens
        cli.run("stack", "deploy", "-c", str(path), "--wait", "--timeout", "60", "ev")
        cli.run("service", "update", "--env-add", "V=2", "--wait", "ev_web")
        victim = containers(**{"shoal.service.name": "ev_web"})[0]
        docker("kill", victim)
        cli.wait_for(lambda: len([t for t in cli.tasks("ev") if t["CurrentState"].startswith("Running")]) == 2
                     and any(t["Error"] for t in cli.tasks("ev")), timeout=60, what="the killed task replaced")
        cli.run("service", "rollback", "--wait", "ev_web")
        cli.run("stack", "rm", "ev")
        time.sleep(1.5)
        t1 = time.time()
    finally:
        live.terminate()
        streamed, _ = live.communicate(timeout=10)
    kept = cli.json_lines("events", "--since", repr(t0), "--until", repr(t1))
    ours = [e for e in kept if e["attributes"].get("stack") == "ev" or e["name"].startswith("ev_")]
    assert actions(ours, "service") == ["create", "update", "update:updating", "update:completed",
                                        "update", "update:rollback_started", "update:rollback_completed",
                                        "remove"], actions(ours, "service")
    tasks = [e for e in ours if e["type"] == "task"]
    killed = [e for e in tasks if e["action"] == "failed"]
    assert killed and killed[0]["attributes"]["exitcode"] == "137", killed
    assert any(e["action"] == "running" for e in tasks)
    assert [e["time"] for e in kept] == sorted(e["time"] for e in kept)
    assert all(t0 <= e["time"] <= t1 for e in kept)
    assert {e["type"] for e in ours} >= {"service", "task", "network"}
    # the live stream saw the same events of the stack, in the same order
    live_events = [json.loads(line) for line in streamed.splitlines() if line.strip()]
    key = [(e["type"], e["action"], e["id"]) for e in ours]
    got = [(e["type"], e["action"], e["id"]) for e in live_events]
    assert got == key, ([k for k in key if k not in got], [g for g in got if g not in key])

    # Docker's text form, filtered to services
    text = cli.out("events", "--since", repr(t0), "--until", repr(t1), "--filter", "type=service",
                   "--filter", "event=remove").splitlines()
    assert len(text) == 1 and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}[+-]\d\d:\d\d service remove \w+ \(name=ev_web, stack=ev\)",
        text[0]), text

    # kept across a manager restart
    cli.run("stop")
    cli.run("start")
    again = cli.json_lines("events", "--since", repr(t0), "--until", repr(t1))
    assert [(e["type"], e["action"], e["id"]) for e in again] == [(e["type"], e["action"], e["id"]) for e in kept]


def test_bad_times_and_filters_are_refused(cluster):
    p = cluster.run("events", "--since", "yesterday", check=False)
    assert p.returncode != 0 and "yesterday" in p.stderr
    p = cluster.run("events", "--until", "1", "--filter", "colour=red", check=False)
    assert p.returncode != 0 and "colour" in p.stderr
