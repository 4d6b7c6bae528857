"""Envelope encryption of secrets at rest, and Swarm-style autolock of the cluster key.

Each secret gets its own data key (AES-256-GCM); the data key is wrapped by the
cluster key. The store only ever sees ciphertext and wrapped keys. The cluster key
lives in the data dir, readable by root only — or, with autolock, encrypted under an
unlock key that only the user holds, so a stolen disk reveals nothing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Optional

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

UNLOCK_PREFIX = "SWMKEY-1-"
_DEK_AAD = b"shoal-secret-dek"
_DATA_AAD = b"shoal-secret-data"
_LOCK_AAD = b"shoal-cluster-key"


class Locked(Exception):
    """The cluster key is encrypted and no unlock key has been given."""


class BadUnlockKey(Exception):
    pass


def _seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:12], blob[12:], aad)


def _kdf(unlock_key: str, salt: bytes) -> bytes:
    raw = unlock_key.strip()
    if raw.startswith(UNLOCK_PREFIX):
        raw = raw[len(UNLOCK_PREFIX):]
    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(raw.encode())


class Keyring:
    def __init__(self, path: str):
        self.path = path  # file holding the cluster key (plain or locked)
        self._key: Optional[bytes] = None

    # -- life cycle --------------------------------------------------------------
    def create(self, autolock: bool) -> Optional[str]:
        """Make a new cluster key; return the unlock key when autolock is on."""
        self._key = os.urandom(32)
        return self._store(autolock)

    def _store(self, autolock: bool) -> Optional[str]:
        assert self._key is not None
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        unlock = None
        if autolock:
            unlock = UNLOCK_PREFIX + base64.b32encode(os.urandom(20)).decode().rstrip("=")
            salt = os.urandom(16)
            blob = b"locked:" + base64.b64encode(salt + _seal(_kdf(unlock, salt), self._key, _LOCK_AAD))
        else:
            blob = b"plain:" + base64.b64encode(self._key)
        self._write(blob)
        return unlock

    def _write(self, blob: bytes) -> None:
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def file_blob(self) -> bytes:
        """The file as it is: ``plain:…`` or ``locked:…`` (the key sealed under the unlock key)."""
        with open(self.path, "rb") as f:
            return f.read()

    def restore(self, blob: bytes) -> None:
        """Put the file back as `file_blob` gave it (a change the other managers did not get)."""
        self._write(blob)

    def adopt_sealed(self, blob: bytes) -> None:
        """Keep the cluster key sealed as another manager sealed it (a new unlock key, or
        autolock turned on there): the key in memory is the same; the next unlock takes the
        cluster's current unlock key."""
        if not blob.startswith(b"locked:"):
            raise ValueError("only a sealed cluster key is adopted")
        self._write(blob)

    def load(self) -> None:
        """Load a plain key; raise Locked when the key needs `unlock`."""
        blob = open(self.path, "rb").read()
        if blob.startswith(b"plain:"):
            self._key = base64.b64decode(blob[6:])
        else:
            raise Locked()

    @property
    def autolocked(self) -> bool:
        return open(self.path, "rb").read().startswith(b"locked:")

    def unlock(self, unlock_key: str) -> None:
        blob = base64.b64decode(open(self.path, "rb").read()[7:])
        salt, sealed = blob[:16], blob[16:]
        try:
            self._key = _open(_kdf(unlock_key, salt), sealed, _LOCK_AAD)
        except Exception:
            raise BadUnlockKey("invalid unlock key") from None

    def set_autolock(self, autolock: bool) -> Optional[str]:
        """Turn autolock on/off, or rotate the unlock key (on → on)."""
        if self._key is None:
            raise Locked()
        return self._store(autolock)

    @property
    def unlocked(self) -> bool:
        return self._key is not None

    # -- secrets -----------------------------------------------------------------
    def _k(self) -> bytes:
        if self._key is None:
            raise Locked()
        return self._key

    def seal(self, data: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, wrapped data key) for a secret's bytes."""
        dek = os.urandom(32)
        return _seal(dek, data, _DATA_AAD), _seal(self._k(), dek, _DEK_AAD)

    def open(self, ciphertext: bytes, wrapped_key: bytes) -> bytes:
        dek = _open(self._k(), wrapped_key, _DEK_AAD)
        return _open(dek, ciphertext, _DATA_AAD)

    def tls_password(self) -> bytes:
        """The password a manager's private keys (CA, node, API server) are encrypted under on
        disk: derived from the cluster key, so with autolock a stolen disk gives no key at all,
        and a locked manager cannot serve TLS until it is unlocked (as Swarm)."""
        return base64.b64encode(hmac.new(self._k(), b"shoal-tls-private-keys", hashlib.sha256).digest())

    def digest(self, data: bytes) -> str:
        """A keyed digest: tells whether data changed without revealing it."""
        return hmac.new(self._k(), data, hashlib.sha256).hexdigest()
