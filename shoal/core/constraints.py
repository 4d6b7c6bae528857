"""Placement constraints (`deploy.placement.constraints`), parsed once and matched against nodes.

Grammar, as Swarm's: ``<key> <op> <value>`` with op ``==`` or ``!=``; whitespace around
each part is ignored. Keys: ``node.id``, ``node.hostname``, ``node.role``,
``node.platform.os``, ``node.platform.arch``, ``node.labels.<k>``, ``engine.labels.<k>``
(key names are case-insensitive, label names are not). Values of the built-in fields
match case-insensitively (Swarm uses EqualFold); label values match exactly (Shoal's
choice: Swarm folds case for labels too). A missing label matches the empty string, so
``node.labels.x != y`` holds on nodes without label ``x``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Sequence

from shoal.model.objects import Node

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_VALUE = re.compile(r"^[A-Za-z0-9:_\s.*()?+\[\]\\^$|/\-]+$")
_FIELDS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
_LABEL_PREFIXES = ("node.labels.", "engine.labels.")


class ConstraintError(ValueError):
    """A malformed constraint expression; the message names the expression."""


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str  # normalised: built-in fields lower-case; label prefixes lower-case, label name as given
    op: str  # "==" or "!="
    value: str
    # Worked out once (the orchestrator checks every task's constraints on every pass):
    _get: Callable[[Node], str] = field(init=False, repr=False, compare=False)
    _want: str = field(init=False, repr=False, compare=False)  # the value as compared (folded for fields)
    _fold: bool = field(init=False, repr=False, compare=False)
    _equal: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fold = self.label is None
        object.__setattr__(self, "_get", _getter(self.key))
        object.__setattr__(self, "_want", self.value.lower() if fold else self.value)
        object.__setattr__(self, "_fold", fold)
        object.__setattr__(self, "_equal", self.op == "==")

    @property
    def label(self) -> str | None:
        for p in _LABEL_PREFIXES:
            if self.key.startswith(p):
                return self.key[len(p):]
        return None

    def node_value(self, node: Node) -> str:
        return self._get(node)

    def matches(self, node: Node) -> bool:
        have = self._get(node)
        return ((have.lower() if self._fold else have) == self._want) is self._equal

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def _getter(key: str) -> Callable[[Node], str]:
    """How to read `key` (normalised) from a node."""
    if key == "node.id":
        return lambda n: n.id
    if key == "node.hostname":
        return lambda n: n.description.hostname
    if key == "node.role":
        return lambda n: n.role
    if key == "node.platform.os":
        return lambda n: n.description.os
    if key == "node.platform.arch":
        return lambda n: n.description.arch
    if key.startswith("node.labels."):
        name = key[len("node.labels."):]
        return lambda n: n.labels.get(name, "")
    name = key[len("engine.labels."):]
    return lambda n: n.description.engine_labels.get(name, "")


def parse_constraint(expr: str) -> Constraint:
    if not isinstance(expr, str):
        raise ConstraintError(f"constraint {expr!r} is not a string")
    for op in ("==", "!="):
        if op in expr:
            parts = expr.split(op)
            if len(parts) != 2:
                raise ConstraintError(f"constraint {expr!r}: expected exactly one operator (== or !=)")
            key, value = parts[0].strip(), parts[1].strip()
            break
    else:
        raise ConstraintError(f"constraint {expr!r}: expected one operator from ==, !=")
    if not key or not _KEY.match(key):
        raise ConstraintError(f"constraint {expr!r}: key {key!r} is invalid")
    if not value or not _VALUE.match(value):
        raise ConstraintError(f"constraint {expr!r}: value {value!r} is invalid")
    lowered = key.lower()
    if lowered in _FIELDS:
        return Constraint(lowered, op, value)
    for p in _LABEL_PREFIXES:
        if lowered.startswith(p):
            name = key[len(p):]
            if not name:
                raise ConstraintError(f"constraint {expr!r}: empty label name")
            return Constraint(p + name, op, value)
    raise ConstraintError(
        f"constraint {expr!r}: unknown key {key!r} (use node.id, node.hostname, node.role, "
        "node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>)")


@lru_cache(maxsize=4096)
def _parse_cached(exprs: tuple[str, ...]) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(e) for e in exprs)


def parse_constraints(exprs: Iterable[str]) -> tuple[Constraint, ...]:
    """Parse a list of expressions (cached); raises ConstraintError on the first bad one."""
    return _parse_cached(tuple(exprs))


def validate_constraints(exprs: Iterable[str]) -> list[str]:
    """All problems in a list of expressions, one message each; [] when all are valid."""
    errors = []
    for e in exprs:
        try:
            parse_constraint(e)
        except ConstraintError as exc:
            errors.append(str(exc))
    return errors


def node_matches(constraints: Sequence[Constraint], node: Node) -> bool:
    for c in constraints:
        if not c.matches(node):
            return False
    return True
