"""The cluster store on etcd (issue #15): the same in-memory view as SQLite's, its rows kept
in etcd, the distributed store made for this (Kubernetes and k3s keep theirs there).

Keys, under a prefix (default ``/shoal/``):

    o/<kind>/<id>   an object's JSON; a task's row is ``<spec key>\\n<task JSON without spec>``
    s/<spec key>    a spec, written once for every task that uses it
    m/<key>         the store's meta values (keyring material, settings)
    q/<kind>/<id>   a row that did not load, set aside with its error (never dropped)

Writes are optimistic: each commit is an etcd transaction that compares the revision of
every object it writes with the one this manager read (a new object: none), so two
writers never overwrite each other silently; a lost race raises `Conflict` and the view
reloads what the transaction touched. A transaction with more writes than one etcd
transaction takes (``--max-txn-ops``, 128 by default, and ~1 MiB) is committed in parts,
each compared on its own, as swarmkit's batches are: a crash between parts leaves the first
ones written, which the orchestrator's reconciliation tolerates (it re-derives the rest).

Other writers' commits reach the view through a watch on the prefix (`follow`): a thread
reads etcd's watch stream and hands each batch of events to the event loop, which applies
them as its own commits are applied (indexes, change feeds, observers, revision waiters).
Each (re)connection first reads the whole prefix at one revision and applies the
difference, then watches from the revision after it, so a broken stream or a compacted
history never leaves the view behind.

The store talks to etcd's v3 JSON gateway (``/v3/kv/…``, ``/v3/watch``) over keep-alive
HTTP(S): no gRPC stack to install. Not yet here (the next steps of #15): leases and
leadership fencing.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

from shoal.store.base import Conflict, Deposed, StoreUnavailable
from shoal.store.memory import KINDS, ViewStore, _first_line, _row_name

log = logging.getLogger("shoal.store.etcd")

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
# Commits that write these kinds also compare and bump one key (`m/serial`): they are
# serialised across managers, so that what the API checks on its view before such a write --
# a name not taken, a subnet, VIP, port or VNI not given -- still holds when it commits.
SERIAL_KINDS = frozenset({"service", "network", "config", "secret", "cluster"})
MAX_TXN_BYTES = 1 << 20  # under etcd's default --max-request-bytes (1.5 MiB)
PAGE = 5000  # keys per range request when loading


class EtcdError(StoreUnavailable):
    """etcd did not answer, or refused a request."""


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def _prefix_end(key: bytes) -> bytes:
    """The end of the range of keys that start with `key` (etcd's convention)."""
    b = bytearray(key)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[:i + 1])
    return b"\0"


@dataclass
class Endpoint:
    """Where etcd answers: ``http(s)://host:port`` (and `more` members of the same etcd
    cluster, tried in turn when one does not answer), with client TLS for https."""
    url: str
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    timeout: float = 10.0
    more: tuple[str, ...] = ()


class EtcdClient:
    """A small client of etcd's v3 JSON gateway: range, txn, put (one connection, reopened
    when it breaks; on the next member when the one in use does not answer)."""

    def __init__(self, ep: Endpoint):
        self.urls = [ep.url, *ep.more]
        for url in self.urls:
            u = urllib.parse.urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"etcd endpoint {url!r}: give http://HOST:PORT or https://HOST:PORT")
        self.ep = ep
        self._i = 0
        self._conn: Optional[http.client.HTTPConnection] = None

    @property
    def url(self) -> str:
        """The member in use."""
        return self.urls[self._i]

    def endpoint(self) -> Endpoint:
        """The endpoint, the member in use first (for another connection: the watch)."""
        return replace(self.ep, url=self.url, more=tuple(u for u in self.urls if u != self.url))

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            u = urllib.parse.urlsplit(self.url)
            host, port = u.hostname or "", u.port or 2379
            if u.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.ep.ca)
                if self.ep.cert:
                    ctx.load_cert_chain(self.ep.cert, self.ep.key)
                self._conn = http.client.HTTPSConnection(host, port, timeout=self.ep.timeout, context=ctx)
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.ep.timeout)
        return self._conn

    def call(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        # a kept-alive connection the server closed: once more on a new one; then each other member
        attempts = len(self.urls) + 1
        for attempt in range(attempts):
            conn = self._connect()
            try:
                conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt == attempts - 1:
                    raise EtcdError(f"etcd at {', '.join(self.urls)} does not answer: {e}") from None
                if attempt:
                    self._i = (self._i + 1) % len(self.urls)
                continue
            if resp.status != 200:
                try:
                    msg = json.loads(raw).get("message") or json.loads(raw).get("error")
                except ValueError:
                    msg = raw[:200].decode(errors="replace")
                raise EtcdError(f"etcd at {self.url}: {path}: {msg}")
            return json.loads(raw)
        raise AssertionError("unreachable")

    def range_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, mod revision) of every key under `prefix`, in pages, all at one revision."""
        start, end, rev = prefix, _prefix_end(prefix), 0
        while True:
            body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(end), "limit": PAGE}
            if rev:
                body["revision"] = rev
            r = self.call("/v3/kv/range", body)
            rev = rev or int(r["header"]["revision"])
            kvs = r.get("kvs") or []
            for kv in kvs:
                yield _unb64(kv["key"]), _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0))
            if not r.get("more") or not kvs:
                return
            start = _unb64(kvs[-1]["key"]) + b"\0"

    def get(self, key: bytes) -> Optional[tuple[bytes, int]]:
        r = self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = r.get("kvs") or []
        return (_unb64(kvs[0].get("value", "")), int(kvs[0].get("mod_revision", 0))) if kvs else None

    def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key under `prefix`; how many there were."""
        r = self.call("/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})
        return int(r.get("deleted", 0))

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": _b64(b"\0"), "limit": 1})["header"]["revision"])

    def txn(self, compare: list[dict], success: list[dict]) -> tuple[bool, int, list[dict]]:
        r = self.call("/v3/kv/txn", {"compare": compare, "success": success})
        return bool(r.get("succeeded")), int(r["header"]["revision"]), r.get("responses") or []

    # -- membership (the members Shoal runs itself: shoal/manager/etcd_member.py) ----------
    # Member IDs are uint64: etcd's JSON gateway writes them as strings, and so do we.
    def status(self) -> dict:
        """This member's status (answered by a learner too: `isLearner`)."""
        return self.call("/v3/maintenance/status", {})

    def members(self) -> list[dict]:
        return self.call("/v3/cluster/member/list", {}).get("members") or []

    def member_add(self, peer_url: str, learner: bool = True) -> tuple[dict, list[dict]]:
        """(the new member, every member). A learner takes no part in quorum until promoted."""
        r = self.call("/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": learner})
        return r["member"], r.get("members") or []

    def member_promote(self, member_id: str) -> None:
        self.call("/v3/cluster/member/promote", {"ID": member_id})

    def member_remove(self, member_id: str) -> None:
        self.call("/v3/cluster/member/remove", {"ID": member_id})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def watch(self, prefix: bytes, start_revision: int, on_events: Callable[[list[dict], int], None],
              stop: threading.Event, conns: Optional[list] = None) -> None:
        """Stream the events under `prefix` from `start_revision` to `on_events(events, revision)`
        until the stream breaks (EtcdError, or CompactedError when that history is gone) or
        `stop` is set. Runs on its own connection (the stream holds it)."""
        c = EtcdClient(self.endpoint())
        conn = c._connect()
        if conns is not None:
            conns.append(conn)  # so that the stream can be broken from another thread
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix)),
                                   "start_revision": start_revision}}
        try:
            conn.request("POST", "/v3/watch", json.dumps(body).encode(), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise EtcdError(f"etcd at {c.url}: watch: HTTP {resp.status}")
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet cluster sends nothing for long
            while not stop.is_set():
                line = resp.readline()
                if not line:
                    raise EtcdError(f"etcd at {c.url}: the watch stream ended")
                msg = json.loads(line)
                if "error" in msg:
                    raise EtcdError(f"etcd at {c.url}: watch: {msg['error'].get('message')}")
                r = msg.get("result") or {}
                if int(r.get("compact_revision", 0) or 0):
                    raise CompactedError(f"etcd compacted the history before revision {start_revision}")
                if r.get("canceled"):
                    raise EtcdError(f"etcd at {c.url}: the watch was canceled: {r.get('cancel_reason')}")
                if r.get("events"):
                    on_events(r["events"], int(r["header"]["revision"]))
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise EtcdError(f"etcd at {c.url}: watch: {e}") from None
        finally:
            c.close()


class CompactedError(EtcdError):
    """The history a watch asked for is gone: read the whole prefix again."""


def parse_store_url(url: str) -> Endpoint:
    """``etcd://host:port`` (plain) or ``etcds://host:port?ca=…&cert=…&key=…`` (TLS); several
    members of one etcd cluster as ``etcd://h1:2379,h2:2379,h3:2379``; etcd's own ``http://``
    and ``https://`` forms are taken too."""
    bad = ValueError(f"store {url!r}: give sqlite, etcd (a member Shoal runs), etcd://HOST:PORT[,HOST:PORT…] or "
                     "etcds://HOST:PORT[,HOST:PORT…]?ca=FILE&cert=FILE&key=FILE")
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("etcd", "etcds", "http", "https") or not u.netloc:
        raise bad
    q = dict(urllib.parse.parse_qsl(u.query))
    scheme = "https" if u.scheme in ("etcds", "https") else "http"
    urls = []
    for member in u.netloc.split(","):
        m = urllib.parse.urlsplit(f"//{member}")
        try:
            port = m.port or 2379
        except ValueError:
            raise bad from None
        if not m.hostname:
            raise bad
        urls.append(f"{scheme}://{m.hostname}:{port}")
    return Endpoint(urls[0], ca=q.get("ca"), cert=q.get("cert"), key=q.get("key"), more=tuple(urls[1:]))


class EtcdStore(ViewStore):
    def __init__(self, endpoint: Endpoint | str, prefix: str = "/shoal/"):
        super().__init__()
        ep = parse_store_url(endpoint) if isinstance(endpoint, str) else endpoint
        self.client = EtcdClient(ep)
        self.prefix = prefix.encode()
        self._modrev: dict[tuple[str, str], int] = {}  # (kind, id) -> mod revision the view has
        self._seen = 0  # the revision the view has applied everything up to (own and others')
        self._remote_specs: dict[str, str] = {}  # spec rows other writers stored, by key
        # While this manager leads: (leader key, its create revision). Every commit then also
        # checks that the key is still the one this manager created (see leadership.py), so a
        # deposed leader's writes are refused (Deposed) even before it knows.
        self.fence: Optional[tuple[bytes, int]] = None
        self._serial_rev = 0  # the revision of the last serialised commit the view has applied
        self._load()

    # -- keys --------------------------------------------------------------------
    def _okey(self, kind: str, obj_id: str) -> bytes:
        return self.prefix + f"o/{kind}/{obj_id}".encode()

    def _skey(self, key: str) -> bytes:
        return self.prefix + f"s/{key}".encode()

    def _mkey(self, key: str) -> bytes:
        return self.prefix + f"m/{key}".encode()

    # -- loading -----------------------------------------------------------------
    def _load(self) -> None:
        self.rev = self._seen = self.client.revision()
        got = self.client.get(self._mkey("serial"))
        self._serial_rev = got[1] if got else 0
        plen = len(self.prefix) + 2
        self._spec_rows = {k[plen:].decode(): v.decode() for k, v, _r in self.client.range_prefix(self.prefix + b"s/")}
        bad: list[tuple[str, str, str, str, int]] = []
        for k, v, mod in self.client.range_prefix(self.prefix + b"o/"):
            kind, _, obj_id = k[plen:].decode().partition("/")
            if kind not in KINDS:
                continue
            data, spec_key = self._split(kind, v.decode())
            try:
                obj = self._decode(kind, data, spec_key)
            except ValueError as e:
                bad.append((kind, obj_id, v.decode(), _first_line(e), mod))
                continue
            self._index(kind, obj)
            self._modrev[(kind, obj_id)] = mod
        unused = [key for key in self._spec_rows if key not in self._specs]
        self._spec_rows = None
        for e in self._specs.values():
            e.stored = True
        self._spec_touched.clear()
        if bad:
            self._quarantine(bad)
        if unused:
            self._send([], [{"request_delete_range": {"key": _b64(self._skey(k))}} for k in unused])

    @staticmethod
    def _split(kind: str, value: str) -> tuple[str, Optional[str]]:
        if kind == "task":
            spec_key, _, data = value.partition("\n")
            return data, spec_key or None
        return value, None

    def _quarantine(self, bad: list[tuple[str, str, str, str, int]]) -> None:
        now = time.time()
        for kind, obj_id, value, error, mod in bad:
            q = json.dumps({"kind": kind, "id": obj_id, "data": value, "error": error, "at": now})
            self.client.txn([{"key": _b64(self._okey(kind, obj_id)), "target": "MOD", "result": "EQUAL",
                              "mod_revision": str(mod)}],
                            [{"request_put": {"key": _b64(self.prefix + f"q/{kind}/{obj_id}".encode()),
                                              "value": _b64(q)}},
                             {"request_delete_range": {"key": _b64(self._okey(kind, obj_id))}}])
            log.error("store: %s %s (%s) does not load and was set aside under %sq/: %s",
                      kind, obj_id, _row_name(value), self.prefix.decode(), error)

    def quarantined(self) -> list[dict]:
        out = []
        for _k, v, _r in self.client.range_prefix(self.prefix + b"q/"):
            d = json.loads(v)
            out.append({"kind": d["kind"], "id": d["id"], "error": d["error"], "at": d["at"]})
        return sorted(out, key=lambda d: d["at"])

    # -- the backend -------------------------------------------------------------
    def _commit(self, wrote: bool) -> None:
        new, gone = self._spec_changes()
        ops: list[dict] = [{"request_put": {"key": _b64(self._skey(k)), "value": _b64(data)}} for k, _n, data in new]
        compare: list[dict] = []
        written: list[tuple[str, str]] = []
        for (kind, obj_id), row in self._rows.items():
            key = _b64(self._okey(kind, obj_id))
            compare.append({"key": key, "target": "MOD", "result": "EQUAL",
                            "mod_revision": str(self._modrev.get((kind, obj_id), 0))})
            if row is None:
                ops.append({"request_delete_range": {"key": key}})
            else:
                value = f"{row[5]}\n{row[4]}" if kind == "task" else row[4]
                ops.append({"request_put": {"key": key, "value": _b64(value)}})
            written.append((kind, obj_id))
        ops += [{"request_delete_range": {"key": _b64(self._skey(k))}} for k in gone]
        serial = any(kind in SERIAL_KINDS for kind, _ in written)
        self._rows = {}
        if not ops:
            return
        rev, rev_of = self._send(compare, ops, serial)
        for k in written:
            if self._objects[k[0]].get(k[1]) is None:
                self._modrev.pop(k, None)
            else:
                self._modrev[k] = rev_of[_b64(self._okey(*k))]
        self._seen = max(self._seen, rev)
        if wrote:
            self.rev = max(self.rev + 1, rev)

    def _send(self, compare: list[dict], ops: list[dict], serial: bool = False) -> tuple[int, dict[str, int]]:
        """Commit `ops` in as few etcd transactions as etcd takes; the compares of the objects
        each part writes go with it (and, `serial`, the serial key's: every part compares and
        bumps it). Returns the last revision, and the revision each key was written at (its
        part's)."""
        by_key = {c["key"]: c for c in compare}
        rev_of: dict[str, int] = {}
        serial_key = _b64(self._mkey("serial"))
        rev = 0
        i = 0
        while i < len(ops):
            part, size = [], 0
            # (of the 128 compares and operations etcd takes, two are kept: the leader's
            # fence and the serial key)
            while i < len(ops) and len(part) < MAX_TXN_OPS - 2 and (not part or size < MAX_TXN_BYTES):
                op = ops[i]
                size += len(next(iter(op.values())).get("value", "")) + 100
                part.append(op)
                i += 1
            conds = [by_key[k] for op in part if (k := next(iter(op.values()))["key"]) in by_key]
            fence = self.fence
            if fence is not None:
                conds.append({"key": _b64(fence[0]), "target": "CREATE", "result": "EQUAL",
                              "create_revision": str(fence[1])})
            if serial:
                conds.append({"key": serial_key, "target": "MOD", "result": "EQUAL",
                              "mod_revision": str(self._serial_rev)})
                part = [*part, {"request_put": {"key": serial_key, "value": _b64(str(time.time()))}}]
            ok, rev, _ = self.client.txn(conds, part)
            if not ok:
                if fence is not None and self._deposed(fence):
                    raise Deposed("this manager is no longer the cluster's leader: its write was refused")
                if serial and self._serial_moved():
                    raise Conflict("another manager changed the cluster's services, networks, configs or "
                                   "secrets at the same moment")
                raise Conflict("another writer changed an object this transaction writes (etcd compare failed)")
            if serial:
                self._serial_rev = rev
            for op in part:
                rev_of[next(iter(op.values()))["key"]] = rev
        return rev, rev_of

    def _serial_moved(self) -> bool:
        got = self.client.get(self._mkey("serial"))
        return (got[1] if got else 0) != self._serial_rev

    # -- other writers' commits ---------------------------------------------------------
    async def follow(self) -> None:
        """Apply what other writers commit, for as long as the manager runs (see the module's
        docstring); a broken stream is opened again after reading the whole prefix."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
                try:
                    self._resync()
                except EtcdError as e:
                    log.warning("cannot read the store again (%s); retrying", e)
                    delay = min(5.0, delay * 2)
                    continue
            stop, conns = threading.Event(), []
            ended: asyncio.Future = loop.create_future()
            start = self._seen + 1

            def to_loop(fn: Callable, *args: Any) -> None:
                if not stop.is_set():
                    try:
                        loop.call_soon_threadsafe(fn, *args)
                    except RuntimeError:  # the loop is gone (the manager stopped)
                        stop.set()

            def on_events(events: list[dict], rev: int) -> None:
                to_loop(self._apply_remote, events, rev)

            def run() -> None:
                err: Optional[Exception] = None
                try:
                    self.client.watch(self.prefix, start, on_events, stop, conns)
                except EtcdError as e:
                    err = e
                to_loop(lambda: ended.done() or ended.set_result(err))

            threading.Thread(target=run, name="etcd-watch", daemon=True).start()
            try:
                err = await ended
            except asyncio.CancelledError:
                stop.set()
                for conn in conns:
                    if conn.sock is not None:
                        try:
                            conn.sock.shutdown(2)  # SHUT_RDWR: the thread's read returns
                        except OSError:
                            pass
                raise
            if not stop.is_set():
                log.warning("following the store's other writers: %s; reading the store again", err)
                delay = 0.5 if delay == 0 else min(5.0, delay * 2)

    def _resync(self) -> None:
        """Read the whole prefix and apply its difference with the view (after a broken or
        compacted watch): as if each difference had come as an event."""
        events: list[dict] = []
        seen: set[tuple[str, str]] = set()
        got = self.client.get(self._mkey("serial"))  # before the objects: never ahead of them
        if got:
            events.append({"type": "PUT", "kv": {"key": _b64(self._mkey("serial")), "mod_revision": str(got[1])}})
        rev = self.client.revision()
        plen = len(self.prefix) + 2
        for k, v, mod in self.client.range_prefix(self.prefix + b"o/"):
            kind, _, oid = k[plen:].decode().partition("/")
            seen.add((kind, oid))
            if self._modrev.get((kind, oid)) != mod:
                events.append({"type": "PUT", "kv": {"key": _b64(k), "value": _b64(v), "mod_revision": str(mod)}})
        for kind, oid in [k for k in self._modrev if k not in seen]:
            events.append({"type": "DELETE", "kv": {"key": _b64(self._okey(kind, oid)), "mod_revision": str(rev)},
                           "force": True})
        self._apply_remote(events, rev)

    def _apply_remote(self, events: list[dict], rev: int) -> None:
        """Apply other writers' events to the view, as a commit of this store's would be."""
        if self._in_txn:  # a transaction of ours is open (across an await): after it
            asyncio.get_running_loop().call_later(0.005, self._apply_remote, events, rev)
            return
        changes: list = []
        plen = len(self.prefix)
        for ev in events:
            kv = ev["kv"]
            rel = _unb64(kv["key"])[plen:].decode()
            mod = int(kv.get("mod_revision", 0))
            deleted = ev.get("type") == "DELETE"
            if rel.startswith("s/"):  # a spec row: kept for the tasks that follow it
                skey = rel[2:]
                e = self._specs.get(skey)
                if deleted:
                    self._remote_specs.pop(skey, None)
                    if e is not None:
                        e.stored = False  # written again with the next task of ours that uses it
                else:
                    self._remote_specs[skey] = _unb64(kv.get("value", "")).decode()
                    if e is not None:
                        e.stored = True
                continue
            if rel == "m/serial":  # another manager's serialised commit (its objects come with it)
                self._serial_rev = max(self._serial_rev, mod)
                continue
            if not rel.startswith("o/"):
                continue
            kind, _, oid = rel[2:].partition("/")
            if kind not in KINDS:
                continue
            key = (kind, oid)
            old = self._objects[kind].get(oid)
            if deleted:
                if old is None or (self._modrev.get(key, 0) >= mod and not ev.get("force")):
                    continue
                self._unindex(kind, oid)
                self._modrev.pop(key, None)
                changes.append((old, None))
                continue
            if self._modrev.get(key, 0) >= mod:
                continue  # ours, or older than what the view has
            data, spec_key = self._split(kind, _unb64(kv.get("value", "")).decode())
            try:
                obj = self._decode_remote(kind, data, spec_key)
            except (ValueError, EtcdError) as e:
                log.error("store: %s %s written by another manager does not load: %s", kind, oid, _first_line(e))
                continue
            self._index(kind, obj)
            self._modrev[key] = mod
            changes.append((old, obj))
        for e in [e for e in self._spec_touched if e.refs <= 0]:
            self._drop_spec(e)
        self._spec_touched.clear()
        self._seen = max(self._seen, rev)
        if not changes:
            return
        self.rev = max(self.rev + 1, rev)
        self._notify()
        for fn in self._observers:
            try:
                fn(changes)
            except Exception:  # an observer never undoes a commit
                log.exception("store observer failed")

    def _decode_remote(self, kind: str, data: str, spec_key: Optional[str]):
        if spec_key and spec_key not in self._specs and spec_key not in self._remote_specs:
            got = self.client.get(self._skey(spec_key))  # its event came before ours was watched
            if got is not None:
                self._remote_specs[spec_key] = got[0].decode()
        self._spec_rows = self._remote_specs
        try:
            return self._decode(kind, data, spec_key)
        finally:
            self._spec_rows = None

    def _deposed(self, fence: tuple[bytes, int]) -> bool:
        r = self.client.call("/v3/kv/range", {"key": _b64(fence[0])})
        kvs = r.get("kvs") or []
        return not kvs or int(kvs[0].get("create_revision", 0)) != fence[1]

    def _read_row(self, kind: str, obj_id: str) -> Optional[tuple[str, Optional[str]]]:
        got = self.client.get(self._okey(kind, obj_id))
        if got is None:
            self._modrev.pop((kind, obj_id), None)
            return None
        self._modrev[(kind, obj_id)] = got[1]
        data, spec_key = self._split(kind, got[0].decode())
        if spec_key and spec_key not in self._specs:  # a spec another writer stored
            spec = self.client.get(self._skey(spec_key))
            self._spec_rows = {spec_key: spec[0].decode()} if spec else {}
            try:
                self._decode(kind, data, spec_key)
            finally:
                self._spec_rows = None
        return data, spec_key

    # -- meta ---------------------------------------------------------------------
    def meta_get(self, key: str) -> Optional[bytes]:
        got = self.client.get(self._mkey(key))
        return got[0] if got else None

    def meta_set(self, key: str, value: bytes) -> None:
        self.client.txn([], [{"request_put": {"key": _b64(self._mkey(key)), "value": _b64(value)}}])

    def close(self) -> None:
        self.client.close()
