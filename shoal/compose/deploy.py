"""The ``deploy:`` section (and ``restart:``) -> the scheduling half of a ServiceSpec."""
from __future__ import annotations

from typing import Any, Optional

from shoal.compose.schema import (DEPLOY_KEYS, PLACEMENT_KEYS, RESOURCE_KEYS, RESTART_POLICY_KEYS,
                                  UPDATE_CONFIG_KEYS)
from shoal.compose.tree import Node
from shoal.limits import MAX_REPLICAS
from shoal.model.specs import (TRAFFIC_POLICIES, TRAFFIC_POLICY, Placement, ResourceRequirements, Resources,
                               RestartPolicy, UpdateConfig)
from shoal.units import parse_bytes, parse_duration, parse_nano_cpus

MODES = ("replicated", "global", "replicated-job", "global-job")
_RESTART_MAP = {"no": "none", "always": "any", "on-failure": "on-failure", "unless-stopped": "any"}


def choice(node: Node, allowed: tuple[str, ...]) -> str:
    value = node.str()
    if value not in allowed:
        node.fail(f"invalid value {value!r}, expected one of: {', '.join(allowed)}")
    return value


def duration(node: Node) -> float:
    seconds = node.convert(parse_duration, "duration")
    if seconds < 0:
        node.fail(f"duration must not be negative, got {node.value!r}")
    return seconds


def convert_deploy(deploy: Optional[Node], restart: Optional[Node], ignored: list[str]) -> dict[str, Any]:
    """Keyword arguments for ServiceSpec from ``deploy:`` (plus ``restart:`` when no restart_policy);
    options accepted but not applied are added to ``ignored`` by key path."""
    out: dict[str, Any] = {}
    policy = deploy.get("restart_policy") if deploy is not None else None
    if policy is not None:
        out["restart_policy"] = _restart_policy(policy)
    elif restart is not None:
        out["restart_policy"] = _restart_option(restart)
    if deploy is None:
        return out
    deploy.check_keys(DEPLOY_KEYS, "deploy option")
    mode = choice(deploy.get("mode"), MODES) if deploy.get("mode") is not None else "replicated"
    out["mode"] = mode
    if (replicas := deploy.get("replicas")) is not None:
        if mode in ("global", "global-job"):
            replicas.fail(f"replicas can only be used with replicated or replicated-job mode, not {mode}")
        out["replicas"] = replicas.int(minimum=0, maximum=MAX_REPLICAS)
    if (concurrent := deploy.get("max_concurrent")) is not None:
        if not mode.endswith("-job"):
            concurrent.fail("max_concurrent can only be used with replicated-job or global-job mode")
        out["max_concurrent"] = concurrent.int(minimum=0, maximum=MAX_REPLICAS)
    if (labels := deploy.get("labels")) is not None:
        out["labels"] = {k: "" if v is None else str(v) for k, v in labels.mapping().items()}
        policy = out["labels"].get(TRAFFIC_POLICY)
        if policy is not None and policy not in TRAFFIC_POLICIES:
            where = labels.get(TRAFFIC_POLICY) if isinstance(labels.value, dict) else None
            (where or labels).fail(f"label {TRAFFIC_POLICY}: invalid value {policy!r}, expected one of: "
                                   f"{', '.join(TRAFFIC_POLICIES)}")
    if (resources := deploy.get("resources")) is not None:
        out["resources"] = _resources(resources, ignored)
    if (placement := deploy.get("placement")) is not None:
        out["placement"] = _placement(placement)
    if (update := deploy.get("update_config")) is not None:
        out["update_config"] = _update_config(update, rollback=False)
    if (rollback := deploy.get("rollback_config")) is not None:
        out["rollback_config"] = _update_config(rollback, rollback=True)
    if (endpoint := deploy.get("endpoint_mode")) is not None:
        out["endpoint_mode"] = choice(endpoint, ("vip", "dnsrr"))
    return out


def _resources(node: Node, ignored: list[str]) -> ResourceRequirements:
    node.check_keys({"limits", "reservations"}, "resources option")
    result = ResourceRequirements()
    for which in ("limits", "reservations"):
        section = node.get(which)
        if section is None:
            continue
        section.check_keys(RESOURCE_KEYS, f"{which} option")
        for key in ("generic_resources", "devices"):
            if section.get(key) is not None:
                ignored.append(f"{section.path}.{key}")
        res = Resources()
        if (cpus := section.get("cpus")) is not None:
            res.nano_cpus = cpus.convert(parse_nano_cpus, "CPU count")
        if (memory := section.get("memory")) is not None:
            res.memory_bytes = memory.convert(parse_bytes, "size")
        if (pids := section.get("pids")) is not None:
            res.pids = pids.int(minimum=0)
        setattr(result, which, res)
    return result


def _restart_policy(node: Node) -> RestartPolicy:
    node.check_keys(RESTART_POLICY_KEYS, "restart_policy option")
    policy = RestartPolicy()
    if (condition := node.get("condition")) is not None:
        policy.condition = choice(condition, ("none", "on-failure", "any"))
    if (delay := node.get("delay")) is not None:
        policy.delay = duration(delay)
    if (attempts := node.get("max_attempts")) is not None:
        policy.max_attempts = attempts.int(minimum=0)
    if (window := node.get("window")) is not None:
        policy.window = duration(window)
    return policy


def _restart_option(node: Node) -> RestartPolicy:
    """The container-style ``restart:`` as docker stack deploy maps it."""
    if node.value is False:  # `restart: no` read as YAML 1.1 boolean
        return RestartPolicy(condition="none")
    value = node.str()
    name, _, count = value.partition(":")
    if name not in _RESTART_MAP or (count and name != "on-failure"):
        node.fail(f"invalid restart policy {value!r}, expected no, always, on-failure[:N] or unless-stopped")
    policy = RestartPolicy(condition=_RESTART_MAP[name])
    if count:
        if not count.isdigit():
            node.fail(f"invalid restart policy {value!r}: max attempts must be an integer")
        policy.max_attempts = int(count)
    return policy


def _placement(node: Node) -> Placement:
    node.check_keys(PLACEMENT_KEYS, "placement option")
    placement = Placement()
    if (constraints := node.get("constraints")) is not None:
        placement.constraints = constraints.str_list()
    if (preferences := node.get("preferences")) is not None:
        for pref in preferences.elements():
            pref.check_keys({"spread"}, "placement preference")
            spread = pref.get("spread")
            if spread is None:
                pref.fail("placement preference needs 'spread'")
            placement.preferences.append(spread.str())
    if (per_node := node.get("max_replicas_per_node")) is not None:
        placement.max_replicas_per_node = per_node.int(minimum=0, maximum=MAX_REPLICAS)
    return placement


def _update_config(node: Node, rollback: bool) -> UpdateConfig:
    node.check_keys(UPDATE_CONFIG_KEYS, "rollback_config option" if rollback else "update_config option")
    config = UpdateConfig()
    if (parallelism := node.get("parallelism")) is not None:
        config.parallelism = parallelism.int(minimum=0, maximum=MAX_REPLICAS)
    if (delay := node.get("delay")) is not None:
        config.delay = duration(delay)
    if (monitor := node.get("monitor")) is not None:
        config.monitor = duration(monitor)
    if (action := node.get("failure_action")) is not None:
        config.failure_action = choice(action, ("pause", "continue") if rollback else ("pause", "continue", "rollback"))
    if (ratio := node.get("max_failure_ratio")) is not None:
        value = ratio.number()
        if not 0 <= value <= 1:
            ratio.fail(f"must be between 0 and 1, got {value}")
        config.max_failure_ratio = value
    if (order := node.get("order")) is not None:
        config.order = choice(order, ("stop-first", "start-first"))
    return config
