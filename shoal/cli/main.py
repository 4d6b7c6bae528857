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


def main() -> None:
    from shoal.cli import (cluster_cmd, config_cmd, dashboard_cmd, events_cmd, network_cmd, node_cmd,  # noqa: F401
                           service_cmd, stack_cmd)
    cli(prog_name="shoal")
