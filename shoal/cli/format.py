"""Output as the docker CLI prints it: tab-aligned tables, relative times, sizes."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import click


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Docker's tabwriter layout: min width 10, padding 3, last column unpadded."""
    rows = [[str(c) for c in r] for r in rows]
    cols = len(headers)
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(cols)]
    lines = []
    for r in [list(headers)] + rows:
        cells = []
        for i, c in enumerate(r):
            if i == cols - 1:
                cells.append(c)
            else:
                cells.append(c.ljust(max(10, widths[i] + 3)))
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    click.echo(table(headers, rows))


def echo_json_lines(items: Iterable[Any]) -> None:
    for it in items:
        click.echo(json.dumps(it, default=str))


def ago(ts: float, now: float | None = None) -> str:
    """Like docker's units.HumanDuration: 'Less than a second', '2 minutes', 'About an hour'."""
    d = max(0.0, (now or time.time()) - ts)
    s = int(d)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = int(d / 60)
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = int(round(d / 3600))
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " +0000 utc"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bytes_h(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.4g}{unit}"
    return f"{n}B"


def short_id(i: str) -> str:
    return i[:12]
