"""Top-level networks, volumes, configs and secrets -> specs with their full names.

Full names are ``<stack>_<key>`` unless the file sets ``name:``; external objects keep
the name they have outside the stack (the key, or ``name:``). Objects the stack creates
get the namespace label; external ones belong to no stack and get none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from shoal.compose.canonical import as_mapping
from shoal.compose.schema import CONFIG_KEYS, NETWORK_KEYS, SECRET_KEYS, VOLUME_KEYS
from shoal.compose.tree import Node
from shoal.model.specs import FileObjectSpec, NetworkSpec, VolumeSpec

NAMESPACE_LABEL = "com.docker.stack.namespace"
MAX_SIZE = {"configs": 1000 * 1024, "secrets": 500 * 1024}  # swarmkit's limits


@dataclass
class Catalog:
    """What services may refer to, by the key used in the file."""
    stack: str
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes: dict[str, VolumeSpec] = field(default_factory=dict)
    configs: dict[str, FileObjectSpec] = field(default_factory=dict)
    secrets: dict[str, FileObjectSpec] = field(default_factory=dict)

    def default_network(self) -> NetworkSpec:
        """The network of services that name none; declared or made up on first use."""
        if "default" not in self.networks:
            self.networks["default"] = NetworkSpec(
                name=f"{self.stack}_default", stack=self.stack, labels={NAMESPACE_LABEL: self.stack})
        return self.networks["default"]


def str_map(node: Optional[Node]) -> dict[str, str]:
    """A list-or-mapping option (labels, driver_opts) as str -> str."""
    if node is None:
        return {}
    return {k: "" if v is None else str(v) for k, v in as_mapping(node).items()}


def _naming(stack: str, key: str, node: Node) -> tuple[str, bool]:
    """(full name, external) of a top-level object."""
    if node.value is None:
        return f"{stack}_{key}", False
    name = node.get("name")
    external = node.get("external")
    is_external = False
    legacy_name = None
    if external is not None:
        if isinstance(external.value, dict):  # external: {name: x}, compose v3.0-3.3
            is_external = True
            legacy = external.get("name")
            legacy_name = legacy.str() if legacy is not None else None
        else:
            is_external = external.bool()
    if name is not None:
        return name.str(), is_external
    if is_external:
        return legacy_name or key, True
    return f"{stack}_{key}", False


def _labels(stack: str, node: Node, external: bool) -> dict[str, str]:
    labels = str_map(node.get("labels")) if node.value is not None else {}
    if not external:
        labels[NAMESPACE_LABEL] = stack
    return labels


def build_catalog(root: Node, stack: str, env: Mapping[str, Optional[str]], read_data: bool) -> Catalog:
    cat = Catalog(stack)
    for key, node in _section(root, "networks"):
        cat.networks[key] = _network(stack, key, node)
    for key, node in _section(root, "volumes"):
        cat.volumes[key] = _volume(stack, key, node)
    for kind, keys in (("configs", CONFIG_KEYS), ("secrets", SECRET_KEYS)):
        target = getattr(cat, kind)
        for key, node in _section(root, kind):
            target[key] = _file_object(stack, key, node, kind, keys, env, read_data)
    return cat


def _section(root: Node, name: str) -> list[tuple[str, Node]]:
    section = root.get(name)
    return list(section.items()) if section is not None else []


def _network(stack: str, key: str, node: Node) -> NetworkSpec:
    full, external = _naming(stack, key, node)
    spec = NetworkSpec(name=full, stack=None if external else stack, external=external,
                       labels=_labels(stack, node, external))
    if node.value is None:
        return spec
    node.check_keys(NETWORK_KEYS)
    if (driver := node.get("driver")) is not None:
        spec.driver = driver.str()
    spec.driver_opts = str_map(node.get("driver_opts"))
    if (internal := node.get("internal")) is not None:
        spec.internal = internal.bool()
    if (attachable := node.get("attachable")) is not None:
        spec.attachable = attachable.bool()
    if (ipam := node.get("ipam")) is not None:
        ipam.check_keys({"driver", "config", "options"})
        for pool in (ipam.get("config").elements() if ipam.get("config") is not None else []):
            subnet = pool.get("subnet")
            if subnet is not None:
                spec.subnets.append(subnet.str())
    return spec


def _volume(stack: str, key: str, node: Node) -> VolumeSpec:
    full, external = _naming(stack, key, node)
    spec = VolumeSpec(name=full, stack=None if external else stack, external=external,
                      labels=_labels(stack, node, external))
    if node.value is None:
        return spec
    node.check_keys(VOLUME_KEYS)
    if (driver := node.get("driver")) is not None:
        spec.driver = driver.str()
    spec.driver_opts = str_map(node.get("driver_opts"))
    return spec


def _file_object(stack: str, key: str, node: Node, kind: str, keys: frozenset[str],
                 env: Mapping[str, Optional[str]], read_data: bool) -> FileObjectSpec:
    singular = kind[:-1]
    if node.value is None:
        node.fail(f"{singular} needs 'file', 'environment', 'content' or 'external'")
    node.check_keys(keys)
    full, external = _naming(stack, key, node)
    spec = FileObjectSpec(name=full, stack=None if external else stack, external=external,
                          labels=_labels(stack, node, external))
    if external:
        return spec
    if (file_node := node.get("file")) is not None:
        path = file_node.str()
        spec.source = path
        if read_data:
            try:
                spec.data = Path(path).read_bytes()
            except OSError as exc:
                file_node.fail(f"cannot read {singular} file {path}: {exc.strerror}")
            except ValueError as exc:  # a NUL in the path
                file_node.fail(f"invalid {singular} file path {path!r}: {exc}")
    elif (env_node := node.get("environment")) is not None:
        var = env_node.str()
        value = env.get(var)
        if value is None:
            env_node.fail(f"environment variable {var} is not set")
        spec.source = f"${var}"
        spec.data = value.encode()
    elif (content := node.get("content")) is not None:
        spec.source = "content"
        spec.data = content.str().encode()
    else:
        node.fail(f"{singular} needs 'file', 'environment', 'content' or 'external'")
    if spec.data is not None and len(spec.data) > MAX_SIZE[kind]:
        node.fail(f"{singular} data is {len(spec.data)} bytes, over Swarm's limit of {MAX_SIZE[kind] // 1024} KB")
    return spec
