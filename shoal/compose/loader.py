"""The loading pipeline: read -> interpolate -> canonicalize (per file) -> merge -> specs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from shoal.compose.canonical import canonicalize
from shoal.compose.envfile import read_env_file
from shoal.compose.errors import ComposeError
from shoal.compose.interpolate import interpolate_tree
from shoal.compose.merge import merge_files
from shoal.compose.normalize import build_stack, check_stack_name
from shoal.compose.reader import read_file
from shoal.compose.tree import LDict, to_plain
from shoal.model.specs import StackSpec

PathLike = str | Path


def project_environment(files: Sequence[PathLike], environ: Optional[Mapping[str, str]]) -> dict[str, str]:
    """Variables for interpolation: ``.env`` beside the first file, overridden by ``environ``."""
    env: dict[str, str] = {}
    if files:
        dotenv = Path(files[0]).parent / ".env"
        if dotenv.is_file():
            env.update({k: v for k, v in read_env_file(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _load_tree(files: Sequence[PathLike], env: Mapping[str, str], warnings: list[str]) -> LDict:
    if not files:
        raise ComposeError("no stack file given")
    trees = []
    for path in files:
        tree = read_file(path)
        interpolate_tree(tree, env, warnings)
        canonicalize(tree, Path(os.path.abspath(path)).parent, env)
        trees.append(tree)
    return merge_files(trees)


def load_merged(files: Sequence[PathLike], environ: Optional[Mapping[str, str]] = None) -> dict:
    """Merged and interpolated stack as plain data (what ``stack config`` prints)."""
    env = project_environment(files, environ)
    return to_plain(_load_tree(files, env, []))


def load_stack(files: Sequence[PathLike], stack_name: str,
               environ: Optional[Mapping[str, str]] = None) -> StackSpec:
    """Everything ``stack deploy -c f1 -c f2 <stack_name>`` asks for; raises ComposeError."""
    check_stack_name(stack_name)
    env = project_environment(files, environ)
    warnings: list[str] = []
    tree = _load_tree(files, env, warnings)
    return build_stack(tree, stack_name, env, warnings)
