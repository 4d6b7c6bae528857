"""Bring one file's services to a single shape before merging.

Compose merges ports and volumes by target, environment and labels as mappings, and
resolves relative paths against the file that wrote them. So, per file and before the
merge: short syntaxes become long ones, list-or-mapping options become mappings,
string-or-list options become lists, and relative paths become absolute. Also checks
the top-level and service keys, and refuses what Swarm refuses.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Mapping, Optional

from shoal.compose.schema import REFUSED_SERVICE_KEYS, SERVICE_KEYS, TOP_LEVEL_KEYS
from shoal.compose.shortsyntax import is_host_path, parse_port_spec, parse_volume_spec
from shoal.compose.tree import LDict, LList, Loc, Node, go_number

_LIST_KEYS = ("dns", "dns_search", "dns_opt", "tmpfs", "cap_add", "cap_drop")
_SECTIONS = ("networks", "volumes", "configs", "secrets")


def located(value: Any, loc: Loc) -> Any:
    """Plain data made located, every entry at ``loc``."""
    if isinstance(value, dict):
        out = LDict(loc)
        for key, item in value.items():
            out.put(key, located(item, loc), loc)
        return out
    if isinstance(value, list):
        seq = LList(loc)
        for item in value:
            seq.add(located(item, loc), loc)
        return seq
    return value


def canonicalize(tree: LDict, base_dir: Path, env: Mapping[str, str]) -> None:
    """Reshape one file's tree in place (see module docstring)."""
    root = Node(tree, "", tree.loc)
    root.check_keys(TOP_LEVEL_KEYS, "top-level key")
    for key in list(tree):
        if key.startswith("x-"):
            tree.drop(key)
    _refuse(root)
    services = root.get("services")
    if services is not None:
        for name, service in services.items():
            if service.value is None:
                service.fail("expected a mapping, got null")
            service.mapping()
            _service(service, base_dir, env)
    for section in _SECTIONS:
        objects = root.get(section)
        if objects is None:
            continue
        for _name, obj in objects.items():
            if obj.value is not None:
                obj.mapping()
    for section in ("configs", "secrets"):
        objects = root.get(section)
        for _name, obj in (objects.items() if objects is not None else ()):
            file_node = obj.get("file") if obj.value is not None else None
            if file_node is not None:
                obj.value.put("file", _resolve(file_node.str(), base_dir), file_node.loc)


def _refuse(root: Node) -> None:
    """Swarm refuses the whole file for some options; name them all, point at the first."""
    services = root.get("services")
    if services is None:
        return
    found: list[Node] = []
    for _name, service in services.items():
        if isinstance(service.value, dict):
            found += [node for key, node in service.items() if key in REFUSED_SERVICE_KEYS]
    if found:
        names = ", ".join(sorted({n.path.rsplit(".", 1)[-1] for n in found}))
        found[0].fail(f"compose file contains unsupported options: {names}")


def _service(service: Node, base_dir: Path, env: Mapping[str, str]) -> None:
    svc: LDict = service.value
    service.check_keys(SERVICE_KEYS, "service option")
    for key in [k for k in svc if k.startswith("x-")]:
        svc.drop(key)
    for key, node in list(service.items()):
        if node.value is None:
            continue
        if key == "environment":
            svc.put(key, as_mapping(node, resolve=env), node.loc)
        elif key in ("labels", "sysctls"):
            svc.put(key, as_mapping(node), node.loc)
        elif key == "extra_hosts":
            svc.put(key, as_mapping(node, separators=("=", ":")), node.loc)
        elif key in _LIST_KEYS:
            svc.put(key, _str_list(node), node.loc)
        elif key in ("command", "entrypoint"):
            svc.put(key, _command(node), node.loc)
        elif key == "networks":
            svc.put(key, _names_mapping(node, None), node.loc)
        elif key == "depends_on":
            svc.put(key, _names_mapping(node, {"condition": "service_started"}), node.loc)
        elif key == "ports":
            svc.put(key, _ports(node), node.loc)
        elif key == "volumes":
            svc.put(key, _volumes(node, base_dir), node.loc)
        elif key in ("configs", "secrets"):
            svc.put(key, _file_refs(node, key), node.loc)
        elif key == "env_file":
            svc.put(key, _env_files(node, base_dir), node.loc)
        elif key == "healthcheck":
            test = node.get("test") if isinstance(node.value, dict) else None
            if test is not None and isinstance(test.value, str):
                node.value.put("test", located(["CMD-SHELL", str(test.value)], test.loc), test.loc)
        elif key == "deploy":
            labels = node.get("labels") if isinstance(node.value, dict) else None
            if labels is not None:
                node.value.put("labels", as_mapping(labels), labels.loc)


def _scalar_text(node: Node) -> Optional[str]:
    value = node.value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return value if isinstance(value, str) else go_number(value)
    node.expect("a string, number or boolean")


def as_mapping(node: Node, resolve: Optional[Mapping[str, str]] = None,
               separators: tuple[str, ...] = ("=",)) -> LDict:
    """``- K=V`` lists and mappings alike -> mapping of strings.

    With ``resolve`` (environment), a key without value is looked up there (None if
    unset); otherwise it maps to "" as docker does for labels. Several separators
    (extra_hosts: ``host=ip`` or ``host:ip``) mean a value is required, and may be a list.
    """
    out = LDict(node.loc)
    value_required = len(separators) > 1
    if isinstance(node.value, dict):
        for key, item in node.items():
            if value_required and isinstance(item.value, list):
                out.put(key, item.value, item.loc)
                continue
            text = _scalar_text(item)
            if text is None:
                text = resolve.get(key) if resolve is not None else ""
            out.put(key, text, item.loc)
        return out
    for item in node.elements():
        entry = item.strict_str()
        for sep in separators:
            key, found, value = entry.partition(sep)
            if found:
                break
        if not key or (value_required and not found):
            item.fail(f"invalid entry {entry!r}")
        if found:
            out.put(key, value, item.loc)
        else:
            out.put(key, resolve.get(key) if resolve is not None else "", item.loc)
    return out


def _str_list(node: Node) -> LList:
    out = LList(node.loc)
    if isinstance(node.value, str):
        out.add(str(node.value), node.loc)
        return out
    for item in node.elements():
        out.add(item.str(), item.loc)
    return out


def _command(node: Node) -> LList:
    if isinstance(node.value, str):
        try:
            words = shlex.split(node.value)
        except ValueError as exc:
            node.fail(f"cannot split command: {exc}")
        return located(words, node.loc)
    out = LList(node.loc)
    for item in node.elements():
        out.add(item.str(), item.loc)
    return out


def _names_mapping(node: Node, default: Optional[dict]) -> LDict:
    """A list of names -> mapping name -> default (networks, depends_on)."""
    if isinstance(node.value, dict):
        out = LDict(node.loc)
        for key, item in node.items():
            if item.value is not None:
                item.mapping()
            value = item.value if item.value is not None or default is None else located(default, item.loc)
            out.put(key, value, item.loc)
        return out
    out = LDict(node.loc)
    for item in node.elements():
        out.put(item.strict_str(), located(default, item.loc) if default else None, item.loc)
    return out


def _ports(node: Node) -> LList:
    out = LList(node.loc)
    for item in node.elements():
        if isinstance(item.value, dict):
            out.add(item.value, item.loc)
            continue
        if isinstance(item.value, int) and not isinstance(item.value, bool):
            spec = str(item.value)
        else:
            spec = item.strict_str()
        try:
            ports = parse_port_spec(spec)
        except ValueError as exc:
            item.fail(str(exc))
        for port in ports:
            out.add(located(port, item.loc), item.loc)
    return out


def _resolve(path: str, base_dir: Path) -> str:
    if path.startswith("~"):
        path = os.path.expanduser(path)
    if os.path.isabs(path) or not path.startswith(".") and is_host_path(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _volumes(node: Node, base_dir: Path) -> LList:
    out = LList(node.loc)
    for item in node.elements():
        if isinstance(item.value, dict):
            mount = item.value
            source = item.get("source")
            if mount.get("type") == "bind" and source is not None:
                mount.put("source", _resolve(source.str(), base_dir), source.loc)
            out.add(mount, item.loc)
            continue
        try:
            spec = parse_volume_spec(item.strict_str())
        except ValueError as exc:
            item.fail(str(exc))
        if spec["type"] == "bind":
            spec["source"] = _resolve(spec["source"], base_dir)
        out.add(located(spec, item.loc), item.loc)
    return out


def _file_refs(node: Node, kind: str) -> LList:
    """Service configs/secrets -> long syntax with a target (so merging can key on it)."""
    out = LList(node.loc)
    for item in node.elements():
        if isinstance(item.value, dict):
            ref = item.value
            source = item.get("source")
            if source is None:
                item.fail("missing 'source'")
            if item.get("target") is None:
                ref.put("target", default_target(kind, source.str()), item.loc)
            out.add(ref, item.loc)
        else:
            name = item.strict_str()
            out.add(located({"source": name, "target": default_target(kind, name)}, item.loc), item.loc)
    return out


def default_target(kind: str, name: str) -> str:
    """Where Swarm mounts a config (``/<name>``) or secret (``/run/secrets/<name>``) by default."""
    return f"/run/secrets/{name}" if kind == "secrets" else f"/{name}"


def _env_files(node: Node, base_dir: Path) -> LList:
    out = LList(node.loc)
    items = [node] if isinstance(node.value, str) else node.elements()
    for item in items:
        if isinstance(item.value, dict):
            path = item.get("path")
            if path is None:
                item.fail("missing 'path'")
            item.value.put("path", _resolve(path.str(), base_dir), path.loc)
            out.add(item.value, item.loc)
        else:
            out.add(_resolve(item.str(), base_dir), item.loc)
    return out

