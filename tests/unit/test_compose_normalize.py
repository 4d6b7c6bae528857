"""Compose syntax -> StackSpec: names, labels, defaults and every supported option."""
import textwrap

import pytest

from shoal.compose import load_stack
from shoal.compose.shortsyntax import parse_port_spec, parse_volume_spec, split_volume_spec

NS = "com.docker.stack.namespace"


def stack_of(tmp_path, text, environ=None, name="st"):
    path = tmp_path / "stack.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_stack([path], name, environ=environ or {})


def one(tmp_path, service_body, extra="", environ=None):
    body = textwrap.indent(textwrap.dedent(service_body).strip("\n"), "    ")
    text = f"services:\n  web:\n    image: busybox\n{body}\n" + textwrap.dedent(extra)
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return load_stack([path], "st", environ=environ or {}).services[0]


@pytest.mark.parametrize("spec,expected", [
    ("8080:80", [(80, 8080, "tcp")]),
    ("8080:80/udp", [(80, 8080, "udp")]),
    ("80", [(80, None, "tcp")]),
    ("9090-9091:8080-8081", [(8080, 9090, "tcp"), (8081, 9091, "tcp")]),
    ("3000-3001", [(3000, None, "tcp"), (3001, None, "tcp")]),
    ("127.0.0.1:8080:80", [(80, 8080, "tcp")]),
    ("[::1]:53:53/sctp", [(53, 53, "sctp")]),
    ("127.0.0.1::80", [(80, None, "tcp")]),
])
def test_port_short_syntax(spec, expected):
    assert [(p["target"], p["published"], p["protocol"]) for p in parse_port_spec(spec)] == expected


def test_ports_in_service_and_host_ip_warning(tmp_path):
    stack = stack_of(tmp_path, """
    services:
      web:
        image: busybox
        ports:
          - 80
          - "127.0.0.1:8443:443"
          - target: 53
            published: "5353"
            protocol: udp
            mode: host
    """)
    ports = stack.services[0].ports
    assert [(p.target, p.published, p.protocol, p.mode) for p in ports] == [
        (80, None, "tcp", "ingress"), (443, 8443, "tcp", "ingress"), (53, 5353, "udp", "host")]
    assert stack.warnings == ["Ignoring host IP 127.0.0.1 of port 8443:443 in service web: "
                              "Swarm publishes on all addresses"]


@pytest.mark.parametrize("spec,parts", [
    (r"todo-db-data:C:\var\lib\postgresql\data", ["todo-db-data", r"C:\var\lib\postgresql\data"]),
    (r"C:\data:C:\target:ro", [r"C:\data", r"C:\target", "ro"]),
    ("data:/data:ro", ["data", "/data", "ro"]),
    ("/data", ["/data"]),
    ("c:/data", ["c", "/data"]),  # on its own this is volume "c" at /data
])
def test_volume_split_is_drive_letter_aware(spec, parts):
    assert split_volume_spec(spec) == parts


def test_volume_short_syntax():
    assert parse_volume_spec("data:/data:ro,nocopy") == {
        "type": "volume", "source": "data", "target": "/data", "read_only": True, "volume": {"nocopy": True}}
    assert parse_volume_spec("/srv:/srv:rshared") == {
        "type": "bind", "source": "/srv", "target": "/srv", "bind": {"propagation": "rshared"}}
    assert parse_volume_spec("/cache") == {"type": "volume", "target": "/cache"}


def test_mounts(tmp_path):
    web = one(tmp_path, """
    volumes:
      - data:/data:ro
      - ./html:/usr/share/html
      - /var/run/docker.sock:/var/run/docker.sock
      - /anonymous
      - type: tmpfs
        target: /tmp
        tmpfs:
          size: 64M
          mode: 01777
      - type: volume
        source: shared
        target: /shared
        volume:
          nocopy: true
      - type: bind
        source: ../conf
        target: /conf
        read_only: true
        bind:
          propagation: rslave
    """, extra="""
    volumes:
      data:
        driver: local
        driver_opts:
          type: nfs
          o: addr=10.0.0.1
        labels:
          backup: daily
      shared:
        external: true
        name: cluster-shared
    """)
    m = web.container.mounts
    assert (m[0].type, m[0].source, m[0].target, m[0].read_only) == ("volume", "st_data", "/data", True)
    assert m[0].volume_driver_opts == {"type": "nfs", "o": "addr=10.0.0.1"}
    assert m[0].volume_labels == {"backup": "daily", NS: "st"}
    assert (m[1].type, m[1].source) == ("bind", str(tmp_path / "html"))
    assert (m[2].type, m[2].source) == ("bind", "/var/run/docker.sock")
    assert (m[3].type, m[3].source, m[3].target) == ("volume", None, "/anonymous")
    assert (m[4].type, m[4].tmpfs_size, m[4].tmpfs_mode) == ("tmpfs", 64 * 1024 * 1024, 0o1777)
    assert (m[5].source, m[5].volume_external, m[5].volume_nocopy) == ("cluster-shared", True, True)
    assert (m[6].source, m[6].read_only, m[6].bind_propagation) == (str(tmp_path.parent / "conf"), True, "rslave")


def test_object_names_and_labels(tmp_path):
    (tmp_path / "app.json").write_bytes(b'{"a": 1}')
    stack = stack_of(tmp_path, """
    services:
      web:
        image: busybox
        networks: [front, ext, legacy, named]
        configs:
          - app
          - source: inline
            target: /etc/inline.txt
            uid: "103"
            gid: 103
            mode: 0440
        secrets:
          - token
          - source: envsecret
            target: pw
    networks:
      front:
        labels: [tier=front]
      ext:
        external: true
      legacy:
        external:
          name: old-net
      named:
        name: my-net
        driver: overlay
        attachable: true
        internal: true
        ipam:
          config:
            - subnet: 10.5.0.0/24
      unused:
    configs:
      app:
        file: ./app.json
        labels:
          kind: json
      inline:
        content: hello
    secrets:
      token:
        external: true
        name: prod-token
      envsecret:
        environment: PASSWORD
    """, environ={"PASSWORD": "s3cret"})
    nets = {n.name: n for n in stack.networks}
    assert list(nets) == ["st_front", "ext", "old-net", "my-net"]
    assert nets["st_front"].labels == {"tier": "front", NS: "st"}
    assert nets["ext"].external and nets["ext"].stack is None and nets["ext"].labels == {}
    assert nets["my-net"].attachable and nets["my-net"].internal and nets["my-net"].subnets == ["10.5.0.0/24"]
    configs = {c.name: c for c in stack.configs}
    assert configs["st_app"].data == b'{"a": 1}' and configs["st_app"].labels == {"kind": "json", NS: "st"}
    assert configs["st_inline"].data == b"hello"
    secrets = {s.name: s for s in stack.secrets}
    assert secrets["prod-token"].external and secrets["prod-token"].data is None
    assert secrets["st_envsecret"].data == b"s3cret"
    c = stack.services[0].container
    assert [(r.source, r.target) for r in c.configs] == [("st_app", "/app"), ("st_inline", "/etc/inline.txt")]
    assert (c.configs[1].uid, c.configs[1].gid, c.configs[1].mode) == ("103", "103", 0o440)
    assert [(r.source, r.target) for r in c.secrets] == [("prod-token", "/run/secrets/token"),
                                                         ("st_envsecret", "/run/secrets/pw")]
    assert all(n.aliases == ["web"] for n in stack.services[0].networks)


def test_default_network_only_when_used(tmp_path):
    stack = stack_of(tmp_path, """
    services:
      a:
        image: busybox
        networks:
          back:
            aliases: [db, a]
            ipv4_address: 10.0.0.5
      b:
        image: busybox
    networks:
      back:
    """)
    a, b = stack.services
    assert (a.networks[0].network, a.networks[0].aliases, a.networks[0].ipv4_address) == (
        "st_back", ["a", "db"], "10.0.0.5")
    assert [(n.network, n.aliases) for n in b.networks] == [("st_default", ["b"])]
    assert [n.name for n in stack.networks] == ["st_back", "st_default"]


def test_container_options(tmp_path):
    web = one(tmp_path, """
    command: sh -c 'echo "hi there" && sleep 1'
    entrypoint: ["/init", "--"]
    environment:
      FROM_ENV:
      UNSET_ONE:
      NUM: 5
      FLAG: true
    labels: [a=1, b]
    working_dir: /app
    user: 1000
    hostname: box
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    init: true
    read_only: true
    tty: true
    stdin_open: true
    tmpfs: /run
    cap_add: [NET_ADMIN]
    cap_drop: ALL
    sysctls: [net.core.somaxconn=1024]
    ulimits:
      nproc: 65535
      nofile:
        soft: 20000
        hard: 40000
    extra_hosts:
      - somehost:162.242.195.82
      - other=10.0.0.1
    dns: 8.8.8.8
    dns_search: [example.com]
    """, environ={"FROM_ENV": "here"})
    c = web.container
    assert c.command == ["sh", "-c", 'echo "hi there" && sleep 1']
    assert c.entrypoint == ["/init", "--"]
    assert c.env == {"FROM_ENV": "here", "UNSET_ONE": None, "NUM": "5", "FLAG": "true"}
    assert c.labels == {"a": "1", "b": "", NS: "st"}
    assert (c.working_dir, c.user, c.hostname) == ("/app", "1000", "box")
    assert (c.stop_grace_period, c.stop_signal, c.init, c.read_only, c.tty, c.stdin_open) == (
        90.0, "SIGINT", True, True, True, True)
    assert (c.tmpfs, c.cap_add, c.cap_drop) == (["/run"], ["NET_ADMIN"], ["ALL"])
    assert c.sysctls == {"net.core.somaxconn": "1024"}
    assert {k: (u.soft, u.hard) for k, u in c.ulimits.items()} == {"nproc": (65535, 65535), "nofile": (20000, 40000)}
    assert c.extra_hosts == ["somehost:162.242.195.82", "other:10.0.0.1"]
    assert (c.dns, c.dns_search) == (["8.8.8.8"], ["example.com"])


@pytest.mark.parametrize("body,expected", [
    ("healthcheck:\n  test: curl -f localhost", (["CMD-SHELL", "curl -f localhost"], False)),
    ("healthcheck:\n  test: [CMD, 'true']\n  retries: 3", (["CMD", "true"], False)),
    ("healthcheck:\n  disable: true", (["NONE"], True)),
    ("healthcheck:\n  test: [NONE]", (["NONE"], True)),
])
def test_healthcheck_forms(tmp_path, body, expected):
    hc = one(tmp_path, body).container.healthcheck
    assert (hc.test, hc.disable) == expected


def test_deploy_options(tmp_path):
    web = one(tmp_path, """
    deploy:
      mode: replicated-job
      replicas: 10
      max_concurrent: 2
      endpoint_mode: dnsrr
      labels:
        owner: ops
      resources:
        limits: {cpus: '1.5', memory: 1G, pids: 100}
        reservations: {cpus: 0.25, memory: 512k}
      restart_policy:
        condition: on-failure
        delay: 500ms
        max_attempts: 3
        window: 2m
      placement:
        constraints: [node.role==manager]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
      update_config:
        parallelism: 0
        delay: 10s
        max_failure_ratio: 0.5
    """)
    assert (web.mode, web.replicas, web.max_concurrent, web.endpoint_mode) == ("replicated-job", 10, 2, "dnsrr")
    assert web.labels == {"owner": "ops", NS: "st", "com.docker.stack.image": "busybox"}
    assert web.resources.limits.model_dump() == {"nano_cpus": 1_500_000_000, "memory_bytes": 1 << 30, "pids": 100}
    assert web.resources.reservations.model_dump() == {"nano_cpus": 250_000_000, "memory_bytes": 524288, "pids": 0}
    assert web.restart_policy.model_dump() == {"condition": "on-failure", "delay": 0.5, "max_attempts": 3, "window": 120.0}
    assert web.placement.model_dump() == {"constraints": ["node.role==manager"], "preferences": ["node.labels.zone"],
                                          "max_replicas_per_node": 2}
    assert (web.update_config.parallelism, web.update_config.delay, web.update_config.max_failure_ratio) == (0, 10.0, 0.5)
    assert web.rollback_config.model_dump() == {"parallelism": 1, "delay": 0.0, "failure_action": "pause",
                                                "monitor": 5.0, "max_failure_ratio": 0.0, "order": "stop-first"}


@pytest.mark.parametrize("restart,condition,attempts", [
    ("no", "none", 0), ("always", "any", 0), ("on-failure", "on-failure", 0),
    ("on-failure:3", "on-failure", 3), ("unless-stopped", "any", 0),
])
def test_restart_option_maps_to_policy(tmp_path, restart, condition, attempts):
    path = tmp_path / "s.yml"
    path.write_text(f"services:\n  web:\n    image: busybox\n    restart: '{restart}'\n")
    stack = load_stack([path], "st", environ={})
    assert (stack.services[0].restart_policy.condition, stack.services[0].restart_policy.max_attempts) == (condition, attempts)
    assert stack.services[0].restart_policy.delay == 5.0
    assert stack.warnings == []


def test_ignored_and_deprecated_options_warn(tmp_path):
    stack = stack_of(tmp_path, """
    services:
      web:
        image: busybox
        build: .
        restart: always
        privileged: true
        container_name: web1
        expose: ["80"]
        deploy:
          restart_policy:
            condition: none
      db:
        image: busybox
        network_mode: host
        restart: always
        logging:
          driver: json-file
    """)
    assert stack.warnings == ["Ignoring unsupported options: build, network_mode, privileged, restart",
                              "Ignoring deprecated options: container_name, expose"]
    assert stack.services[0].restart_policy.condition == "none"
    assert stack.services[1].restart_policy.condition == "any"


def test_depends_on(tmp_path):
    stack = stack_of(tmp_path, """
    services:
      web:
        image: busybox
        depends_on:
          db:
            condition: service_healthy
          migrate:
            condition: service_completed_successfully
          cache:
      db:
        image: busybox
      migrate:
        image: busybox
        depends_on: [db]
      cache:
        image: busybox
    """)
    web, _db, migrate, _cache = stack.services
    assert [(d.service, d.condition) for d in web.depends_on] == [
        ("st_db", "service_healthy"), ("st_migrate", "service_completed_successfully"), ("st_cache", "service_started")]
    assert [(d.service, d.condition) for d in migrate.depends_on] == [("st_db", "service_started")]


def test_version_and_name_accepted(tmp_path):
    for version in ("3", "3.9", 3.7, 3):
        path = tmp_path / "s.yml"
        path.write_text(f"version: {version!r}\nname: proj\nservices:\n  w:\n    image: busybox\n")
        assert load_stack([path], "st", environ={}).services[0].name == "st_w"
    path.write_text("name: proj\nservices:\n  w:\n    image: busybox\n")
    assert load_stack([path], "st", environ={}).services[0].name == "st_w"
