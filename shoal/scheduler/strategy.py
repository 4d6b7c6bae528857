"""Spread strategy: which feasible node gets the next task of a group.

Nodes are ordered by (service failed there >= 5 times in 5 min, tasks of this service,
tasks overall, node id). Placement preferences (``spread: node.labels.zone``) put a tree
of label-value groups on top: each level sends the next task to the value with the fewest
tasks of the service so far (ties by value), nodes missing the label forming the group
"". Every level is a heap, so one placement costs O(depth * log n).
"""
from __future__ import annotations

import heapq
from typing import Callable, Optional, Sequence

from shoal.scheduler.nodeinfo import NodeInfo

Fits = Callable[[NodeInfo], bool]
Assign = Callable[[NodeInfo], None]


def preference_key(descriptor: str) -> str:
    """'node.labels.zone', 'spread=node.labels.zone' or 'spread: node.labels.zone' -> 'node.labels.zone'."""
    d = descriptor.strip()
    for sep in ("=", ":"):
        head, _, tail = d.partition(sep)
        if tail and head.strip().lower() == "spread":
            return tail.strip()
    return d


def label_value(info: NodeInfo, key: str) -> str:
    if key.startswith("node.labels."):
        return info.node.labels.get(key[len("node.labels."):], "")
    if key.startswith("engine.labels."):
        return info.node.description.engine_labels.get(key[len("engine.labels."):], "")
    return ""


class _Leaf:
    __slots__ = ("heap", "service_id")

    def __init__(self, infos: Sequence[NodeInfo], service_id: str) -> None:
        self.service_id = service_id
        self.heap = [self._entry(i) for i in infos]
        heapq.heapify(self.heap)

    def _entry(self, i: NodeInfo):
        sid = self.service_id
        return (i.penalised(sid), i.by_service.get(sid, 0), i.total, i.id, i)

    def take(self, fits: Fits, assign: Assign) -> Optional[NodeInfo]:
        h = self.heap
        while h:
            info = h[0][4]
            if not fits(info):
                heapq.heappop(h)  # full for this group: drop for the rest of the batch
                continue
            assign(info)
            heapq.heapreplace(h, self._entry(info))
            return info
        return None


class _Branch:
    __slots__ = ("heap",)

    def __init__(self, children: list[tuple[int, str, object]]) -> None:
        self.heap = children
        heapq.heapify(self.heap)

    def take(self, fits: Fits, assign: Assign) -> Optional[NodeInfo]:
        h = self.heap
        while h:
            count, value, child = h[0]
            info = child.take(fits, assign)
            if info is None:
                heapq.heappop(h)
                continue
            heapq.heapreplace(h, (count + 1, value, child))
            return info
        return None


def build_tree(infos: Sequence[NodeInfo], service_id: str, preferences: Sequence[str]):
    """A spread tree over feasible nodes; `.take(fits, assign)` places one task."""
    keys = [preference_key(p) for p in preferences if preference_key(p)]
    return _build(list(infos), service_id, keys)


def _build(infos: list[NodeInfo], service_id: str, keys: list[str]):
    if not keys:
        return _Leaf(infos, service_id)
    key, rest = keys[0], keys[1:]
    groups: dict[str, list[NodeInfo]] = {}
    for i in infos:
        groups.setdefault(label_value(i, key), []).append(i)
    children = []
    for value, members in groups.items():
        count = sum(i.by_service.get(service_id, 0) for i in members)
        children.append((count, value, _build(members, service_id, rest)))
    return _Branch(children)
