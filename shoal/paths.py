"""Where a node keeps its state: one data dir (default /var/lib/shoal, or SHOAL_DATA_DIR)."""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATA_DIR = "/var/lib/shoal"
DEFAULT_PORT = 4343


def data_dir(explicit: str | None = None) -> str:
    return os.path.abspath(explicit or os.environ.get("SHOAL_DATA_DIR") or DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class Layout:
    root: str

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def store(self) -> str:
        return self.p("manager", "store.db")

    @property
    def metrics_addr(self) -> str:
        """Where this node serves /metrics, as `init`/`join --metrics-addr` recorded it."""
        return self.p("metrics-addr")

    @property
    def events(self) -> str:
        """The cluster's recent events (`shoal events`), kept across restarts."""
        return self.p("manager", "events.jsonl")

    @property
    def cluster_key(self) -> str:
        return self.p("manager", "cluster.key")

    @property
    def ca_cert(self) -> str:
        return self.p("certs", "ca.crt")

    @property
    def ca_key(self) -> str:
        return self.p("manager", "ca.key")

    @property
    def manager_cert(self) -> str:
        """A manager's API (TLS server) certificate."""
        return self.p("certs", "manager.crt")

    @property
    def manager_key(self) -> str:
        return self.p("certs", "manager.key")

    @property
    def node_cert(self) -> str:
        return self.p("certs", "node.crt")

    @property
    def node_key(self) -> str:
        return self.p("certs", "node.key")


    @property
    def etcd_dir(self) -> str:
        """The etcd member Shoal runs for this manager (`init --store etcd`): data, TLS, log."""
        return self.p("etcd")

    @property
    def etcd_ca_cert(self) -> str:
        """The CA of the managers' etcd members (not the cluster CA: workers' certificates must
        not open etcd)."""
        return self.p("certs", "etcd-ca.crt")

    @property
    def etcd_ca_key(self) -> str:
        return self.p("manager", "etcd-ca.key")

    @property
    def etcd_cert(self) -> str:
        """This member's certificate: etcd's peer and client TLS, and the manager's as its client."""
        return self.p("etcd", "member.crt")

    @property
    def etcd_key(self) -> str:
        return self.p("etcd", "member.key")

    @property
    def socket(self) -> str:
        return self.p("shoal.sock")

    @property
    def overlay_state(self) -> str:
        """The VXLAN devices this node made (removed when unneeded, and on leave)."""
        return self.p("overlay.json")

    @property
    def cluster_file(self) -> str:
        """JSON: cluster id, node id, manager address. Its presence means 'part of a cluster'."""
        return self.p("cluster.json")

    @property
    def pidfile(self) -> str:
        return self.p("shoal.pid")

    @property
    def log(self) -> str:
        return self.p("shoal.log")

    @property
    def configs_dir(self) -> str:
        return self.p("agent", "configs")

    @property
    def secrets_dir(self) -> str:
        # A tmpfs Shoal mounts: secrets never touch the node's disk.
        return os.environ.get("SHOAL_SECRETS_DIR") or os.path.join("/run/shoal", _slug(self.root), "secrets")


def _slug(path: str) -> str:
    return path.strip("/").replace("/", "_") or "root"
