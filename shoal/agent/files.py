"""Config and secret files for tasks, bind-mounted read-only into their containers.

Layout (one directory per task, one file per FileRef)::

    <root_cfg>/<task_id>/<source>-<h>      configs (on the node's disk, under the data dir)
    <root_sec>/<task_id>/<source>-<h>      secrets (on a tmpfs Shoal owns: never on disk)

``<h>`` is a short hash of the target path, so one object mounted at two targets
gets two files, and the path is a pure function of (root, task id, FileRef): the
container body (``executor.container_body``) computes the same paths without IO.

The data comes keyed by (object name, version): a ref pins the version it mounts, and
during a rolling update after a rotation two tasks on one node may mount two versions of
the same object — each task's directory gets the bytes of its own pin.

Each file is written atomically (temporary file in the same directory, chmod/chown,
fsync, rename) with the mode/uid/gid the FileRef asks for (Swarm's default 0444 root:root).
A bind mount of a file on a tmpfs shows up inside the container as a ``tmpfs`` mount at
its target, as Swarm's secrets do.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from typing import Mapping, Union

from shoal.model.objects import Task
from shoal.model.specs import FileRef

SECRETS_DEFAULT_PARENT = "/run/secrets"


class MissingFileData(KeyError):
    """A task refers to a config or secret whose data the agent was not given."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "missing config or secret"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# (object name, version) -> bytes; a bare name stands for an object's only version (callers
# that do not deal in versions).
FileData = Mapping[Union[tuple[str, int], str], bytes]


def decode_file_data(section: Mapping[str, object]) -> dict[tuple[str, int], bytes]:
    """The manager's ``configs``/``secrets`` answer, ``{name: {version: base64}}``, keyed by
    (name, version). A bare base64 string (a manager that does not version) is version 0."""
    out = {}
    for name, value in section.items():
        versions = value if isinstance(value, dict) else {"0": value}
        for version, b64 in versions.items():
            out[(name, int(version))] = base64.b64decode(b64)
    return out


def _data_for(ref: FileRef, data: FileData, kind: str) -> bytes:
    got = data.get((ref.source, ref.version))
    if got is None:
        got = data.get(ref.source)
    if got is None:
        pinned = f" (version {ref.version})" if ref.version else ""
        raise MissingFileData(f"{kind} not found: {ref.source}{pinned}")
    return bytes(got)


def _file_name(ref: FileRef) -> str:
    h = hashlib.sha256(ref.target.encode()).hexdigest()[:12]
    base = _UNSAFE.sub("_", ref.source)[:100] or "file"
    return f"{base}-{h}"


def _task_dir(root: str, task_id: str) -> str:
    if not task_id or "/" in task_id or task_id in (".", ".."):
        raise ValueError(f"bad task id {task_id!r}")
    return os.path.join(root, task_id)


def config_path(root_cfg: str, task_id: str, ref: FileRef) -> str:
    return os.path.join(_task_dir(root_cfg, task_id), _file_name(ref))


def secret_path(root_sec: str, task_id: str, ref: FileRef) -> str:
    return os.path.join(_task_dir(root_sec, task_id), _file_name(ref))


def secret_target(ref: FileRef) -> str:
    """Absolute target of a secret: a relative target lives under /run/secrets (as Swarm)."""
    t = ref.target or ref.source
    return t if t.startswith("/") else f"{SECRETS_DEFAULT_PARENT}/{t}"


def config_target(ref: FileRef) -> str:
    """Absolute target of a config: a relative target is relative to / (as Swarm)."""
    t = ref.target or ref.source
    return t if t.startswith("/") else "/" + t


def bind_mount(source: str, target: str) -> dict:
    """The engine Mount for one prepared file."""
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": True}


def task_file_mounts(task: Task, root_cfg: str, root_sec: str) -> list[dict]:
    """Bind mounts for all configs and secrets of a task (pure: paths only, no IO)."""
    c = task.spec.container
    mounts = [bind_mount(config_path(root_cfg, task.id, r), config_target(r)) for r in c.configs]
    mounts += [bind_mount(secret_path(root_sec, task.id, r), secret_target(r)) for r in c.secrets]
    return mounts


def _numeric_id(value: str, what: str, ref: FileRef) -> int:
    v = (value or "0").strip()
    if not v.isdigit():
        raise ValueError(f"{ref.source}: {what} must be numeric, got {value!r}")
    return int(v)


def write_file_atomic(path: str, data: bytes, mode: int = 0o444, uid: int = 0, gid: int = 0) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode & 0o7777)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_refs(root: str, task_id: str, refs: list[FileRef], data: FileData, kind: str, path_of) -> None:
    if not refs:
        return
    os.makedirs(root, mode=0o700, exist_ok=True)
    d = _task_dir(root, task_id)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for ref in refs:
        payload = _data_for(ref, data, kind)
        uid = _numeric_id(ref.uid, "uid", ref)
        gid = _numeric_id(ref.gid, "gid", ref)
        write_file_atomic(path_of(root, task_id, ref), payload, ref.mode, uid, gid)


def prepare_task_files(task: Task, configs: FileData, secrets: FileData, root_cfg: str, root_sec: str) -> list[dict]:
    """Write the task's config and secret files; return their engine bind mounts.

    ``configs``/``secrets`` map (full object name, version) to the (decrypted) data. Raises
    ``MissingFileData`` when one is missing and ``ValueError`` for a non-numeric uid/gid.
    The caller must have mounted the secrets tmpfs (``ensure_secrets_tmpfs(root_sec)``).
    """
    c = task.spec.container
    try:
        _write_refs(root_cfg, task.id, c.configs, configs, "config", config_path)
        _write_refs(root_sec, task.id, c.secrets, secrets, "secret", secret_path)
    except BaseException:
        cleanup_task_files(task.id, root_cfg, root_sec)
        raise
    return task_file_mounts(task, root_cfg, root_sec)


def cleanup_task_files(task_id: str, root_cfg: str, root_sec: str) -> None:
    """Delete a task's config and secret files (no error when there are none)."""
    for root in (root_cfg, root_sec):
        if root:
            shutil.rmtree(_task_dir(root, task_id), ignore_errors=True)


def is_mountpoint(path: str) -> bool:
    return os.path.ismount(path)


def fs_type(path: str) -> str | None:
    """File system type of the mount at exactly ``path`` (from /proc/self/mounts), or None."""
    real = os.path.realpath(path)
    found = None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].encode().decode("unicode_escape") == real:
                    found = parts[2]  # the last one wins (stacked mounts)
    except OSError:
        return None
    return found


def ensure_secrets_tmpfs(path: str, size: str = "64m") -> bool:
    """Mount a tmpfs (mode 0700) at ``path`` unless something is mounted there already.

    Returns True when it mounted one. Needs root (CAP_SYS_ADMIN).
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    if is_mountpoint(path):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0700,size={size},nosuid,nodev,noexec",
                        "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"cannot mount tmpfs at {path}: {(r.stderr or r.stdout).strip()}")
    return True


def unmount_secrets_tmpfs(path: str) -> None:
    """Unmount the secrets tmpfs (used by tests and node teardown)."""
    if is_mountpoint(path):
        r = subprocess.run(["umount", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"cannot unmount {path}: {(r.stderr or r.stdout).strip()}")
