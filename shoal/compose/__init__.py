"""Compose (stack) file loading: files -> merged dict -> StackSpec.

Public API::

    load_stack(files, stack_name, environ=None) -> StackSpec
    load_merged(files, environ=None) -> dict        # the merged, interpolated stack as plain data
    check_config(files, environ=None) -> (tree, warnings)  # `stack config`: deploy's checks, then the tree
    render_config(tree) -> str                      # YAML text of the merged tree
    ComposeError                                    # str(): "<file>:<line>: <key.path>: <message>"
"""
from shoal.compose.errors import ComposeError
from shoal.compose.loader import check_config, load_merged, load_stack
from shoal.compose.render import render_config

__all__ = ["ComposeError", "check_config", "load_merged", "load_stack", "render_config"]
