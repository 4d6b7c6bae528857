"""`shoal events`: what happened in the cluster, as `docker events` prints it."""
from __future__ import annotations

import json
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Optional

import click

from shoal.cli.main import Ctx, cli
from shoal.units import parse_duration


def parse_when(value: str, now: float) -> float:
    """A Unix time from `docker events --since/--until`'s forms: a Unix time (`1733270400`,
    `1733270400.5`), a date and time (`2026-12-03`, `2026-12-03T17:06:00`, with `Z` or an
    offset; local time without one), or a duration back from now (`10m`, `1h30m`)."""
    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return now - parse_duration(v)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is neither a Unix time, a date (2026-12-03T17:06:00) "
                         "nor a duration (10m)") from None
    if d.tzinfo is None:
        d = d.astimezone()  # local time, as Docker reads it
    return d.timestamp()


def event_line(ev: dict) -> str:
    """Docker's text form: TIME TYPE ACTION ID (key=value, ...)."""
    when = datetime.fromtimestamp(ev["time"], timezone.utc).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000" + when.strftime("%z")
    stamp = stamp[:-2] + ":" + stamp[-2:]
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(ev.get("attributes", {}).items()))
    return f"{stamp} {ev['type']} {ev['action']} {ev['id']} ({attrs})"


def _when(value: Optional[str], what: str) -> Optional[float]:
    if value is None:
        return None
    try:
        return parse_when(value, time.time())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=what) from None


@cli.command()
@click.option("--since", default=None, help="Also the kept events since this time (Unix time, date or 10m).")
@click.option("--until", default=None, help="Stop at this time (Unix time, date or 10m back).")
@click.option("-f", "--filter", "filters", multiple=True,
              help="key=value: type, event, id, name, node, service, stack (repeat: same key ORs, keys AND).")
@click.option("--format", "fmt", default=None, help="json: one JSON object a line.")
@click.pass_obj
def events(obj: Ctx, since: Optional[str], until: Optional[str], filters: tuple[str, ...],
           fmt: Optional[str]) -> None:
    """Stream the cluster's events: services, tasks, nodes, configs, secrets, networks, volumes.

    Without --since or --until, only new events, until interrupted."""
    by_key: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{f!r} is not key=value", param_hint="--filter")
        by_key.setdefault(key.strip(), []).append(value.strip())
    if fmt not in (None, "json", "{{json .}}"):
        raise click.BadParameter("only json is supported", param_hint="--format")
    query = {}
    for name, value in (("since", _when(since, "--since")), ("until", _when(until, "--until"))):
        if value is not None:
            query[name] = repr(value)
    if by_key:
        query["filters"] = json.dumps(by_key)
    path = "/v1/events" + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        for raw in obj.api.stream(path):
            if not raw.strip():
                continue
            ev = json.loads(raw)
            ev.pop("seq", None)
            click.echo(json.dumps(ev) if fmt else event_line(ev))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
