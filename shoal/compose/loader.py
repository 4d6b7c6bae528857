"""The loading pipeline: read -> interpolate -> canonicalize (per file) -> merge -> specs.

Relative paths in every file resolve against the first file's folder (as Docker Compose
and `docker stack deploy` do); with `-c -` (standard input) first, against the working
directory. `stack config` runs the same checks as `stack deploy` (`check_config`).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from shoal.compose.canonical import canonicalize
from shoal.compose.envfile import read_env_file
from shoal.compose.errors import ComposeError
from shoal.compose.interpolate import interpolate_tree
from shoal.compose.merge import merge_files
from shoal.compose.normalize import build_stack, check_stack_name
from shoal.compose.reader import STDIN, read_file
from shoal.compose.tree import LDict, to_plain
from shoal.model.specs import StackSpec

PathLike = str | Path
# `stack config` has no stack name; names are checked as if the stack were called this.
CONFIG_STACK = "stack"


def project_dir(files: Sequence[PathLike]) -> Path:
    """The folder relative paths (and `.env`) are found from: the first file's."""
    if not files or str(files[0]) == STDIN:
        return Path(os.getcwd())
    return Path(os.path.abspath(files[0])).parent


def project_environment(files: Sequence[PathLike], environ: Optional[Mapping[str, str]]) -> dict[str, str]:
    """Variables for interpolation: ``.env`` beside the first file, overridden by ``environ``."""
    env: dict[str, str] = {}
    if files:
        dotenv = project_dir(files) / ".env"
        if dotenv.is_file():
            env.update({k: v for k, v in read_env_file(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _load_tree(files: Sequence[PathLike], env: Mapping[str, str], warnings: list[str],
               interpolate: bool = True) -> LDict:
    if not files:
        raise ComposeError("no stack file given")
    if sum(1 for f in files if str(f) == STDIN) > 1:
        raise ComposeError("standard input (-) can be read only once")
    base = project_dir(files)
    trees = []
    for path in files:
        tree = read_file(path)
        if interpolate:
            interpolate_tree(tree, env, warnings)
        canonicalize(tree, base, env)
        trees.append(tree)
    return merge_files(trees)


def load_merged(files: Sequence[PathLike], environ: Optional[Mapping[str, str]] = None,
                interpolate: bool = True) -> dict:
    """Merged (and interpolated) stack as plain data."""
    env = project_environment(files, environ)
    return to_plain(_load_tree(files, env, [], interpolate))


def check_config(files: Sequence[PathLike], environ: Optional[Mapping[str, str]] = None,
                 interpolate: bool = True) -> tuple[LDict, list[str]]:
    """What ``stack config`` prints (the merged tree) once every check ``stack deploy`` makes
    has passed (the same pipeline, to a StackSpec); and the warnings."""
    env = project_environment(files, environ)
    warnings: list[str] = []
    tree = _load_tree(files, env, warnings, interpolate)
    if interpolate:
        build_stack(copy.deepcopy(tree), CONFIG_STACK, env, warnings)
    return tree, warnings


def load_stack(files: Sequence[PathLike], stack_name: str,
               environ: Optional[Mapping[str, str]] = None) -> StackSpec:
    """Everything ``stack deploy -c f1 -c f2 <stack_name>`` asks for; raises ComposeError."""
    check_stack_name(stack_name)
    env = project_environment(files, environ)
    warnings: list[str] = []
    tree = _load_tree(files, env, warnings)
    return build_stack(tree, stack_name, env, warnings)
