"""The CLI's way to the manager: HTTP/1.1 over the data dir's root-only unix socket.

Synchronous, and written on the socket module alone: `http.client` (with the e-mail
parser it pulls in) was a quarter of a command's start-up, and the CLI only ever talks to
its own daemon: one request per connection, JSON bodies, answers with a length or chunked
(streams: `service logs -f`, `events`).
"""
from __future__ import annotations

import json
import socket
from typing import Any, BinaryIO, Iterator, Optional

from shoal.paths import Layout


class ApiFailure(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Response:
    """An answer read from the socket: status, headers, then the body (whole or piecewise)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        line = f.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer from the daemon: {line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            h = f.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self.left = int(length) if length is not None and not self.chunked else None

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives."""
        f = self.f
        if self.chunked:
            while True:
                size_line = f.readline(65537)
                if not size_line:
                    return
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = f.read(size)
                f.readline(65537)  # the chunk's CRLF
                if data:
                    yield data
        else:  # up to its length, or (none given) to the end
            while self.left is None or self.left > 0:
                data = f.read1(65536 if self.left is None else min(self.left, 65536))  # type: ignore[attr-defined]
                if not data:
                    return
                if self.left is not None:
                    self.left -= len(data)
                yield data

    def read(self) -> bytes:
        return b"".join(self.pieces())

    def lines(self) -> Iterator[bytes]:
        rest = b""
        for data in self.pieces():
            rest += data
            *full, rest = rest.split(b"\n")
            for ln in full:
                yield ln + b"\n"
        if rest:
            yield rest


class Api:
    def __init__(self, layout: Layout, timeout: Optional[float] = 120):
        self.layout = layout
        self.timeout = timeout

    def _send(self, method: str, path: str, data: Optional[bytes], timeout: Optional[float]) -> tuple[socket.socket, _Response]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            try:
                s.connect(self.layout.socket)
            except (FileNotFoundError, ConnectionRefusedError):
                raise ApiFailure(0, "Cannot connect to the Shoal daemon: is it running? "
                                    f"(no answer on {self.layout.socket}; `shoal init` creates a cluster)") from None
            head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data or b'')}\r\n\r\n")
            s.sendall(head.encode() + (data or b""))
            return s, _Response(s.makefile("rb"))
        except BaseException:
            s.close()
            raise

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        s, resp = self._send(method, path, data, self.timeout)
        try:
            raw = resp.read()
        finally:
            s.close()
        payload = json.loads(raw) if raw else None
        if resp.status >= 400:
            msg = payload.get("message") if isinstance(payload, dict) else raw.decode(errors="replace")
            raise ApiFailure(resp.status, msg or f"HTTP {resp.status}")
        return payload

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def stream(self, path: str) -> Iterator[bytes]:
        """The answer's lines as they come (a follow stays open until the daemon ends it)."""
        s, resp = self._send("GET", path, None, None)
        try:
            if resp.status >= 400:
                raw = resp.read()
                try:
                    msg = json.loads(raw).get("message")
                except (ValueError, AttributeError):
                    msg = raw.decode(errors="replace")
                raise ApiFailure(resp.status, msg)
            yield from resp.lines()
        finally:
            s.close()
