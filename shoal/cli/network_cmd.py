"""`shoal network …` and `shoal volume …`."""
from __future__ import annotations

import json
from urllib.parse import quote

import click

from shoal.cli.each import for_each
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
@click.option("-o", "--opt", "opts", multiple=True, help="Driver option KEY[=VALUE] (e.g. com.docker.network.driver.mtu=1400).")
@click.argument("name")
@click.pass_obj
def net_create(obj: Ctx, driver, subnet, attachable, internal, labels, opts, name) -> None:
    """Create a network several stacks can share (as `external: true`)."""
    lab = dict(item.partition("=")[::2] for item in labels)
    driver_opts = dict(item.partition("=")[::2] for item in opts)
    r = obj.api.post("/v1/networks", {"name": name, "driver": driver, "subnets": [subnet] if subnet else [],
                                      "attachable": attachable, "internal": internal, "labels": lab,
                                      "driver_opts": driver_opts})
    click.echo(r["id"])


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def net_rm(obj: Ctx, names) -> None:
    """Remove networks (refused while a service uses one)."""
    def remove(n: str) -> None:
        obj.api.delete(f"/v1/networks/{n}")
        click.echo(n)
    for_each(names, remove)


@cli.group()
def volume() -> None:
    """Manage the named volumes of stacks (they live on the node that created them)."""


def _label_filters(filters) -> dict:
    """`--filter label=k=v` / `--filter label=k` -> {k: v or None}."""
    out = {}
    for f in filters:
        key, _, val = f.partition("=")
        if key != "label" or not val:
            raise click.UsageError(f"invalid filter {f!r} (supported: label=<key> or label=<key>=<value>)")
        k, eq, v = val.partition("=")
        out[k] = v if eq else None
    return out


def _labels_match(labels: dict, wanted: dict) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in wanted.items())


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.option("-f", "--filter", "filters", multiple=True, help="label=<key>[=<value>]")
@click.pass_obj
def vol_ls(obj: Ctx, quiet: bool, filters) -> None:
    """List the Shoal/stack volumes of every node (as the nodes last reported them)."""
    wanted = _label_filters(filters)
    vols = [v for v in obj.api.get("/v1/volumes") if _labels_match(v.get("labels") or {}, wanted)]
    if quiet:
        for v in vols:
            click.echo(v["name"])
        return
    echo_table(["DRIVER", "VOLUME NAME", "NODE"], [[v.get("driver") or "local", v["name"], v["node"]] for v in vols])


def _node_q(node: str | None) -> str:
    return f"?node={quote(node)}" if node else ""


@volume.command("inspect")
@click.option("--node", default=None, help="Only this node (ID or hostname).")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def vol_inspect(obj: Ctx, node, names) -> None:
    """Show volumes in detail: engine facts, the node it lives on, what uses it."""
    out = []
    for n in names:
        out += obj.api.get(f"/v1/volumes/{quote(n, safe='')}{_node_q(node)}")
    click.echo(json.dumps(out, indent=4))


@volume.command("rm")
@click.option("--node", default=None, help="Only on this node (ID or hostname).")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def vol_rm(obj: Ctx, node, names) -> None:
    """Remove volumes (refused while a container or a service uses one). Their data is lost."""
    def remove(n: str) -> None:
        obj.api.delete(f"/v1/volumes/{quote(n, safe='')}{_node_q(node)}")
        click.echo(n)
    for_each(names, remove)


@volume.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="label=<key>[=<value>]")
@click.pass_obj
def vol_prune(obj: Ctx, force: bool, filters) -> None:
    """Remove the Shoal/stack volumes no container and no service uses, on every node."""
    wanted = _label_filters(filters)
    if not force and not click.confirm("WARNING! This will remove all unused Shoal volumes on every node.\n"
                                       "Are you sure you want to continue?", default=False):
        return
    r = obj.api.post("/v1/volumes/prune", {"labels": wanted})
    if r["removed"]:
        click.echo("Deleted Volumes:")
        for v in r["removed"]:
            click.echo(v["name"])
    for e in r.get("errors") or []:
        click.echo(f"Warning: {e}", err=True)
