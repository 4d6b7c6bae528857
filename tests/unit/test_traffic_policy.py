"""The `shoal.traffic-policy=local` label (beyond Swarm, moby#25526): a published port sends
traffic only to the replicas of the node it reached, so they see the client's address."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shoal.agent.netplane import build_views
from shoal.model.objects import NetworkObj
from shoal.model.specs import ContainerSpec, NetworkSpec, ServiceSpec


class Keeper:
    """What build_views reads of the agent's NetworkKeeper."""

    def __init__(self) -> None:
        self.objs = {"app_net": NetworkObj(id="n1", spec=NetworkSpec(name="app_net"), subnet="10.0.9.0/24",
                                           gateway="10.0.9.1")}
        self.ids = {"app_net": "docker-net-id"}

    def bridge_of(self, name: str) -> str:
        return "br-test"

    def block_of(self, net: NetworkObj) -> str:
        return ""


def endpoint(policy: str) -> dict:
    return {"name": "app_web", "short_name": "web", "stack": "app", "endpoint_mode": "vip",
            "networks": ["app_net"], "aliases": {}, "virtual_ips": {"app_net": "10.211.9.2"},
            "ports": [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "ingress"}],
            "traffic_policy": policy,
            "backends": [{"addresses": {"app_net": "10.0.9.5"}}, {"addresses": {"app_net": "10.0.9.6"}}]}


LOCAL = {("app_web", "app_net", "10.0.9.5")}


def test_local_policy_publishes_this_nodes_replicas_only_and_keeps_the_vip_whole():
    dp, dns = build_views([endpoint("local")], Keeper(), local=LOCAL)
    assert [b.ip for b in dp.ingress[0].backends] == ["10.0.9.5"]
    assert dp.vips[0].backends == ["10.0.9.5", "10.0.9.6"]  # inside the network: every replica
    assert dns.networks[0].services[0].tasks == ["10.0.9.5", "10.0.9.6"]


def test_cluster_policy_and_a_node_without_replicas():
    dp, _ = build_views([endpoint("cluster")], Keeper(), local=LOCAL)
    assert [b.ip for b in dp.ingress[0].backends] == ["10.0.9.5", "10.0.9.6"]
    dp, _ = build_views([endpoint("local")], Keeper(), local=set())
    assert dp.ingress[0].backends == []  # rendered as a reset: this node does not serve the port


def test_the_label_is_checked():
    spec = ServiceSpec(name="web", container=ContainerSpec(image="x"), labels={"shoal.traffic-policy": "local"})
    assert spec.traffic_policy == "local"
    assert ServiceSpec(name="web", container=ContainerSpec(image="x")).traffic_policy == "cluster"
    with pytest.raises(ValidationError, match="'nearest' is not a traffic policy"):
        ServiceSpec(name="web", container=ContainerSpec(image="x"), labels={"shoal.traffic-policy": "nearest"})


def test_a_bad_value_in_a_stack_file_names_the_file_line_and_key(tmp_path):
    from shoal.compose import ComposeError, load_stack
    f = tmp_path / "s.yml"
    f.write_text("services:\n  web:\n    image: x\n    deploy:\n      labels:\n        shoal.traffic-policy: nearest\n")
    with pytest.raises(ComposeError, match=r"s\.yml:6: services\.web\.deploy\.labels\.shoal\.traffic-policy: .*"
                                           r"invalid value 'nearest', expected one of: cluster, local"):
        load_stack([str(f)], "tp")
