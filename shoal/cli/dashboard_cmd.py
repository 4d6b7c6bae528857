"""`shoal dashboard`: a one-time link to the web dashboard the manager serves."""
from __future__ import annotations

import webbrowser

import click

from shoal.cli.main import Ctx, cli


@cli.command()
@click.option("--open", "open_it", is_flag=True, help="Also open the link in this machine's browser.")
@click.pass_obj
def dashboard(obj: Ctx, open_it: bool) -> None:
    """Print a one-time login link to the dashboard (valid 5 minutes, once)."""
    link = obj.api.post("/v1/dashboard/login-link", {})
    click.echo(link["url"])
    click.echo(f"(one use, within {link['expires_in'] // 60} minutes; the page is served with the cluster's own "
               f"certificate: trust {obj.layout.ca_cert} in the browser, or accept its warning)", err=True)
    if open_it:
        webbrowser.open(link["url"])
