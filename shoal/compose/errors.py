"""The one error type of the compose loader, pointing at file, line and key path."""
from __future__ import annotations

from typing import Optional


class ComposeError(ValueError):
    """A problem in a stack file; str() is ``<file>:<line>: <key.path>: <message>``."""

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None,
                 path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"
