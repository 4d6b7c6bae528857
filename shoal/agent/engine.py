"""Async client for the Docker Engine API (what a Shoal node drives).

One ``Engine`` holds one aiohttp session over the engine's unix socket (or TCP
when ``DOCKER_HOST=tcp://…``). The API version is negotiated on first use:
``min(server API version (/_ping's header), 1.41)``, and every call is prefixed with ``/v<version>``.

Every non-2xx answer raises ``EngineError(status, message)`` with the engine's own
message (``NotFound`` for 404, ``Conflict`` for 409). Ordinary calls have a
timeout; streams (logs with follow, events, pulls, wait, exec output) have none.

Usage::

    async with Engine() as eng:
        cid = await eng.containers.create("web.1.abc", body)
        await eng.containers.start(cid)
        async for line in eng.containers.logs(cid, tail=10):
            ...
"""
from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Optional, Union
from urllib.parse import quote

import aiohttp

MAX_API_VERSION = "1.41"
DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_TIMEOUT = 60.0

LabelFilter = Union[Mapping[str, Optional[str]], Iterable[str], None]


class EngineError(Exception):
    """An error answered by the Docker Engine (or a transport failure, status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (engine status {status})" if status else message)
        self.status = status
        self.message = message

    def __str__(self) -> str:  # the engine's message is what users want to read
        return self.message


class NotFound(EngineError):
    pass


class Conflict(EngineError):
    pass


def _error(status: int, message: str) -> EngineError:
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    return EngineError(status, message)


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


def negotiate_version(server_api_version: Optional[str], maximum: str = MAX_API_VERSION) -> str:
    """min(server, maximum); the maximum when the server did not say."""
    if not server_api_version:
        return maximum
    return server_api_version if _version_tuple(server_api_version) < _version_tuple(maximum) else maximum


def label_filters(labels: LabelFilter) -> list[str]:
    """``{"a": "b", "c": None}`` or ``["a=b", "c"]`` → ``["a=b", "c"]`` (engine label filter)."""
    if labels is None:
        return []
    if isinstance(labels, Mapping):
        return [k if v is None else f"{k}={v}" for k, v in labels.items()]
    return list(labels)


def encode_filters(filters: Optional[Mapping[str, Any]] = None, labels: LabelFilter = None) -> Optional[str]:
    """Build the engine's ``filters`` query parameter: JSON ``{key: [values…]}``."""
    out: dict[str, list[str]] = {}
    for k, v in (filters or {}).items():
        if v is None:
            continue
        if isinstance(v, (str, int, bool)):
            vals = [str(v).lower() if isinstance(v, bool) else str(v)]
        elif isinstance(v, Mapping):  # {"label": {"a": "b"}} form
            vals = label_filters(v)
        else:
            vals = [str(x) for x in v]
        out.setdefault(k, []).extend(vals)
    lf = label_filters(labels)
    if lf:
        out.setdefault("label", []).extend(lf)
    return json.dumps(out) if out else None


def split_image_ref(image: str) -> tuple[str, str]:
    """``registry:5000/repo:tag`` → (``registry:5000/repo``, ``tag``); digest refs keep ``@sha256:…`` as tag.

    A missing tag means ``latest``.
    """
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


class StreamDemux:
    """Decode Docker's multiplexed stream (8-byte headers: stream, 0,0,0, big-endian size)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf.extend(data)
        frames: list[tuple[int, bytes]] = []
        while len(self._buf) >= 8:
            stream = self._buf[0]
            (size,) = struct.unpack(">I", bytes(self._buf[4:8]))
            if len(self._buf) < 8 + size:
                break
            frames.append((stream, bytes(self._buf[8:8 + size])))
            del self._buf[:8 + size]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


class LineSplitter:
    """Split a byte stream into decoded lines (without the newline); ``flush`` returns the rest."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf.extend(data)
        lines = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                break
            raw = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            lines.append(raw.decode("utf-8", "replace"))
        return lines

    def flush(self) -> list[str]:
        if not self._buf:
            return []
        raw = bytes(self._buf)
        self._buf.clear()
        return [raw.decode("utf-8", "replace")]


class JSONStreamDecoder:
    """Decode a stream of concatenated/newline-separated JSON objects, robust to any chunking."""

    def __init__(self) -> None:
        self._buf = ""
        self._bytes = bytearray()
        self._dec = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        self._bytes.extend(data)
        # decode only complete UTF-8 sequences
        try:
            text = self._bytes.decode("utf-8")
            self._bytes.clear()
        except UnicodeDecodeError as e:
            text = bytes(self._bytes[:e.start]).decode("utf-8")
            del self._bytes[:e.start]
        self._buf += text
        out = []
        while True:
            s = self._buf.lstrip()
            if not s:
                self._buf = ""
                break
            try:
                obj, end = self._dec.raw_decode(s)
            except json.JSONDecodeError:
                self._buf = s  # incomplete; wait for more
                break
            out.append(obj)
            self._buf = s[end:]
        return out


@dataclass
class ExecResult:
    exit_code: Optional[int]
    stdout: bytes
    stderr: bytes

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", "replace")


def _docker_host_from_env() -> Optional[str]:
    return os.environ.get("DOCKER_HOST") or None


class Engine:
    """Docker Engine API client. Use as ``async with Engine() as eng`` or call ``close()``."""

    def __init__(self, socket_path: Optional[str] = None, *, host: Optional[str] = None,
                 api_version: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT):
        host = host or (None if socket_path else _docker_host_from_env())
        if host and host.startswith("unix://"):
            socket_path, self._base = host[len("unix://"):], "http://docker"
        elif host and (host.startswith("tcp://") or host.startswith("http://")):
            socket_path, self._base = None, "http://" + host.split("://", 1)[1].rstrip("/")
        elif host:
            raise ValueError(f"unsupported DOCKER_HOST {host!r}")
        else:
            socket_path, self._base = socket_path or DEFAULT_SOCKET, "http://docker"
        self.socket_path = socket_path
        self.timeout = timeout
        self._fixed_version = api_version
        self.api_version: Optional[str] = api_version
        self._session: Optional[aiohttp.ClientSession] = None
        self._lock = asyncio.Lock()
        # Told (method, path, seconds, whether it succeeded) after each request (the agent's metrics).
        self.on_call: Optional[Callable[[str, str, float, bool], None]] = None
        self.containers = Containers(self)
        self.images = Images(self)
        self.networks = Networks(self)
        self.volumes = Volumes(self)

    # -- session / plumbing --------------------------------------------------
    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self.socket_path:
                conn: aiohttp.BaseConnector = aiohttp.UnixConnector(path=self.socket_path, limit=0)
            else:
                conn = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def _prefix(self) -> str:
        if self.api_version is None:
            async with self._lock:
                if self.api_version is None:
                    self.api_version = negotiate_version(await self._server_api_version())
        return f"/v{self.api_version}"

    def _timeout(self, timeout: Union[float, None, bool]) -> aiohttp.ClientTimeout:
        if timeout is False or timeout is None:
            # streams: no total and no read timeout, but do bound connecting
            return aiohttp.ClientTimeout(total=None, sock_read=None, connect=self.timeout)
        return aiohttp.ClientTimeout(total=float(timeout) if timeout is not True else self.timeout)

    @staticmethod
    def _params(params: Optional[Mapping[str, Any]]) -> dict[str, str]:
        out = {}
        for k, v in (params or {}).items():
            if v is None:
                continue
            if isinstance(v, bool):
                out[k] = "1" if v else "0"
            else:
                out[k] = str(v)
        return out

    async def _send(self, method: str, path: str, *, params=None, json_body: Any = None,
                    data: Any = None, headers=None, timeout: Union[float, None, bool] = True,
                    versioned: bool = True) -> aiohttp.ClientResponse:
        prefix = await self._prefix() if versioned else ""
        url = self._base + prefix + path
        hdrs = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            resp = await self._get_session().request(
                method, url, params=self._params(params), data=data, headers=hdrs,
                timeout=self._timeout(timeout))
        except asyncio.TimeoutError as e:
            raise EngineError(0, f"timeout talking to the engine: {method} {path}") from e
        except aiohttp.ClientError as e:
            raise EngineError(0, f"cannot reach the engine: {e}") from e
        if resp.status >= 400:
            try:
                body = await resp.read()
            finally:
                resp.release()
            raise _error(resp.status, self._message(body) or resp.reason or "error")
        return resp

    @staticmethod
    def _message(body: bytes) -> str:
        try:
            j = json.loads(body)
            if isinstance(j, dict) and "message" in j:
                return str(j["message"])
        except ValueError:
            pass
        return body.decode("utf-8", "replace").strip()

    async def _server_api_version(self) -> Optional[str]:
        """The engine's API version, from the `Api-Version` header of `/_ping` (as Docker's
        client asks: ~1 ms, where `/version` takes ~8 ms, asking containerd too); from
        `/version` where the header is missing."""
        resp = await self._send("GET", "/_ping", versioned=False)
        async with resp:
            await resp.read()
            header = resp.headers.get("Api-Version")
        if header:
            return header
        return (await self._raw_json("GET", "/version")).get("ApiVersion")

    async def _raw_json(self, method: str, path: str, **kw) -> Any:
        """Unversioned request (used for negotiation)."""
        resp = await self._send(method, path, versioned=False, **kw)
        async with resp:
            return await resp.json(content_type=None)

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        try:
            async with resp:
                return await resp.read()
        except asyncio.TimeoutError as e:
            raise EngineError(0, f"timeout talking to the engine: {method} {path}") from e
        except aiohttp.ClientError as e:
            raise EngineError(0, f"engine connection failed: {e}") from e

    async def request_json(self, method: str, path: str, **kw) -> Any:
        began, ok = time.perf_counter(), False
        try:
            body = await self._read(await self._send(method, path, **kw), method, path)
            ok = True
        finally:
            if self.on_call is not None:
                self.on_call(method, path, time.perf_counter() - began, ok)
        if not body.strip():
            return None
        return json.loads(body)

    async def request(self, method: str, path: str, **kw) -> int:
        """Request whose body does not matter; returns the HTTP status."""
        began, ok = time.perf_counter(), False
        try:
            resp = await self._send(method, path, **kw)
            await self._read(resp, method, path)
            ok = True
        finally:
            if self.on_call is not None:
                self.on_call(method, path, time.perf_counter() - began, ok)
        return resp.status

    async def stream(self, method: str, path: str, **kw) -> AsyncIterator[bytes]:
        """Raw body chunks of a streaming answer (no timeout). Close the generator to stop early."""
        resp = await self._send(method, path, timeout=None, **kw)
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except aiohttp.ClientError as e:
            raise EngineError(0, f"engine stream broken: {e}") from e
        finally:
            resp.close()

    async def stream_json(self, method: str, path: str, **kw) -> AsyncIterator[Any]:
        dec = JSONStreamDecoder()
        async for chunk in self.stream(method, path, **kw):
            for obj in dec.feed(chunk):
                yield obj

    # -- system --------------------------------------------------------------
    async def version(self) -> dict:
        return await self.request_json("GET", "/version")

    async def info(self) -> dict:
        return await self.request_json("GET", "/info")

    async def ping(self) -> bool:
        try:
            resp = await self._send("GET", "/_ping", versioned=False)
            async with resp:
                return (await resp.text()).strip() == "OK"
        except EngineError:
            return False

    async def events(self, filters: Optional[Mapping[str, Any]] = None, *, labels: LabelFilter = None,
                     since: Optional[Union[int, float, str]] = None,
                     until: Optional[Union[int, float, str]] = None) -> AsyncIterator[dict]:
        """Engine events as dicts (``{"Type", "Action", "Actor": {"ID", "Attributes"}, "time", …}``).

        Without ``until`` the stream never ends: break out of the loop (or cancel) to stop it.
        """
        params = {"filters": encode_filters(filters, labels), "since": since, "until": until}
        async for ev in self.stream_json("GET", "/events", params=params):
            if isinstance(ev, dict):
                yield ev


class _Part:
    def __init__(self, engine: Engine):
        self.engine = engine


def _q(s: str) -> str:
    return quote(s, safe="")


class Containers(_Part):
    async def create(self, name: Optional[str], body: dict) -> str:
        """POST /containers/create; returns the container id."""
        r = await self.engine.request_json("POST", "/containers/create",
                                           params={"name": name}, json_body=body)
        return r["Id"]

    async def start(self, cid: str) -> bool:
        """Start; False when it was already running (304)."""
        return await self.engine.request("POST", f"/containers/{_q(cid)}/start") != 304

    async def stop(self, cid: str, timeout: Optional[float] = None) -> bool:
        """Stop (SIGTERM/StopSignal, then SIGKILL after ``timeout`` s; None = container's StopTimeout).

        False when it was not running (304).
        """
        t = None if timeout is None else max(0, int(-(-timeout // 1)))
        http_timeout = (t if t is not None else 300) + self.engine.timeout
        return await self.engine.request("POST", f"/containers/{_q(cid)}/stop",
                                         params={"t": t}, timeout=http_timeout) != 304

    async def kill(self, cid: str, signal: Union[str, int] = "SIGKILL") -> None:
        await self.engine.request("POST", f"/containers/{_q(cid)}/kill", params={"signal": signal})

    async def restart(self, cid: str, timeout: Optional[float] = None) -> None:
        await self.engine.request("POST", f"/containers/{_q(cid)}/restart", params={"t": timeout},
                                  timeout=(timeout or 300) + self.engine.timeout)

    async def remove(self, cid: str, force: bool = False, v: bool = False) -> None:
        await self.engine.request("DELETE", f"/containers/{_q(cid)}", params={"force": force, "v": v})

    async def inspect(self, cid: str) -> dict:
        return await self.engine.request_json("GET", f"/containers/{_q(cid)}/json")

    async def list(self, filters: Optional[Mapping[str, Any]] = None, *, labels: LabelFilter = None,
                   all: bool = True) -> list[dict]:
        return await self.engine.request_json(
            "GET", "/containers/json", params={"all": all, "filters": encode_filters(filters, labels)})

    async def wait(self, cid: str, condition: str = "not-running") -> dict:
        """Block until the container stops; returns ``{"StatusCode": n, "Error": …}``. No timeout."""
        return await self.engine.request_json("POST", f"/containers/{_q(cid)}/wait",
                                              params={"condition": condition}, timeout=None)

    async def logs(self, cid: str, *, follow: bool = False, tail: Optional[Union[int, str]] = None,
                   timestamps: bool = False, stdout: bool = True, stderr: bool = True,
                   since: Optional[Union[int, float]] = None, with_stream: bool = False,
                   tty: Optional[bool] = None) -> AsyncIterator[Any]:
        """Decoded log lines (``str``), or ``(stream_name, line)`` with ``with_stream=True``.

        The 8-byte multiplexing header is removed unless the container has a TTY
        (looked up by inspect when ``tty`` is not given).
        """
        if tty is None:
            tty = bool((await self.inspect(cid)).get("Config", {}).get("Tty"))
        params = {"follow": follow, "stdout": stdout, "stderr": stderr, "timestamps": timestamps,
                  "tail": "all" if tail is None else tail, "since": since}
        names = {0: "stdin", 1: "stdout", 2: "stderr"}
        stream = self.engine.stream("GET", f"/containers/{_q(cid)}/logs", params=params)
        try:
            if tty:
                sp = LineSplitter()
                async for chunk in stream:
                    for line in sp.feed(chunk):
                        yield ("stdout", line) if with_stream else line
                for line in sp.flush():
                    yield ("stdout", line) if with_stream else line
            else:
                demux = StreamDemux()
                splitters: dict[int, LineSplitter] = {}
                async for chunk in stream:
                    for sid, payload in demux.feed(chunk):
                        sp = splitters.setdefault(sid, LineSplitter())
                        for line in sp.feed(payload):
                            yield (names.get(sid, str(sid)), line) if with_stream else line
                for sid, sp in splitters.items():
                    for line in sp.flush():
                        yield (names.get(sid, str(sid)), line) if with_stream else line
        finally:
            await stream.aclose()

    async def exec(self, cid: str, cmd: list[str], *, user: Optional[str] = None,
                   env: Optional[Mapping[str, str]] = None, workdir: Optional[str] = None,
                   privileged: bool = False, timeout: Optional[float] = None) -> ExecResult:
        """Run ``cmd`` in the container, capture stdout/stderr and the exit code."""
        body: dict[str, Any] = {"AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": list(cmd),
                                "Privileged": privileged}
        if user:
            body["User"] = user
        if env:
            body["Env"] = [f"{k}={v}" for k, v in env.items()]
        if workdir:
            body["WorkingDir"] = workdir
        ex = await self.engine.request_json("POST", f"/containers/{_q(cid)}/exec", json_body=body)
        eid = ex["Id"]

        async def run() -> tuple[bytes, bytes]:
            out, err = bytearray(), bytearray()
            demux = StreamDemux()
            async for chunk in self.engine.stream("POST", f"/exec/{eid}/start",
                                                  json_body={"Detach": False, "Tty": False}):
                for sid, payload in demux.feed(chunk):
                    (err if sid == 2 else out).extend(payload)
            return bytes(out), bytes(err)

        if timeout is None:
            out, err = await run()
        else:
            out, err = await asyncio.wait_for(run(), timeout)
        info = await self.engine.request_json("GET", f"/exec/{eid}/json")
        # the process may be reported running for a moment after the stream closes
        for _ in range(50):
            if not info.get("Running"):
                break
            await asyncio.sleep(0.02)
            info = await self.engine.request_json("GET", f"/exec/{eid}/json")
        return ExecResult(info.get("ExitCode"), out, err)


class Images(_Part):
    async def inspect(self, image: str) -> dict:
        return await self.engine.request_json("GET", f"/images/{quote(image, safe='/:@')}/json")

    async def exists(self, image: str) -> bool:
        try:
            await self.inspect(image)
            return True
        except NotFound:
            return False

    async def list(self, filters: Optional[Mapping[str, Any]] = None, *, labels: LabelFilter = None) -> list[dict]:
        return await self.engine.request_json("GET", "/images/json",
                                              params={"filters": encode_filters(filters, labels)})

    async def pull_stream(self, image: str, tag: Optional[str] = None,
                          auth: Optional[str] = None) -> AsyncIterator[dict]:
        """Progress messages of a pull; raises ``EngineError`` on an error message in the stream."""
        if tag is None:
            image, tag = split_image_ref(image)
        headers = {"X-Registry-Auth": auth} if auth else None
        async for msg in self.engine.stream_json("POST", "/images/create",
                                                 params={"fromImage": image, "tag": tag}, headers=headers):
            if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
                detail = msg.get("errorDetail") or {}
                raise EngineError(500, msg.get("error") or detail.get("message") or "pull failed")
            yield msg

    async def pull(self, image: str, tag: Optional[str] = None, auth: Optional[str] = None) -> list[dict]:
        """Pull and wait; returns the progress messages. Raises ``EngineError`` with the engine's message."""
        return [m async for m in self.pull_stream(image, tag, auth)]

    async def remove(self, image: str, force: bool = False) -> list[dict]:
        return await self.engine.request_json("DELETE", f"/images/{quote(image, safe='/:@')}",
                                              params={"force": force})


class Networks(_Part):
    async def create(self, name: str, driver: str = "bridge", options: Optional[Mapping[str, str]] = None, *,
                     subnets: Optional[list[Union[str, Mapping[str, str]]]] = None,
                     ip_range: Optional[str] = None, gateway: Optional[str] = None,
                     internal: bool = False, attachable: bool = False,
                     labels: Optional[Mapping[str, str]] = None, ipam_driver: str = "default",
                     check_duplicate: bool = True, enable_ipv6: bool = False) -> str:
        """Create a network; returns its id.

        ``subnets`` items are CIDR strings or dicts ``{"subnet", "ip_range", "gateway"}``;
        the top-level ``ip_range``/``gateway`` apply to the first subnet.
        """
        ipam_config = []
        for i, s in enumerate(subnets or []):
            if isinstance(s, str):
                s = {"subnet": s}
            c = {"Subnet": s.get("subnet") or s.get("Subnet")}
            rng = s.get("ip_range") or s.get("IPRange") or (ip_range if i == 0 else None)
            gw = s.get("gateway") or s.get("Gateway") or (gateway if i == 0 else None)
            if rng:
                c["IPRange"] = rng
            if gw:
                c["Gateway"] = gw
            ipam_config.append(c)
        body = {"Name": name, "CheckDuplicate": check_duplicate, "Driver": driver,
                "Internal": internal, "Attachable": attachable, "EnableIPv6": enable_ipv6,
                "Options": dict(options or {}), "Labels": dict(labels or {}),
                "IPAM": {"Driver": ipam_driver, "Config": ipam_config, "Options": {}}}
        r = await self.engine.request_json("POST", "/networks/create", json_body=body)
        return r["Id"]

    async def inspect(self, net: str, verbose: bool = False) -> dict:
        return await self.engine.request_json("GET", f"/networks/{_q(net)}", params={"verbose": verbose or None})

    async def list(self, filters: Optional[Mapping[str, Any]] = None, *, labels: LabelFilter = None) -> list[dict]:
        return await self.engine.request_json("GET", "/networks",
                                              params={"filters": encode_filters(filters, labels)})

    async def remove(self, net: str) -> None:
        await self.engine.request("DELETE", f"/networks/{_q(net)}")

    async def connect(self, net: str, container: str, *, aliases: Optional[list[str]] = None,
                      ipv4: Optional[str] = None, endpoint_config: Optional[dict] = None) -> None:
        ep = dict(endpoint_config or {})
        if aliases:
            ep["Aliases"] = list(aliases)
        if ipv4:
            ep.setdefault("IPAMConfig", {})["IPv4Address"] = ipv4
        await self.engine.request("POST", f"/networks/{_q(net)}/connect",
                                  json_body={"Container": container, "EndpointConfig": ep})

    async def disconnect(self, net: str, container: str, force: bool = False) -> None:
        await self.engine.request("POST", f"/networks/{_q(net)}/disconnect",
                                  json_body={"Container": container, "Force": force})


class Volumes(_Part):
    async def create(self, name: Optional[str] = None, driver: str = "local",
                     driver_opts: Optional[Mapping[str, str]] = None,
                     labels: Optional[Mapping[str, str]] = None) -> dict:
        body = {"Driver": driver, "DriverOpts": dict(driver_opts or {}), "Labels": dict(labels or {})}
        if name:
            body["Name"] = name
        return await self.engine.request_json("POST", "/volumes/create", json_body=body)

    async def inspect(self, name: str) -> dict:
        return await self.engine.request_json("GET", f"/volumes/{_q(name)}")

    async def list(self, filters: Optional[Mapping[str, Any]] = None, *, labels: LabelFilter = None) -> list[dict]:
        r = await self.engine.request_json("GET", "/volumes", params={"filters": encode_filters(filters, labels)})
        return (r or {}).get("Volumes") or []

    async def remove(self, name: str, force: bool = False) -> None:
        await self.engine.request("DELETE", f"/volumes/{_q(name)}", params={"force": force})
