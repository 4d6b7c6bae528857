"""`--wait`: follow services until they converge, with progress, and say why not.

Converged means: no update running, every desired replica running (and healthy when
the service has a health check), and one-shot or job services finished. A paused or
rolled-back update, or the timeout, is a failure with the reason.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

import click

from shoal.cli.api_client import Api

FAILED_UPDATE = {"paused": "update paused", "rollback_completed": "update rolled back",
                 "rollback_paused": "rollback paused"}


def service_state(svc: dict, tasks: list[dict]) -> tuple[bool, Optional[str], str]:
    """(converged, failure reason or None, progress text)."""
    spec = svc["spec"]
    us = svc.get("update_status") or {}
    state = us.get("state")
    running, desired = svc["replicas_running"], svc["replicas_desired"]
    name = spec["name"]
    if state in FAILED_UPDATE:
        return False, f"service {name}: {FAILED_UPDATE[state]}: {us.get('message', '')}".rstrip(": "), state
    current = [t for t in tasks if t["desired_state"] in ("running", "ready", "complete")]
    one_shot = spec["mode"].endswith("job") or spec["restart_policy"]["condition"] != "any"
    if one_shot:
        done = [t for t in tasks if t["status"]["state"] == "complete"]
        if spec["mode"].endswith("job"):
            ok = len(done) >= desired
        else:
            ok = (len(done) + running >= desired) and all(
                t["status"]["state"] in ("running", "complete") for t in current)
        return ok and state not in ("updating", "rollback_started"), None, f"{running} running, {len(done)} completed/{desired}"
    if state in ("updating", "rollback_started"):
        return False, None, f"{running}/{desired} running, {state.replace('_', ' ')}"
    pending = [t for t in current if t["status"]["state"] == "pending" and t["status"].get("err")]
    text = f"{running}/{desired} running"
    if pending:
        text += f" ({pending[0]['status']['err']})"
    return running >= desired and len([t for t in current if t["status"]["state"] == "running"]) <= max(desired, running), None, text


def wait_for_stack(api: Api, stack: str, timeout: float, services: Optional[list[str]] = None) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    tty = sys.stdout.isatty()
    last: dict[str, str] = {}
    progress = None
    bars: dict[str, int] = {}
    if tty:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        progress = Progress(TextColumn("{task.fields[svc]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), transient=False)
        progress.start()
    try:
        while True:
            svcs = api.get(f"/v1/services?stack={stack}")
            if services:
                svcs = [s for s in svcs if s["spec"]["name"] in services]
            all_ok = True
            for s in svcs:
                tasks = api.get(f"/v1/tasks?service={s['id']}")
                ok, failure, text = service_state(s, tasks)
                name = s["spec"]["name"]
                if failure:
                    return False, failure
                all_ok = all_ok and ok
                if progress is not None:
                    if name not in bars:
                        bars[name] = progress.add_task(text, svc=name, total=max(1, s["replicas_desired"]))
                    progress.update(bars[name], completed=min(s["replicas_running"], s["replicas_desired"]),
                                    total=max(1, s["replicas_desired"]), description=("converged" if ok else text))
                elif last.get(name) != text:
                    click.echo(f"{name}: {text}{' (converged)' if ok else ''}")
                    last[name] = text
            if all_ok:
                if progress is None:
                    click.echo(f"Stack {stack}: all services converged")
                return True, ""
            if time.monotonic() > deadline:
                return False, f"timed out after {timeout:.0f}s waiting for stack {stack} to converge"
            time.sleep(0.5)
    finally:
        if progress is not None:
            progress.stop()
