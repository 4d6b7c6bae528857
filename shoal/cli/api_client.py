"""The CLI's way to the manager: HTTP over the data dir's root-only unix socket.

Synchronous and dependency-free (http.client) so every command starts fast.
"""
from __future__ import annotations

import http.client
import json
import socket
from typing import Any, Iterator, Optional

from shoal.paths import Layout


class ApiFailure(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Api:
    def __init__(self, layout: Layout, timeout: Optional[float] = 120):
        self.layout = layout
        self.timeout = timeout

    def _conn(self, timeout: Optional[float] = None) -> _UnixConnection:
        return _UnixConnection(self.layout.socket, timeout if timeout is not None else self.timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        conn = self._conn()
        try:
            data = json.dumps(body).encode() if body is not None else None
            try:
                conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (FileNotFoundError, ConnectionRefusedError):
                raise ApiFailure(0, "Cannot connect to the Shoal daemon: is it running? "
                                    f"(no answer on {self.layout.socket}; `shoal init` creates a cluster)") from None
            payload = json.loads(raw) if raw else None
            if resp.status >= 400:
                msg = payload.get("message") if isinstance(payload, dict) else raw.decode(errors="replace")
                raise ApiFailure(resp.status, msg or f"HTTP {resp.status}")
            return payload
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def stream(self, path: str) -> Iterator[bytes]:
        conn = self._conn(timeout=None)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            if resp.status >= 400:
                raw = resp.read()
                try:
                    msg = json.loads(raw).get("message")
                except ValueError:
                    msg = raw.decode(errors="replace")
                raise ApiFailure(resp.status, msg)
            while True:
                line = resp.readline()
                if not line:
                    break
                yield line
        finally:
            conn.close()
