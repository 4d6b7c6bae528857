"""The cluster store: an interface (`base.Store`) and its implementations (`sqlite`, `etcd`)."""
from __future__ import annotations

from shoal.store.base import ChangeFeed, Conflict, Deposed, InvalidObject, Store, StoreUnavailable

__all__ = ["ChangeFeed", "Conflict", "Deposed", "InvalidObject", "StoreUnavailable", "Store", "check_store_spec", "open_leadership", "open_store",
           "store_prefix"]


def check_store_spec(spec: str) -> str:
    """The store a manager is told to use, checked: ``sqlite`` (the default: a file in the data
    dir), ``etcd`` (an etcd member the manager runs itself) or an etcd the user runs
    (``etcd://HOST:PORT``, ``etcds://HOST:PORT?ca=…&cert=…&key=…``). Raises ValueError naming
    what is wrong."""
    if spec in ("", "sqlite"):
        return "sqlite"
    if spec == "etcd":
        return spec
    from shoal.store.etcd import parse_store_url
    parse_store_url(spec)
    return spec


def store_prefix(cluster_id: str) -> str:
    """Where a cluster's keys live in a shared etcd: one prefix per cluster, so that a cluster
    never loads another's objects."""
    return f"/shoal/{cluster_id}/"


def open_store(spec: str, sqlite_path: str, cluster_id: str) -> Store:
    if check_store_spec(spec) == "sqlite":
        from shoal.store.sqlite import SqliteStore
        return SqliteStore(sqlite_path)
    from shoal.store.etcd import EtcdStore
    return EtcdStore(spec, prefix=store_prefix(cluster_id))


def open_leadership(store: Store, node_id: str):
    """Who leads among the managers sharing `store` (see leadership.py)."""
    from shoal.store.leadership import EtcdLeadership, SoleLeadership
    from shoal.store.etcd import EtcdStore
    if isinstance(store, EtcdStore):
        return EtcdLeadership(store, node_id)
    return SoleLeadership(node_id)
