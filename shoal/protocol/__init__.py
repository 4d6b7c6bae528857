"""What agents and managers must compute alike (neither side imports the other): the digest of
a node's facts, and the endpoint table an agent replays from the manager's endpoint log."""
from __future__ import annotations

import hashlib
import json


def facts_digest(subnets: list[str], ports: dict[str, str], volumes: list[dict]) -> str:
    """A node's facts (engine subnets, ports in use, volumes) as a digest: the agent sends its
    facts only when they differ from what the manager acknowledged."""
    vols = sorted(({k: v for k, v in vol.items() if v not in (None, "", {}, [])} for vol in volumes),
                  key=lambda v: str(v.get("name", "")))
    raw = json.dumps([sorted(subnets), sorted(ports.items()), vols], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
