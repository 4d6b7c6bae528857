"""Merging several files follows docker compose's rules."""
import textwrap

from shoal.compose import load_merged, load_stack


def files(tmp_path, *texts):
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"f{i}.yml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        paths.append(path)
    return paths


BASE = """
version: "3.7"
services:
  web:
    image: web:1
    command: ["serve", "--port", "80"]
    environment:
      - A=1
      - B=2
    labels:
      team: red
    ports:
      - 8080:80
      - "9090:90/udp"
    volumes:
      - data:/data
      - ./logs:/logs
    dns: [1.1.1.1]
    secrets: [token]
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
networks:
  front:
    driver: overlay
volumes:
  data:
secrets:
  token:
    external: true
"""

OVERRIDE = """
services:
  web:
    image: web:2
    command: serve --debug
    environment:
      B: "20"
      C: "3"
    labels:
      - tier=front
    ports:
      - target: 80
        published: 8080
        mode: ingress
      - target: 80
        published: 8081
        mode: host
      - 7070:70
    volumes:
      - type: volume
        source: data
        target: /data
        read_only: true
    dns: [1.1.1.1, 8.8.8.8]
    secrets:
      - source: token
        target: /run/secrets/token
        mode: 0400
    healthcheck:
      test: curl -f http://localhost
    deploy:
      placement:
        constraints: [node.labels.zone == a]
  worker:
    image: worker
networks:
  front:
    attachable: true
"""


def test_service_merge_rules(tmp_path):
    merged = load_merged(files(tmp_path, BASE, OVERRIDE), environ={})
    web = merged["services"]["web"]
    assert web["image"] == "web:2"
    assert web["command"] == ["serve", "--debug"]
    assert web["environment"] == {"A": "1", "B": "20", "C": "3"}
    assert web["labels"] == {"team": "red", "tier": "front"}
    assert [(p["target"], p["published"], p.get("protocol", "tcp"), p["mode"]) for p in web["ports"]] == [
        (80, 8080, "tcp", "ingress"), (90, 9090, "udp", "ingress"), (80, 8081, "tcp", "host"),
        (70, 7070, "tcp", "ingress")]
    assert [(v["target"], v.get("read_only", False)) for v in web["volumes"]] == [("/data", True), ("/logs", False)]
    assert web["volumes"][1]["source"] == str(tmp_path / "logs")
    assert web["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert web["secrets"] == [{"source": "token", "target": "/run/secrets/token", "mode": 0o400}]
    assert web["healthcheck"] == {"test": ["CMD-SHELL", "curl -f http://localhost"], "interval": "5s"}
    assert web["deploy"] == {"replicas": 2, "placement": {"constraints": ["node.role == worker", "node.labels.zone == a"]}}
    assert merged["services"]["worker"] == {"image": "worker"}
    assert merged["networks"] == {"front": {"driver": "overlay", "attachable": True}}
    assert list(merged["services"]) == ["web", "worker"]


def test_merged_stack_spec(tmp_path):
    stack = load_stack(files(tmp_path, BASE, OVERRIDE), "st", environ={})
    web = stack.services[0]
    assert web.container.command == ["serve", "--debug"]
    assert web.container.healthcheck.test == ["CMD-SHELL", "curl -f http://localhost"]
    assert web.container.mounts[0].read_only and web.container.mounts[0].source == "st_data"
    assert web.container.secrets[0].mode == 0o400
    assert web.replicas == 2


def test_environment_list_and_mapping_merge_equivalently(tmp_path):
    as_list = load_merged(files(tmp_path, "services:\n  w:\n    image: x\n    environment: [A=1, B=2]\n",
                                "services:\n  w:\n    environment: [B=3]\n"), environ={})
    as_map = load_merged(files(tmp_path, "services:\n  w:\n    image: x\n    environment: {A: '1', B: '2'}\n",
                               "services:\n  w:\n    environment: {B: '3'}\n"), environ={})
    assert as_list == as_map
    assert as_list["services"]["w"]["environment"] == {"A": "1", "B": "3"}


def test_null_override_keeps_mapping_and_later_scalars_win(tmp_path):
    merged = load_merged(files(tmp_path,
                               "version: '3.7'\nservices:\n  w:\n    image: x\nnetworks:\n  n:\n    driver: overlay\n",
                               "version: '3.8'\nservices:\n  w:\n    image: y\nnetworks:\n  n:\n"), environ={})
    assert merged["version"] == "3.8"
    assert merged["networks"] == {"n": {"driver": "overlay"}}
    assert merged["services"]["w"]["image"] == "y"


def test_entrypoint_replaced_and_networks_merged(tmp_path):
    merged = load_merged(files(tmp_path,
                               "services:\n  w:\n    image: x\n    entrypoint: [a, b]\n    networks: [n1]\n"
                               "networks:\n  n1:\n  n2:\n",
                               "services:\n  w:\n    entrypoint: [c]\n    networks:\n      n2:\n        aliases: [w2]\n"),
                         environ={})
    w = merged["services"]["w"]
    assert w["entrypoint"] == ["c"]
    assert w["networks"] == {"n1": None, "n2": {"aliases": ["w2"]}}


def test_relative_paths_resolve_against_the_first_files_folder(tmp_path):
    """As Docker Compose and `docker stack deploy`: every file's relative paths resolve against
    the first file's folder, not against the folder of the file that wrote them."""
    (tmp_path / "other").mkdir()
    (tmp_path / "app.conf").write_text("setting=1\n")
    (tmp_path / "web.env").write_text("FROM_FILE=yes\nOVERRIDDEN=file\n")
    (tmp_path / "other" / "app.conf").write_text("the other folder's: not read\n")
    (tmp_path / "other" / "web.env").write_text("FROM_FILE=wrong\n")
    base = tmp_path / "base.yml"
    base.write_text("services:\n  web:\n    image: x\n    environment: [OVERRIDDEN=env]\n")
    over = tmp_path / "other" / "over.yml"
    over.write_text("services:\n  web:\n    configs: [app]\n    env_file: web.env\n"
                    "configs:\n  app:\n    file: ./app.conf\n")
    stack = load_stack([base, over], "st", environ={})
    assert stack.configs[0].data == b"setting=1\n"
    assert stack.configs[0].name == "st_app"
    assert stack.services[0].container.env == {"FROM_FILE": "yes", "OVERRIDDEN": "env"}
