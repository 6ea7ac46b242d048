"""featx.store.lock: one writer per store, and no `.lock` file left beside a finished store."""

from __future__ import annotations

import os

import pytest

from featx.errors import StoreError
from featx.store import StoreLock


def test_the_lock_file_goes_when_its_holder_lets_go(tmp_path):
    store = tmp_path / "s.h5"
    with StoreLock(store) as lock:
        assert lock.path.is_file() and f"pid {os.getpid()}" in lock.path.read_text()
        with pytest.raises(StoreError, match="already being written"):
            StoreLock(store).acquire()
    assert not lock.path.exists()
    StoreLock(store).acquire().release()  # free again, and still no file
    assert not lock.path.exists()


def test_a_killed_holders_file_is_reused_then_removed(tmp_path):
    store = tmp_path / "s.h5"
    stale = tmp_path / "s.h5.lock"
    stale.write_text("pid 99999999 on elsewhere")  # what SIGKILL leaves: the file, no flock
    with StoreLock(store):
        assert "99999999" not in stale.read_text()
    assert not stale.exists()


def test_a_file_removed_between_open_and_lock_is_not_the_lock(tmp_path, monkeypatch):
    """The holder removes the file as it lets go: a writer that opened it just before and locked
    it just after holds a file no one else sees, so it takes the lock on the path's own."""
    store = tmp_path / "s.h5"
    lock = StoreLock(store)
    real, opened = lock._lock_once, []

    def racing():
        fd = real()
        if not opened:  # the first try: the previous holder removes the file under us
            opened.append(fd)
            os.unlink(lock.path)
        return fd

    monkeypatch.setattr(lock, "_lock_once", racing)
    with lock:
        assert lock.path.is_file() and os.fstat(lock.fd).st_ino == os.stat(lock.path).st_ino
        with pytest.raises(StoreError, match="already being written"):
            StoreLock(store).acquire()
    assert not lock.path.exists()


def test_a_lock_file_replaced_under_its_holder_is_left_to_its_owner(tmp_path):
    store = tmp_path / "s.h5"
    lock = StoreLock(store).acquire()
    os.unlink(lock.path)
    lock.path.write_text("someone else's")  # not ours any more: release must not remove it
    lock.release()
    assert lock.path.read_text() == "someone else's"
