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
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

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

    @property
    def label(self) -> str | None:
        for p in _LABEL_PREFIXES:
            if self.key.startswith(p):
                return self.key[len(p):]
        return None

    def node_value(self, node: Node) -> str:
        k = self.key
        if k == "node.id":
            return node.id
        if k == "node.hostname":
            return node.description.hostname
        if k == "node.role":
            return node.role
        if k == "node.platform.os":
            return node.description.os
        if k == "node.platform.arch":
            return node.description.arch
        if k.startswith("node.labels."):
            return node.labels.get(k[len("node.labels."):], "")
        return node.description.engine_labels.get(k[len("engine.labels."):], "")

    def matches(self, node: Node) -> bool:
        have = self.node_value(node)
        if self.label is None:
            equal = have.lower() == self.value.lower()
        else:
            equal = have == self.value
        return equal if self.op == "==" else not equal

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


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
    return all(c.matches(node) for c in constraints)
