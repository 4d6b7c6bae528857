"""Which replicas to move so a service is spread evenly again (`shoal service rebalance`). Pure.

Beyond Swarm (moby/moby#24103, open since 2016): a node that joins or comes back stays
empty until something moves. Rebalancing picks, one at a time, a replica on the fullest
eligible node while it holds two more than the emptiest one; the moves are then made as a
rolling update (the service's `update_config`: parallelism, delay, order, monitor), and
the scheduler's spread puts each replacement on the emptiest node.

Not moved: tasks on nodes that are paused or not ready (pause keeps what runs), and
services whose tasks mount node-local named volumes (their data stays where it is).
"""
from __future__ import annotations

from typing import Sequence

from shoal.core.reconcile import node_eligible
from shoal.core.slots import is_live, slot_key
from shoal.core.task_states import RUNNING
from shoal.model.objects import Node, Service, Task


class CannotRebalance(ValueError):
    pass


def moves(service: Service, tasks: Sequence[Task], nodes: Sequence[Node]) -> list[str]:
    """Slot keys of the replicas to move (empty: already as even as it can be)."""
    spec = service.spec
    if spec.mode != "replicated":
        raise CannotRebalance(f"service {spec.name} is {spec.mode}: only replicated services are rebalanced")
    if any(m.type == "volume" and m.source and not m.volume_driver for m in spec.container.mounts):
        raise CannotRebalance(f"service {spec.name} mounts named volumes: its tasks stay with their data")
    eligible = [n for n in nodes if node_eligible(service, n)]
    if len(eligible) < 2:
        return []
    on: dict[str, list[Task]] = {n.id: [] for n in eligible}
    for t in tasks:
        if is_live(t) and t.slot and t.node_id in on and t.status.state == RUNNING:
            on[t.node_id].append(t)
    limit = spec.placement.max_replicas_per_node or None
    counts = {nid: len(ts) for nid, ts in on.items()}
    picked: list[str] = []
    while True:
        full = max(counts, key=lambda n: (counts[n], n))
        empty = min(counts, key=lambda n: (counts[n], n))
        if counts[full] - counts[empty] < 2 or (limit is not None and counts[empty] >= limit):
            break
        t = max(on[full], key=lambda t: (t.slot, t.id))  # the highest slot of the fullest node
        on[full].remove(t)
        counts[full] -= 1
        counts[empty] += 1
        picked.append(slot_key(t))
    return sorted(picked, key=int)
