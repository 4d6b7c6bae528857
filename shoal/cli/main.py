"""`shoal`: the command line, shaped like `docker swarm|stack|service|node|config|secret`."""
from __future__ import annotations

import sys

import click

from shoal.cli.api_client import Api, ApiFailure
from shoal.paths import Layout
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


# Which module defines each command: only the one a command line names is imported (each
# costs start-up time; `shoal join` is timed against `docker swarm join`).
COMMAND_MODULES = {
    **dict.fromkeys(("init", "join", "join-token", "start", "stop", "daemon", "leave", "unlock", "unlock-key",
                     "update", "info"), "cluster_cmd"),
    "config": "config_cmd", "secret": "config_cmd", "dashboard": "dashboard_cmd", "events": "events_cmd",
    "network": "network_cmd", "volume": "network_cmd", "node": "node_cmd", "service": "service_cmd",
    "stack": "stack_cmd",
}


def load_commands(names=None) -> None:
    """Import the modules of these commands (all when None): they register on `cli`."""
    import importlib
    for module in sorted(set(COMMAND_MODULES.values()) if names is None
                         else {COMMAND_MODULES[n] for n in names if n in COMMAND_MODULES}):
        importlib.import_module(f"shoal.cli.{module}")


class ShoalGroup(click.Group):
    """Turns API failures into one clear line on stderr and exit code 1; loads a command's
    module when the command line names it."""

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name not in self.commands:
            load_commands([cmd_name] if cmd_name in COMMAND_MODULES else None)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context):
        load_commands()
        return super().list_commands(ctx)

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


def main() -> None:
    cli(prog_name="shoal")
