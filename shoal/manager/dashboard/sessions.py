"""Who may open the dashboard: one-time login tokens made by `shoal dashboard` (a root user
on the manager's unix socket), traded once for a session cookie.

Kept in the manager's memory only: a manager restart asks for a new link. Tokens and
sessions are looked up by their SHA-256, never compared as text.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Callable, Optional

TOKEN_TTL = 300.0  # seconds a login link may wait before it is followed
SESSION_TTL = 12 * 3600.0  # seconds a browser stays logged in
MAX_SESSIONS = 1000


def _key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._tokens: dict[str, float] = {}  # sha256(token) -> until
        self._sessions: dict[str, float] = {}  # sha256(session) -> until

    def _expire(self) -> None:
        now = self.clock()
        for table in (self._tokens, self._sessions):
            for k in [k for k, until in table.items() if until <= now]:
                del table[k]

    def new_token(self) -> str:
        self._expire()
        token = secrets.token_urlsafe(32)
        self._tokens[_key(token)] = self.clock() + TOKEN_TTL
        return token

    def redeem(self, token: str) -> Optional[str]:
        """A new session for a valid token (which is then spent), or None."""
        self._expire()
        if not token or self._tokens.pop(_key(token), None) is None:
            return None
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes
            del self._sessions[min(self._sessions, key=self._sessions.__getitem__)]
        session = secrets.token_urlsafe(32)
        self._sessions[_key(session)] = self.clock() + SESSION_TTL
        return session

    def valid(self, session: Optional[str]) -> bool:
        if not session:
            return False
        until = self._sessions.get(_key(session))
        return until is not None and until > self.clock()
