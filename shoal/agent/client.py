"""The agent's side of the manager API: mutual TLS with this node's own certificate."""
from __future__ import annotations

import ssl
from typing import Any, Optional

import aiohttp


class ManagerUnavailable(Exception):
    pass


class ManagerClient:
    def __init__(self, url: str, ssl_ctx: ssl.SSLContext):
        self.url = url.rstrip("/")
        self.ssl_ctx = ssl_ctx
        self._session: Optional[aiohttp.ClientSession] = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_ctx, limit=16),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self._session

    async def call(self, method: str, path: str, *, json: Any = None, params: Optional[dict] = None,
                   timeout: float = 30) -> Any:
        try:
            async with self.session().request(method, self.url + path, json=json, params=params,
                                              timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    raise ManagerUnavailable(f"{method} {path}: {r.status} {data.get('message') if data else ''}")
                return data
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ManagerUnavailable(f"{method} {path}: {e}") from e

    async def post_stream(self, path: str, body) -> None:
        try:
            async with self.session().post(self.url + path, data=body,
                                           timeout=aiohttp.ClientTimeout(total=None)) as r:
                await r.read()
        except (aiohttp.ClientError, OSError) as e:
            raise ManagerUnavailable(str(e)) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
