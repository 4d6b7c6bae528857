"""Compose (stack) file loading: files -> merged dict -> StackSpec.

Public API::

    load_stack(files, stack_name, environ=None) -> StackSpec
    load_merged(files, environ=None) -> dict       # for `shoal stack config`
    render_config(merged) -> str                    # YAML text of the merged dict
    ComposeError                                    # str(): "<file>:<line>: <key.path>: <message>"
"""
from shoal.compose.errors import ComposeError
from shoal.compose.loader import load_merged, load_stack
from shoal.compose.render import render_config

__all__ = ["ComposeError", "load_merged", "load_stack", "render_config"]
