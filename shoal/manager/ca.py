"""The cluster CA as a manager holds it: signs nodes' certificates and its own API's.

The CA's private key lives in the manager's data dir, encrypted under a password
derived from the cluster key (`Keyring.tls_password`): with autolock, it cannot be
read until the manager is unlocked.
"""
from __future__ import annotations

import logging
import socket
from typing import Callable, Optional

from shoal import pki
from shoal.paths import Layout

log = logging.getLogger("shoal.ca")


class CertAuthority:
    def __init__(self, layout: Layout, password: Callable[[], bytes], cluster_id: str):
        self.layout = layout
        self.password = password
        self.cluster_id = cluster_id
        self._pair: Optional[pki.KeyPair] = None

    @classmethod
    def create(cls, layout: Layout, password: bytes, cluster_id: str) -> "CertAuthority":
        """A new CA for a new cluster (`shoal init`)."""
        pki.write_pair(pki.make_ca(password=password), layout.ca_cert, layout.ca_key)
        return cls(layout, lambda: password, cluster_id)

    def pair(self) -> pki.KeyPair:
        if self._pair is None:
            self._pair = pki.read_pair(self.layout.ca_cert, self.layout.ca_key)
        return self._pair

    @property
    def ca_pem(self) -> bytes:
        return self.pair().cert_pem

    def sign_node(self, csr_pem: bytes, node_id: str, role: str, lifetime: float) -> bytes:
        """A node's certificate for the key of its CSR (the key never leaves the node)."""
        return pki.sign_csr(self.pair(), csr_pem, node_id, role, self.cluster_id, lifetime,
                            ca_password=self.password())

    def issue_node_cert(self, node_id: str, role: str, lifetime: float) -> None:
        """This manager's own node certificate (its agent's identity), key encrypted like the CA's."""
        pair = pki.issue(self.pair(), node_id, role, self.cluster_id, lifetime,
                         ca_password=self.password(), password=self.password())
        pki.write_pair(pair, self.layout.node_cert, self.layout.node_key)

    def issue_server_cert(self, node_id: str, addresses: list[str], lifetime: float) -> None:
        """The certificate this manager serves its API with (OU `manager`: agents check it)."""
        hosts = [pki.MANAGER_NAME] + sorted(set(addresses + ["127.0.0.1", "localhost", socket.gethostname()]))
        pair = pki.issue(self.pair(), node_id, pki.SERVER_ROLE, self.cluster_id, lifetime, hosts,
                         ca_password=self.password(), password=self.password())
        pki.write_pair(pair, self.layout.manager_cert, self.layout.manager_key)
