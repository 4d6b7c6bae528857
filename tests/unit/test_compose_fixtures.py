"""Every stack file of the book chapters loads, with the values Swarm would use."""
from pathlib import Path

import pytest

from shoal.compose import load_merged, load_stack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "book"  # CC BY-SA 4.0: see its README.md
TODO = FIXTURES / "diamol-ch13" / "todo-list"
NUMBERS = FIXTURES / "diamol-ch14" / "numbers"
PROD = [NUMBERS / f for f in ("docker-compose.yml", "prod.yml", "prod-healthcheck.yml",
                              "prod-update-config.yml", "prod-rollback-config.yml")]
NS = "com.docker.stack.namespace"


def svc(stack, short):
    return next(s for s in stack.services if s.short_name == short)


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v4", "v5", "v5-windows", "v6", "v6-windows"])
def test_todo_list_versions_load(version):
    stack = load_stack([TODO / f"{version}.yml"], "todo", environ={})
    web = svc(stack, "todo-web")
    assert web.name == "todo_todo-web"
    assert web.container.image == "diamol/ch06-todo-list"
    assert [(p.published, p.target, p.protocol, p.mode) for p in web.ports] == [(8080, 80, "tcp", "ingress")]
    assert stack.warnings == []


def test_v1_joins_default_network():
    stack = load_stack([TODO / "v1.yml"], "todo", environ={})
    web = stack.services[0]
    assert [(n.network, n.aliases) for n in web.networks] == [("todo_default", ["todo-web"])]
    assert [(n.name, n.driver, n.labels) for n in stack.networks] == [("todo_default", "overlay", {NS: "todo"})]
    assert web.replicas == 1 and web.mode == "replicated"
    assert web.labels == {NS: "todo", "com.docker.stack.image": "diamol/ch06-todo-list"}
    assert web.container.labels == {NS: "todo"}
    assert web.restart_policy.condition == "any" and web.restart_policy.delay == 5.0
    assert web.update_config.parallelism == 1 and web.update_config.monitor == 5.0
    assert web.update_config.failure_action == "pause" and web.update_config.order == "stop-first"
    assert web.container.stop_grace_period == 10.0


def test_v2_values():
    stack = load_stack([TODO / "v2.yml"], "todo", environ={})
    web = stack.services[0]
    assert web.replicas == 2
    assert web.resources.limits.nano_cpus == 500_000_000
    assert web.resources.limits.memory_bytes == 104_857_600
    port = web.ports[0]
    assert (port.published, port.target, port.protocol, port.mode) == (8080, 80, "tcp", "ingress")
    assert [n.name for n in stack.networks] == ["todo_default"]
    assert web.networks[0].network == "todo_default"


def test_v4_external_config_and_secret():
    stack = load_stack([TODO / "v4.yml"], "todo", environ={})
    web, db = svc(stack, "todo-web"), svc(stack, "todo-db")
    assert [n.name for n in stack.networks] == ["todo_app-net"]
    assert stack.networks[0].labels == {NS: "todo"}
    assert web.container.configs[0].model_dump() == {
        "source": "todo-list-config", "target": "/app/config/config.json", "uid": "0", "gid": "0", "mode": 0o444,
        "version": 0}  # the loader never pins a version: the manager does, when it accepts the spec
    assert web.container.secrets[0].source == "todo-list-secret"
    assert web.container.secrets[0].target == "/app/config/secrets.json"
    assert [(c.name, c.external, c.data, c.stack) for c in stack.configs] == [("todo-list-config", True, None, None)]
    assert [(s.name, s.external) for s in stack.secrets] == [("todo-list-secret", True)]
    assert db.resources.limits.memory_bytes == 500 * 1024 * 1024
    assert db.networks[0].network == "todo_app-net" and db.networks[0].aliases == ["todo-db"]


@pytest.mark.parametrize("version,target", [("v5", "/var/lib/postgresql/data"),
                                            ("v5-windows", r"C:\var\lib\postgresql\data"),
                                            ("v6-windows", r"C:\var\lib\postgresql\data")])
def test_named_volume_and_constraint(version, target):
    stack = load_stack([TODO / f"{version}.yml"], "todo", environ={})
    db = svc(stack, "todo-db")
    (mount,) = db.container.mounts
    assert (mount.type, mount.source, mount.target) == ("volume", "todo_todo-db-data", target)
    assert mount.volume_driver == "local" and mount.volume_labels == {NS: "todo"}
    assert db.placement.constraints == ["node.labels.storage == raid"]
    assert db.container.env == {"PGDATA": "/var/lib/postgresql/data/pgdata"}
    assert [(v.name, v.labels) for v in stack.volumes] == [("todo_todo-db-data", {NS: "todo"})]


def test_ch13_lab_named_network():
    stack = load_stack([FIXTURES / "diamol-ch13" / "lab" / "image-gallery.yml"], "image-gallery", environ={})
    assert [n.name for n in stack.networks] == ["image-gallery-prod"]
    iotd = svc(stack, "iotd")
    assert iotd.replicas == 5 and iotd.resources.limits.nano_cpus == 10**9
    assert svc(stack, "image-gallery").resources.limits.memory_bytes == 75 * 1024 * 1024
    assert svc(stack, "accesslog").ports == []


def test_ch14_lab_merged_with_v2():
    lab = FIXTURES / "diamol-ch14" / "lab"
    stack = load_stack([lab / "image-gallery.yml", lab / "v2.yml"], "image-gallery", environ={})
    iotd = svc(stack, "iotd")
    assert iotd.container.image == "diamol/ch09-image-of-the-day"
    assert iotd.replicas == 4
    hc = iotd.container.healthcheck
    assert (hc.test, hc.interval, hc.timeout, hc.retries, hc.start_period) == (
        ["CMD", "curl", "-f", "http://localhost/image"], 5.0, 20.0, 2, 10.0)
    assert (iotd.update_config.parallelism, iotd.update_config.order, iotd.update_config.monitor,
            iotd.update_config.failure_action) == (2, "start-first", 90.0, "rollback")
    assert (iotd.rollback_config.parallelism, iotd.rollback_config.failure_action,
            iotd.rollback_config.monitor) == (4, "continue", 5.0)
    assert svc(stack, "accesslog").container.image == "diamol/ch09-access-log"


@pytest.mark.parametrize("last,tag", [("v2.yml", "v2"), ("v3.yml", "v3"), ("v5.yml", "v5"), ("v5-bad.yml", "v5")])
def test_numbers_production_merge(last, tag):
    stack = load_stack(PROD + [NUMBERS / last], "numbers", environ={})
    api, web = svc(stack, "numbers-api"), svc(stack, "numbers-web")
    assert api.container.image.endswith(f":{tag}") and web.container.image.endswith(f":{tag}")
    assert api.replicas == 6 and api.resources.limits.memory_bytes == 75 * 1024 * 1024
    assert api.update_config.model_dump() == {"parallelism": 3, "delay": 0.0, "failure_action": "rollback",
                                              "monitor": 60.0, "max_failure_ratio": 0.0, "order": "start-first"}
    assert api.rollback_config.model_dump() == {"parallelism": 6, "delay": 0.0, "failure_action": "continue",
                                                "monitor": 0.0, "max_failure_ratio": 0.0, "order": "start-first"}
    assert api.container.healthcheck.test[:2] == ["CMD", "dotnet"]
    assert web.mode == "global"
    assert [(p.published, p.target, p.mode) for p in web.ports] == [(80, 80, "host")]
    assert web.container.healthcheck.test is None and web.container.healthcheck.interval == 20.0
    assert web.container.env == {"RngApi__Url": "http://numbers-api/rng"}
    assert [n.name for n in stack.networks] == ["numbers-prod"]
    if last == "v5.yml":
        assert api.container.env == {"Broken": "false"}


def test_prod_full_utf16_matches_split_files():
    full = load_stack([NUMBERS / "docker-compose.yml", NUMBERS / "prod-full.yml"], "numbers", environ={})
    split = load_stack(PROD, "numbers", environ={})
    api_full, api_split = svc(full, "numbers-api"), svc(split, "numbers-api")
    assert api_full.container.healthcheck == api_split.container.healthcheck
    assert api_full.resources == api_split.resources
    assert api_full.update_config == api_split.update_config
    # prod-full leaves rollback monitor at Swarm's default; prod-rollback-config sets 0s.
    assert api_full.rollback_config.monitor == 5.0 and api_split.rollback_config.monitor == 0.0
    assert svc(full, "numbers-web") == svc(split, "numbers-web")


def test_merged_dict_for_stack_config():
    merged = load_merged(PROD + [NUMBERS / "v2.yml"], environ={})
    assert merged["version"] == "3.7"
    api = merged["services"]["numbers-api"]
    assert api["image"] == "diamol/ch08-numbers-api:v2"
    assert api["deploy"]["replicas"] == 6
    assert merged["services"]["numbers-web"]["environment"] == {"RngApi__Url": "http://numbers-api/rng"}
    assert merged["networks"] == {"app-net": {"name": "numbers-prod"}}
    assert type(merged) is dict and type(api) is dict


@pytest.mark.parametrize("files", [[TODO / "v6.yml"], PROD + [NUMBERS / "v3.yml"],
                                   [NUMBERS / "docker-compose.yml", NUMBERS / "prod-full.yml"]])
def test_specs_survive_the_store_round_trip(files):
    """Fields set after construction are not validated by pydantic: check them once here."""
    from shoal.model.specs import StackSpec
    stack = load_stack(files, "st", environ={})
    assert StackSpec.model_validate_json(stack.model_dump_json()) == stack
