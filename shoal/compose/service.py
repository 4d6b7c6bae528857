"""One merged, canonical service -> ServiceSpec (container, mounts, ports, references)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

from pydantic import ValidationError

from shoal.compose.deploy import choice, convert_deploy, duration
from shoal.compose.envfile import read_env_file
from shoal.compose.objects import NAMESPACE_LABEL, Catalog
from shoal.compose.schema import (DEPENDS_ON_KEYS, FILE_REF_KEYS, HEALTHCHECK_KEYS, PORT_KEYS,
                                  SERVICE_NETWORK_KEYS, VOLUME_MOUNT_KEYS)
from shoal.compose.shortsyntax import PROTOCOLS, is_abs_target
from shoal.compose.tree import Node
from shoal.model.specs import (SERVICE_NAME, ContainerSpec, Dependency, FileRef, HealthCheck, Mount,
                               NetworkAttachment, PortConfig, ServiceSpec, Ulimit)
from shoal.model.validation import describe_errors
from shoal.units import parse_bytes

IMAGE_LABEL = "com.docker.stack.image"
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


def convert_service(key: str, node: Node, cat: Catalog, env: Mapping[str, Optional[str]],
                    services: set[str], warnings: list[str]) -> ServiceSpec:
    """The spec of service ``key``; ``services`` are the short names it may depend on."""
    stack = cat.stack
    image_node = node.get("image")
    if image_node is None or not image_node.str().strip():
        node.fail("service has no image")
    image = image_node.str().strip()
    container = _container(node, image, stack, env)
    container.mounts = _mounts(node, cat)
    container.configs = [_file_ref(r, cat, "configs") for r in _elements(node, "configs")]
    container.secrets = [_file_ref(r, cat, "secrets") for r in _elements(node, "secrets")]
    name = f"{stack}_{key}"
    if not SERVICE_NAME.match(name) or len(name) > 63:
        node.fail(f"invalid service name {name!r}: a service name must be valid as a DNS name component "
                  "(letters, digits, '-' and '_' inside) and 63 characters or fewer")
    ignored: list[str] = []
    spec = ServiceSpec(name=name, stack=stack, container=container,
                       **convert_deploy(node.get("deploy"), node.get("restart"), ignored))
    spec.labels = {**spec.labels, NAMESPACE_LABEL: stack, IMAGE_LABEL: image}
    spec.ports = [_port(port, key, warnings) for port in _elements(node, "ports")]
    spec.networks = _networks(node, key, cat)
    spec.depends_on = _depends_on(node, stack, services, warnings)
    if (hc := node.get("healthcheck")) is not None and hc.get("start_interval") is not None:
        ignored.append(f"{hc.path}.start_interval")
    if ignored:
        warnings.append(f"Ignoring unsupported options: {', '.join(ignored)} (not supported by the engine's API 1.41)"
                        if all(i.endswith("start_interval") for i in ignored) else
                        f"Ignoring unsupported options: {', '.join(ignored)}")
    try:  # what each conversion left unchecked (assignments are not validated): one last look
        return ServiceSpec.model_validate(spec.model_dump(warnings=False))
    except ValidationError as e:
        node.fail(describe_errors(e))


def _elements(node: Node, key: str) -> list[Node]:
    child = node.get(key)
    return child.elements() if child is not None else []


def _opt_str(node: Node, key: str) -> Optional[str]:
    child = node.get(key)
    return child.str() if child is not None else None


def _opt_bool(node: Node, key: str) -> Optional[bool]:
    child = node.get(key)
    return child.bool() if child is not None else None


def _container(node: Node, image: str, stack: str, env: Mapping[str, Optional[str]]) -> ContainerSpec:
    c = ContainerSpec(image=image)
    for key in ("command", "entrypoint"):
        if (child := node.get(key)) is not None:
            setattr(c, key, [n.str() for n in child.elements()])
    c.env = _environment(node, env)
    c.working_dir = _opt_str(node, "working_dir")
    c.user = _opt_str(node, "user")
    c.hostname = _opt_str(node, "hostname")
    labels = node.get("labels")
    c.labels = {**({k: str(v) for k, v in labels.mapping().items()} if labels else {}), NAMESPACE_LABEL: stack}
    if (grace := node.get("stop_grace_period")) is not None:
        c.stop_grace_period = duration(grace)
    c.stop_signal = _opt_str(node, "stop_signal")
    c.init = _opt_bool(node, "init")
    c.read_only = bool(_opt_bool(node, "read_only"))
    c.tty = bool(_opt_bool(node, "tty"))
    c.stdin_open = bool(_opt_bool(node, "stdin_open"))
    for key in ("tmpfs", "cap_add", "cap_drop", "dns", "dns_search", "dns_opt"):
        setattr(c, key, [n.str() for n in _elements(node, key)])
    if (sysctls := node.get("sysctls")) is not None:
        c.sysctls = {k: n.str() for k, n in sysctls.items() if n.value is not None}
    if (ulimits := node.get("ulimits")) is not None:
        c.ulimits = {name: _ulimit(limit) for name, limit in ulimits.items()}
    if (hosts := node.get("extra_hosts")) is not None:
        for host, ip in hosts.items():
            for addr in ip.str_list():
                c.extra_hosts.append(f"{host}:{addr}")
    if (health := node.get("healthcheck")) is not None:
        c.healthcheck = _healthcheck(health)
    return c


def _environment(node: Node, env: Mapping[str, Optional[str]]) -> dict[str, Optional[str]]:
    """env_file files in order, then ``environment:`` over them."""
    result: dict[str, Optional[str]] = {}
    for item in _elements(node, "env_file"):
        required = True
        path_node = item
        if isinstance(item.value, dict):
            path_node = item.child("path")
            if (req := item.get("required")) is not None:
                required = req.bool()
        path = path_node.str()
        if "\x00" in path:
            path_node.fail(f"invalid env file path {path!r}")
        if not os.path.isfile(path):
            if required:
                path_node.fail(f"env file {path} not found")
            continue
        try:
            values = read_env_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            path_node.fail(f"cannot read env file {path}: {exc}")
        result.update({k: env.get(k) if v is None else v for k, v in values.items()})
    if (environment := node.get("environment")) is not None:
        for key, value in environment.items():
            if isinstance(value.value, (dict, list)):
                value.expect("a string, number or boolean")
            result[key] = None if value.value is None else value.str()
    return result


def _ulimit(node: Node) -> Ulimit:
    if isinstance(node.value, dict):
        node.check_keys({"soft", "hard"}, "ulimit option")
        soft, hard = node.get("soft"), node.get("hard")
        if soft is None or hard is None:
            node.fail("ulimit needs both 'soft' and 'hard'")
        return Ulimit(soft=soft.int(), hard=hard.int())
    value = node.int()
    return Ulimit(soft=value, hard=value)


def _healthcheck(node: Node) -> HealthCheck:
    node.check_keys(HEALTHCHECK_KEYS, "healthcheck option")
    check = HealthCheck()
    if (test := node.get("test")) is not None:
        check.test = [n.str() for n in test.elements()]
        if not check.test or check.test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            test.fail("test must start with NONE, CMD or CMD-SHELL (or be a string)")
    if (disable := node.get("disable")) is not None and disable.bool():
        check.disable = True
    if check.test == ["NONE"] or check.disable:
        return HealthCheck(test=["NONE"], disable=True)
    for key in ("interval", "timeout", "start_period"):
        if (child := node.get(key)) is not None:
            setattr(check, key, duration(child))
    if (retries := node.get("retries")) is not None:
        check.retries = retries.int(minimum=0)
    return check


def _mounts(node: Node, cat: Catalog) -> list[Mount]:
    """Mounts of a service; two at one path would make the container fail to start."""
    mounts: list[Mount] = []
    for item in _elements(node, "volumes"):
        mount = _mount(item, cat)
        if any(m.target == mount.target for m in mounts):
            item.fail(f"duplicate mount target {mount.target!r}")
        mounts.append(mount)
    return mounts


def _mount(node: Node, cat: Catalog) -> Mount:
    node.check_keys(VOLUME_MOUNT_KEYS, "volume option")
    kind = choice(node.get("type"), ("volume", "bind", "tmpfs")) if node.get("type") is not None else "volume"
    target_node = node.get("target")
    if target_node is None:
        node.fail("mount needs a 'target'")
    target = target_node.str()
    if not is_abs_target(target):
        target_node.fail(f"mount path must be absolute, got {target!r}")
    mount = Mount(type=kind, target=target, read_only=bool(_opt_bool(node, "read_only")))
    source = node.get("source")
    if kind == "volume" and source is not None:
        name = source.str()
        volume = cat.volumes.get(name)
        if volume is None:
            source.fail(f"refers to undefined volume {name!r}")
        mount.source = volume.name
        mount.volume_driver = volume.driver
        mount.volume_driver_opts = dict(volume.driver_opts)
        mount.volume_labels = dict(volume.labels)
        mount.volume_external = volume.external
    elif kind == "bind":
        if source is None:
            node.fail("bind mount needs a 'source'")
        mount.source = source.str()
    elif kind == "tmpfs" and source is not None:
        source.fail("tmpfs mount takes no 'source'")
    if (opts := node.get("volume")) is not None:
        opts.check_keys({"nocopy", "subpath"}, "volume option")
        mount.volume_nocopy = bool(_opt_bool(opts, "nocopy"))
    if (opts := node.get("bind")) is not None:
        opts.check_keys({"propagation", "create_host_path", "selinux"}, "bind option")
        mount.bind_propagation = _opt_str(opts, "propagation")
    if (opts := node.get("tmpfs")) is not None:
        opts.check_keys({"size", "mode"}, "tmpfs option")
        if (size := opts.get("size")) is not None:
            mount.tmpfs_size = size.convert(parse_bytes, "size")
        if (mode := opts.get("mode")) is not None:
            mount.tmpfs_mode = mode.int(minimum=0)
    return mount


def _port(node: Node, service: str, warnings: list[str]) -> PortConfig:
    node.check_keys(PORT_KEYS, "port option")
    target = node.get("target")
    if target is None:
        node.fail("port needs a 'target'")
    port = PortConfig(target=_port_number(target, minimum=1))
    if (published := node.get("published")) is not None:
        port.published = _port_number(published, minimum=0)
    if (protocol := node.get("protocol")) is not None:
        port.protocol = choice(protocol, PROTOCOLS)
    if (mode := node.get("mode")) is not None:
        port.mode = choice(mode, ("ingress", "host"))
    if (host_ip := node.get("host_ip")) is not None:
        warnings.append(f"Ignoring host IP {host_ip.str()} of port {port.published or ''}:{port.target} "
                        f"in service {service}: Swarm publishes on all addresses")
    return port


def _port_number(node: Node, minimum: int) -> int:
    value = node.value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    elif isinstance(value, str) or isinstance(value, bool) or not isinstance(value, int):
        node.expect("a port number")
    if not minimum <= value <= 65535:
        node.fail(f"port number out of range: {value}")
    return value


def _file_ref(node: Node, cat: Catalog, kind: str) -> FileRef:
    node.check_keys(FILE_REF_KEYS, f"{kind[:-1]} option")
    source = node.child("source")
    name = source.str()
    obj = getattr(cat, kind).get(name)
    if obj is None:
        source.fail(f"refers to undefined {kind[:-1]} {name!r}")
    target = node.child("target").str()
    if kind == "secrets" and not is_abs_target(target):
        target = f"/run/secrets/{target}"
    ref = FileRef(source=obj.name, target=target)
    for key in ("uid", "gid"):
        if (child := node.get(key)) is not None:
            setattr(ref, key, child.str())
    if (mode := node.get("mode")) is not None:
        ref.mode = mode.int(minimum=0)
        if ref.mode > 0o7777:
            mode.fail(f"invalid file mode {ref.mode:o} (octal)")
    return ref


def _networks(node: Node, key: str, cat: Catalog) -> list[NetworkAttachment]:
    networks = node.get("networks")
    if networks is None or not networks.mapping():
        return [NetworkAttachment(network=cat.default_network().name, aliases=[key])]
    result = []
    for name, attach in networks.items():
        spec = cat.networks.get(name) or (cat.default_network() if name == "default" else None)
        if spec is None:
            attach.fail(f"refers to undefined network {name!r}")
        att = NetworkAttachment(network=spec.name, aliases=[key])
        if attach.value is not None:
            attach.check_keys(SERVICE_NETWORK_KEYS, "network option")
            for alias in _elements(attach, "aliases"):
                if alias.str() not in att.aliases:
                    att.aliases.append(alias.str())
            att.ipv4_address = _opt_str(attach, "ipv4_address")
        result.append(att)
    return result


def _depends_on(node: Node, stack: str, services: set[str], warnings: list[str]) -> list[Dependency]:
    deps = node.get("depends_on")
    result = []
    for name, dep in (deps.items() if deps is not None else []):
        required = True
        if dep.value is not None:
            dep.check_keys(DEPENDS_ON_KEYS, "depends_on option")
            if (req := dep.get("required")) is not None:
                required = req.bool()
        if name not in services:
            if required:
                dep.fail(f"depends on undefined service {name!r}")
            # compose's `required: false`: a dependency that is not there is only a warning
            warnings.append(f"{dep.path}: service {name!r} is not in the stack; ignored (required: false)")
            continue
        condition = "service_started"
        if dep.value is not None:
            if (cond := dep.get("condition")) is not None:
                condition = choice(cond, CONDITIONS)
        result.append(Dependency(service=f"{stack}_{name}", condition=condition))
    return result
