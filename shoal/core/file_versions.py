"""Config and secret versions: which ones a spec pins, and which kept ones nothing pins anymore.

A ``FileRef`` names an object and, once the manager accepted the spec, the object's
``data_version`` it mounts (``FileRef.version``; 0 = not pinned, the current one). Tasks copy
their service's spec, so a task's pins are exactly the versions its files hold. Rotating an
object is then an ordinary spec change (the pin moves), rolled by the service's
``update_config``; ``previous_spec`` keeps the old pin, so a rollback gets the old bytes.

An old version is needed while a service's spec or previous_spec, or an unfinished task,
pins it. Pure: the manager feeds these functions what the store holds.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, Optional

from shoal.core.task_states import TERMINAL
from shoal.model.objects import Service, Task
from shoal.model.specs import FileRef, ServiceSpec

CONFIG, SECRET = "config", "secret"
ObjectKey = tuple[str, str]  # (kind, object name)
Pin = tuple[str, str, int]  # (kind, object name, version)


def file_refs(spec: ServiceSpec) -> Iterator[tuple[str, FileRef]]:
    """(kind, ref) for every config and secret the spec mounts."""
    for r in spec.container.configs:
        yield CONFIG, r
    for r in spec.container.secrets:
        yield SECRET, r


def uses(spec: ServiceSpec, kind: str, name: str) -> bool:
    return any(k == kind and r.source == name for k, r in file_refs(spec))


def spec_pins(spec: Optional[ServiceSpec]) -> set[Pin]:
    """The (kind, name, version) triples the spec pins (unpinned refs mean "current": none)."""
    if spec is None:
        return set()
    return {(k, r.source, r.version) for k, r in file_refs(spec) if r.version}


def pin_spec(spec: ServiceSpec, version_of: Callable[[str, FileRef], int]) -> ServiceSpec:
    """`spec` with each ref's version set to ``version_of(kind, ref)``; `spec` itself when no pin
    changes (callers compare specs, and tasks share spec objects)."""
    c = spec.container

    def pinned(kind: str, refs: list[FileRef]) -> list[FileRef]:
        out = []
        for r in refs:
            v = version_of(kind, r)
            out.append(r if v == r.version else r.model_copy(update={"version": v}))
        return out

    configs, secrets = pinned(CONFIG, c.configs), pinned(SECRET, c.secrets)
    if all(a is b for a, b in zip(configs, c.configs)) and all(a is b for a, b in zip(secrets, c.secrets)):
        return spec
    return spec.model_copy(update={"container": c.model_copy(update={"configs": configs, "secrets": secrets})})


def repin(spec: ServiceSpec, kind: str, name: str, version: int) -> ServiceSpec:
    """`spec` with every ref to one object pinned to `version` (rotation)."""
    return pin_spec(spec, lambda k, r: version if (k, r.source) == (kind, name) else r.version)


def pin_unpinned(spec: ServiceSpec, kind: str, name: str, version: int) -> ServiceSpec:
    """`spec` with unpinned refs to one object pinned to `version` (specs stored before pinning
    existed: their "current" is about to change)."""
    return pin_spec(spec, lambda k, r: version if (k, r.source) == (kind, name) and not r.version else r.version)


def service_pins(services: Iterable[Service]) -> set[Pin]:
    """What the services' specs and previous specs pin (a rollback needs the latter)."""
    out: set[Pin] = set()
    for s in services:
        out |= spec_pins(s.spec)
        out |= spec_pins(s.previous_spec)
    return out


def live_task_pins(tasks: Iterable[Task]) -> frozenset[Pin]:
    """What the unfinished tasks pin. Tasks of one service version share one spec object, so
    each distinct spec is looked at once."""
    specs: dict[int, ServiceSpec] = {}
    for t in tasks:
        if t.status.state not in TERMINAL and id(t.spec) not in specs:
            specs[id(t.spec)] = t.spec
    out: set[Pin] = set()
    for spec in specs.values():
        out |= spec_pins(spec)
    return frozenset(out)


def unused_versions(kept: Mapping[ObjectKey, Iterable[int]], pinned: set[Pin]) -> dict[ObjectKey, set[int]]:
    """For each object, the kept (non-current) versions nothing pins: safe to delete."""
    out = {}
    for (kind, name), versions in kept.items():
        drop = {v for v in versions if (kind, name, v) not in pinned}
        if drop:
            out[(kind, name)] = drop
    return out
