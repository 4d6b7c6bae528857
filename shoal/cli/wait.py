"""`--wait`: follow services until they converge, with progress, and say why not.

Converged means: no update running, every desired replica running (and healthy when
the service has a health check), no replaced task's container still stopping (after a
start-first update, the old version keeps answering until its stop grace period ends:
only the new version runs when --wait returns), and one-shot or job services finished.
A paused or rolled-back update, or the timeout, is a failure with the reason.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

import click

from shoal.cli.api_client import Api

FAILED_UPDATE = {"paused": "update paused", "rollback_completed": "update rolled back",
                 "rollback_paused": "rollback paused"}


CLOCK_SLACK = 5.0  # seconds: the manager's clock may differ a little from ours
# A task in these states may have a container that still runs (a task on a down node,
# "unknown", cannot be waited for: it is counted apart by `service ls`).
STOPPING = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"})


def update_failure(svc: dict, since: Optional[float] = None, rollback_requested: bool = False) -> Optional[str]:
    """Why the service's update failed, or None.

    A paused update (or rollback) is a failure whenever it is seen: the service is stuck
    between two specs. A completed rollback is one only when the command that waits did not
    ask for it and it began after `since` (when that command changed something): an older
    rollback left the service converged on its previous spec.
    """
    us = svc.get("update_status") or {}
    state = us.get("state")
    if state not in FAILED_UPDATE:
        return None
    if state == "rollback_completed":
        if rollback_requested:
            return None
        if since is not None and (us.get("started_at") or 0) < since - CLOCK_SLACK:
            return None
    return f"service {svc['spec']['name']}: {FAILED_UPDATE[state]}: {us.get('message', '')}".rstrip(": ")


def _last_failure(tasks: list[dict]) -> str:
    failed = [t for t in tasks if t["status"]["state"] in ("failed", "rejected") and t["status"].get("err")]
    if not failed:
        return ""
    t = max(failed, key=lambda t: t["status"].get("timestamp") or 0)
    return f" (last failed task {t['id']}: {t['status']['err']})"


def service_state(svc: dict, tasks: list[dict], since: Optional[float] = None,
                  rollback_requested: bool = False) -> tuple[bool, Optional[str], str]:
    """(converged, failure reason or None, progress text)."""
    spec = svc["spec"]
    us = svc.get("update_status") or {}
    state = us.get("state")
    failure = update_failure(svc, since, rollback_requested)
    if failure:
        return False, failure + _last_failure(tasks), state
    running, desired = svc["replicas_running"], svc["replicas_desired"]
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
    stopping = [t for t in tasks if t["desired_state"] in ("shutdown", "remove") and t["status"]["state"] in STOPPING]
    if stopping:
        return False, None, f"{running}/{desired} running, {len(stopping)} replaced task(s) stopping"
    pending = [t for t in current if t["status"]["state"] in ("new", "pending") and t["status"].get("err")]
    text = f"{running}/{desired} running"
    if pending:
        text += f" ({pending[0]['status']['err']})"
    return running >= desired and len([t for t in current if t["status"]["state"] == "running"]) <= max(desired, running), None, text


def wait_for_stack(api: Api, stack: str, timeout: float, services: Optional[list[str]] = None,
                   since: Optional[float] = None) -> tuple[bool, str]:
    """Follow a stack's services (or some of them) until all converged. `since`: when the
    change being waited for was made (see update_failure)."""
    if since is None:  # called right after the change was made
        since = time.time() - 30
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
                ok, failure, text = service_state(s, tasks, since)
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
