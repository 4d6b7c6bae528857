"""`shoal config …` and `shoal secret …`: the same verbs, except a secret's data is never shown."""
from __future__ import annotations

import base64
import json
import os
import sys

import click

from shoal.cli.format import ago, echo_table, iso
from shoal.cli.each import for_each
from shoal.cli.main import Ctx, cli


def _read(path: str, kind: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    if not os.path.exists(path):
        click.echo(f"Error: {kind} file {path}: no such file", err=True)
        sys.exit(1)
    with open(path, "rb") as f:
        return f.read()


def _labels(items) -> dict[str, str]:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def make_group(kind: str) -> click.Group:
    plural = kind + "s"

    @cli.group(name=kind, help=f"Manage {kind}s.")
    def group() -> None:
        pass

    @group.command("create")
    @click.option("-l", "--label", "labels", multiple=True)
    @click.argument("name")
    @click.argument("file")
    @click.pass_obj
    def create(obj: Ctx, labels, name: str, file: str) -> None:
        """Create from a file, or - for stdin."""
        data = _read(file, kind)
        r = obj.api.post(f"/v1/{plural}", {"name": name, "data": base64.b64encode(data).decode(),
                                            "labels": _labels(labels)})
        click.echo(r["id"])

    @group.command("rotate")
    @click.argument("name")
    @click.argument("file")
    @click.pass_obj
    def rotate(obj: Ctx, name: str, file: str) -> None:
        """Change the data under the same name; services using it roll to the new data."""
        data = _read(file, kind)
        r = obj.api.post(f"/v1/{plural}/{name}/update", {"data": base64.b64encode(data).decode()})
        click.echo(f"{r['name']} (version {r['data_version']})")
        for m in r.get("messages", []):
            click.echo(m)

    group.add_command(rotate, "update")  # the spelling: `shoal config update NAME FILE`

    @group.command("ls")
    @click.option("-q", "--quiet", is_flag=True)
    @click.option("--format", "fmt", default=None)
    @click.pass_obj
    def ls(obj: Ctx, quiet: bool, fmt: str | None) -> None:
        """List."""
        items = obj.api.get(f"/v1/{plural}")
        if quiet:
            for i in items:
                click.echo(i["id"])
            return
        rows = []
        for i in items:
            r = {"ID": i["id"], "Name": i["name"]}
            if kind == "secret":
                r["Driver"] = i.get("driver", "")
            r["CreatedAt"] = f"{ago(i['created_at'])} ago"
            r["UpdatedAt"] = f"{ago(i['updated_at'])} ago"
            rows.append(r)
        if fmt == "json":
            for r in rows:
                click.echo(json.dumps(r))
            return
        headers = ["ID", "NAME"] + (["DRIVER"] if kind == "secret" else []) + ["CREATED", "UPDATED"]
        echo_table(headers, [list(r.values()) for r in rows])

    @group.command("inspect")
    @click.option("--pretty", is_flag=True)
    @click.argument("names", nargs=-1, required=True)
    @click.pass_obj
    def inspect(obj: Ctx, pretty: bool, names) -> None:
        """Show in detail (configs: with --pretty, the data as text)."""
        items = [obj.api.get(f"/v1/{plural}/{n}") for n in names]
        if not pretty:
            click.echo(json.dumps(items, indent=4))
            return
        blocks = []
        for i in items:
            lines = [f"ID:                {i['id']}", f"Name:              {i['name']}"]
            if i["labels"]:
                lines.append("Labels:")
                lines += [f" - {k}={v}" for k, v in sorted(i["labels"].items())]
            if kind == "secret":
                lines.append(f"Driver:            {i.get('driver', '')}")
            lines += [f"Created at:        {iso(i['created_at'])}", f"Updated at:        {iso(i['updated_at'])}"]
            lines.append(f"Data version:      {i.get('data_version', 1)}")
            kept = i.get("versions") or [i.get("data_version", 1)]
            lines.append(f"Versions kept:     {', '.join(map(str, kept))}")
            if kind == "config":
                lines.append("Data:")
                lines.append(base64.b64decode(i["data"]).decode("utf-8", errors="replace"))
            blocks.append("\n".join(lines))
        click.echo("\n\n".join(blocks))

    @group.command("rm")
    @click.argument("names", nargs=-1, required=True)
    @click.pass_obj
    def rm(obj: Ctx, names) -> None:
        """Remove (refused while a service uses it)."""
        def remove(n: str) -> None:
            obj.api.delete(f"/v1/{plural}/{n}")
            click.echo(n)
        for_each(names, remove)

    return group


config = make_group("config")
secret = make_group("secret")
