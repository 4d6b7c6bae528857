"""Which nodes to call down, from when each last sent a heartbeat. Pure.

A node is down once it has been silent for `grace` heartbeat periods (Swarm: 3). A manager
that just started has heard from nobody yet: it gives every node twice that before judging
it (Swarm learned this the hard way: moby/moby#25017), so a manager restart reschedules
nothing. Time the manager's own loop was stuck does not count against the nodes: their
heartbeats could not be read meanwhile.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from shoal.model.objects import Node

HEARTBEAT_FAILURE = "heartbeat failure"
NEVER_HEARD = "no heartbeat since the manager started"


def down_after(period: float, grace: int) -> float:
    return period * grace


def judge(nodes: Iterable[Node], last_seen: Mapping[str, float], now: float, started_at: float,
          period: float, grace: int, stalled: float = 0.0) -> list[tuple[str, str]]:
    """(node id, why) of each ready node to mark down now."""
    limit = down_after(period, grace) + stalled
    out = []
    for n in nodes:
        if n.state != "ready":
            continue
        seen = last_seen.get(n.id)
        if seen is None:
            if now - started_at > 2 * limit:
                out.append((n.id, NEVER_HEARD))
        elif now - seen > limit:
            out.append((n.id, HEARTBEAT_FAILURE))
    return out
