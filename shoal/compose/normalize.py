"""A merged stack tree -> StackSpec: names, references, defaults, warnings.

Checks that need the whole stack live here: the version, references between services,
dependency cycles, and which options Swarm would ignore.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional

from shoal.compose.errors import ComposeError
from shoal.compose.objects import build_catalog
from shoal.compose.schema import DEPRECATED_SERVICE_KEYS, IGNORED_SERVICE_KEYS
from shoal.compose.service import convert_service
from shoal.compose.tree import LDict, Node
from shoal.model.specs import NetworkSpec, StackSpec

_STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def check_stack_name(name: str) -> None:
    if not _STACK_NAME.match(name or ""):
        raise ComposeError(f"invalid stack name {name!r}: use letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit")


def check_version(root: Node) -> None:
    """Swarm reads format 3.x (or no version, as in the compose spec)."""
    version = root.get("version")
    if version is None:
        return
    text = version.str()
    if not re.fullmatch(r"3(\.\d+)?", text):
        version.fail(f"unsupported compose file version {text!r}: docker stack deploy needs 3.x")


def build_stack(tree: LDict, stack: str, env: Mapping[str, Optional[str]],
                warnings: list[str]) -> StackSpec:
    check_stack_name(stack)
    root = Node(tree, "", tree.loc)
    check_version(root)
    cat = build_catalog(root, stack, env, read_data=True)
    services_node = root.get("services")
    services = list(services_node.items()) if services_node is not None else []
    names = {key for key, _ in services}
    specs = [convert_service(key, node, cat, env, names, warnings) for key, node in services]
    _check_cycles(services)
    used = {att.network for spec in specs for att in spec.networks}
    networks: list[NetworkSpec] = [n for n in cat.networks.values() if n.name in used]
    warnings.extend(_option_warnings(services))
    return StackSpec(
        name=stack, services=specs, networks=networks,
        volumes=list(cat.volumes.values()),
        configs=list(cat.configs.values()),
        secrets=list(cat.secrets.values()),
        warnings=warnings,
    )


def _option_warnings(services: list[tuple[str, Node]]) -> list[str]:
    ignored: set[str] = set()
    deprecated: set[str] = set()
    for _key, node in services:
        for option in node.mapping():
            if option == "restart":
                deploy = node.get("deploy")
                if deploy is None or deploy.get("restart_policy") is None:
                    continue  # used as the restart policy
            if option in IGNORED_SERVICE_KEYS:
                ignored.add(option)
            elif option in DEPRECATED_SERVICE_KEYS:
                deprecated.add(option)
    lines = []
    if ignored:
        lines.append(f"Ignoring unsupported options: {', '.join(sorted(ignored))}")
    if deprecated:
        lines.append(f"Ignoring deprecated options: {', '.join(sorted(deprecated))}")
    return lines


def _check_cycles(services: list[tuple[str, Node]]) -> None:
    """depends_on must be acyclic; a cycle is reported at the first service in it. Iterative: a
    chain of thousands of services is walked without recursion."""
    graph: dict[str, list[str]] = {}
    nodes = dict(services)
    for key, node in services:
        deps = node.get("depends_on")
        graph[key] = [d for d in deps.mapping() if d in nodes] if deps is not None else []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root, _ in services:
        if state.get(root):
            continue
        path: list[str] = [root]
        state[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, i = stack[-1]
            deps = graph.get(name, [])
            if i >= len(deps):
                stack.pop()
                path.pop()
                state[name] = 2
                continue
            stack[-1] = (name, i + 1)
            dep = deps[i]
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                shown = " -> ".join(cycle if len(cycle) <= 12 else cycle[:5] + ["…"] + cycle[-5:])
                nodes[dep].child("depends_on").fail(f"dependency cycle between services: {shown}")
            if state.get(dep) is None:
                state[dep] = 1
                path.append(dep)
                stack.append((dep, 0))
