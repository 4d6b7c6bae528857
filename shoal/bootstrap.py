"""This node's own life cycle: creating a cluster (`init`), joining one (`join`), leaving it,
and the daemon process. Everything here is about the node's data dir and processes; the
cluster itself is reached through the API.

`init` makes the cluster key, the CA, this manager's node and API certificates (their
private keys encrypted under a password derived from the cluster key) and cluster.json.
`join` pins the cluster CA by the digest in the token, makes this node's key and a
certificate signing request, and presents the token; the key never leaves the node.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Optional

from shoal import pki
from shoal.ids import new_id
from shoal.limits import DEFAULT_CERT_EXPIRY
from shoal.node_files import daemon_pid, read_cluster, write_cluster
from shoal.paths import DEFAULT_PORT, Layout


log = logging.getLogger("shoal.bootstrap")


class AlreadyInCluster(Exception):
    pass


class StoreUnavailable(Exception):
    """The cluster store `init --store` names does not answer."""


class BadStore(ValueError):
    """`init --store` names no store Shoal knows."""


class JoinError(Exception):
    pass


class NeedsUnlockKey(JoinError):
    """A manager's keys of an autolocked cluster: the unlock key opens them."""


# -- addresses ---------------------------------------------------------------------------
def local_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                addrs.add(parts[parts.index("inet") + 1].split("/")[0])
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(addrs)


def default_route_address() -> Optional[str]:
    """The source address of the default route's interface (what other machines reach), as
    Swarm chooses when no --advertise-addr is given."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True,
                             timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[out.index("src") + 1] if "src" in out and out.index("src") + 1 < len(out) else None


def advertise_address() -> tuple[str, str]:
    """(address, how it was chosen)."""
    addr = default_route_address()
    if addr:
        return addr, "the address of the default route's interface"
    for a in local_addresses():
        if not a.startswith("127.") and not a.startswith("172.17.") and not a.startswith("10.21"):
            return a, "the first address of this machine (it has no default route)"
    return "127.0.0.1", "loopback: this machine has no other address (no other node can join it)"


# -- init --------------------------------------------------------------------------------

def create_cluster(layout: Layout, advertise_addr: Optional[str], port: int = DEFAULT_PORT,
                   autolock: bool = False, cert_expiry: Optional[float] = None,
                   heartbeat_period: Optional[float] = None, data_path_port: Optional[int] = None,
                   store: str = "sqlite") -> dict:
    from shoal.manager.ca import CertAuthority  # a manager's parts: only init needs them here
    from shoal.manager.keyring import Keyring
    from shoal.store import check_store_spec
    if read_cluster(layout) is not None:
        raise AlreadyInCluster("This node is already part of a cluster. Use \"shoal leave\" to leave it "
                               "and join another one.")
    try:
        store = check_store_spec(store)
    except ValueError as e:
        raise BadStore(str(e)) from None
    if store not in ("sqlite", "etcd"):
        _check_etcd(store)
    os.makedirs(layout.root, exist_ok=True)
    os.chmod(layout.root, 0o700)
    cluster_id, node_id = new_id(), new_id()
    addr, how = (advertise_addr, "given") if advertise_addr else advertise_address()
    keyring = Keyring(layout.cluster_key)
    unlock_key = keyring.create(autolock)
    password = keyring.tls_password()
    lifetime = cert_expiry or DEFAULT_CERT_EXPIRY
    ca = CertAuthority.create(layout, password, cluster_id)
    ca.issue_node_cert(node_id, pki.ROLE_MANAGER, lifetime)
    ca.issue_server_cert(node_id, sorted(set(local_addresses() + [addr])), lifetime)
    if store == "etcd":  # a member of Shoal's own: its CA and certificate, started by the daemon
        from shoal.manager.etcd_member import create_etcd_ca, issue_member_cert, new_member_config
        create_etcd_ca(layout, password)
        issue_member_cert(layout, password, node_id, addr, lifetime)
    info = {"cluster_id": cluster_id, "node_id": node_id, "role": "manager", "advertise_addr": addr,
            "advertise_addr_chosen": how, "port": port, "managers": [f"127.0.0.1:{port}"],
            "created_at": time.time()}
    if cert_expiry:
        info["cert_expiry"] = cert_expiry
    if heartbeat_period:
        info["heartbeat_period"] = heartbeat_period
    if data_path_port:
        info["data_path_port"] = data_path_port
    if store != "sqlite":
        info["store"] = store
    if store == "etcd":
        info["etcd"] = {**new_member_config(node_id, addr), "cluster_token": cluster_id}
    write_cluster(layout, info)
    return {**info, "unlock_key": unlock_key}


def force_new_cluster(layout: Layout) -> dict:
    """`init --force-new-cluster`: etcd's disaster recovery for a cluster that lost its quorum
    for good. This manager's member starts alone as a new etcd cluster with its data (the
    other members are dropped); the daemon must be (re)started. As Swarm's flag of that name."""
    info = read_cluster(layout)
    if info is None or info.get("role") != "manager":
        raise AlreadyInCluster("--force-new-cluster re-forms the cluster around this node, which must be one of "
                               "its managers (this node is " + ("in no cluster)" if info is None else "a worker)"))
    store = info.get("store", "sqlite")
    if store == "sqlite":
        raise AlreadyInCluster("this cluster keeps its state in SQLite on its one manager: there is no quorum to "
                               "lose (`shoal start` starts it)")
    if store != "etcd":
        raise AlreadyInCluster(f"the cluster's etcd ({store}) is not run by Shoal: recover it with etcd's own "
                               "disaster recovery (docs/store.md), then `shoal start`")
    info["etcd"] = {**info["etcd"], "force_new_cluster": True}
    write_cluster(layout, info)
    return info


def _check_etcd(spec: str) -> None:
    """Before anything is made: the etcd the cluster will live in answers."""
    from shoal.store.etcd import EtcdClient, EtcdError, parse_store_url
    client = EtcdClient(parse_store_url(spec))
    try:
        client.revision()
    except EtcdError as e:
        raise StoreUnavailable(f"the cluster store: {e}") from None
    finally:
        client.close()


# -- join --------------------------------------------------------------------------------

class _ManagerConnection(http.client.HTTPSConnection):
    """HTTPS to a manager by address, checking its certificate names the manager API."""

    def __init__(self, addr: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(addr, port, context=context, timeout=timeout)
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        # http.client writes a request's headers and body apart: with Nagle's algorithm the
        # body then waits for the manager's delayed ACK of the headers (40 ms of every join)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server_name = pki.MANAGER_NAME if self._ctx.check_hostname else None
        self.sock = self._ctx.wrap_socket(sock, server_hostname=server_name)


def _request(addr: str, port: int, ctx: ssl.SSLContext, method: str, path: str, body: Optional[dict] = None,
             timeout: float = 10) -> tuple[int, bytes]:
    conn = _ManagerConnection(addr, port, ctx, timeout)
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def split_addr(remote: str) -> tuple[str, int]:
    host, _, port = remote.rpartition(":") if remote.count(":") == 1 else (remote, "", "")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise JoinError(f"invalid manager address {remote!r}: use ADDR[:PORT]") from None


def join_cluster(layout: Layout, token: str, remote: str, advertise_addr: Optional[str] = None,
                 availability: str = "active", port: int = DEFAULT_PORT,
                 key: Optional[pki.ec.EllipticCurvePrivateKey] = None) -> dict:
    """Join the cluster `remote` manages, as the token says (a worker, or a manager: `port` is
    then its API's); cluster.json written, daemon not started. `key`: the node's key, when
    made ahead (a new one otherwise)."""
    if read_cluster(layout) is not None:
        raise AlreadyInCluster("This node is already part of a cluster. Use \"shoal leave\" to leave it "
                               "and join another one.")
    try:
        digest, _ = pki.parse_token(token)
    except pki.PkiError as e:
        raise JoinError(str(e)) from None
    host, remote_port = split_addr(remote)
    # 1. The CA, fetched without trusting anyone, then pinned by the token's digest.
    ca_pem = None
    last: object = None
    for attempt in range(5):
        try:
            status, body = _request(host, remote_port, pki.unverified_context(), "GET", "/v1/join/ca", timeout=5)
            if status == 200:
                ca_pem = body
                break
            last = f"HTTP {status}: {body[:200].decode(errors='replace')}"
        except OSError as e:
            last = e
        time.sleep(min(2.0, 0.2 * 2 ** attempt))
    if ca_pem is None:
        raise JoinError(f"cannot reach a manager at {host}:{remote_port}: {last}")
    if not pki.same_secret(pki.ca_digest(ca_pem), digest):
        raise JoinError(f"the manager at {host}:{remote_port} is not the one the token is for "
                        "(its CA certificate does not match the token's digest)")
    # 2. This node's key, made here; the manager signs its CSR if the token is good.
    key = key or pki.new_key()
    addr = advertise_addr or _source_address_towards(host)
    ctx = pki.client_context(None, ca_data=ca_pem.decode())
    try:
        status, body = _request(host, remote_port, ctx, "POST", "/v1/join", {
            "token": token.strip(), "csr": pki.make_csr(key).decode(), "hostname": socket.gethostname(),
            "advertise_addr": addr or "", "availability": availability}, timeout=15)
    except ssl.SSLCertVerificationError as e:
        raise JoinError(f"the peer at {host}:{remote_port} is not a manager of that cluster: {e}") from None
    except OSError as e:
        raise JoinError(f"joining through {host}:{remote_port} failed: {e}") from None
    answer = json.loads(body) if body else {}
    if status != 200:
        raise JoinError(answer.get("message") or f"HTTP {status}")
    cert = answer["cert"].encode()
    pki.verify_chain(cert, ca_pem)
    info = pki.cert_info(cert)
    role = answer.get("role", "worker")
    want = pki.ROLE_MANAGER if role == "manager" else pki.ROLE_WORKER
    if info.common_name != answer["node_id"] or info.role != want or (role == "manager") != ("manager" in answer):
        raise JoinError("the manager answered with a certificate for another identity")
    os.makedirs(layout.root, exist_ok=True)
    os.chmod(layout.root, 0o700)
    os.makedirs(os.path.dirname(layout.ca_cert), exist_ok=True)
    pki.write_file(layout.ca_cert, ca_pem, 0o644)
    pki.write_pair(pki.KeyPair(cert, pki.key_pem(key)), layout.node_cert, layout.node_key)
    managers = list(dict.fromkeys(list(answer.get("managers") or []) + [f"{host}:{remote_port}"]))
    out = {"cluster_id": answer["cluster_id"], "node_id": answer["node_id"], "role": "worker",
           "advertise_addr": addr or "", "managers": managers, "created_at": time.time()}
    if role == "manager":
        try:
            _become_manager(layout, answer, addr or "")
        except Exception:
            forget_cluster(layout)
            raise
        out = _as_manager(out, answer, port)
    write_cluster(layout, out)
    return out


def _as_manager(info: dict, answer: dict, port: int) -> dict:
    """cluster.json of a node that became a manager (joined as one, or promoted)."""
    out = {**info, "role": "manager", "port": port, "managers": [f"127.0.0.1:{port}"]}
    if answer["manager"].get("store", "sqlite") != "sqlite":
        out["store"] = answer["manager"]["store"]
    if "etcd" in answer["manager"]:
        from shoal.manager.etcd_member import new_member_config
        etcd = answer["manager"]["etcd"]
        out["etcd"] = {**new_member_config(answer["node_id"], info.get("advertise_addr", ""), etcd["initial_cluster"]),
                       "cluster_token": answer["cluster_id"], "member_id": etcd["member_id"]}
    return out


def become_manager(layout: Layout, info: dict, answer: dict, unlock_key: Optional[str] = None) -> dict:
    """A worker promoted (`node promote`): a manager's keys from what its promotion answered
    (as a manager's join), its own certificates issued here; the new cluster.json. The daemon
    then starts again as a manager. In an autolocked cluster the keys need `unlock_key`
    (NeedsUnlockKey without it: `shoal unlock` on the node gives it)."""
    _become_manager(layout, answer, info.get("advertise_addr", ""), unlock_key)
    out = _as_manager(info, answer, int(info.get("port") or DEFAULT_PORT))
    write_cluster(layout, out)
    return out


def become_worker(layout: Layout, info: dict, managers: list[str], password: bytes,
                  lifetime: Optional[float]) -> dict:
    """A manager demoted (`node demote`): a worker's certificate, issued with the cluster CA it
    still holds, then every manager's key and state erased (cluster key, CA keys, store, etcd
    member's data); the new cluster.json. The daemon then starts again as a worker."""
    from shoal.manager.ca import CertAuthority
    ca = CertAuthority(layout, lambda: password, info["cluster_id"])
    pair = pki.issue(ca.pair(), info["node_id"], pki.ROLE_WORKER, info["cluster_id"], lifetime or DEFAULT_CERT_EXPIRY,
                     ca_password=password)  # a worker's key is in clear
    pki.write_pair(pair, layout.node_cert, layout.node_key)
    _erase(layout, ("manager", "etcd"), (layout.manager_cert, layout.manager_key, layout.etcd_ca_cert))
    out = {k: v for k, v in info.items() if k not in ("port", "store", "etcd")}
    out.update({"role": "worker", "managers": managers})
    write_cluster(layout, out)
    return out


def _become_manager(layout: Layout, answer: dict, addr: str, unlock_key: Optional[str] = None) -> None:
    """A manager's keys from what the join answered: the cluster key and the CA's key as the
    cluster keeps them, then this manager's own node and API certificates, issued here."""
    import base64
    from shoal.manager.ca import CertAuthority  # a manager's parts: only a manager's join needs them
    from shoal.manager.keyring import BadUnlockKey, Keyring, Locked
    material = answer["manager"]
    os.makedirs(os.path.dirname(layout.cluster_key), exist_ok=True)
    os.chmod(os.path.dirname(layout.cluster_key), 0o700)
    pki.write_file(layout.cluster_key, base64.b64decode(material["cluster_key"]), 0o600)
    pki.write_file(layout.ca_key, base64.b64decode(material["ca_key"]), 0o600)
    keyring = Keyring(layout.cluster_key)
    try:
        keyring.load()
    except Locked:
        unlock_key = unlock_key or os.environ.get("SHOAL_UNLOCK_KEY")
        if not unlock_key:
            raise NeedsUnlockKey("the cluster is autolocked: give its unlock key to join as a manager "
                                 "(SHOAL_UNLOCK_KEY=… shoal join …)") from None
        try:
            keyring.unlock(unlock_key)
        except BadUnlockKey:
            raise JoinError("invalid unlock key") from None
    password = keyring.tls_password()
    lifetime = float(material.get("cert_expiry") or DEFAULT_CERT_EXPIRY)
    ca = CertAuthority(layout, lambda: password, answer["cluster_id"])
    ca.issue_node_cert(answer["node_id"], pki.ROLE_MANAGER, lifetime)
    ca.issue_server_cert(answer["node_id"], sorted(set(local_addresses() + ([addr] if addr else []))), lifetime)
    etcd = material.get("etcd")
    if etcd:  # the managers run their own etcd: this one's member, with the managers' etcd CA
        from shoal.manager.etcd_member import issue_member_cert
        pki.write_file(layout.etcd_ca_cert, etcd["ca_cert"].encode(), 0o644)
        pki.write_file(layout.etcd_ca_key, base64.b64decode(etcd["ca_key"]), 0o600)
        issue_member_cert(layout, password, answer["node_id"], addr, lifetime)


def _source_address_towards(host: str) -> Optional[str]:
    """The address this machine uses to reach `host` (what the manager will see)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return None


# -- the daemon process ------------------------------------------------------------------

def start_daemon(layout: Layout, wait: Optional[float] = None) -> int:
    """Start the daemon in the background; its pid once its socket answers. If it does not, it is
    stopped again (a failed start must not keep the API port) and the error names its log."""
    pid = daemon_pid(layout)
    if pid:
        return pid
    if wait is None:
        wait = 30.0
        if (read_cluster(layout) or {}).get("store") == "etcd":  # it waits for its etcd member (joining: to vote)
            from shoal.manager.etcd_member import START_TIMEOUT
            wait += START_TIMEOUT
    logf = open(layout.log, "ab")
    env = dict(os.environ, SHOAL_DATA_DIR=layout.root)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "--data-dir", layout.root, "daemon"],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env, close_fds=True)
    start = logf.tell()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Shoal daemon exited with {proc.returncode}: {_last_error(layout.log, start)}; "
                               f"see {layout.log}")
        if os.path.exists(layout.socket) and _answers(layout.socket):
            return proc.pid
        time.sleep(0.05)
    _stop_pid(proc.pid, 10.0)
    raise RuntimeError(f"the Shoal daemon did not answer within {wait:.0f}s (stopped it again); see {layout.log}")


def _last_error(log_path: str, since: int) -> str:
    """The last line of what the daemon wrote since it started (its error, usually)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(since)
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "nothing in its log"


def _answers(sock_path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(sock_path)
        s.sendall(b"GET /v1/info HTTP/1.0\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False
    finally:
        s.close()


def stop_daemon(layout: Layout, timeout: float = 30.0) -> bool:
    pid = daemon_pid(layout)
    if not pid:
        return False
    _stop_pid(pid, timeout)
    return True


def _stop_pid(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    log.warning("the Shoal daemon (pid %d) did not stop within %.0fs: killed", pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # gone before a new daemon is started in its place
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def leave_node(layout: Layout, node_id: str) -> None:
    """Stop the daemon, remove everything Shoal made on this node, forget the cluster."""
    from shoal.agent.cleanup import cleanup_node
    stop_daemon(layout)
    cleanup_node(layout, node_id)
    forget_cluster(layout)


def forget_cluster(layout: Layout) -> None:
    """After `leave`: the node's state goes with it (the last manager's: the cluster's, as in
    Swarm). Store, keys, certificates, task files and cluster.json are removed (a later `init`
    or `join` starts afresh); the daemon's log stays."""
    info = read_cluster(layout)
    if info and info.get("role", "manager") == "manager" and info.get("store", "sqlite") not in ("sqlite", "etcd"):
        _erase_etcd(info)
    # (etcd: this manager's own member's data)
    _erase(layout, ("manager", "certs", "agent", "etcd"), (layout.cluster_file, layout.socket, layout.pidfile))


def _erase(layout: Layout, dirs: tuple[str, ...], files: tuple[str, ...]) -> None:
    import shutil
    for sub in dirs:
        shutil.rmtree(layout.p(sub), ignore_errors=True)
    for path in files:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _erase_etcd(info: dict) -> None:
    """The last manager leaving erases the cluster's state, in etcd as in SQLite (its prefix;
    other clusters' keys in the same etcd stay). Best effort: an etcd that does not answer is
    named, not fatal."""
    from shoal.store import store_prefix
    from shoal.store.etcd import EtcdClient, EtcdError, parse_store_url
    client = EtcdClient(parse_store_url(info["store"]))
    prefix = store_prefix(info["cluster_id"]).encode()
    try:
        for _k, v, _r in client.range_prefix(prefix + b"o/node/"):
            node = json.loads(v)
            if node.get("role") == "manager" and node.get("id") != info.get("node_id"):
                log.info("other managers remain: the cluster's state stays in etcd")
                return
        client.delete_prefix(prefix)
    except EtcdError as e:
        log.warning("the cluster's keys in etcd were not erased: %s", e)
    finally:
        client.close()


def check_unlock_key(answer: dict, unlock_key: str) -> None:
    """Whether `unlock_key` opens the sealed cluster key of a manager's join or promotion
    answer (BadUnlockKey if not), without writing anything of it to the node's files."""
    import base64
    import tempfile
    from shoal.manager.keyring import Keyring
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "cluster.key")
        pki.write_file(path, base64.b64decode(answer["manager"]["cluster_key"]), 0o600)
        Keyring(path).unlock(unlock_key)
