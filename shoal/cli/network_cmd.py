"""`shoal network …` and `shoal volume …`."""
from __future__ import annotations

import json
import sys

import click

from shoal.cli.format import echo_table
from shoal.cli.main import Ctx, cli


@cli.group()
def network() -> None:
    """Manage networks."""


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_obj
def net_ls(obj: Ctx, quiet: bool) -> None:
    """List networks."""
    nets = obj.api.get("/v1/networks")
    if quiet:
        for n in nets:
            click.echo(n["id"])
        return
    echo_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
               [[n["id"][:12], n["spec"]["name"], n["spec"]["driver"], "swarm"] for n in nets])


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def net_inspect(obj: Ctx, names) -> None:
    """Show networks in detail."""
    click.echo(json.dumps([obj.api.get(f"/v1/networks/{n}") for n in names], indent=4))


@network.command("create")
@click.option("-d", "--driver", default="overlay")
@click.option("--subnet", default=None)
@click.option("--attachable", is_flag=True)
@click.option("--internal", is_flag=True)
@click.option("-l", "--label", "labels", multiple=True)
@click.argument("name")
@click.pass_obj
def net_create(obj: Ctx, driver, subnet, attachable, internal, labels, name) -> None:
    """Create a network several stacks can share (as `external: true`)."""
    lab = dict(item.partition("=")[::2] for item in labels)
    r = obj.api.post("/v1/networks", {"name": name, "driver": driver, "subnets": [subnet] if subnet else [],
                                      "attachable": attachable, "internal": internal, "labels": lab})
    click.echo(r["id"])


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def net_rm(obj: Ctx, names) -> None:
    """Remove networks (refused while a service uses one)."""
    failed = False
    for n in names:
        try:
            obj.api.delete(f"/v1/networks/{n}")
            click.echo(n)
        except Exception as e:
            click.echo(f"Error: {getattr(e, 'message', e)}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@cli.group()
def volume() -> None:
    """Manage the named volumes of stacks (they live on the node that created them)."""


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_obj
def vol_ls(obj: Ctx, quiet: bool) -> None:
    """List volumes on every node."""
    by_node = obj.api.get("/v1/volumes")
    nodes = {n["id"]: n["description"]["hostname"] for n in obj.api.get("/v1/nodes")}
    rows = []
    for node_id, vols in sorted(by_node.items()):
        for v in vols:
            rows.append([v.get("driver") or "local", v["name"], nodes.get(node_id, node_id[:12])])
    if quiet:
        for r in rows:
            click.echo(r[1])
        return
    echo_table(["DRIVER", "VOLUME NAME", "NODE"], rows)
