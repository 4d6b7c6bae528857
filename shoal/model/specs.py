"""Desired state as plain data: what a user asks for, after compose loading.

These models are the contract between the compose loader (which produces them),
the manager's store (which keeps them as JSON) and the sans-IO core (which reads
them). Times are seconds (float), sizes are bytes (int), CPUs are nano-CPUs (int,
as Docker's NanoCPUs). Names of networks, configs, secrets and volumes here are
the *full* names (``<stack>_<name>`` unless the file set ``name:``).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class HealthCheck(Plain):
    # test: ["NONE"] disables; ["CMD", ...] or ["CMD-SHELL", "..."]
    test: Optional[list[str]] = None
    interval: Optional[float] = None
    timeout: Optional[float] = None
    retries: Optional[int] = None
    start_period: Optional[float] = None
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
    tmpfs_size: Optional[int] = None
    tmpfs_mode: Optional[int] = None
    bind_propagation: Optional[str] = None


class FileRef(Plain):
    """A config or secret mounted into a task."""
    source: str  # full object name, e.g. todo_todo-list-config
    target: str  # absolute path inside the container
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444
    # The object's data_version this ref mounts, pinned by the manager when it accepts the spec
    # (0: not pinned yet, i.e. the current one). Rotation is a spec change of this number, so it
    # rolls like any update, and rollback goes back to the bytes the previous spec pinned.
    version: int = 0


class Ulimit(Plain):
    soft: int
    hard: int


class ContainerSpec(Plain):
    image: str
    command: Optional[list[str]] = None
    entrypoint: Optional[list[str]] = None
    env: dict[str, Optional[str]] = Field(default_factory=dict)
    working_dir: Optional[str] = None
    user: Optional[str] = None
    hostname: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)  # container labels
    stop_grace_period: float = 10.0
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
    nano_cpus: int = 0
    memory_bytes: int = 0
    pids: int = 0


class ResourceRequirements(Plain):
    limits: Resources = Field(default_factory=Resources)
    reservations: Resources = Field(default_factory=Resources)


class RestartPolicy(Plain):
    condition: Literal["none", "on-failure", "any"] = "any"
    delay: float = 5.0
    max_attempts: int = 0  # 0 = unlimited
    window: float = 0.0  # 0 = no window


class Placement(Plain):
    constraints: list[str] = Field(default_factory=list)
    preferences: list[str] = Field(default_factory=list)  # spread descriptors, e.g. node.labels.zone
    max_replicas_per_node: int = 0  # 0 = unlimited


class UpdateConfig(Plain):
    parallelism: int = 1  # 0 = all at once
    delay: float = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: Literal["stop-first", "start-first"] = "stop-first"


class PortConfig(Plain):
    target: int
    published: Optional[int] = None  # None = dynamic (30000-32767) in ingress mode
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class NetworkAttachment(Plain):
    network: str  # full network name
    aliases: list[str] = Field(default_factory=list)
    ipv4_address: Optional[str] = None


class Dependency(Plain):
    service: str  # full service name
    condition: Literal["service_started", "service_healthy", "service_completed_successfully"] = "service_started"


class ServiceSpec(Plain):
    name: str  # full name: <stack>_<service>
    stack: Optional[str] = None  # the namespace; None for services made outside a stack
    labels: dict[str, str] = Field(default_factory=dict)  # service labels (deploy.labels)
    container: ContainerSpec
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    placement: Placement = Field(default_factory=Placement)
    mode: Literal["replicated", "global", "replicated-job", "global-job"] = "replicated"
    replicas: int = 1  # replicated: desired count; replicated-job: total completions
    max_concurrent: int = 0  # jobs: 0 = replicas
    update_config: UpdateConfig = Field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = Field(default_factory=UpdateConfig)
    networks: list[NetworkAttachment] = Field(default_factory=list)
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    ports: list[PortConfig] = Field(default_factory=list)
    depends_on: list[Dependency] = Field(default_factory=list)
    force_update: int = 0  # bumped by `service update --force`

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
