"""`shoal node ls|inspect|update|ps`."""
from __future__ import annotations

import json

import click

from shoal.cli.format import bytes_h, echo_table, iso
from shoal.cli.main import Ctx, cli
from shoal.cli.views import print_tasks


@cli.group()
def node() -> None:
    """Manage nodes."""


def _status(n: dict) -> str:
    return n["state"].capitalize()


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.pass_obj
def ls(obj: Ctx, quiet: bool, fmt: str | None) -> None:
    """List nodes."""
    nodes = obj.api.get("/v1/nodes")
    if quiet:
        for n in nodes:
            click.echo(n["id"])
        return
    rows = []
    for n in nodes:
        rows.append({"ID": n["id"] + (" *" if n["self"] else ""), "Hostname": n["description"]["hostname"],
                     "Status": _status(n), "Availability": n["availability"].capitalize(),
                     "ManagerStatus": _manager_status(n),
                     "EngineVersion": n["description"]["engine_version"]})
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r))
        return
    echo_table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"],
               [list(r.values()) for r in rows])


def pretty_text(n: dict) -> str:
    d = n["description"]
    lines = [f"ID:\t\t\t{n['id']}"]
    if n["labels"]:
        lines.append("Labels:")
        lines += [f" - {k}={v}" for k, v in sorted(n["labels"].items())]
    lines += [f"Hostname:\t\t{d['hostname']}", f"Joined at:\t\t{iso(n['created_at'])}", "Status:",
              f" State:\t\t\t{_status(n)}", f" Availability:\t\t{n['availability'].capitalize()}",
              f" Address:\t\t{n['addr']}"]
    if n["role"] == "manager":
        lines += ["Manager Status:", f" Address:\t\t{n['addr']}",
                  f" Raft Status:\t\t{_manager_status(n) if _manager_status(n) != 'Leader' else 'Reachable'}", f" Leader:\t\t{'Yes' if n.get('leader') else 'No'}"]
    lines += ["Platform:", f" Operating System:\t{d['os']}", f" Architecture:\t\t{d['arch']}", "Resources:",
              f" CPUs:\t\t\t{d['nano_cpus'] // 1_000_000_000}", f" Memory:\t\t{bytes_h(d['memory_bytes'])}",
              "Engine Version:\t\t" + d["engine_version"]]
    if d.get("engine_labels"):
        lines.append("Engine Labels:")
        lines += [f" - {k}={v}" for k, v in sorted(d["engine_labels"].items())]
    return "\n".join(lines).expandtabs(8)


@node.command("inspect")
@click.option("--pretty", is_flag=True)
@click.argument("nodes", nargs=-1, required=True)
@click.pass_obj
def inspect(obj: Ctx, pretty: bool, nodes) -> None:
    """Show nodes in detail; `self` is this node."""
    out = [obj.api.get(f"/v1/nodes/{n}") for n in nodes]
    if pretty:
        click.echo("\n\n".join(pretty_text(n) for n in out))
    else:
        click.echo(json.dumps(out, indent=4))


@node.command("update")
@click.option("--label-add", multiple=True, help="k=v or k")
@click.option("--label-rm", multiple=True)
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]))
@click.argument("nodes", nargs=-1, required=True)
@click.pass_obj
def update(obj: Ctx, label_add, label_rm, availability, nodes) -> None:
    """Change a node's labels or availability."""
    add = {}
    for item in label_add:
        k, _, v = item.partition("=")
        add[k] = v
    for n in nodes:
        obj.api.post(f"/v1/nodes/{n}/update", {"label_add": add, "label_rm": list(label_rm),
                                                 "availability": availability})
        click.echo(n)


@node.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove a node that is not down (its tasks are moved).")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_obj
def rm(obj: Ctx, force: bool, nodes) -> None:
    """Remove nodes from the cluster: their certificates are refused from then on."""
    from shoal.cli.each import for_each

    def remove(n: str) -> None:
        obj.api.post(f"/v1/nodes/{n}/remove", {"force": force})
        click.echo(n)
    for_each(nodes, remove)


@node.command("promote")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_obj
def promote(obj: Ctx, nodes) -> None:
    """Make nodes managers (the cluster's state must be in etcd)."""
    _change_role(obj, nodes, "promote", "Node {} promoted to a manager in the cluster.", "Node {} is already a manager.")
    n = sum(1 for node in obj.api.get("/v1/nodes") if node.get("role") == "manager")
    if n % 2 == 0:
        click.echo(f"Note: {n} managers: a quorum is {n // 2 + 1}, so they tolerate the loss of {(n - 1) // 2}, as "
                   f"{n - 1} would; keep an odd number of managers.", err=True)


@node.command("demote")
@click.argument("nodes", nargs=-1, required=True)
@click.pass_obj
def demote(obj: Ctx, nodes) -> None:
    """Make managers workers (refused for the last one, or when it would lose the quorum)."""
    _change_role(obj, nodes, "demote", "Manager {} demoted in the cluster.", "Node {} is already a worker.")


def _change_role(obj: Ctx, nodes, verb: str, done: str, already: str) -> None:
    from shoal.cli.each import for_each

    def one(n: str) -> None:
        r = obj.api.post(f"/v1/nodes/{n}/{verb}", {})
        click.echo((done if r["changed"] else already).format(r.get("hostname") or n))
    for_each(nodes, one)


@node.command("ps")
@click.option("--no-trunc", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@click.argument("node_ref", default="self")
@click.pass_obj
def ps(obj: Ctx, no_trunc: bool, quiet: bool, node_ref: str) -> None:
    """List the tasks on a node."""
    if node_ref == "self":
        node_ref = obj.api.get("/v1/nodes/self")["id"]
    print_tasks(obj.api, obj.api.get(f"/v1/tasks?node={node_ref}"), quiet, no_trunc, None)


def _manager_status(n: dict) -> str:
    """Docker's MANAGER STATUS: Leader, Reachable, or Unreachable (a manager node that is down)."""
    if n.get("role") != "manager":
        return ""
    if n.get("leader"):
        return "Leader"
    return "Unreachable" if n.get("state") == "down" else "Reachable"
