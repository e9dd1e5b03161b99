"""Files that may hold patient data, created private regardless of the umask.

State stores, dead letters, inbox archives, reports: files 0600, folders 0700. The mode is set
with ``fchmod``/``chmod`` after creation, so a permissive (022) or odd umask cannot widen it.
Existing folders are left as they are (an operator may have chosen their mode on purpose);
``wider_than_private`` lists them for ``doctor`` to warn about.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parents as 0700 folders; return it."""
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for part in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(part, DIR_MODE)
            os.chmod(part, DIR_MODE)
    return folder


def open_private(path: Path | str, mode: str = "w", encoding: str | None = None) -> IO[Any]:
    """``open()`` for a file that is 0600 from its first byte (``mode`` w/a/x, text or b)."""
    flags = os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_RDWR if "+" in mode else os.O_WRONLY
    if "a" in mode:
        flags |= os.O_APPEND
    elif "x" in mode:
        flags |= os.O_EXCL
    elif "w" in mode:
        flags |= os.O_TRUNC
    else:
        raise ValueError(f"open_private writes; mode {mode!r} has none of w, a, x")
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        if "b" in mode:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding=encoding or "utf-8")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` atomically (temporary name, fsync, rename) as a 0600 file."""
    target = Path(path)
    tmp = target.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open_private(tmp, "xb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)
    return target


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def wider_than_private(roots: Iterable[Path], *, limit: int = 50) -> list[str]:
    """``path: mode 0644, want 0600`` for each existing file or folder under ``roots`` that
    group or others may use (at most ``limit``): older versions, copies and hand-made folders
    are not private just because new files are. Symlinks are not followed."""
    found: list[str] = []
    seen: set[Path] = set()

    def check(path: Path, want: int) -> None:
        try:
            mode = path.lstat().st_mode & 0o777
        except OSError:
            return
        if mode & 0o077 and path not in seen and len(found) < limit:
            seen.add(path)
            found.append(f"{path}: mode {mode:04o}, want {want:04o}")

    for root in roots:
        if root.is_symlink() or not root.exists():
            continue
        if not root.is_dir():
            check(root, FILE_MODE)
            continue
        check(root, DIR_MODE)
        for folder, dirs, files in os.walk(root):
            base = Path(folder)
            for name in dirs:
                check(base / name, DIR_MODE)
            for name in files:
                if not (base / name).is_symlink():
                    check(base / name, FILE_MODE)
    return found
