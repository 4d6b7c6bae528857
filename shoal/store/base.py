"""The cluster store as an interface: what every manager component may ask of it.

The manager's components (API, dispatcher, orchestrator, pruner…) hold a `Store` and
nothing else: SQLite is one implementation (`sqlite.py`, one manager), a replicated
store on etcd is the next. Reads come from an in-memory view kept by the
implementation; writes go through `put`/`delete` inside `txn()`, and `put` is the one
validated path: an object that would not load back (a non-finite number, a label that
is not a string, a field set by `model_copy(update=…)` that its model refuses) is
refused here with `InvalidObject`, before it reaches the disk.
"""
from __future__ import annotations

import abc
import contextlib
from typing import Callable, Optional, Sequence, TypeVar

from pydantic import ValidationError

from shoal.core import task_states as ts
from shoal.model.objects import Obj, Task
from shoal.model.specs import ServiceSpec
from shoal.model.validation import describe_errors

T = TypeVar("T", bound=Obj)


class Conflict(Exception):
    """A write was based on an outdated version of the object."""


class StoreUnavailable(Exception):
    """The store cannot be reached (a replicated store without quorum, or cut off from it)."""


class Deposed(Conflict):
    """A write made as the cluster's leader, refused because this manager no longer is."""


class InvalidObject(ValueError):
    """An object its own model refuses: never written (it would poison the next load)."""


def check_object(obj: Obj) -> Obj:
    """The object as its model validates it (a new instance), or InvalidObject.

    Tasks are on the hot path and share their spec object with every task of the same
    spec: their own fields and status are validated, the spec by `check_spec` once per
    spec (the implementation calls it when it first sees a spec)."""
    cls = type(obj)
    try:
        if cls is Task:
            d = dict(obj.__dict__)
            d["status"] = obj.status.__dict__  # type: ignore[attr-defined]
            return Task.model_validate(d)
        return cls.model_validate(obj.model_dump(warnings=False))
    except ValidationError as e:
        raise InvalidObject(f"{cls.__name__.lower()} {obj.id}: {describe_errors(e)}") from None


def check_spec(spec: ServiceSpec) -> None:
    try:
        ServiceSpec.model_validate(spec.model_dump(warnings=False))
    except ValidationError as e:
        raise InvalidObject(f"service spec {spec.name}: {describe_errors(e)}") from None


class ChangeFeed:
    """Ids of the tasks and services written or deleted since the consumer last took them:
    lets a reader (the dispatcher's endpoint log) follow the store in O(changes)."""

    def __init__(self) -> None:
        self.tasks: set[str] = set()
        self.services: set[str] = set()

    def take(self) -> tuple[set[str], set[str]]:
        tasks, services = self.tasks, self.services
        self.tasks, self.services = set(), set()
        return tasks, services


class Store(abc.ABC):
    """Get / list / transaction / watch over the cluster's objects."""

    rev: int  # bumped by every transaction that wrote something
    # Told the seconds each transaction that wrote something took, from its start to its
    # commit (the manager's metrics); None: not measured.
    on_commit_seconds: Optional[Callable[[float], None]] = None

    # -- reads (from memory; never block) -------------------------------------------
    @abc.abstractmethod
    def get(self, cls: type[T], obj_id: str) -> Optional[T]: ...

    @abc.abstractmethod
    def all(self, cls: type[T]) -> list[T]: ...

    @abc.abstractmethod
    def by_name(self, cls: type[T], name: str) -> Optional[T]: ...

    @abc.abstractmethod
    def count(self, cls: type[Obj]) -> int: ...

    @abc.abstractmethod
    def tasks_of_service(self, service_id: str) -> list[Task]: ...

    @abc.abstractmethod
    def tasks_of_node(self, node_id: str) -> list[Task]: ...

    @abc.abstractmethod
    def pending_tasks(self) -> list[Task]:
        """Tasks in state pending (any desired state): what the scheduler places."""

    @abc.abstractmethod
    def service_ids_with_tasks(self) -> list[str]: ...

    @abc.abstractmethod
    def service_seq(self, service_id: str) -> int:
        """Changes whenever the service or one of its tasks is written (or deleted)."""

    @abc.abstractmethod
    def node_seq(self, node_id: str) -> int:
        """Changes whenever a task on the node, or moving on or off it, is written (or deleted)."""

    @abc.abstractmethod
    def kind_seq(self, cls: type[Obj]) -> int:
        """Changes whenever an object of that kind is written (or deleted)."""

    @abc.abstractmethod
    def task_json(self, t: Task) -> str:
        """The task as JSON, its spec inside (each spec serialised once)."""

    # -- writes ------------------------------------------------------------------------
    @abc.abstractmethod
    def txn(self) -> contextlib.AbstractContextManager[None]:
        """Group writes into one atomic commit (and one revision); nested calls join it."""

    def put(self, obj: T, expect_version: Optional[int] = None, quiet: bool = False) -> T:
        """Write `obj` as a new version (checked first: see `check_object`).

        quiet: `take_changes` will not report it (the orchestrator need not act at once; its
        periodic full pass sees it anyway). A task's state may only move as some actor of the
        state table may move it (`task_states.TRANSITIONS`), whoever writes it."""
        return self._write(self._checked(obj), expect_version, quiet)  # type: ignore[arg-type]

    def put_all(self, objs: Sequence[Obj], quiet: Sequence[bool]) -> None:
        """`put` each object (quiet as said for each), all or none: every one is checked before
        any is written, so a bad one writes nothing (an agent's report is applied so)."""
        checked: list[Obj] = []
        latest: dict[str, Task] = {}  # a task's later update in the batch moves on from its earlier one
        for obj in objs:
            c = self._checked(obj, latest.get(obj.id) if type(obj) is Task else None)
            if type(c) is Task:
                latest[c.id] = c
            checked.append(c)
        for c, q in zip(checked, quiet):
            self._write(c, None, q)

    def _checked(self, obj: Obj, before: Optional[Task] = None) -> Obj:
        """`obj` as its model validates it; a task's state move checked against the state table
        from `before` (default: the stored version)."""
        checked = check_object(obj)
        if type(checked) is Task:
            old = before or self.get(Task, checked.id)
            if old is not None and not ts.can_move_any(old.status.state, checked.status.state):
                raise InvalidObject(f"task {checked.id}: no actor may move a task from {old.status.state} "
                                    f"to {checked.status.state}")
        return checked

    @abc.abstractmethod
    def _write(self, obj: T, expect_version: Optional[int], quiet: bool) -> T:
        """Store an object `put` validated."""

    @abc.abstractmethod
    def delete(self, cls: type[Obj], obj_id: str) -> None: ...

    @abc.abstractmethod
    def meta_get(self, key: str) -> Optional[bytes]: ...

    @abc.abstractmethod
    def meta_set(self, key: str, value: bytes) -> None: ...

    # -- watching ----------------------------------------------------------------------
    @abc.abstractmethod
    async def wait_for_change(self, since: int, timeout: float) -> int:
        """The revision once it is past `since`, or after `timeout`."""

    @abc.abstractmethod
    def observe(self, fn: Callable[[list[tuple[Optional[Obj], Optional[Obj]]]], None]) -> None:
        """Call `fn` after each commit with the (before, after) of every object it wrote
        (None: created / deleted), in write order; never for a transaction rolled back."""

    @abc.abstractmethod
    def change_feed(self) -> ChangeFeed:
        """A new feed of task and service changes, starting now."""

    @abc.abstractmethod
    def take_changes(self) -> tuple[set[str], bool]:
        """(ids of services whose service or tasks were written, whether any node was) since
        the last call. For the orchestrator, the one consumer."""

    async def follow(self) -> None:
        """Keep the view current with what other writers commit (a store several managers
        share); returns at once for a store this manager alone writes."""
        return None

    @abc.abstractmethod
    def quarantined(self) -> list[dict]:
        """Rows that failed to load (kind, id, error): set aside, never silently dropped."""

    @abc.abstractmethod
    def close(self) -> None: ...
