"""Models made without pydantic's validation, for the hot paths that make one per task.

The store validates every object it is given (`check_object`), so a task made by the
orchestrator and validated at birth too was validated twice: ~2.5 % of a deploy's time.
`model_construct` would skip the validation, but it fills a missing field that has a default
factory by asking inspect.signature about the factory, every time (11 % of a deploy), and
walks every field's aliases; this sets the instance's fields directly, all of them given.
"""
from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_setattr = object.__setattr__
# One "fields set" per model, shared by its instances (as the store's own copies share one):
# model_copy copies the set before it updates it, and assigning a field only adds a name that
# is already in it.
_FIELDS: dict[type, set[str]] = {}


def unchecked(cls: type[M], **fields) -> M:
    """An instance of `cls` holding `fields` as given: every field of the model, no other
    (a TypeError otherwise), each already of its field's type (the caller's promise; the
    store's validation holds it to it)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = set(cls.model_fields)
    if fields.keys() != names:
        missing, extra = names - fields.keys(), fields.keys() - names
        raise TypeError(f"{cls.__name__}: fields missing {sorted(missing)}, unknown {sorted(extra)}")
    obj = cls.__new__(cls)
    _setattr(obj, "__dict__", fields)
    _setattr(obj, "__pydantic_fields_set__", names)
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj
