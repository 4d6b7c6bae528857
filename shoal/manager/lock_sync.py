"""Autolock across managers: the unlock key is the cluster's, not one manager's.

Each manager keeps the cluster key in its data dir, sealed under the unlock key when the
cluster is autolocked. A change of the lock made through one manager (`unlock-key --rotate`,
`update --autolock true|false`) is published in the store as the sealed key (``locked:…``,
which only the unlock key opens) or ``off`` -- never the key in clear -- and every manager
brings its own file into line: after a rotation, the new unlock key unlocks every manager
and the old one none (as Swarm's key-encrypting key goes through raft).
"""
from __future__ import annotations

import logging
from typing import Optional

from shoal.manager.keyring import Keyring
from shoal.store import Store

log = logging.getLogger("shoal.lock_sync")

LOCK_META = "lock"


def publish(keyring: Keyring, store: Store) -> None:
    """What this manager's file now says, for the others (the sealed key, or "off")."""
    blob = keyring.file_blob()
    store.meta_set(LOCK_META, blob if blob.startswith(b"locked:") else b"off")


def follow(keyring: Keyring, store: Store) -> Optional[str]:
    """Bring this manager's file into line with what the store says; what changed, if anything."""
    want = store.meta_get(LOCK_META)
    if want is None:
        return None
    have = keyring.file_blob()
    if want.startswith(b"locked:") and have != want:
        keyring.adopt_sealed(want)
        log.info("the cluster key here is now sealed under the cluster's current unlock key")
        return "sealed"
    if want == b"off" and have.startswith(b"locked:") and keyring.unlocked:
        keyring.set_autolock(False)
        log.info("autolock was turned off on another manager: off here too")
        return "off"
    return None
