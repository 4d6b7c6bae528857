"""Secrets at rest: envelope encryption and autolock."""
import pytest

from shoal.manager.keyring import BadUnlockKey, Keyring, Locked


def test_seal_open_roundtrip_and_no_plaintext(tmp_path):
    k = Keyring(str(tmp_path / "cluster.key"))
    assert k.create(autolock=False) is None
    ct, wk = k.seal(b"Password=postgres")
    assert b"postgres" not in ct and b"postgres" not in wk
    assert k.open(ct, wk) == b"Password=postgres"
    k2 = Keyring(str(tmp_path / "cluster.key"))
    k2.load()
    assert k2.open(ct, wk) == b"Password=postgres"
    assert k.digest(b"a") == k2.digest(b"a") != k.digest(b"b")


def test_autolock_needs_the_unlock_key(tmp_path):
    path = str(tmp_path / "cluster.key")
    k = Keyring(path)
    key = k.create(autolock=True)
    assert key.startswith("SWMKEY-1-")
    ct, wk = k.seal(b"s3cret")
    locked = Keyring(path)
    with pytest.raises(Locked):
        locked.load()
    with pytest.raises(Locked):
        locked.open(ct, wk)
    with pytest.raises(BadUnlockKey):
        locked.unlock("SWMKEY-1-WRONG")
    locked.unlock(key)
    assert locked.open(ct, wk) == b"s3cret"
    new_key = locked.set_autolock(True)
    assert new_key != key
    again = Keyring(path)
    with pytest.raises(BadUnlockKey):
        again.unlock(key)
    again.unlock(new_key)
    assert again.open(ct, wk) == b"s3cret"
