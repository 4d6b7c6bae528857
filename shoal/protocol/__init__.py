"""What agents and managers must compute alike (neither side imports the other): the digest of
a node's facts, and the endpoint table an agent replays from the manager's endpoint log."""
from __future__ import annotations

import hashlib
import json


def facts_digest(subnets: list[str], ports: dict[str, str], volumes: list[dict],
                 attached: list[dict] | None = None) -> str:
    """A node's facts (engine subnets, ports in use, volumes, containers on attachable
    networks) as a digest: the agent sends its facts only when they differ from what the
    manager acknowledged. (No attached containers: the digest of a manager that knows none.)"""
    vols = sorted(({k: v for k, v in vol.items() if v not in (None, "", {}, [])} for vol in volumes),
                  key=lambda v: str(v.get("name", "")))
    parts: list = [sorted(subnets), sorted(ports.items()), vols]
    if attached:
        parts.append(sorted(([a["network"], a["name"], sorted(a.get("aliases") or []), a["ip"]] for a in attached)))
    raw = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
