"""The scheduler's picture of each node (free resources, task counts, host ports, recent
failures), kept between orchestrator passes.

Made from every task on every node, it cost each scheduling pass O(tasks in the cluster):
the later part of a 100,000-task deploy placed half as fast as the first. A node's picture
is kept while its Node object and its tasks are unchanged (the store's per-node sequence),
and the scheduler is handed copies (it changes them as it places). Pictures with a recent
failure are made again on each pass: failures leave their window with time alone."""
from __future__ import annotations

from typing import Iterable

from shoal.core import task_states as ts
from shoal.model.objects import Node
from shoal.scheduler.nodeinfo import NodeInfo, build_node_infos, count_tasks
from shoal.store import Store


class NodeInfoCache:
    def __init__(self, store: Store):
        self.store = store
        self._kept: dict[str, tuple[Node, int, NodeInfo]] = {}  # node id -> (node object, its sequence, picture)

    def infos(self, nodes: Iterable[Node], batch: set[str], now: float) -> dict[str, NodeInfo]:
        """What build_node_infos(nodes, every task on them, now, skip=batch) gives."""
        st = self.store
        nodes = list(nodes)
        out: dict[str, NodeInfo] = {}
        fresh: list[tuple[Node, int]] = []
        for n in nodes:
            seq = st.node_seq(n.id)
            got = self._kept.get(n.id)
            if got is not None and got[0] is n and got[1] == seq:
                out[n.id] = got[2].copy()
            else:
                fresh.append((n, seq))
        if fresh:
            # Pending tasks already bound to a node (a global service's) are counted below, by
            # whether this pass places them: they are not part of a kept picture.
            built = build_node_infos([n for n, _ in fresh], [
                t for n, _ in fresh for t in st.tasks_of_node(n.id) if t.status.state != ts.PENDING], now)
            for n, seq in fresh:
                info = built[n.id]
                if info.failures:
                    self._kept.pop(n.id, None)
                else:
                    self._kept[n.id] = (n, seq, info)
                out[n.id] = info.copy()
        count_tasks(out, [t for t in st.pending_tasks() if t.node_id and t.id not in batch], now)
        if len(self._kept) > 2 * len(nodes) + 64:
            ids = {n.id for n in nodes}
            self._kept = {k: v for k, v in self._kept.items() if k in ids}
        return out
