"""One daemon per state store: an exclusive ``flock`` on a lock file next to the database.

The lock is advisory and held by the open file description, so it disappears with the
process however it ends (exit, crash, SIGKILL): a stale lock file never blocks a restart.
The file holds the owner's pid, only to make the refusal message useful; it is 0600 in a 0700
folder (``private_files``) like everything else beside the state store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from alliance_fhir.exceptions import AlreadyRunningError, StateError
from alliance_fhir.private_files import FILE_MODE, private_dir


def lock_path_for(state_path: Path) -> Path:
    """``state.sqlite3`` -> ``state.sqlite3.lock`` in the same directory."""
    return state_path.with_name(state_path.name + ".lock")


class InstanceLock:
    """``with InstanceLock(path):`` holds the lock or raises :class:`AlreadyRunningError`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        # The umask narrows O_CREAT's mode only, and an older lock file may be wider: it holds
        # only a pid, but it sits beside the state store, where doctor flags wider files. A
        # file another user owns keeps its mode (no reason to refuse to run over it).
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_owner(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunningError(self.path, owner) from None
            raise StateError(f"cannot lock {self.path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_owner(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
