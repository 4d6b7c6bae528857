"""Request bodies and query parameters: read within a size limit, typed, and refused clearly.

Each route names the model of its body and a size limit; the body is read up to the
limit (413 beyond), must be a JSON object (400 otherwise), and is validated by its
model (400 naming the fields, never echoing their values: a secret must not come back
in an error).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Annotated, Any, Literal, Optional, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal.core import task_states as ts
from shoal.manager.errors import ApiError
from shoal.model.objects import AttachedFact, NodeDescription, VolumeFact
from shoal.model.specs import Count, NetworkSpec, ServiceSpec, StackSpec
from shoal.model.validation import describe_errors

KiB, MiB = 1024, 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class TooLarge(ApiError):
    status = 413


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


ShortStr = Annotated[str, Field(max_length=1024)]
Labels = Annotated[dict[Annotated[str, Field(max_length=1024)], Annotated[str, Field(max_length=4096)]],
                   Field(max_length=1024)]


def _b64(v: str) -> str:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    return v


# -- user routes -----------------------------------------------------------------------

class UnlockBody(Body):
    key: Annotated[str, Field(max_length=256)]


class UnlockKeyBody(Body):
    autolock: Optional[bool] = None
    rotate: bool = False


class ClusterUpdateBody(Body):
    """`shoal update`: cluster settings (each optional)."""
    autolock: Optional[bool] = None
    dispatcher_heartbeat: Optional[float] = None  # seconds
    cert_expiry: Optional[float] = None  # seconds


class JoinTokenBody(Body):
    rotate: bool = False


class StackDeployBody(Body):
    stack: StackSpec
    prune: bool = False


class ServiceUpdateBody(Body):
    spec: ServiceSpec
    version: Optional[Annotated[int, Field(ge=0)]] = None


class ScaleBody(Body):
    replicas: Count


class RebalanceBody(Body):
    pass


class NodeUpdateBody(Body):
    label_add: Labels = Field(default_factory=dict)
    label_rm: Annotated[list[ShortStr], Field(max_length=1024)] = Field(default_factory=list)
    availability: Optional[Literal["active", "pause", "drain"]] = None


class NodeRemoveBody(Body):
    force: bool = False


class PromotionBody(Body):
    etcd_peer_port: Annotated[int, Field(ge=1, le=65535)] = 2380


class FileObjectBody(Body):
    """A config or secret: its data base64 (never echoed in errors)."""
    name: Annotated[str, Field(max_length=256)] = ""
    data: Annotated[str, Field(max_length=2 * MiB)] = ""
    labels: Labels = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _data_is_base64(cls, v: str) -> str:
        return _b64(v)

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


class VolumePruneBody(Body):
    labels: Labels = Field(default_factory=dict)


NetworkCreateBody = NetworkSpec


# -- agent routes ----------------------------------------------------------------------

class NodeFactsBody(Body):
    engine_subnets: Annotated[list[ShortStr], Field(max_length=64)] = Field(default_factory=list)
    ports_in_use: Annotated[dict[ShortStr, ShortStr], Field(max_length=4096)] = Field(default_factory=dict)
    volumes: Annotated[list[VolumeFact], Field(max_length=10_000)] = Field(default_factory=list)
    attached: Annotated[list[AttachedFact], Field(max_length=4096)] = Field(default_factory=list)


class HeartbeatBody(Body):
    description: NodeDescription = Field(default_factory=NodeDescription)
    addr: Annotated[str, Field(max_length=64)] = ""
    # Sent when they changed since the digest the manager last acknowledged (facts_digest).
    facts: Optional[NodeFactsBody] = None
    # Older agents sent the facts at the top level.
    volumes: Optional[Annotated[list[VolumeFact], Field(max_length=10_000)]] = None
    engine_subnets: Optional[Annotated[list[ShortStr], Field(max_length=64)]] = None
    ports_in_use: Optional[Annotated[dict[ShortStr, ShortStr], Field(max_length=4096)]] = None


class StatusUpdate(Body):
    task_id: Annotated[str, Field(min_length=1, max_length=64)]
    state: Literal[tuple(ts.ORDER)]  # type: ignore[valid-type]
    timestamp: Optional[Annotated[float, Field(ge=0)]] = None
    message: Optional[ShortStr] = None
    err: Optional[ShortStr] = None
    container_id: Optional[Annotated[str, Field(max_length=128)]] = None
    exit_code: Optional[Annotated[int, Field(ge=-(2**31), le=2**32)]] = None
    health: Optional[Literal["starting", "healthy", "unhealthy"]] = None
    addresses: Optional[Annotated[dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=64)]],
                                  Field(max_length=64)]] = None


class StatusBody(Body):
    updates: Annotated[list[StatusUpdate], Field(max_length=10_000)]


class RenewBody(Body):
    csr: Annotated[str, Field(max_length=16 * KiB)]


class LeaveBody(Body):
    pass


class ActionAnswerBody(Body):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    ok: bool = False
    error: Optional[Annotated[str, Field(max_length=4096)]] = None
    status: Optional[Annotated[int, Field(ge=100, le=599)]] = None
    result: Any = None


# -- join ------------------------------------------------------------------------------

class JoinBody(Body):
    token: Annotated[str, Field(max_length=128)]
    csr: Annotated[str, Field(max_length=16 * KiB)]
    hostname: Annotated[str, Field(max_length=253)] = ""
    advertise_addr: Annotated[str, Field(max_length=64)] = ""
    availability: Literal["active", "pause", "drain"] = "active"
    etcd_peer_port: Annotated[int, Field(ge=1, le=65535)] = 2380  # a manager's etcd member (`init --store etcd`)


# -- reading ---------------------------------------------------------------------------

async def read_json(request: web.Request, limit: int) -> dict:
    """The body as a JSON object, read up to `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body too large: {request.content_length} bytes, this route takes at most {limit}")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * KiB)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body too large: this route takes at most {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ApiError(f"invalid JSON body: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def parse(model: type[M], data: dict) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(f"invalid request: {describe_errors(e)}") from None


def query_float(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(f"query parameter {name} must be a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ApiError(f"query parameter {name} must be between {lo:g} and {hi:g}")
    return v


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(f"query parameter {name} must be an integer") from None
    if not lo <= v <= hi:
        raise ApiError(f"query parameter {name} must be between {lo} and {hi}")
    return v


def query_str(request: web.Request, name: str, max_len: int = 256) -> Optional[str]:
    v = request.query.get(name)
    if v is not None and len(v) > max_len:
        raise ApiError(f"query parameter {name} is too long (at most {max_len} characters)")
    return v
