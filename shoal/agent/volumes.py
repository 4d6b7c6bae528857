"""The agent's volume work: report this node's Shoal/stack volumes, and run the manager's
`volume inspect|rm|prune` actions on the engine.

Only volumes Shoal made are touched: those labelled with a stack namespace
(`com.docker.stack.namespace`, set when a task's mount creates them) or `shoal.managed`.
A volume is *in use* while any container (running or not) mounts it — the engine would
refuse to remove it anyway; the error names the containers (as task names when they are
Shoal's). The manager adds what only it knows: services whose spec mounts the volume.
"""
from __future__ import annotations

from typing import Any

from shoal.agent.engine import Engine, EngineError, NotFound

L_STACK = "com.docker.stack.namespace"
L_MANAGED = "shoal.managed"
L_TASK_NAME = "shoal.task.name"


class ActionError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def is_shoal_volume(v: dict) -> bool:
    labels = v.get("Labels") or {}
    return L_STACK in labels or labels.get(L_MANAGED) == "true"


def summary(v: dict, node_id: str) -> dict:
    """What heartbeats report about one volume."""
    labels = v.get("Labels") or {}
    return {"name": v["Name"], "driver": v.get("Driver") or "local", "labels": labels,
            "options": v.get("Options") or {}, "mountpoint": v.get("Mountpoint") or "",
            "created_at": v.get("CreatedAt") or "", "stack": labels.get(L_STACK, "")}


def _matches(labels: dict, wanted: dict[str, str | None]) -> bool:
    for k, v in wanted.items():
        if k not in labels or (v is not None and labels[k] != v):
            return False
    return True


class VolumeActions:
    def __init__(self, engine: Engine, node_id: str):
        self.engine = engine
        self.node_id = node_id

    async def list(self) -> list[dict]:
        return [summary(v, self.node_id) for v in await self.engine.volumes.list() if is_shoal_volume(v)]

    async def users(self, name: str) -> list[str]:
        """Containers (any state) that mount volume `name`, by name (Shoal's: `<service>.<slot>.<task id>`)."""
        out = []
        for c in await self.engine.containers.list(filters={"volume": [name]}, all=True):
            labels = c.get("Labels") or {}
            names = c.get("Names") or []
            cname = names[0].lstrip("/") if names else labels.get(L_TASK_NAME) or c.get("Id", "?")[:12]
            out.append(f"{cname} ({c.get('State') or 'unknown'})")
        return sorted(out)

    async def _get(self, name: str) -> dict:
        try:
            v = await self.engine.volumes.inspect(name)
        except NotFound:
            raise ActionError(f"no such volume: {name}", 404) from None
        if not is_shoal_volume(v):
            raise ActionError(f"volume {name} was not made by Shoal (no stack label): "
                              "manage it with the engine's own tools", 403)
        return v

    async def inspect(self, args: dict) -> dict:
        v = await self._get(args["name"])
        return {**v, "Scope": "local", "Node": self.node_id, "UsedBy": await self.users(args["name"])}

    async def rm(self, args: dict) -> dict:
        name = args["name"]
        await self._get(name)
        users = await self.users(name)
        if users:
            raise ActionError(f"volume {name} is in use by container(s): {', '.join(users)}", 409)
        try:
            await self.engine.volumes.remove(name)
        except NotFound:
            raise ActionError(f"no such volume: {name}", 404) from None
        except EngineError as e:
            raise ActionError(f"removing volume {name}: {e}", 409) from None
        return {"removed": name}

    async def prune(self, args: dict) -> dict:
        keep = set(args.get("keep") or [])
        wanted = dict(args.get("labels") or {})
        removed, skipped = [], []
        for v in await self.engine.volumes.list():
            name = v["Name"]
            if not is_shoal_volume(v) or not _matches(v.get("Labels") or {}, wanted):
                continue
            if name in keep or await self.users(name):
                skipped.append(name)
                continue
            try:
                await self.engine.volumes.remove(name)
                removed.append(name)
            except EngineError:  # became used meanwhile, or vanished: leave it
                skipped.append(name)
        return {"removed": sorted(removed), "kept": sorted(skipped)}

    async def handle(self, kind: str, args: dict) -> dict[str, Any]:
        """Run one action; the answer the manager expects ({"ok": ..., ...})."""
        fn = {"volume.ls": lambda a: self.list(), "volume.inspect": self.inspect,
              "volume.rm": self.rm, "volume.prune": self.prune}.get(kind)
        if fn is None:
            return {"ok": False, "error": f"this agent does not know the action {kind!r}", "status": 501}
        try:
            return {"ok": True, "result": await fn(args)}
        except ActionError as e:
            return {"ok": False, "error": str(e), "status": e.status}
        except EngineError as e:
            return {"ok": False, "error": f"engine: {e}", "status": 502}
        except (KeyError, TypeError) as e:
            return {"ok": False, "error": f"malformed {kind} action: {e}", "status": 400}
