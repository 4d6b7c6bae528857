"""The agent removes the networks its node no longer needs, including when the last container
of a network goes away after the assignment that dropped it (no further assignment comes)."""
from __future__ import annotations

import asyncio

from shoal.agent.networks import L_MANAGED, L_NODE_ID, NetworkKeeper


class Networks:
    """The part of the engine's network API the keeper uses, in memory."""

    def __init__(self):
        self.nets: dict[str, dict] = {}

    async def list(self, labels=None):
        return [n for n in self.nets.values()
                if all(n["Labels"].get(k) == v for k, v in (labels or {}).items())]

    async def inspect(self, ref):
        return self.nets[ref]

    async def remove(self, ref):
        del self.nets[ref]


class Engine:
    def __init__(self):
        self.networks = Networks()


def test_a_network_is_removed_once_its_last_container_is_gone():
    async def go():
        engine = Engine()
        keeper = NetworkKeeper(engine, "n1")
        await keeper.prune()  # before any assignment nothing is known to be unneeded
        labels = {L_MANAGED: "true", L_NODE_ID: "n1"}
        engine.networks.nets["s_default"] = {"Id": "s_default", "Name": "s_default", "Labels": labels,
                                             "Containers": {"c1": {}}}
        engine.networks.nets["t_default"] = {"Id": "t_default", "Name": "t_default", "Labels": labels,
                                             "Containers": {}}
        await keeper.prune()
        assert set(engine.networks.nets) == {"s_default", "t_default"}  # still no assignment seen
        # the assignment no longer needs s_default, but a container still uses it
        await keeper.prune(needed={"t_default"})
        assert set(engine.networks.nets) == {"s_default", "t_default"}
        del engine.networks.nets["s_default"]["Containers"]["c1"]
        await keeper.prune()  # the agent's periodic pass, with the last assignment's networks
        assert set(engine.networks.nets) == {"t_default"}

    asyncio.run(go())
