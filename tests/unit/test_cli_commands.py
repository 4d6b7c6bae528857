"""The CLI imports only the module of the command it runs (start-up time), and the map it
uses to find that module names every command, each in the module that defines it."""
from __future__ import annotations

import subprocess
import sys

from shoal.cli.main import COMMAND_MODULES, cli, load_commands


def test_every_command_is_in_the_map_under_its_own_module():
    load_commands()
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, cmd in cli.commands.items():
        assert cmd.callback.__module__ == f"shoal.cli.{COMMAND_MODULES[name]}", name


def test_a_command_loads_its_module_alone():
    code = ("import sys\nfrom shoal.cli.main import cli\n"
            "try:\n    cli(['join', '--help'], prog_name='shoal')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('shoal.cli.') and m.endswith('_cmd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--token" in out.stdout  # join's own help
    assert out.stdout.strip().splitlines()[-1] == "['shoal.cli.cluster_cmd']"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "shoal", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in COMMAND_MODULES:
        assert f"  {name} " in out.stdout, name
