"""One daemon per state store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alliance_fhir.daemon.lock import InstanceLock, lock_path_for
from alliance_fhir.exceptions import AlreadyRunningError, StateError


def test_lock_file_sits_next_to_the_state_db(tmp_path: Path) -> None:
    assert lock_path_for(tmp_path / "state.sqlite3") == tmp_path / "state.sqlite3.lock"


def test_second_holder_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    with InstanceLock(path) as first:
        assert first.held
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunningError) as caught:
            InstanceLock(path).acquire()
    err = caught.value
    assert isinstance(err, StateError)
    assert err.owner == os.getpid()
    assert "already running on this state store" in str(err)
    assert f"pid {os.getpid()}" in str(err)


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    lock = InstanceLock(path)
    lock.acquire()
    lock.release()
    assert not lock.held
    with InstanceLock(path):
        pass


def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    """A killed daemon leaves the file behind but not the lock: a restart is never blocked."""
    path = tmp_path / "s.lock"
    code = (
        "import sys, time; from pathlib import Path;"
        "from alliance_fhir.daemon.lock import InstanceLock;"
        f"InstanceLock(Path({str(path)!r})).acquire(); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunningError) as caught:
            InstanceLock(path).acquire()
        assert caught.value.owner == child.pid
        child.kill()
        child.wait(timeout=10)
        with InstanceLock(path):
            pass
    finally:
        child.kill()
        child.wait(timeout=10)


def test_lock_file_is_private_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "state.sqlite3.lock"
        with InstanceLock(path):
            assert path.stat().st_mode & 0o777 == 0o600
            assert path.parent.stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_an_older_wider_lock_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.lock"
    path.write_text("")
    path.chmod(0o644)
    with InstanceLock(path):
        assert path.stat().st_mode & 0o777 == 0o600
