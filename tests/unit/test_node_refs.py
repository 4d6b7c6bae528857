"""Nodes are named by id, unique id prefix or hostname, as Docker names them; a hostname two
nodes share (a node that left and joined again, listed twice until removed) is ambiguous, as
with Swarm, never silently one of them."""
from __future__ import annotations

import pytest

from shoal.manager.cluster import resolve
from shoal.manager.errors import ApiError, NotFound
from shoal.model.objects import Node, NodeDescription
from shoal.store.sqlite import SqliteStore


def test_node_refs(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    st.put(Node(id="aaa111", state="down", description=NodeDescription(hostname="lab1")))
    st.put(Node(id="bbb222", state="ready", description=NodeDescription(hostname="lab2")))
    assert resolve(st, Node, "lab2", "node").id == "bbb222"
    assert resolve(st, Node, "aaa", "node").id == "aaa111"
    st.put(Node(id="ccc333", state="ready", description=NodeDescription(hostname="lab1")))
    with pytest.raises(ApiError, match="node lab1 is ambiguous \\(2 matches found\\)"):
        resolve(st, Node, "lab1", "node")
    assert resolve(st, Node, "ccc333", "node").id == "ccc333"
    with pytest.raises(NotFound):
        resolve(st, Node, "lab9", "node")
    st.close()
