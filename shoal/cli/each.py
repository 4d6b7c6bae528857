"""Commands that take several names go on past a failure, as docker's do, and exit 1 at the end."""
from __future__ import annotations

import sys
from typing import Callable, Iterable

import click

from shoal.cli.api_client import ApiFailure


def for_each(names: Iterable[str], action: Callable[[str], None]) -> None:
    failed = False
    for name in names:
        try:
            action(name)
        except ApiFailure as e:
            click.echo(f"Error: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)
