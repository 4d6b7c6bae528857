"""`stack config` output: docker's key order, and it loads back to the same stack."""
from pathlib import Path

from ruamel.yaml import YAML

from shoal.compose import load_merged, load_stack, render_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "book"  # CC BY-SA 4.0: see its README.md
NUMBERS = FIXTURES / "diamol-ch14" / "numbers"
FILES = [NUMBERS / f for f in ("docker-compose.yml", "prod.yml", "prod-healthcheck.yml",
                               "prod-update-config.yml", "prod-rollback-config.yml", "v3.yml")]


def test_top_level_order_and_sorted_services(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text("secrets:\n  s:\n    external: true\nservices:\n  zed:\n    image: z\n  alpha:\n    image: a\n"
                    "    secrets: [s]\nversion: 3.8\nnetworks:\n  n:\nx-ext: 1\n")
    text = render_config(load_merged([path], environ={}))
    top = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert top == ["version", "services", "networks", "secrets"]
    assert text.index("alpha:") < text.index("zed:")
    assert "version: '3.8'" in text


def test_render_round_trips(tmp_path):
    merged = load_merged(FILES, environ={})
    text = render_config(merged)
    assert YAML(typ="safe").load(text) == merged
    out = tmp_path / "stack.yml"
    out.write_text(text)
    assert load_stack([out], "numbers", environ={}) == load_stack(FILES, "numbers", environ={})


def test_render_windows_path_and_escaping(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text("services:\n  db:\n    image: postgres\n    command: echo $$HOME\n"
                    "    volumes:\n      - 'data:C:\\var\\lib\\data'\nvolumes:\n  data:\n")
    merged = load_merged([path], environ={})
    assert merged["services"]["db"]["volumes"] == [{"type": "volume", "source": "data", "target": "C:\\var\\lib\\data"}]
    assert merged["services"]["db"]["command"] == ["echo", "$HOME"]
    text = render_config(merged)
    assert "$$HOME" in text
    path.write_text(text)
    assert load_merged([path], environ={"HOME": "/root"}) == merged
