"""Which nodes hold each network: a bridge and a VXLAN device there, and an address of their own.

A node holds the networks of the tasks placed on it that have not ended, and every node
that can take traffic holds the network a routing-mesh port forwards to (a service's first
network, when it publishes a port in ingress mode): a published port answers on every node,
which sends the connection over that network to a replica wherever it runs. Every node holds
each attachable network, so that `docker run --network NAME` works on any of them.
"""
from __future__ import annotations

from shoal.core import task_states as ts
from shoal.model.objects import NetworkObj, Node, Service, Task


def mesh_network(svc: Service) -> str | None:
    """The network the routing mesh reaches the service's replicas on, if it publishes any."""
    spec = svc.spec
    if spec.networks and any(p.mode == "ingress" for p in spec.ports):
        return spec.networks[0].network
    return None


def network_holders(services: list[Service], tasks_by_service: dict[str, list[Task]],
                    nodes: list[Node], networks: list[NetworkObj] = ()) -> dict[str, set[str]]:
    """network name -> ids of the nodes that hold it."""
    out: dict[str, set[str]] = {}
    for tasks in tasks_by_service.values():
        for t in tasks:
            if t.node_id and not ts.is_terminal(t.status.state):
                for a in t.spec.networks:
                    out.setdefault(a.network, set()).add(t.node_id)
    live = {n.id for n in nodes if n.state != "down"}
    for svc in services:
        net = mesh_network(svc)
        if net is not None:
            out.setdefault(net, set()).update(live)
    # Attachable networks: every node, down ones too, keeps its block (the containers users
    # started there may still hold its addresses; given to another node, two would share one).
    every = {n.id for n in nodes}
    for n in networks:
        if n.spec.attachable:
            out.setdefault(n.spec.name, set()).update(every)
    return out
