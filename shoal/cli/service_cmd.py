"""`shoal service ls|ps|inspect|logs|scale|update|rollback|rm`."""
from __future__ import annotations

import json
import sys

import click

from shoal.cli.format import iso
from shoal.cli.main import Ctx, cli
from shoal.cli.views import mode_text, ports_text, print_services, print_tasks
from shoal.cli.wait import wait_for_stack


@cli.group()
def service() -> None:
    """Manage services."""


@service.command("ls")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.pass_obj
def ls(obj: Ctx, quiet: bool, fmt: str | None) -> None:
    """List services."""
    print_services(obj.api.get("/v1/services"), quiet, fmt)


@service.command("ps")
@click.option("-q", "--quiet", is_flag=True)
@click.option("--no-trunc", is_flag=True)
@click.option("--format", "fmt", default=None)
@click.option("-f", "--filter", "filters", multiple=True)
@click.argument("services", nargs=-1, required=True)
@click.pass_obj
def ps(obj: Ctx, quiet: bool, no_trunc: bool, fmt: str | None, filters, services) -> None:
    """List the tasks of services."""
    tasks = []
    for s in services:
        tasks += obj.api.get(f"/v1/tasks?service={s}")
    print_tasks(obj.api, tasks, quiet, no_trunc, fmt, filters)


def _secs(v: float) -> str:
    return f"{v:g}s"


def pretty_text(s: dict) -> str:
    spec = s["spec"]
    c = spec["container"]
    lines = [f"ID:\t\t{s['id']}", f"Name:\t\t{spec['name']}"]
    if spec["labels"]:
        lines.append("Labels:")
        lines += [f" {k}={v}" for k, v in sorted(spec["labels"].items())]
    mode = mode_text(s)
    lines.append(f"Service Mode:\t{mode.capitalize()}")
    if spec["mode"] == "replicated":
        lines.append(f" Replicas:\t{spec['replicas']}")
    us = s.get("update_status")
    if us:
        lines += ["UpdateStatus:", f" State:\t\t{us['state']}", f" Started:\t{iso(us['started_at'])}"]
        if us.get("completed_at"):
            lines.append(f" Completed:\t{iso(us['completed_at'])}")
        lines.append(f" Message:\t{us.get('message', '')}")
    if spec["placement"]["constraints"] or spec["placement"]["preferences"]:
        lines.append("Placement:")
        if spec["placement"]["constraints"]:
            lines.append(f" Constraints:\t{spec['placement']['constraints']}")
        if spec["placement"]["preferences"]:
            lines.append(f" Preferences:\t{spec['placement']['preferences']}")
    for title, cfg in (("UpdateConfig", spec["update_config"]), ("RollbackConfig", spec["rollback_config"])):
        lines += [f"{title}:", f" Parallelism:\t{cfg['parallelism']}"]
        if cfg["delay"]:
            lines.append(f" Delay:\t\t{_secs(cfg['delay'])}")
        lines += [f" On failure:\t{cfg['failure_action']}", f" Monitoring Period: {_secs(cfg['monitor'])}",
                  f" Max failure ratio: {cfg['max_failure_ratio']:g}", f" Update order:      {cfg['order']}"]
    lines += ["ContainerSpec:", f" Image:\t\t{c['image']}"]
    if c.get("command"):
        lines.append(f" Args:\t\t{' '.join(c['command'])}")
    if c.get("env"):
        lines.append(" Env:\t\t" + " ".join(f"{k}={v}" for k, v in c["env"].items() if v is not None))
    if c.get("init"):
        lines.append(" Init:\t\ttrue")
    if c.get("mounts"):
        lines.append("Mounts:")
        for m in c["mounts"]:
            lines += [f" Target:\t{m['target']}", f"  Source:\t{m.get('source') or ''}",
                      f"  ReadOnly:\t{str(m['read_only']).lower()}", f"  Type:\t\t{m['type']}"]
    for key, title in (("configs", "Configs:"), ("secrets", "Secrets:")):
        if c.get(key):
            lines.append(title)
            lines += [f" Target:\t{r['target']}\n  Source:\t{r['source']}"
                      + (f"\n  Version:\t{r['version']}" if r.get("version") else "") for r in c[key]]
    lim, res = spec["resources"]["limits"], spec["resources"]["reservations"]
    if any(lim.values()) or any(res.values()):
        lines.append("Resources:")
        for title, r in (("Reservations", res), ("Limits", lim)):
            if any(r.values()):
                lines.append(f" {title}:")
                if r["nano_cpus"]:
                    lines.append(f"  CPU:\t\t{r['nano_cpus'] / 1e9:g}")
                if r["memory_bytes"]:
                    from shoal.cli.format import bytes_h
                    lines.append(f"  Memory:\t{bytes_h(r['memory_bytes'])}")
                if r.get("pids"):
                    lines.append(f"  Pids:\t\t{r['pids']}")
    if spec["networks"]:
        lines.append("Networks: " + " ".join(a["network"] for a in spec["networks"]))
    lines.append(f"Endpoint Mode:\t{spec['endpoint_mode']}")
    if spec["ports"]:
        lines.append("Ports:")
        for p in spec["ports"]:
            pub = p.get("published") or s.get("published_ports", {}).get(f"{p['target']}/{p['protocol']}")
            lines += [f" PublishedPort = {pub}", f"  Protocol = {p['protocol']}",
                      f"  TargetPort = {p['target']}", f"  PublishMode = {p['mode']}"]
    if s.get("virtual_ips"):
        lines.append("VirtualIPs: " + ", ".join(f"{k}={v}" for k, v in s["virtual_ips"].items()))
    return "\n".join(lines).expandtabs(8)


@service.command("inspect")
@click.option("--pretty", is_flag=True)
@click.option("-f", "--format", "fmt", default=None)
@click.argument("services", nargs=-1, required=True)
@click.pass_obj
def inspect(obj: Ctx, pretty: bool, fmt: str | None, services) -> None:
    """Show services in detail (JSON, or --pretty)."""
    out = [obj.api.get(f"/v1/services/{s}") for s in services]
    if pretty:
        click.echo("\n\n".join(pretty_text(s) for s in out))
    else:
        click.echo(json.dumps(out, indent=4))


@service.command("logs")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "--tail", default="all")
@click.argument("service_ref")
@click.pass_obj
def logs(obj: Ctx, follow: bool, tail: str, service_ref: str) -> None:
    """Fetch the logs of a service's tasks."""
    path = f"/v1/services/{service_ref}/logs?tail={tail}&follow={'1' if follow else '0'}"
    try:
        for line in obj.api.stream(path):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    except KeyboardInterrupt:
        pass


@service.command("scale")
@click.option("--detach/--no-detach", "-d", default=True)
@click.argument("pairs", nargs=-1, required=True)
@click.pass_obj
def scale(obj: Ctx, detach: bool, pairs) -> None:
    """Scale replicated services: SERVICE=REPLICAS ..."""
    failed = False
    for pair in pairs:
        name, sep, n = pair.partition("=")
        if not sep or not n.isdigit():
            click.echo(f"Error: invalid scale specifier '{pair}': expected SERVICE=REPLICAS", err=True)
            failed = True
            continue
        try:
            obj.api.post(f"/v1/services/{name}/scale", {"replicas": int(n)})
            click.echo(f"{name} scaled to {n}")
        except Exception as e:
            click.echo(f"Error: {getattr(e, 'message', e)}", err=True)
            failed = True
    if failed:
        sys.exit(1)


def _kv(items) -> dict[str, str]:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out


@service.command("update")
@click.option("--image")
@click.option("--replicas", type=int)
@click.option("--env-add", multiple=True)
@click.option("--env-rm", multiple=True)
@click.option("--label-add", multiple=True)
@click.option("--label-rm", multiple=True)
@click.option("--force", is_flag=True, help="Replace the tasks even if nothing changed.")
@click.option("--update-parallelism", type=int)
@click.option("--update-order", type=click.Choice(["stop-first", "start-first"]))
@click.option("--update-failure-action", type=click.Choice(["pause", "continue", "rollback"]))
@click.option("--rollback", "do_rollback", is_flag=True)
@click.option("--wait", is_flag=True)
@click.option("--timeout", default=300.0)
@click.argument("service_ref")
@click.pass_obj
def update(obj: Ctx, image, replicas, env_add, env_rm, label_add, label_rm, force, update_parallelism,
           update_order, update_failure_action, do_rollback, wait, timeout, service_ref) -> None:
    """Update a service (a rolling update of its tasks)."""
    import time
    since = time.time()
    if do_rollback:
        svc = obj.api.post(f"/v1/services/{service_ref}/rollback")
    else:
        svc = obj.api.get(f"/v1/services/{service_ref}")
        spec = svc["spec"]
        c = spec["container"]
        if image:
            c["image"] = image
        if replicas is not None:
            spec["replicas"] = replicas
        for k in env_rm:
            c["env"].pop(k, None)
        c["env"].update(_kv(env_add))
        for k in label_rm:
            spec["labels"].pop(k, None)
        spec["labels"].update(_kv(label_add))
        if force:
            spec["force_update"] = spec.get("force_update", 0) + 1
        if update_parallelism is not None:
            spec["update_config"]["parallelism"] = update_parallelism
        if update_order:
            spec["update_config"]["order"] = update_order
        if update_failure_action:
            spec["update_config"]["failure_action"] = update_failure_action
        svc = obj.api.post(f"/v1/services/{service_ref}/update", {"spec": spec, "version": svc["version"]})
    click.echo(svc["spec"]["name"])
    if wait:
        ok, why = _wait_plain(obj, svc, timeout, since, rollback_requested=do_rollback) if do_rollback \
            or not svc["spec"].get("stack") else wait_for_stack(obj.api, svc["spec"]["stack"], timeout,
                                                                [svc["spec"]["name"]], since=since)
        if not ok:
            click.echo(f"Error: {why}", err=True)
            sys.exit(1)


def _wait_plain(obj: Ctx, svc: dict, timeout: float, since: float, rollback_requested: bool = False):
    import time
    from shoal.cli.wait import service_state
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = obj.api.get(f"/v1/services/{svc['id']}")
        ok, failure, _ = service_state(s, obj.api.get(f"/v1/tasks?service={svc['id']}"), since,
                                       rollback_requested)
        if failure:
            return False, failure
        if ok:
            return True, ""
        time.sleep(0.5)
    return False, "timed out"


@service.command("rollback")
@click.option("--wait", is_flag=True, help="Wait until the rollback converged.")
@click.option("--timeout", default=300.0)
@click.argument("service_ref")
@click.pass_obj
def rollback(obj: Ctx, wait: bool, timeout: float, service_ref: str) -> None:
    """Revert a service to its previous spec."""
    import time
    since = time.time()
    svc = obj.api.post(f"/v1/services/{service_ref}/rollback")
    click.echo(svc["spec"]["name"])
    click.echo("rollback: manually requested rollback")
    if wait:
        ok, why = _wait_plain(obj, svc, timeout, since, rollback_requested=True)
        if not ok:
            click.echo(f"Error: {why}", err=True)
            sys.exit(1)


@service.command("rebalance")
@click.option("--wait", is_flag=True, help="Wait until the moved replicas run.")
@click.option("--timeout", default=300.0)
@click.argument("service_ref")
@click.pass_obj
def rebalance(obj: Ctx, wait: bool, timeout: float, service_ref: str) -> None:
    """Spread a service's replicas evenly over the nodes available now (following its update_config)."""
    import time
    since = time.time()
    r = obj.api.post(f"/v1/services/{service_ref}/rebalance", {})
    name = r["spec"]["name"]
    if not r["moves"]:
        click.echo(f"{name}: already spread as evenly as its placement allows; nothing to move")
        return
    click.echo(f"{name}: moving the replicas of slot(s) {', '.join(r['moves'])}")
    if wait:
        ok, why = _wait_plain(obj, r, timeout, since)
        if not ok:
            click.echo(f"Error: {why}", err=True)
            sys.exit(1)


@service.command("rm")
@click.argument("services", nargs=-1, required=True)
@click.pass_obj
def rm(obj: Ctx, services) -> None:
    """Remove services."""
    for s in services:
        obj.api.delete(f"/v1/services/{s}")
        click.echo(s)


__all__ = ["service", "ports_text"]
