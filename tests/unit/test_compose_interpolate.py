"""Variable substitution: every form, nested defaults, .env beside the first file."""
import textwrap

import pytest

from shoal.compose import ComposeError, load_merged, load_stack
from shoal.compose.interpolate import InterpolationError, substitute

ENV = {"SET": "value", "EMPTY": "", "TAG": "v2"}


@pytest.mark.parametrize("text,expected", [
    ("plain", "plain"),
    ("$SET", "value"), ("${SET}", "value"), ("a-${SET}-b", "a-value-b"), ("$SET.x", "value.x"),
    ("${UNSET}", ""), ("$UNSET", ""),
    ("${UNSET:-dflt}", "dflt"), ("${EMPTY:-dflt}", "dflt"), ("${SET:-dflt}", "value"),
    ("${UNSET-dflt}", "dflt"), ("${EMPTY-dflt}", ""), ("${SET-dflt}", "value"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("$$", "$"), ("$${SET}", "${SET}"), ("cost: $$5", "cost: $5"),
    ("${UNSET:-${TAG}}", "v2"), ("${UNSET:-a-${UNSET2:-b}-c}", "a-b-c"), ("${SET:?boom}", "value"),
    ("${EMPTY?boom}", ""),
])
def test_forms(text, expected):
    assert substitute(text, ENV) == expected


@pytest.mark.parametrize("text,message", [
    ("${UNSET:?needs a value}", "required variable UNSET is missing a value: needs a value"),
    ("${EMPTY:?needs a value}", "required variable EMPTY is missing a value: needs a value"),
    ("${UNSET?oops}", "required variable UNSET is missing a value: oops"),
    ("${UNSET:?}", "required variable UNSET is missing a value"),
    ("${SET", "invalid interpolation format"), ("${SET:-abc", "invalid interpolation format: missing '}'"),
    ("${}", "invalid interpolation format"), ("$", "invalid interpolation format"),
    ("${SET:x}", "invalid interpolation format"), ("${1ABC}", "invalid interpolation format"),
])
def test_errors(text, message):
    with pytest.raises(InterpolationError) as exc:
        substitute(text, ENV)
    assert str(exc.value) == message


def test_unset_variable_warns():
    warnings = []
    substitute("${NOPE}", {}, warnings.append)
    assert warnings == ['The "NOPE" variable is not set. Defaulting to a blank string.']


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_values_nested_but_not_keys(tmp_path):
    f = write(tmp_path / "s.yml", """
    services:
      web:
        image: busybox:${TAG}
        environment:
          $KEY: ${SET}
          LIST: "${SET}-x"
        command: ["echo", "${SET}", "$$HOME"]
        deploy:
          placement:
            constraints: ["node.labels.zone == ${ZONE:-a}"]
    """)
    merged = load_merged([f], environ={"TAG": "1.0", "SET": "s", "KEY": "k"})
    web = merged["services"]["web"]
    assert web["image"] == "busybox:1.0"
    assert web["environment"] == {"$KEY": "s", "LIST": "s-x"}
    assert web["command"] == ["echo", "s", "$HOME"]
    assert web["deploy"]["placement"]["constraints"] == ["node.labels.zone == a"]


def test_interpolated_numbers_and_booleans_convert(tmp_path):
    f = write(tmp_path / "s.yml", """
    services:
      web:
        image: busybox
        init: ${INIT}
        deploy:
          replicas: ${REPLICAS}
          update_config:
            max_failure_ratio: ${RATIO}
    """)
    web = load_stack([f], "st", environ={"REPLICAS": "3", "INIT": "true", "RATIO": "0.25"}).services[0]
    assert web.replicas == 3 and web.container.init is True and web.update_config.max_failure_ratio == 0.25


def test_quoted_number_is_not_an_integer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = write(tmp_path / "s.yml", """
    services:
      web:
        image: busybox
        deploy:
          replicas: "3"
    """)
    with pytest.raises(ComposeError, match=r"s.yml:5: services.web.deploy.replicas: expected an integer, got '3'"):
        load_stack([f], "st", environ={})


def test_dotenv_beside_first_file_environ_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / ".env", """
    # comment
    TAG=from-dotenv
    export REPLICAS=4
    QUOTED="a b"
    """)
    base = write(tmp_path / "base.yml", """
    services:
      web:
        image: busybox:${TAG}
        environment:
          Q: ${QUOTED}
        deploy:
          replicas: ${REPLICAS}
    """)
    write(tmp_path / "sub" / ".env", "TAG=ignored\n")
    over = write(tmp_path / "sub" / "over.yml", "services:\n  web:\n    labels: ['tag=${TAG}']\n")
    stack = load_stack([base, over], "st", environ={"REPLICAS": "2"})
    web = stack.services[0]
    assert web.container.image == "busybox:from-dotenv"
    assert web.replicas == 2
    assert web.container.env == {"Q": "a b"}
    assert web.container.labels["tag"] == "from-dotenv"


def test_warning_for_unset_variable_reaches_stack(tmp_path):
    f = write(tmp_path / "s.yml", "services:\n  web:\n    image: busybox${SUFFIX}\n")
    stack = load_stack([f], "st", environ={})
    assert stack.warnings == ['The "SUFFIX" variable is not set. Defaulting to a blank string.']
    assert stack.services[0].container.image == "busybox"


def test_defaults_to_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOAL_TEST_IMAGE", "alpine")
    f = write(tmp_path / "s.yml", "services:\n  web:\n    image: ${SHOAL_TEST_IMAGE}\n")
    assert load_stack([f], "st").services[0].container.image == "alpine"
