"""`shoal init|join|join-token|leave|start|stop|daemon|unlock|unlock-key|update|info`:
the cluster and this node's place in it (Docker's `swarm` commands)."""
from __future__ import annotations

import os
import sys
import time

import click

from shoal.cli.api_client import ApiFailure
from shoal.cli.main import Ctx, cli
from shoal.paths import DEFAULT_PORT


def _fail(msg: str) -> None:
    click.echo(f"Error: {msg}", err=True)
    sys.exit(1)


def _duration(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    from shoal.units import parse_duration  # (decimal and fractions: not for every command's start-up)
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(f"{what}: {e}") from None


def _metrics_addr(obj: Ctx, value: str | None, record: bool = True) -> None:
    """Check `--metrics-addr` (before anything else is done), or record it for this node's daemon."""
    if value is None:
        return
    from shoal.metrics_listener import parse_addr, record_addr
    try:
        record_addr(obj.layout, value) if record else parse_addr(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--metrics-addr") from None


def _human(seconds: float) -> str:
    for unit, n in (("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


@cli.command()
@click.option("--advertise-addr", default=None,
              help="Address other nodes reach this manager on (default: the default route's interface).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Manager API port (TLS).")
@click.option("--autolock", is_flag=True, help="Keep the cluster key encrypted; `shoal unlock` after each restart.")
@click.option("--cert-expiry", default=None, help="Validity of node certificates (default 2160h = 90 days).")
@click.option("--dispatcher-heartbeat", default=None, help="Period of node heartbeats (default 2s).")
@click.option("--data-path-port", default=None, type=click.IntRange(1024, 49151),
              help="UDP port of the overlay's VXLAN traffic between nodes (default 4789).")
@click.option("--metrics-addr", default=None,
              help="Where this node serves Prometheus metrics at /metrics (HOST:PORT, default 127.0.0.1:9323; off: none).")
@click.option("--store", default="sqlite", show_default=True,
              help="Where the cluster's state lives: sqlite (a file in the data dir); etcd (an etcd member "
                   "Shoal runs for each manager: several managers); or an etcd you run: etcd://HOST:PORT[,HOST:PORT…], "
                   "etcds://HOST:PORT[,…]?ca=FILE&cert=FILE&key=FILE (TLS).")
@click.option("--force-new-cluster", is_flag=True,
              help="On a manager of a cluster that lost its quorum for good: this manager alone forms the "
                   "cluster again, with its state (the other managers must join again).")
@click.pass_obj
def init(obj: Ctx, advertise_addr: str | None, port: int, autolock: bool, cert_expiry: str | None,
         dispatcher_heartbeat: str | None, data_path_port: int | None, metrics_addr: str | None,
         store: str, force_new_cluster: bool) -> None:
    """Create a cluster with this node as its manager, and start the daemon."""
    from shoal.bootstrap import AlreadyInCluster, BadStore, StoreUnavailable, create_cluster, daemon_pid, leave_node, \
        read_cluster, start_daemon, stop_daemon
    if force_new_cluster:
        _force_new_cluster(obj)
        return
    _metrics_addr(obj, metrics_addr, record=False)
    if read_cluster(obj.layout) is None and daemon_pid(obj.layout):
        stop_daemon(obj.layout)  # a daemon waiting for a cluster: this one is made here
    try:
        info = create_cluster(obj.layout, advertise_addr, port, autolock,
                              cert_expiry=_duration(cert_expiry, "--cert-expiry"),
                              heartbeat_period=_duration(dispatcher_heartbeat, "--dispatcher-heartbeat"),
                              data_path_port=data_path_port, store=store)
    except BadStore as e:
        raise click.BadParameter(str(e), param_hint="--store") from None
    except (AlreadyInCluster, StoreUnavailable) as e:
        _fail(str(e))
    _metrics_addr(obj, metrics_addr)
    try:
        start_daemon(obj.layout)
        if info.get("unlock_key"):
            # The new daemon found the cluster key sealed; the key is never stored, so hand it over
            # once (as Swarm's `init --autolock` leaves the manager unlocked until its next restart).
            obj.api.post("/v1/unlock", {"key": info["unlock_key"]})
        _wait_for_node(obj)
    except (RuntimeError, ApiFailure) as e:
        # A cluster that did not come up is not left half made: the daemon stopped, the files gone
        # (a later init starts afresh instead of failing on "address already in use").
        leave_node(obj.layout, info["node_id"])
        _fail(f"{getattr(e, 'message', e)} (the cluster was not created)")
    click.echo(f"Shoal cluster initialized: current node ({info['node_id']}) is now a manager.")
    click.echo(f"Advertise address: {info['advertise_addr']} ({info['advertise_addr_chosen']}); "
               f"manager API on port {port} (TLS); data dir {obj.layout.root}")
    click.echo("\nTo add a worker to this cluster, run the following command:\n")
    token = obj.api.post("/v1/join-tokens/worker", {})["token"]
    click.echo(f"    shoal join --token {token} {info['advertise_addr']}:{port}\n")
    if info.get("unlock_key"):
        click.echo("To unlock a manager after it restarts, run the `shoal unlock`\n"
                   "command and provide the following key:\n")
        click.echo(f"    {info['unlock_key']}\n")
        click.echo("Please remember to store this key in a password manager, since without it you\n"
                   "will not be able to restart the manager.")


def _force_new_cluster(obj: Ctx) -> None:
    from shoal.bootstrap import AlreadyInCluster, force_new_cluster, start_daemon, stop_daemon
    try:
        info = force_new_cluster(obj.layout)
    except AlreadyInCluster as e:
        _fail(str(e))
    stop_daemon(obj.layout)
    try:
        start_daemon(obj.layout)
        _wait_for_node(obj, timeout=60, node_id=info["node_id"])
    except (RuntimeError, ApiFailure) as e:
        _fail(f"{getattr(e, 'message', e)} (see {obj.layout.log})")
    click.echo(f"This manager ({info['node_id']}) now forms a new cluster alone, with the cluster's state: its etcd "
               "member is the only one.\nThe other managers are gone from etcd: remove them (`shoal node rm "
               "--force`), then have managers join again (`shoal join-token manager`).")


def _wait_for_node(obj: Ctx, timeout: float = 30.0, node_id: str = "") -> None:
    """`init` (and a manager's `join`) returns once this node's agent has registered: every
    command works from then on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            nodes = obj.api.get("/v1/nodes")
        except (ApiFailure, OSError):
            nodes = []  # the manager is still starting
        if any(n["state"] == "ready" and (not node_id or n.get("id") == node_id) for n in nodes):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the node's agent did not register within {timeout:.0f}s; its log ({obj.layout.log}) "
                       "says what it was waiting for")


@cli.command()
@click.option("--token", required=True, help="The join token (`shoal join-token worker` on a manager).")
@click.option("--advertise-addr", default=None,
              help="Address other nodes reach this node on (default: the one it reaches the manager from).")
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]), default="active",
              show_default=True)
@click.option("--metrics-addr", default=None,
              help="Where this node serves Prometheus metrics at /metrics (HOST:PORT, default 127.0.0.1:9323; off: none).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int,
              help="With a manager token: the port this manager's API listens on (TLS).")
@click.argument("manager")
@click.pass_obj
def join(obj: Ctx, token: str, advertise_addr: str | None, availability: str, metrics_addr: str | None,
         port: int, manager: str) -> None:
    """Join a cluster through one of its managers (ADDR[:PORT]), as a worker or, with a manager
    token, as a manager (the cluster's state must then be in etcd: `init --store`)."""
    from shoal.node_files import daemon_pid, read_cluster
    _metrics_addr(obj, metrics_addr, record=False)
    if read_cluster(obj.layout) is None and daemon_pid(obj.layout):
        _metrics_addr(obj, metrics_addr)
        if metrics_addr is not None:
            click.echo("Note: the daemon runs already; --metrics-addr takes effect at its next start.", err=True)
        # the daemon runs already (`shoal start`), waiting for a cluster: it joins itself
        r = obj.api.post("/v1/local/join", {"token": token, "manager": manager, "advertise_addr": advertise_addr,
                                            "availability": availability, "port": port})
        if r.get("role") == "manager":  # the waiting daemon has no manager in it: start it again as one
            from shoal.bootstrap import start_daemon, stop_daemon
            stop_daemon(obj.layout)
            start_daemon(obj.layout)
            _wait_for_node(obj, node_id=r["node_id"])
        click.echo(f"This node joined a cluster as a {r.get('role', 'worker')}.")
        return
    from shoal.bootstrap import AlreadyInCluster, JoinError, join_cluster, leave_node, start_daemon
    try:
        info = join_cluster(obj.layout, token, manager, advertise_addr, availability, port)
    except (AlreadyInCluster, JoinError) as e:
        _fail(str(e))
    _metrics_addr(obj, metrics_addr)
    try:
        start_daemon(obj.layout)
        if info["role"] == "manager":
            _wait_for_node(obj, node_id=info["node_id"])
        else:
            deadline = time.monotonic() + 30
            while not obj.api.get("/v1/info").get("registered"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node's agent did not reach a manager within 30s; see {obj.layout.log}")
                time.sleep(0.02)
    except (RuntimeError, ApiFailure) as e:
        leave_node(obj.layout, info["node_id"])
        _fail(f"{getattr(e, 'message', e)} (the node did not join)")
    click.echo(f"This node joined a cluster as a {info['role']}.")


@cli.command("join-token")
@click.option("-q", "--quiet", is_flag=True, help="Only the token.")
@click.option("--rotate", is_flag=True, help="A new token: the old one stops working (joined nodes are not affected).")
@click.argument("role", type=click.Choice(["worker", "manager"]))
@click.pass_obj
def join_token(obj: Ctx, quiet: bool, rotate: bool, role: str) -> None:
    """Print the command a new node runs to join (as `docker swarm join-token`)."""
    r = obj.api.post(f"/v1/join-tokens/{role}", {"rotate": rotate})
    if not r.get("usable", True):
        _fail(r["message"])
    if quiet:
        click.echo(r["token"])
        return
    if rotate:
        click.echo(f"Successfully rotated {role} join token.\n")
    info = obj.api.get("/v1/info")
    managers = r.get("managers") or [f"{info.get('advertise_addr')}:{info.get('port')}"]
    click.echo(f"To add a {role} to this cluster, run the following command:\n")
    click.echo(f"    shoal join --token {r['token']} {managers[0]}\n")


@cli.command()
@click.pass_obj
def start(obj: Ctx) -> None:
    """Start the daemon in the background (after a reboot or `stop`). On a node not in a
    cluster yet, the daemon waits for `shoal join` (as dockerd waits for `swarm join`)."""
    from shoal.bootstrap import read_cluster, start_daemon
    try:
        pid = start_daemon(obj.layout)
    except RuntimeError as e:
        _fail(str(e))
    if read_cluster(obj.layout) is None:
        click.echo(f"shoal daemon running (pid {pid}), not in a cluster yet: `shoal join` joins one, "
                   "`shoal init` makes one")
    else:
        click.echo(f"shoal daemon running (pid {pid})")


@cli.command()
@click.pass_obj
def stop(obj: Ctx) -> None:
    """Stop the daemon; containers keep running and are adopted by the next start."""
    from shoal.bootstrap import stop_daemon
    click.echo("stopped" if stop_daemon(obj.layout) else "not running")


@cli.command()
@click.option("--listen", default="0.0.0.0", show_default=True, help="Address the manager API listens on.")
@click.option("--metrics-addr", default=None,
              help="Serve /metrics here (HOST:PORT or off; default: what init/join recorded, else 127.0.0.1:9323).")
@click.pass_obj
def daemon(obj: Ctx, listen: str, metrics_addr: str | None) -> None:
    """Run this node's daemon in the foreground (for systemd)."""
    from shoal.daemon import main as daemon_main
    from shoal.metrics_listener import parse_addr
    if metrics_addr is not None:
        try:
            parse_addr(metrics_addr)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--metrics-addr") from None
    os.environ.setdefault("SHOAL_DATA_DIR", obj.layout.root)
    daemon_main(obj.layout.root, listen, metrics_addr)


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Required on a manager: the cluster state goes with it.")
@click.pass_obj
def leave(obj: Ctx, force: bool) -> None:
    """Leave the cluster: stop the daemon and every container Shoal runs on this node."""
    from shoal.bootstrap import leave_node, read_cluster, stop_daemon
    info = read_cluster(obj.layout)
    if info is None:
        stop_daemon(obj.layout)  # a daemon waiting for a cluster, if any
        _fail("This node is not part of a cluster")
    if info.get("role", "manager") == "manager" and not force:
        _fail("You are attempting to leave the cluster on a node that is participating as a manager. "
              "Removing the last manager erases all current state of the cluster. Use `--force` to ignore "
              "this message.")
    if info.get("role", "manager") == "manager":
        info = _leave_as_one_of_several(obj, info)
    if info.get("role") == "worker":
        try:
            obj.api.post("/v1/local/leave", {})  # the managers move its tasks at once
        except ApiFailure as e:
            click.echo(f"Warning: {e.message}; the managers will see the node down after its heartbeats stop",
                       err=True)
    leave_node(obj.layout, info["node_id"])
    click.echo("Node left the cluster.")


def _leave_as_one_of_several(obj: Ctx, info: dict) -> dict:
    """A manager that is not the last one leaves as a worker: demoted first (its etcd member
    leaves etcd, the quorum is checked), then its daemon is a worker, which leaves. The last
    manager (or one whose daemon is not running) leaves as it is, with the cluster's state."""
    from shoal.node_files import daemon_pid, read_cluster
    if not daemon_pid(obj.layout):
        return info
    try:
        others = [n for n in obj.api.get("/v1/nodes") if n.get("role") == "manager" and n["id"] != info["node_id"]]
    except ApiFailure:
        return info
    if not others:
        return info
    try:
        obj.api.post(f"/v1/nodes/{info['node_id']}/demote", {})
    except ApiFailure as e:
        _fail(f"{e.message}; this manager stays (demote another manager, or bring the others back, first)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # its daemon becomes a worker (heartbeat, then the change)
        now = read_cluster(obj.layout) or info
        if now.get("role") == "worker":
            return now
        time.sleep(0.2)
    _fail(f"this manager was demoted but its daemon did not become a worker within 60s; see {obj.layout.log}")
    return info


@cli.command()
@click.pass_obj
def unlock(obj: Ctx) -> None:
    """Give the unlock key to an autolocked manager after a restart."""
    key = os.environ.get("SHOAL_UNLOCK_KEY")
    if key is None:
        if sys.stdin.isatty():
            key = click.prompt("Please enter unlock key", hide_input=True)
        else:
            key = sys.stdin.readline().strip()
    obj.api.post("/v1/unlock", {"key": key})


@cli.command("unlock-key")
@click.option("--rotate", is_flag=True, help="Make a new unlock key.")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_obj
def unlock_key(obj: Ctx, rotate: bool, quiet: bool) -> None:
    """Rotate the unlock key of an autolocked cluster (the key itself is never stored)."""
    r = obj.api.post("/v1/unlock-key", {"rotate": rotate})
    if quiet:
        click.echo(r["unlock_key"])
    else:
        click.echo("Successfully rotated manager unlock key.\n\nTo unlock a manager after it restarts, "
                   "run the `shoal unlock`\ncommand and provide the following key:\n")
        click.echo(f"    {r['unlock_key']}\n")


@cli.command()
@click.option("--autolock", type=bool, default=None, help="Turn autolock on (true) or off (false).")
@click.option("--dispatcher-heartbeat", default=None, help="Period of node heartbeats, e.g. 5s.")
@click.option("--cert-expiry", default=None, help="Validity of node certificates, e.g. 2160h (renewed "
                                                  "at 50-80% of it).")
@click.pass_obj
def update(obj: Ctx, autolock: bool | None, dispatcher_heartbeat: str | None, cert_expiry: str | None) -> None:
    """Change cluster settings (autolock, heartbeat period, certificate lifetime)."""
    body = {"autolock": autolock, "dispatcher_heartbeat": _duration(dispatcher_heartbeat, "--dispatcher-heartbeat"),
            "cert_expiry": _duration(cert_expiry, "--cert-expiry")}
    body = {k: v for k, v in body.items() if v is not None}
    if not body:
        _fail("nothing to update: give --autolock, --dispatcher-heartbeat or --cert-expiry")
    r = obj.api.post("/v1/cluster/update", body)
    click.echo("Cluster updated.")
    if r.get("unlock_key"):
        click.echo("To unlock a manager after it restarts, run the `shoal unlock`\n"
                   "command and provide the following key:\n")
        click.echo(f"    {r['unlock_key']}\n")


@cli.command()
@click.pass_obj
def info(obj: Ctx) -> None:
    """The cluster as this node sees it."""
    i = obj.api.get("/v1/info")
    keys = ["cluster_id", "node_id", "role", "advertise_addr", "managers"]
    if i.get("role") == "worker":
        keys += ["registered", "seconds_since_manager"]
    else:
        keys += ["version", "locked", "autolock", "nodes", "services", "tasks"]
    for k in keys:
        v = i.get(k)
        click.echo(f"{k.replace('_', ' ').capitalize()}: {', '.join(v) if isinstance(v, list) else v}")
    if i.get("role") != "worker":
        if i.get("heartbeat_period") is not None:
            click.echo(f"Dispatcher heartbeat: {_human(i['heartbeat_period'])}")
        if i.get("cert_expiry") is not None:
            click.echo(f"Certificate expiry: {_human(i['cert_expiry'])}")
        if i.get("data_path_port") is not None:
            click.echo(f"Data path port: {i['data_path_port']}")
        if i.get("store"):
            click.echo(f"Store: {i['store']}")
        if i.get("etcd_members") is not None:
            ms = i["etcd_members"]
            voting = sum(1 for m in ms if m["voting"])
            click.echo(f"Etcd members (run by the managers): {voting} voting"
                       + (f", {len(ms) - voting} learning (joining)" if len(ms) > voting else "")
                       + f"; a quorum is {voting // 2 + 1}")
        if i.get("etcd_members_error"):
            click.echo(f"Etcd members: unknown ({i['etcd_members_error']})")
        if i.get("quarantined"):
            click.echo(f"Quarantined store rows: {i['quarantined']} (set aside at load: see the manager's log)")
