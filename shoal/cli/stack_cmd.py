"""`shoal stack deploy|config|ls|ps|services|rm`.

Compose files are read here, on the client, as `docker stack deploy` does: the
manager receives the normalised stack (with config/secret file data), never paths.
"""
from __future__ import annotations

import json
import sys

import click

from shoal.cli.each import for_each
from shoal.cli.main import Ctx, cli
from shoal.cli.format import echo_table
from shoal.cli.views import print_services, print_tasks
from shoal.cli.wait import wait_for_stack


@cli.group()
def stack() -> None:
    """Manage stacks (applications described by compose files)."""


def _load(files: tuple[str, ...], name: str):
    from shoal.compose import ComposeError, load_stack
    try:
        return load_stack(list(files), name)
    except ComposeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"Error: {e.filename or ''}: {e.strerror or e}", err=True)
        sys.exit(1)


@stack.command("deploy")
@click.option("-c", "--compose-file", "files", multiple=True, required=True,
              help="Compose file (repeatable; - reads standard input).")
@click.option("--prune", is_flag=True, help="Remove services no longer in the file.")
@click.option("--wait/--detach", "wait", default=False, help="Wait until every service converged, with progress.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits at most.")
@click.option("--resolve-image", default="always", hidden=True)
@click.option("--with-registry-auth", is_flag=True, hidden=True)
@click.argument("name")
@click.pass_obj
def deploy(obj: Ctx, files, prune: bool, wait: bool, timeout: float, resolve_image: str,
           with_registry_auth: bool, name: str) -> None:
    """Deploy a new stack or update an existing one."""
    spec = _load(files, name)
    for w in spec.warnings:
        click.echo(w, err=True)
    import time
    since = time.time()
    r = obj.api.post(f"/v1/stacks/{name}", {"stack": spec.model_dump(mode="json"), "prune": prune})
    for m in r["messages"]:
        click.echo(m)
    if wait:
        ok, why = wait_for_stack(obj.api, name, timeout, since=since)
        if not ok:
            click.echo(f"Error: {why}", err=True)
            sys.exit(1)


@stack.command("config")
@click.option("-c", "--compose-file", "files", multiple=True, required=True,
              help="Compose file (repeatable; - reads standard input).")
@click.option("--skip-interpolation", is_flag=True, help="Print variables as written, not their values.")
def config(files, skip_interpolation: bool) -> None:
    """Print the merged, interpolated compose file, once it passed every check `stack deploy` makes."""
    from shoal.compose import ComposeError, check_config, render_config
    try:
        tree, warnings = check_config(list(files), interpolate=not skip_interpolation)
    except ComposeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    for w in warnings:
        click.echo(w, err=True)
    click.echo(render_config(tree, escape=not skip_interpolation), nl=False)


@stack.command("ls")
@click.option("--format", "fmt", default=None)
@click.pass_obj
def ls(obj: Ctx, fmt: str | None) -> None:
    """List stacks."""
    stacks = obj.api.get("/v1/stacks")
    if fmt == "json":
        for s in stacks:
            click.echo(json.dumps({"Name": s["name"], "Services": str(s["services"])}))
        return
    echo_table(["NAME", "SERVICES"], [[s["name"], s["services"]] for s in stacks])


@stack.command("ps")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--no-trunc", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.option("-f", "--filter", "filters", multiple=True)
@click.argument("name")
@click.pass_obj
def ps(obj: Ctx, quiet: bool, no_trunc: bool, fmt: str | None, filters, name: str) -> None:
    """List the tasks of a stack."""
    tasks = obj.api.get(f"/v1/tasks?stack={name}")
    print_tasks(obj.api, tasks, quiet, no_trunc, fmt, filters)


@stack.command("services")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.argument("name")
@click.pass_obj
def services(obj: Ctx, quiet: bool, fmt: str | None, name: str) -> None:
    """List the services of a stack."""
    print_services(obj.api.get(f"/v1/services?stack={name}"), quiet, fmt)


@stack.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def rm(obj: Ctx, names) -> None:
    """Remove stacks: services, networks, configs and secrets they created. Never volumes."""
    def remove(name: str) -> None:
        for m in obj.api.delete(f"/v1/stacks/{name}")["messages"]:
            click.echo(m)
    for_each(names, remove)
