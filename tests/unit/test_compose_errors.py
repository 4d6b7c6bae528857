"""Every error names file, line and key path: ``<file>:<line>: <key.path>: <message>``."""
import os
import textwrap

import pytest

from shoal.compose import ComposeError, load_stack


@pytest.fixture
def load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(text, name="stack.yml", environ=None):
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return load_stack([tmp_path / name], "st", environ=environ or {})
    return run


def error_of(load, text, **kw):
    with pytest.raises(ComposeError) as exc:
        load(text, **kw)
    return str(exc.value)


def test_example_from_the_brief(load):
    text = """
    version: "3.7"

    services:
      todo-web:
        image: diamol/ch06-todo-list
        ports:
          - 8080:80
        deploy:
          resources: {}
          replicas: two
    """
    assert error_of(load, text, name="v2.yml") == \
        "v2.yml:10: services.todo-web.deploy.replicas: expected an integer, got 'two'"


def test_yaml_syntax_error_names_file_and_line(load):
    message = error_of(load, """
    services:
      web:
        image: [busybox
        ports: []
    """)
    assert message.startswith("stack.yml:4: YAML syntax error:")


def test_duplicate_key_is_a_syntax_error(load):
    message = error_of(load, """
    services:
      web:
        image: a
        image: b
    """)
    assert message.startswith("stack.yml:4: YAML syntax error:") and "duplicate key" in message


def test_unknown_top_level_key(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
    servicez: {}
    """) == "stack.yml:4: servicez: unknown top-level key 'servicez'"


def test_extension_keys_are_ignored(load):
    stack = load("""
    x-common: &common
      image: busybox
    services:
      web:
        <<: *common
        x-note: hello
    """)
    assert stack.services[0].container.image == "busybox"


def test_unknown_service_key(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        imagee: busybox
    """) == "stack.yml:4: services.web.imagee: unknown service option 'imagee'"


def test_unknown_deploy_key(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        deploy:
          replica: 2
    """) == "stack.yml:5: services.web.deploy.replica: unknown deploy option 'replica'"


@pytest.mark.parametrize("snippet,line,path,message", [
    ("deploy:\n      replicas: [1]", 5, "services.web.deploy.replicas", "expected an integer, got a list"),
    ("init: maybe", 4, "services.web.init", "expected a boolean, got 'maybe'"),
    ("environment: oops", 4, "services.web.environment", "expected a list, got 'oops'"),
    ("deploy:\n      mode: everywhere", 5, "services.web.deploy.mode",
     "invalid value 'everywhere', expected one of: replicated, global, replicated-job, global-job"),
    ("deploy:\n      update_config:\n        order: random", 6, "services.web.deploy.update_config.order",
     "invalid value 'random', expected one of: stop-first, start-first"),
    ("deploy:\n      mode: global\n      replicas: 2", 6, "services.web.deploy.replicas",
     "replicas can only be used with replicated or replicated-job mode, not global"),
    ("stop_grace_period: 10", 4, "services.web.stop_grace_period", 'missing unit in duration "10"'),
    ("healthcheck:\n      interval: 5x", 5, "services.web.healthcheck.interval", 'unknown unit "x" in duration "5x"'),
    ("deploy:\n      restart_policy:\n        delay: -5s", 6, "services.web.deploy.restart_policy.delay",
     "duration must not be negative, got '-5s'"),
    ("deploy:\n      resources:\n        limits:\n          memory: 100X", 7,
     "services.web.deploy.resources.limits.memory", "invalid size: '100X'"),
    ("deploy:\n      resources:\n        limits:\n          cpus: lots", 7,
     "services.web.deploy.resources.limits.cpus", "invalid CPU count: 'lots'"),
    ("ports:\n      - 80:80:80:80", 5, "services.web.ports[0]", "invalid port '80:80:80:80'"),
    ("ports:\n      - 8080:99999", 5, "services.web.ports[0]", "invalid port '8080:99999'"),
    ("ports:\n      - 80/xtp", 5, "services.web.ports[0]", "invalid protocol 'xtp' in port '80/xtp'"),
    ("ports:\n      - 9000-9002:80-81", 5, "services.web.ports[0]", "port ranges of different sizes in '9000-9002:80-81'"),
    ("ports:\n      - target: web", 5, "services.web.ports[0].target", "expected a port number, got 'web'"),
    ("volumes:\n      - data:relative/path", 5, "services.web.volumes[0]",
     "invalid volume specification 'data:relative/path': mount path must be absolute"),
    ("volumes:\n      - /a:/data\n      - /b:/data", 6, "services.web.volumes[1]", "duplicate mount target '/data'"),
    ("restart: sometimes", 4, "services.web.restart",
     "invalid restart policy 'sometimes', expected no, always, on-failure[:N] or unless-stopped"),
])
def test_wrong_values(load, snippet, line, path, message):
    snippet = snippet.replace("\n", "\n    ")
    text = f"""
    services:
      web:
        image: busybox
        {snippet}
    """
    assert error_of(load, text) == f"stack.yml:{line}: {path}: {message}"


def test_service_without_image(load):
    assert error_of(load, """
    services:
      web:
        build: .
    """) == "stack.yml:2: services.web: service has no image"


@pytest.mark.parametrize("kind,snippet,path,message", [
    ("network", "networks:\n      - backend", "services.web.networks.backend", "refers to undefined network 'backend'"),
    ("volume", "volumes:\n      - data:/data", "services.web.volumes[0].source", "refers to undefined volume 'data'"),
    ("config", "configs:\n      - app-config", "services.web.configs[0].source", "refers to undefined config 'app-config'"),
    ("secret", "secrets:\n      - source: db-pass\n        target: pw", "services.web.secrets[0].source",
     "refers to undefined secret 'db-pass'"),
])
def test_undefined_references(load, kind, snippet, path, message):
    snippet = snippet.replace("\n", "\n    ")
    text = f"""
    services:
      web:
        image: busybox
        {snippet}
    """
    assert error_of(load, text) == f"stack.yml:5: {path}: {message}"


def test_depends_on_unknown_service(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        depends_on:
          - db
    """) == "stack.yml:5: services.web.depends_on.db: depends on undefined service 'db'"


def test_depends_on_cycle(load):
    assert error_of(load, """
    services:
      a:
        image: busybox
        depends_on: [b]
      b:
        image: busybox
        depends_on:
          c:
            condition: service_healthy
      c:
        image: busybox
        depends_on: [a]
    """) == "stack.yml:4: services.a.depends_on: dependency cycle between services: a -> b -> c -> a"


def test_refused_options_are_named_together(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        mem_limit: 100m
        cpu_shares: 512
      db:
        image: busybox
        volumes_from: [web]
    """) == ("stack.yml:4: services.web.mem_limit: compose file contains unsupported options: "
             "cpu_shares, mem_limit, volumes_from")


def test_missing_config_file(load):
    message = error_of(load, """
    services:
      web:
        image: busybox
        configs: [app]
    configs:
      app:
        file: ./missing.json
    """)
    assert message.startswith("stack.yml:7: configs.app.file: cannot read config file ")
    assert message.endswith("missing.json: No such file or directory")


def test_missing_env_file(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        env_file:
          - path: ./optional.env
            required: false
          - ./web.env
    """) == f"stack.yml:7: services.web.env_file[1]: env file {os.path.join(os.getcwd(), 'web.env')} not found"


def test_secret_from_unset_environment_variable(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
    secrets:
      token:
        environment: TOKEN
    """) == "stack.yml:6: secrets.token.environment: environment variable TOKEN is not set"


def test_required_variable(load):
    assert error_of(load, """
    services:
      web:
        image: ${IMAGE:?set IMAGE to the image to run}
    """) == "stack.yml:3: services.web.image: required variable IMAGE is missing a value: set IMAGE to the image to run"


def test_invalid_interpolation(load):
    assert error_of(load, """
    services:
      web:
        image: busybox
        command: echo $ {oops}
    """) == ('stack.yml:4: services.web.command: invalid interpolation format in "echo $ {oops}"; '
             "you may need to escape any $ with another $")


def test_unsupported_version(load):
    assert error_of(load, """
    version: "2.4"
    services:
      web:
        image: busybox
    """) == "stack.yml:1: version: unsupported compose file version '2.4': docker stack deploy needs 3.x"


def test_error_in_second_file_names_that_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yml").write_text("services:\n  web:\n    image: busybox\n")
    (tmp_path / "over.yml").write_text("services:\n  web:\n    deploy:\n      replicas: many\n")
    with pytest.raises(ComposeError) as exc:
        load_stack([tmp_path / "base.yml", tmp_path / "over.yml"], "st", environ={})
    assert str(exc.value) == "over.yml:4: services.web.deploy.replicas: expected an integer, got 'many'"
    assert (exc.value.file, exc.value.line, exc.value.path) == ("over.yml", 4, "services.web.deploy.replicas")


def test_file_path_relative_to_working_directory(tmp_path, monkeypatch):
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "s.yml").write_text("services:\n  web: {}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ComposeError) as exc:
        load_stack(["deploy/s.yml"], "st", environ={})
    assert str(exc.value) == "deploy/s.yml:2: services.web: service has no image"


def test_invalid_stack_name(load):
    with pytest.raises(ComposeError, match="invalid stack name"):
        load_stack([], "bad name")
