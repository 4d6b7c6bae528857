"""Cluster objects as the store keeps them: specs plus the state the cluster adds.

Every object has an ``id`` and a ``version`` (bumped by the store on each write,
used for optimistic concurrency). Timestamps are UNIX seconds (float).
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shoal.limits import DEFAULT_CERT_EXPIRY, DEFAULT_HEARTBEAT, MAX_CERT_EXPIRY, MIN_CERT_EXPIRY
from shoal.model.specs import NetworkSpec, NonNeg, ServiceSpec

ShortStr = Annotated[str, Field(max_length=1024)]


class Obj(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64",
                              allow_inf_nan=False)
    id: str
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


class UpdateStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # updating | paused | completed | rollback_started | rollback_paused | rollback_completed
    state: str
    started_at: float = 0.0
    completed_at: Optional[float] = None
    message: str = ""


class UpdateState(BaseModel):
    """The rolling updater's bookkeeping between steps (owned by shoal.core.update).

    Persisted on the Service by the caller exactly as returned; JSON-serialisable.
    """
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    spec_version: int  # the service spec_version this update (or rollback) converges to
    rollback: bool = False
    started_at: float = 0.0
    in_progress: dict[str, float] = Field(default_factory=dict)  # slot key -> when its update began
    done: list[str] = Field(default_factory=list)  # slot keys finished (updated or given up on)
    total: int = 0  # slots in scope when the update began (denominator of the failure ratio)
    batch_done_at: Optional[float] = None  # when the last batch finished (for update delay)
    running_since: dict[str, float] = Field(default_factory=dict)  # new task id -> first seen running
    failures: list[str] = Field(default_factory=list)  # new task ids counted as failed
    # A rebalance (shoal.core.rebalance): slots whose task is replaced although its spec is
    # current (created before started_at); empty for a spec update.
    moves: list[str] = Field(default_factory=list)


class Service(Obj):
    spec: ServiceSpec
    previous_spec: Optional[ServiceSpec] = None
    spec_version: int = 1  # bumped on every spec change; tasks remember the one they run
    update_status: Optional[UpdateStatus] = None
    update_state: Optional[UpdateState] = None  # rolling-update bookkeeping (shoal.core.update)
    # Virtual IPs per network (filled by the manager's allocator), and dynamic published ports.
    virtual_ips: dict[str, str] = Field(default_factory=dict)
    published_ports: dict[str, int] = Field(default_factory=dict)  # "80/tcp" -> 30001


class TaskStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    state: str = "new"
    timestamp: float = 0.0
    message: str = ""
    err: str = ""
    container_id: Optional[str] = None
    exit_code: Optional[int] = None
    health: Optional[str] = None  # starting | healthy | unhealthy | None (no check)
    addresses: dict[str, str] = Field(default_factory=dict)  # network name -> IPv4 of the container


class Task(Obj):
    service_id: str
    service_name: str
    slot: int = 0  # replicated: 1..N; global: 0 (node_id identifies it)
    node_id: Optional[str] = None
    desired_state: str = "running"
    status: TaskStatus = Field(default_factory=TaskStatus)
    spec: ServiceSpec  # the service spec this task runs (copied at creation, as Swarm does)
    spec_version: int = 1
    # Restart accounting: when this task should start (restart delay), and how many restarts before it.
    not_before: float = 0.0
    attempt: int = 0
    # The task's address on each of its networks, given by the manager when it places the
    # task (cluster-wide unique: the overlay carries it to every node).
    addresses: dict[str, str] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.service_name}.{self.slot if self.slot else (self.node_id or '')}"


class NodeDescription(BaseModel):
    """What a node's agent says of its machine (from its engine)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    hostname: Annotated[str, Field(max_length=253)] = ""
    os: Annotated[str, Field(max_length=64)] = "linux"
    arch: Annotated[str, Field(max_length=64)] = "x86_64"
    nano_cpus: NonNeg = 0
    memory_bytes: NonNeg = 0
    engine_version: Annotated[str, Field(max_length=128)] = ""
    engine_labels: Annotated[dict[ShortStr, ShortStr], Field(max_length=256)] = Field(default_factory=dict)


def _ip_or_empty(v: str) -> str:
    if v:
        ipaddress.ip_address(v)  # ValueError: not an address
    return v


class Node(Obj):
    role: Literal["manager", "worker"] = "worker"
    availability: Literal["active", "pause", "drain"] = "active"
    # ready: heartbeats arrive; down: they stopped (its tasks are replaced elsewhere; a task still
    # on it shows as unknown until the node reports back); unknown: not heard from yet.
    state: Literal["unknown", "ready", "down", "disconnected"] = "unknown"
    message: Annotated[str, Field(max_length=256)] = ""  # why it is in that state
    labels: Annotated[dict[ShortStr, ShortStr], Field(max_length=1024)] = Field(default_factory=dict)
    description: NodeDescription = Field(default_factory=NodeDescription)
    addr: str = ""  # the address other nodes reach it on (given at init/join), an IP
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # managers: the port of their API
    leader: bool = False

    @model_validator(mode="before")
    @classmethod
    def _older_rows(cls, data):
        if isinstance(data, dict) and "last_heartbeat" in data:  # stores of 0.1 kept it here
            data = {k: v for k, v in data.items() if k != "last_heartbeat"}
        return data

    @field_validator("addr")
    @classmethod
    def _addr_is_ip(cls, v: str) -> str:
        return _ip_or_empty(v)


class VolumeFact(BaseModel):
    """A volume a node's engine holds (Shoal's and stacks' named volumes)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: Annotated[str, Field(min_length=1, max_length=255)]
    driver: Annotated[str, Field(max_length=128)] = "local"
    labels: Annotated[dict[ShortStr, ShortStr], Field(max_length=256)] = Field(default_factory=dict)
    options: Annotated[dict[ShortStr, ShortStr], Field(max_length=64)] = Field(default_factory=dict)
    mountpoint: ShortStr = ""
    created_at: ShortStr = ""
    stack: ShortStr = ""


DnsLabel = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class AttachedFact(BaseModel):
    """A container a user started on an attachable network of the node (`docker run
    --network`): its name resolves on every node, as Swarm's do."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    network: Annotated[str, Field(min_length=1, max_length=255)]
    name: DnsLabel
    aliases: Annotated[list[DnsLabel], Field(max_length=32)] = Field(default_factory=list)
    ip: str

    @field_validator("ip")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))


class NodeFacts(Obj):
    """What a node's agent reports of itself beside its tasks (id = the node's id): the manager
    that judges liveness and the one that places tasks may not be the same process, so these
    live in the store. Written when they change; `last_heartbeat` in batches."""
    last_heartbeat: float = 0.0
    # Subnets the node's engine uses for networks Shoal did not make: Shoal's networks avoid them.
    engine_subnets: Annotated[list[ShortStr], Field(max_length=64)] = Field(default_factory=list)
    # Ports other processes hold on the node ("tcp/8080" -> "held by nginx (pid 12)").
    ports_in_use: Annotated[dict[ShortStr, ShortStr], Field(max_length=4096)] = Field(default_factory=dict)
    volumes: Annotated[list[VolumeFact], Field(max_length=10_000)] = Field(default_factory=list)
    attached: Annotated[list[AttachedFact], Field(max_length=4096)] = Field(default_factory=list)


class ClusterObj(Obj):
    """The cluster's settings and join secrets (one object, id "cluster")."""
    heartbeat_period: Annotated[float, Field(ge=0.1, le=3600)] = DEFAULT_HEARTBEAT
    cert_expiry: Annotated[float, Field(ge=MIN_CERT_EXPIRY, le=MAX_CERT_EXPIRY)] = DEFAULT_CERT_EXPIRY
    ca_cert: str = ""  # PEM: what a joining node pins (its digest is in the join tokens)
    worker_token: Optional["SealedData"] = None  # the secret part of each join token, sealed
    manager_token: Optional["SealedData"] = None
    # Nodes removed from the cluster: their certificates are refused until they expire.
    removed_nodes: dict[str, float] = Field(default_factory=dict)
    data_path_port: Annotated[int, Field(ge=1024, le=49151)] = 4789  # the overlay's UDP port (VXLAN)


class Versioned:
    """Configs and secrets keep the versions still pinned beside the current one."""

    @property
    def versions(self) -> list[int]:
        """Every version kept, oldest first; the last is the current one."""
        return sorted(self.older_versions) + [self.data_version]


class ConfigObj(Versioned, Obj):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    data: bytes = b""  # the current version's data
    # Versioned rotation (beyond Swarm): each data change bumps data_version.
    data_version: int = 1
    # Earlier versions that a service spec, a previous_spec or an unfinished task still pins:
    # kept so those tasks (and rollbacks) get the bytes they were made with; pruned once unused.
    older_versions: dict[int, bytes] = Field(default_factory=dict)

    def data_at(self, version: int) -> Optional[bytes]:
        """The data of one version (0: the current one), or None when it is gone."""
        if version in (0, self.data_version):
            return self.data
        return self.older_versions.get(version)


class SealedData(BaseModel):
    """One secret version at rest: never the plaintext."""
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64",
                              allow_inf_nan=False)
    ciphertext: bytes  # nonce + AES-256-GCM(data) under a data key of its own
    wrapped_key: bytes  # that data key, wrapped by the cluster key
    digest: str  # keyed digest, to detect changes without decrypting


class SecretObj(Versioned, Obj):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    driver: str = ""
    # Only ciphertext is ever stored: nonce + AES-256-GCM(data), under a data key wrapped by the cluster key.
    ciphertext: bytes = b""
    wrapped_key: bytes = b""
    data_version: int = 1
    digest: str = ""  # keyed digest used to detect changes without decrypting
    # Earlier versions still pinned (see ConfigObj.older_versions), sealed like the current one.
    older_versions: dict[int, SealedData] = Field(default_factory=dict)

    @property
    def sealed(self) -> SealedData:
        """The current version, sealed."""
        return SealedData(ciphertext=self.ciphertext, wrapped_key=self.wrapped_key, digest=self.digest)

    def sealed_at(self, version: int) -> Optional[SealedData]:
        """One version (0: the current one), sealed, or None when it is gone."""
        if version in (0, self.data_version):
            return self.sealed
        return self.older_versions.get(version)


class NetworkObj(Obj):
    spec: NetworkSpec
    subnet: str = ""
    gateway: str = ""
    vni: Annotated[int, Field(ge=0, le=0xFFFFFF)] = 0  # the VXLAN segment (0: a store from before the overlay)
    # Each node that holds the network has an address of its own on it (on its bridge): the
    # source of routing-mesh and node traffic it sends over the overlay to another node's
    # replica, so the replica's answer comes back to that node.
    node_addresses: dict[str, str] = Field(default_factory=dict)
    # An attachable network: each node that holds it has a block of its own (a CIDR) for the
    # containers a user starts there with `docker run --network` (the engine's IPAM hands
    # them out; the manager's task addresses and other nodes' blocks stay outside it).
    attach_ranges: dict[str, str] = Field(default_factory=dict)


ClusterObj.model_rebuild()
