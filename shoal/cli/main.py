"""`shoal`: the command line, shaped like `docker swarm|stack|service|node|config|secret`."""
from __future__ import annotations

import os
import sys

import click

from shoal.cli.api_client import Api, ApiFailure
from shoal.paths import DEFAULT_PORT, Layout
from shoal.paths import data_dir as resolve_data_dir


class Ctx:
    def __init__(self, root: str):
        self.layout = Layout(root)
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.layout)
        return self._api


class ShoalGroup(click.Group):
    """Turns API failures into one clear line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ApiFailure as e:
            click.echo(f"Error: {e.message}", err=True)
            sys.exit(1)


@click.group(cls=ShoalGroup)
@click.option("--data-dir", envvar="SHOAL_DATA_DIR", default=None,
              help="Where this node keeps its state (default /var/lib/shoal; env SHOAL_DATA_DIR).")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """Shoal: deploy compose stacks onto a cluster of Docker Engines, as Docker Swarm mode does."""
    ctx.obj = Ctx(resolve_data_dir(data_dir))


@cli.command()
@click.option("--advertise-addr", default=None, help="Address other nodes reach this manager on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Manager API port (mutual TLS).")
@click.option("--autolock", is_flag=True, help="Keep the cluster key encrypted; `shoal unlock` after each restart.")
@click.pass_obj
def init(obj: Ctx, advertise_addr: str | None, port: int, autolock: bool) -> None:
    """Create a one-node cluster here and start the manager and agent."""
    from shoal.bootstrap import AlreadyInCluster, create_cluster, start_daemon
    try:
        info = create_cluster(obj.layout, advertise_addr, port, autolock)
    except AlreadyInCluster as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    try:
        start_daemon(obj.layout)
    except RuntimeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    if info.get("unlock_key"):
        # The new daemon found the cluster key sealed; the key is never stored, so hand it over once
        # (as Swarm's `init --autolock` leaves the manager unlocked until its next restart).
        obj.api.post("/v1/unlock", {"key": info["unlock_key"]})
    try:
        _wait_for_node(obj)
    except RuntimeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(f"Swarm initialized: current node ({info['node_id']}) is now a manager.")
    click.echo(f"Data dir: {obj.layout.root}; manager API: {info['advertise_addr']}:{port} (mutual TLS)")
    if info.get("unlock_key"):
        click.echo("\nTo unlock a swarm manager after it restarts, run the `shoal unlock`\n"
                   "command and provide the following key:\n")
        click.echo(f"    {info['unlock_key']}\n")
        click.echo("Please remember to store this key in a password manager, since without it you\n"
                   "will not be able to restart the manager.")


def _wait_for_node(obj: Ctx, timeout: float = 30.0) -> None:
    """`init` returns once this node's agent has registered: every command works from then on."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(n["state"] == "ready" for n in obj.api.get("/v1/nodes")):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the node agent did not register within {timeout:.0f}s; see {obj.layout.log}")


@cli.command()
@click.pass_obj
def start(obj: Ctx) -> None:
    """Start the daemon of an existing cluster in the background (after a reboot or `stop`)."""
    from shoal.bootstrap import read_cluster, start_daemon
    if read_cluster(obj.layout) is None:
        click.echo(f"Error: no cluster in {obj.layout.root}; run `shoal init`", err=True)
        sys.exit(1)
    pid = start_daemon(obj.layout)
    click.echo(f"shoal daemon running (pid {pid})")


@cli.command()
@click.pass_obj
def stop(obj: Ctx) -> None:
    """Stop the daemon; containers keep running and are adopted by the next start."""
    from shoal.bootstrap import stop_daemon
    click.echo("stopped" if stop_daemon(obj.layout) else "not running")


@cli.command()
@click.option("--listen", default="0.0.0.0", show_default=True)
@click.pass_obj
def daemon(obj: Ctx, listen: str) -> None:
    """Run the manager and this node's agent in the foreground (for systemd)."""
    from shoal.daemon import main as daemon_main
    os.environ.setdefault("SHOAL_DATA_DIR", obj.layout.root)
    daemon_main(obj.layout.root)


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Required on a manager: the cluster state goes with it.")
@click.pass_obj
def leave(obj: Ctx, force: bool) -> None:
    """Leave the cluster: stop the daemon and every container Shoal runs on this node."""
    from shoal.agent.cleanup import cleanup_node
    from shoal.bootstrap import forget_cluster, read_cluster, stop_daemon
    info = read_cluster(obj.layout)
    if info is None:
        click.echo("Error: This node is not part of a swarm", err=True)
        sys.exit(1)
    if not force:
        click.echo("Error: You are attempting to leave the swarm on a node that is participating as a manager. "
                   "Removing the last manager erases all current state of the swarm. Use `--force` to ignore "
                   "this message.", err=True)
        sys.exit(1)
    stop_daemon(obj.layout)
    cleanup_node(obj.layout, info["node_id"])
    forget_cluster(obj.layout)
    click.echo("Node left the swarm.")


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
        click.echo("Successfully rotated manager unlock key.\n\nTo unlock a swarm manager after it restarts, "
                   "run the `shoal unlock`\ncommand and provide the following key:\n")
        click.echo(f"    {r['unlock_key']}\n")


@cli.command()
@click.option("--autolock", type=bool, default=None, help="Turn autolock on (true) or off (false).")
@click.pass_obj
def update(obj: Ctx, autolock: bool | None) -> None:
    """Change cluster settings (autolock)."""
    if autolock is None:
        click.echo("nothing to update")
        return
    r = obj.api.post("/v1/unlock-key", {"autolock": autolock})
    click.echo("Swarm updated.")
    if r.get("unlock_key"):
        click.echo("To unlock a swarm manager after it restarts, run the `shoal unlock`\n"
                   "command and provide the following key:\n")
        click.echo(f"    {r['unlock_key']}\n")


@cli.command()
@click.pass_obj
def info(obj: Ctx) -> None:
    """The cluster as this node sees it."""
    i = obj.api.get("/v1/info")
    for k in ("cluster_id", "node_id", "advertise_addr", "version", "locked", "autolock", "nodes", "services",
              "tasks"):
        click.echo(f"{k.replace('_', ' ').capitalize()}: {i.get(k)}")


def main() -> None:
    from shoal.cli import config_cmd, network_cmd, node_cmd, service_cmd, stack_cmd  # noqa: F401 (register)
    cli(prog_name="shoal")
