"""Merge several canonical stack files the way ``docker compose -f a -f b`` does.

Later files win. Mappings merge key by key; inside a service, ports, volumes, configs
and secrets are lists keyed by what makes them unique (so an override replaces the
matching entry), ``command``, ``entrypoint`` and ``healthcheck.test`` are replaced
whole, and other lists (dns, cap_add, constraints, ...) are appended without duplicates.
Outside services, lists are replaced. Locations travel with the values.

The compose merge tags work at any depth: a value tagged `!reset` removes its key from
the result (whatever the earlier files said), one tagged `!override` replaces the earlier
value whole instead of merging with it.
"""
from __future__ import annotations

from typing import Any, Callable

from shoal.compose.tree import LDict, LList


def _port_key(port: Any) -> Any:
    if not isinstance(port, dict):
        return ("raw", repr(port))
    # docker compose also keys on mode: an override in host mode is a second port, not a replacement.
    return (port.get("host_ip"), str(port.get("target")), str(port.get("published")),
            port.get("protocol") or "tcp", port.get("mode") or "ingress")


def _target_key(entry: Any) -> Any:
    return entry.get("target") if isinstance(entry, dict) else ("raw", repr(entry))


_KEYED: dict[str, Callable[[Any], Any]] = {
    "ports": _port_key, "volumes": _target_key, "configs": _target_key, "secrets": _target_key,
}
_REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}


def merge_files(trees: list[LDict]) -> LDict:
    """One tree from canonical trees, first file first."""
    result = trees[0]
    for tree in trees[1:]:
        result = _merge_top(result, tree)
    return _drop_resets(result)


def merge_documents(docs: list[LDict]) -> LDict:
    """The documents of one file, as compose merges them (the later win, mappings merged)."""
    result = docs[0]
    for doc in docs[1:]:
        result = _merge_plain(result, doc)
    return result


def _drop_resets(value: Any) -> Any:
    """What is still tagged `!reset` (in the first file, or under a merged key) is dropped."""
    if isinstance(value, LDict):
        for key in [k for k, tag in value.tags.items() if tag == "reset"]:
            value.drop(key)
        for key in list(value):
            _drop_resets(value[key])
    elif isinstance(value, list):
        for item in value:
            _drop_resets(item)
    return value


def _copy(mapping: LDict) -> LDict:
    out = LDict(mapping.loc)
    for key, value in mapping.items():
        out.put(key, value, mapping.loc_of(key))
    out.tags = dict(mapping.tags)
    return out


def _tagged(out: LDict, over: LDict, key: str) -> bool:
    """Apply `over`'s merge tag on `key` to `out`; True when it decided the key."""
    tag = over.tags.get(key)
    if tag == "reset":
        out.drop(key)
        return True
    if tag == "override":
        out.put(key, over[key], over.loc_of(key))
        out.tags.pop(key, None)
        return True
    return False


def _merge_top(base: LDict, over: LDict) -> LDict:
    out = _copy(base)
    for key, value in over.items():
        if _tagged(out, over, key):
            continue
        old = out.get(key)
        if key == "services" and isinstance(old, dict) and isinstance(value, dict):
            services = _copy(old)
            for name, service in value.items():
                if _tagged(services, value, name):
                    continue
                current = services.get(name)
                if isinstance(current, dict) and isinstance(service, dict):
                    service = _merge_service(current, service, ())
                services.put(name, service, value.loc_of(name))
            out.put(key, services, over.loc_of(key))
        else:
            out.put(key, _merge_plain(old, value), over.loc_of(key))
    return out


def _merge_plain(base: Any, over: Any) -> Any:
    """Mappings merge recursively; a null never erases a mapping; anything else is replaced."""
    if over is None and isinstance(base, dict):
        return base
    if isinstance(base, dict) and isinstance(over, dict):
        out = _copy(base)
        for key, value in over.items():
            if not _tagged(out, over, key):
                out.put(key, _merge_plain(out.get(key), value), over.loc_of(key))
        return out
    return over


def _merge_service(base: LDict, over: LDict, path: tuple[str, ...]) -> LDict:
    out = _copy(base)
    for key, value in over.items():
        if _tagged(out, over, key):
            continue
        sub = path + (key,)
        old = out.get(key)
        loc = over.loc_of(key)
        if value is None and isinstance(old, (dict, list)):
            continue
        if old is None or sub in _REPLACED:
            out.put(key, value, loc)
        elif not path and key in _KEYED and isinstance(old, list) and isinstance(value, list):
            out.put(key, _merge_keyed(old, value, _KEYED[key]), loc)
        elif isinstance(old, dict) and isinstance(value, dict):
            out.put(key, _merge_service(old, value, sub), loc)
        elif isinstance(old, list) and isinstance(value, list):
            out.put(key, _append_unique(old, value), loc)
        else:
            out.put(key, value, loc)
    return out


def _merge_keyed(base: LList, over: LList, key_of: Callable[[Any], Any]) -> LList:
    out = LList(over.loc)
    index: dict[Any, int] = {}
    for items in (base, over):
        for i, item in enumerate(items):
            key = key_of(item)
            if key in index:
                out[index[key]] = item
                out.locs[index[key]] = items.loc_of(i)
            else:
                index[key] = len(out)
                out.add(item, items.loc_of(i))
    return out


def _append_unique(base: LList, over: LList) -> LList:
    out = LList(base.loc)
    for items in (base, over):
        for i, item in enumerate(items):
            if item not in out:
                out.add(item, items.loc_of(i))
    return out
