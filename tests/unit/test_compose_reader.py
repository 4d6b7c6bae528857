"""Files load the same whatever their encoding, BOM and line endings."""
import pytest

from shoal.compose import ComposeError, load_merged, load_stack
from shoal.compose.reader import decode, parse_yaml

TEXT = """version: "3.7"
services:
  web:
    image: busybox
    environment:
      GREETING: "h\u00e9llo w\u00f6rld"
    configs:
      - source: cfg
        target: /etc/app.conf
        mode: 0440
    deploy:
      replicas: 2
configs:
  cfg:
    external: true
"""

ENCODINGS = {
    "utf8": lambda t: t.encode("utf-8"),
    "utf8-bom": lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
    "utf8-crlf": lambda t: t.replace("\n", "\r\n").encode("utf-8"),
    "utf16le-bom-crlf": lambda t: b"\xff\xfe" + t.replace("\n", "\r\n").encode("utf-16-le"),
    "utf16be-bom": lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
    "utf16le-nobom": lambda t: t.encode("utf-16-le"),
    "utf32le-bom": lambda t: t.encode("utf-32"),
    "cr-only": lambda t: t.replace("\n", "\r").encode("utf-8"),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_encodings_load_identically(tmp_path, name):
    reference = tmp_path / "ref.yml"
    reference.write_bytes(TEXT.encode("utf-8"))
    other = tmp_path / f"{name}.yml"
    other.write_bytes(ENCODINGS[name](TEXT))
    assert load_merged([other], environ={}) == load_merged([reference], environ={})
    assert load_stack([other], "st", environ={}) == load_stack([reference], "st", environ={})


def test_line_numbers_survive_crlf_and_utf16(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = TEXT.replace("replicas: 2", "replicas: lots")
    f = tmp_path / "s.yml"
    f.write_bytes(b"\xff\xfe" + bad.replace("\n", "\r\n").encode("utf-16-le"))
    with pytest.raises(ComposeError) as exc:
        load_stack([f], "st", environ={})
    assert str(exc.value) == "s.yml:12: services.web.deploy.replicas: expected an integer, got 'lots'"


def test_octal_mode_as_docker_reads_it(tmp_path):
    f = tmp_path / "s.yml"
    f.write_text(TEXT)
    ref = load_stack([f], "st", environ={}).services[0].container.configs[0]
    assert ref.mode == 0o440 and ref.source == "cfg"


def test_line_numbers_kept_for_keys():
    tree = parse_yaml("a: 1\nb:\n  c: [1, 2]\n  d:\n    - x\n    - y\n", "f.yml")
    assert tree.loc_of("b") == ("f.yml", 2)
    assert tree["b"].loc_of("d") == ("f.yml", 4)
    assert tree["b"]["d"].loc_of(1) == ("f.yml", 6)


def test_empty_and_non_mapping_files():
    with pytest.raises(ComposeError, match="f.yml: empty compose file"):
        parse_yaml("# nothing\n", "f.yml")
    with pytest.raises(ComposeError, match="f.yml:1: top-level object must be a mapping"):
        parse_yaml("- a\n- b\n", "f.yml")


def test_undecodable_file():
    with pytest.raises(ComposeError, match="cannot decode"):
        decode(b"services: \xff\xfe\xfd\n", "f.yml")


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ComposeError, match="nope.yml: cannot read file"):
        load_stack([tmp_path / "nope.yml"], "st", environ={})
