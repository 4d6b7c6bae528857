"""Autolock across managers (shoal/manager/lock_sync.py): an unlock key rotated, or autolock
turned off, through one manager holds for every manager; the store never holds the key in
clear."""
from __future__ import annotations

import shutil

import pytest

from shoal.manager.keyring import BadUnlockKey, Keyring, Locked
from shoal.manager.lock_sync import LOCK_META, follow, publish
from shoal.store.sqlite import SqliteStore


def test_a_rotated_unlock_key_unlocks_every_manager_and_the_old_one_none(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    a = Keyring(str(tmp_path / "a" / "cluster.key"))
    first = a.create(autolock=True)
    (tmp_path / "b").mkdir()
    shutil.copy(a.path, tmp_path / "b" / "cluster.key")  # as a manager's join hands it over
    b = Keyring(str(tmp_path / "b" / "cluster.key"))
    b.unlock(first)
    publish(a, st)
    assert follow(b, st) is None  # in line already
    second = a.set_autolock(True)  # rotated through manager a
    publish(a, st)
    assert st.meta_get(LOCK_META).startswith(b"locked:")
    assert follow(b, st) == "sealed"
    restarted = Keyring(b.path)  # manager b after a restart
    with pytest.raises(BadUnlockKey):
        restarted.unlock(first)
    restarted.unlock(second)
    assert restarted.tls_password() == a.tls_password()  # the same cluster key


def test_autolock_turned_off_on_one_manager_is_off_on_every_manager(tmp_path):
    st = SqliteStore(str(tmp_path / "s.db"))
    a = Keyring(str(tmp_path / "a" / "cluster.key"))
    key = a.create(autolock=True)
    (tmp_path / "b").mkdir()
    shutil.copy(a.path, tmp_path / "b" / "cluster.key")
    b = Keyring(b_path := str(tmp_path / "b" / "cluster.key"))
    with pytest.raises(Locked):
        b.load()
    assert follow(b, st) is None
    a.set_autolock(False)
    publish(a, st)
    assert st.meta_get(LOCK_META) == b"off"  # never the key in clear
    assert follow(b, st) is None  # b is locked: it needs its unlock key once more
    b.unlock(key)
    assert follow(b, st) == "off"
    Keyring(b_path).load()  # unlocked at start from now on
