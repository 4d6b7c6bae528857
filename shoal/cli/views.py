"""Tables shared by several commands: services (`service ls`, `stack services`) and tasks (`ps`)."""
from __future__ import annotations

import json
import time
from typing import Any

import click

from shoal.cli.format import ago, echo_table, short_id

MAX_ERR = 30


def mode_text(svc: dict) -> str:
    return {"replicated-job": "replicated job", "global-job": "global job"}.get(svc["spec"]["mode"],
                                                                                 svc["spec"]["mode"])


def replicas_text(svc: dict) -> str:
    mode = svc["spec"]["mode"]
    if mode.endswith("job"):
        return f"{svc['replicas_running']}/{svc['spec'].get('max_concurrent') or svc['replicas_desired']} " \
               f"({svc['completed']}/{svc['replicas_desired']} completed)"
    unknown = svc.get("replicas_unknown") or 0
    # Tasks on a down node: replaced, but their containers may still run there (see docs/nodes.md).
    extra = f" ({unknown} unknown)" if unknown else ""
    return f"{svc['replicas_running']}/{svc['replicas_desired']}{extra}"


def ports_text(svc: dict) -> str:
    out = []
    for p in svc["spec"]["ports"]:
        pub = p.get("published") or svc.get("published_ports", {}).get(f"{p['target']}/{p['protocol']}")
        if p.get("mode", "ingress") == "ingress":
            out.append(f"*:{pub}->{p['target']}/{p['protocol']}")
    return ", ".join(out)


def image_text(image: str) -> str:
    return image.split("@", 1)[0]


def print_services(services: list[dict], quiet: bool, fmt: str | None) -> None:
    if quiet:
        for s in services:
            click.echo(s["id"])
        return
    rows = [{"ID": short_id(s["id"]), "Name": s["spec"]["name"], "Mode": mode_text(s),
             "Replicas": replicas_text(s), "Image": image_text(s["spec"]["container"]["image"]),
             "Ports": ports_text(s)} for s in services]
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r))
        return
    echo_table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], [list(r.values()) for r in rows])


def _slot_key(t: dict) -> Any:
    """A replicated slot's tasks go together whatever node each ran on; a global task's slot is its node."""
    return (t["service_name"], t["slot"] or 0, "" if t["slot"] else t.get("node_id") or "")


def task_rows(tasks: list[dict], nodes: dict[str, str], no_trunc: bool) -> list[dict]:
    """Newest task of each slot first, its predecessors under it as ' \\_ name.slot'."""
    now = time.time()
    groups: dict[Any, list[dict]] = {}
    for t in tasks:
        groups.setdefault(_slot_key(t), []).append(t)
    rows = []
    for key in sorted(groups):
        hist = sorted(groups[key], key=lambda t: t["created_at"], reverse=True)
        for i, t in enumerate(hist):
            name = f"{t['service_name']}.{t['slot'] if t['slot'] else t.get('node_id') or ''}"
            if i:
                name = " \\_ " + name
            st = t["status"]
            err = st.get("err") or ""
            if err:
                err = err if no_trunc or len(err) <= MAX_ERR else err[:MAX_ERR - 1] + "…"
                err = json.dumps(err, ensure_ascii=False)
            ports = []
            for p in t["spec"].get("ports", []):
                if p.get("mode") == "host" and st["state"] == "running":
                    ports.append(f"*:{p.get('published')}->{p['target']}/{p['protocol']}")
            rows.append({
                "ID": t["id"] if no_trunc else short_id(t["id"]),
                "Name": name,
                "Image": image_text(t["spec"]["container"]["image"]),
                "Node": nodes.get(t.get("node_id") or "", ""),
                "DesiredState": t["desired_state"].capitalize(),
                "CurrentState": f"{st['state'].capitalize()} {ago(st['timestamp'] or t['created_at'], now)} ago",
                "Error": err,
                "Ports": ", ".join(ports),
            })
    return rows


def print_tasks(api, tasks: list[dict], quiet: bool, no_trunc: bool, fmt: str | None,
                filters: tuple[str, ...] = ()) -> None:
    for f in filters:
        k, _, v = f.partition("=")
        if k == "desired-state":
            tasks = [t for t in tasks if t["desired_state"] == v]
        elif k == "node":
            tasks = [t for t in tasks if t.get("node_id") == v]
        elif k == "name":
            tasks = [t for t in tasks if t["service_name"] == v or t["service_name"].endswith("_" + v)]
        else:
            raise click.UsageError(f"invalid filter '{k}'")
    if quiet:
        for t in sorted(tasks, key=_slot_key):
            click.echo(t["id"])
        return
    nodes = {n["id"]: n["description"]["hostname"] for n in api.get("/v1/nodes")}
    rows = task_rows(tasks, nodes, no_trunc)
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r))
        return
    echo_table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"],
               [list(r.values()) for r in rows])
