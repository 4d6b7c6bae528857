"""The agent's side of the manager API: mutual TLS with this node's own certificate, to
whichever of the cluster's managers answers.

A manager is trusted only if its certificate is signed by the cluster CA *and* names the
manager API (`pki.MANAGER_NAME`, checked in the TLS handshake, before anything is sent): a
node certificate of the same CA — any worker's — is refused. The agent knows a list of
managers (its cluster.json, kept up to date from heartbeat answers) and moves on to the
next one when the current one does not answer.
"""
from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import ssl
from typing import Any, Callable, Optional

import aiohttp

from shoal import pki

log = logging.getLogger("shoal.agent.client")


class ManagerUnavailable(Exception):
    pass


class ManagerRefused(ManagerUnavailable):
    """The manager answered, and said no (4xx): retrying elsewhere will not help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ManagerList:
    """The managers this agent may talk to (`addr:port`), the one it uses first."""

    def __init__(self, addresses: list[str], on_change: Callable[[list[str]], None] = lambda a: None,
                 home: Optional[str] = None):
        self.home = home  # a manager's own agent: its own manager, always first
        self.addresses = list(dict.fromkeys([*([home] if home else []), *(a for a in addresses if a)])) \
            or ["127.0.0.1:4343"]
        self.on_change = on_change
        self._i = 0

    def current(self) -> str:
        return self.addresses[self._i % len(self.addresses)]

    def failed(self, addr: str) -> None:
        """`addr` did not answer: the next call goes to the next manager."""
        if self.current() == addr and len(self.addresses) > 1:
            self._i = (self._i + 1) % len(self.addresses)
            log.warning("manager %s does not answer: trying %s", addr, self.current())

    def update(self, addresses: list[str]) -> None:
        """The managers a heartbeat answer named (the one in use stays first when it is there)."""
        new = [a for a in dict.fromkeys(addresses) if a]
        if self.home:  # the others are its fallbacks (the heartbeat names managers by address)
            new = [self.home] + [a for a in new if a != self.home]
        if not new or set(new) == set(self.addresses):
            return
        cur = self.current()
        self.addresses = new if self.home else ([cur] if cur in new else []) + [a for a in new if a != cur]
        self._i = 0
        self.on_change(self.addresses)


class ManagerClient:
    def __init__(self, managers: ManagerList, ssl_ctx: ssl.SSLContext):
        self.managers = managers
        self.ssl_ctx = ssl_ctx
        self._session: Optional[aiohttp.ClientSession] = None
        self.record: Optional[Callable[[bytes], None]] = None  # tests: everything received, in clear

    def set_ssl(self, ctx: ssl.SSLContext) -> None:
        """A renewed certificate: new connections use it (the old session is closed)."""
        self.ssl_ctx = ctx
        old, self._session = self._session, None
        if old is not None and not old.closed:
            asyncio.get_running_loop().create_task(old.close())

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_ctx, limit=16),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    @staticmethod
    def _url(addr: str, path: str) -> str:
        return f"https://{addr}{path}"

    async def call(self, method: str, path: str, *, json: Any = None, params: Optional[dict] = None,
                   timeout: float = 30) -> Any:
        addr = self.managers.current()
        try:
            async with self.session().request(method, self._url(addr, path), json=json, params=params,
                                              server_hostname=pki.MANAGER_NAME,
                                              timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                raw = await r.read()
                if self.record is not None:
                    self.record(raw)
                data = _json(raw)
                if r.status >= 400:
                    msg = data.get("message") if isinstance(data, dict) else raw[:200].decode(errors="replace")
                    if 400 <= r.status < 500 and r.status not in (408, 423, 429):
                        raise ManagerRefused(f"{method} {path}: {r.status} {msg}", r.status)
                    raise ManagerUnavailable(f"{method} {path}: {r.status} {msg}")
                return data
        except ManagerRefused:
            raise
        except aiohttp.ClientConnectorCertificateError as e:
            log.error("refusing %s: its certificate is not the cluster's manager API's (%s)", addr, e)
            self.managers.failed(addr)
            raise ManagerUnavailable(f"{method} {path} on {addr}: not a manager of this cluster") from e
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            self.managers.failed(addr)
            raise ManagerUnavailable(f"{method} {path} on {addr}: {e}") from e

    async def post_stream(self, path: str, body) -> None:
        addr = self.managers.current()
        try:
            async with self.session().post(self._url(addr, path), data=body, server_hostname=pki.MANAGER_NAME,
                                           timeout=aiohttp.ClientTimeout(total=None)) as r:
                await r.read()
        except (aiohttp.ClientError, OSError) as e:
            raise ManagerUnavailable(str(e)) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json(raw: bytes) -> Any:
    return jsonlib.loads(raw) if raw else None
