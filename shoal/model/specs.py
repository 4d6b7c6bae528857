"""Desired state as plain data: what a user asks for, after compose loading.

These models are the contract between the compose loader (which produces them),
the manager's store (which keeps them as JSON) and the sans-IO core (which reads
them). Times are seconds (float), sizes are bytes (int), CPUs are nano-CPUs (int,
as Docker's NanoCPUs). Names of networks, configs, secrets and volumes here are
the *full* names (``<stack>_<name>`` unless the file set ``name:``).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shoal.limits import MAX_DURATION, MAX_REPLICAS

# Bounded numbers: every float is finite (JSON has no inf/nan: they would be stored as null and
# break the next load), every count and size is in a range the engine and the loop can take.
Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION)]
Count = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
NonNeg = Annotated[int, Field(ge=0, le=2**63 - 1)]
Port = Annotated[int, Field(ge=1, le=65535)]

# Swarm's rule for service names (a DNS name component: the name is a DNS label for VIPs and
# `tasks.<name>`): letters and digits, '-' and '_' inside, at most 63 characters.
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")


class Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64",
                              allow_inf_nan=False)


class HealthCheck(Plain):
    # test: ["NONE"] disables; ["CMD", ...] or ["CMD-SHELL", "..."]
    test: Optional[list[str]] = None
    interval: Optional[Seconds] = None
    timeout: Optional[Seconds] = None
    retries: Optional[NonNeg] = None
    start_period: Optional[Seconds] = None
    disable: bool = False


class Mount(Plain):
    type: Literal["volume", "bind", "tmpfs"] = "volume"
    source: Optional[str] = None  # full volume name, host path, or None (anonymous/tmpfs)
    target: str
    read_only: bool = False
    volume_nocopy: bool = False
    volume_driver: Optional[str] = None
    volume_driver_opts: dict[str, str] = Field(default_factory=dict)
    volume_labels: dict[str, str] = Field(default_factory=dict)
    volume_external: bool = False
    tmpfs_size: Optional[NonNeg] = None
    tmpfs_mode: Optional[Annotated[int, Field(ge=0, le=0o7777)]] = None
    bind_propagation: Optional[str] = None


class FileRef(Plain):
    """A config or secret mounted into a task."""
    source: str  # full object name, e.g. todo_todo-list-config
    target: str  # absolute path inside the container
    uid: str = "0"
    gid: str = "0"
    mode: Annotated[int, Field(ge=0, le=0o7777)] = 0o444
    # The object's data_version this ref mounts, pinned by the manager when it accepts the spec
    # (0: not pinned yet, i.e. the current one). Rotation is a spec change of this number, so it
    # rolls like any update, and rollback goes back to the bytes the previous spec pinned.
    version: NonNeg = 0


class Ulimit(Plain):
    soft: Annotated[int, Field(ge=-1, le=2**63 - 1)]
    hard: Annotated[int, Field(ge=-1, le=2**63 - 1)]


class ContainerSpec(Plain):
    image: str
    command: Optional[list[str]] = None
    entrypoint: Optional[list[str]] = None
    env: dict[str, Optional[str]] = Field(default_factory=dict)
    working_dir: Optional[str] = None
    user: Optional[str] = None
    hostname: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)  # container labels
    stop_grace_period: Seconds = 10.0
    stop_signal: Optional[str] = None
    init: Optional[bool] = None
    read_only: bool = False
    tmpfs: list[str] = Field(default_factory=list)  # "/path[:opts]"
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    sysctls: dict[str, str] = Field(default_factory=dict)
    ulimits: dict[str, Ulimit] = Field(default_factory=dict)
    extra_hosts: list[str] = Field(default_factory=list)  # "host:ip"
    dns: list[str] = Field(default_factory=list)
    dns_search: list[str] = Field(default_factory=list)
    dns_opt: list[str] = Field(default_factory=list)
    tty: bool = False
    stdin_open: bool = False
    healthcheck: Optional[HealthCheck] = None
    mounts: list[Mount] = Field(default_factory=list)
    configs: list[FileRef] = Field(default_factory=list)
    secrets: list[FileRef] = Field(default_factory=list)


class Resources(Plain):
    nano_cpus: NonNeg = 0
    memory_bytes: NonNeg = 0
    pids: NonNeg = 0


class ResourceRequirements(Plain):
    limits: Resources = Field(default_factory=Resources)
    reservations: Resources = Field(default_factory=Resources)


class RestartPolicy(Plain):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: Seconds = 5.0
    max_attempts: NonNeg = 0  # 0 = unlimited
    window: Seconds = 0.0  # 0 = no window


class Placement(Plain):
    constraints: list[str] = Field(default_factory=list)
    preferences: list[str] = Field(default_factory=list)  # spread descriptors, e.g. node.labels.zone
    max_replicas_per_node: Count = 0  # 0 = unlimited


class UpdateConfig(Plain):
    parallelism: Count = 1  # 0 = all at once
    delay: Seconds = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: Seconds = 5.0
    max_failure_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    order: Literal["stop-first", "start-first"] = "stop-first"


class PortConfig(Plain):
    target: Port
    published: Optional[Port] = None  # None = dynamic (30000-32767) in ingress mode
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class NetworkAttachment(Plain):
    network: str  # full network name
    aliases: list[str] = Field(default_factory=list)
    ipv4_address: Optional[str] = None


class Dependency(Plain):
    service: str  # full service name
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = "service_started"


TRAFFIC_POLICY = "shoal.traffic-policy"
TRAFFIC_POLICIES = ("cluster", "local")


class ServiceSpec(Plain):
    name: str  # full name: <stack>_<service>
    stack: Optional[str] = None  # the namespace; None for services made outside a stack
    labels: dict[str, str] = Field(default_factory=dict)  # service labels (deploy.labels)
    container: ContainerSpec
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    placement: Placement = Field(default_factory=Placement)
    mode: Literal["replicated", "global", "replicated-job", "global-job"] = "replicated"
    replicas: Count = 1  # replicated: desired count; replicated-job: total completions
    max_concurrent: Count = 0  # jobs: 0 = replicas
    update_config: UpdateConfig = Field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = Field(default_factory=UpdateConfig)
    networks: list[NetworkAttachment] = Field(default_factory=list)
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    ports: list[PortConfig] = Field(default_factory=list)
    depends_on: list[Dependency] = Field(default_factory=list)
    force_update: NonNeg = 0  # bumped by `service update --force`

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: dict[str, str]) -> dict[str, str]:
        policy = v.get(TRAFFIC_POLICY)
        if policy is not None and policy not in TRAFFIC_POLICIES:
            raise ValueError(f"label {TRAFFIC_POLICY}: {policy!r} is not a traffic policy "
                             "(cluster: every replica on every node; local: only this node's replicas)")
        return v

    @property
    def traffic_policy(self) -> str:
        """Beyond Swarm (moby#25526): `local` sends a published port's traffic only to the
        replicas on the node it reached, which then see the client's own address."""
        return self.labels.get(TRAFFIC_POLICY, "cluster")

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not SERVICE_NAME.match(v):
            raise ValueError(f"invalid service name {v!r}: it must be valid as a DNS name component "
                             "(letters, digits, '-' and '_' inside)")
        if len(v) > 63:
            raise ValueError(f"invalid service name {v!r}: it must be 63 characters or fewer")
        return v

    @property
    def short_name(self) -> str:
        if self.stack and self.name.startswith(self.stack + "_"):
            return self.name[len(self.stack) + 1:]
        return self.name


class NetworkSpec(Plain):
    name: str  # full name
    stack: Optional[str] = None
    driver: str = "overlay"
    driver_opts: dict[str, str] = Field(default_factory=dict)
    subnets: list[str] = Field(default_factory=list)
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    external: bool = False


class VolumeSpec(Plain):
    name: str  # full name
    stack: Optional[str] = None
    driver: str = "local"
    driver_opts: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    external: bool = False


class FileObjectSpec(Plain):
    """A config or secret declared in a stack file."""
    name: str  # full name
    stack: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    external: bool = False
    data: Optional[bytes] = None  # from file: or environment:; None when external
    source: Optional[str] = None  # where the data came from, for messages ("./configs/config.json")


class StackSpec(Plain):
    """Everything one `stack deploy` asks for, normalised."""
    name: str
    services: list[ServiceSpec] = Field(default_factory=list)
    networks: list[NetworkSpec] = Field(default_factory=list)
    volumes: list[VolumeSpec] = Field(default_factory=list)
    configs: list[FileObjectSpec] = Field(default_factory=list)
    secrets: list[FileObjectSpec] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
