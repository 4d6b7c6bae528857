"""Keeps this node's certificate valid: renews it before it expires, with a new key.

Renewal happens at a random point between 50 % and 80 % of the certificate's lifetime (as
Swarm), or at once when the cluster's certificate lifetime was set shorter than what is
left of the current one. The new key is made here and never leaves the node; the request
is authenticated by the current certificate. The files are replaced atomically and the
client's TLS context is swapped, so nothing else notices.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Optional

from shoal import pki
from shoal.agent.client import ManagerClient, ManagerUnavailable

log = logging.getLogger("shoal.agent.certs")


class CertKeeper:
    def __init__(self, client: ManagerClient, ca_path: str, cert_path: str, key_path: str,
                 password: Optional[bytes], cert_expiry: Callable[[], Optional[float]]):
        self.client = client
        self.ca_path, self.cert_path, self.key_path = ca_path, cert_path, key_path
        self.password = password  # a manager node's key is encrypted under the cluster key
        self.cert_expiry = cert_expiry  # the cluster's current setting (from heartbeats), if known
        self.renewed = 0

    def info(self) -> pki.CertInfo:
        with open(self.cert_path, "rb") as f:
            return pki.cert_info(f.read())

    def due(self, now: float) -> float:
        """When the current certificate should be renewed."""
        info = self.info()
        at = pki.renew_at(info, random.Random(info.serial))
        expiry = self.cert_expiry()
        if expiry and info.not_after - now > expiry + pki.BACKDATE + 60:
            return now  # the cluster's lifetime is now shorter than what this one has left
        return at

    async def renew(self) -> None:
        key = pki.new_key()
        resp = await self.client.call("POST", "/v1/agent/renew", json={"csr": pki.make_csr(key).decode()},
                                      timeout=30)
        cert = resp["cert"].encode()
        with open(self.ca_path, "rb") as f:
            pki.verify_chain(cert, f.read())
        pki.write_pair(pki.KeyPair(cert, pki.key_pem(key, self.password)), self.cert_path, self.key_path)
        self.client.set_ssl(pki.client_context(self.ca_path, self.cert_path, self.key_path, self.password))
        self.renewed += 1
        info = pki.cert_info(cert)
        log.info("renewed this node's certificate (valid until %s)",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.not_after)))

    async def run(self) -> None:
        while True:
            now = time.time()
            try:
                wait = self.due(now) - now
            except (OSError, ValueError) as e:
                log.error("cannot read this node's certificate: %s", e)
                wait = 60.0
            if wait > 0:
                # Wake now and then: the cluster's lifetime setting may change meanwhile.
                await asyncio.sleep(min(wait, 30.0))
                continue
            if self.info().not_after < now:
                log.error("this node's certificate expired: it must join the cluster again")
                await asyncio.sleep(60)
                continue
            try:
                await self.renew()
            except (ManagerUnavailable, pki.PkiError, KeyError, TypeError) as e:
                log.warning("renewing this node's certificate failed, will retry: %s", e)
                await asyncio.sleep(5)
