"""One writer per store (docs/reliability.md, 4): an flock on `<store>.lock` that names its holder.

    with StoreLock(path):
        prepare_store(path, dataset, spec)

flock, not a lock file's mere existence: the kernel drops it when the holder dies, so a SIGKILLed
extraction never leaves a stale lock behind. Readers take no lock (the store's writes never move
HDF5 metadata), so `featx info` works during an extraction.

The holder removes the file as it lets go, so a finished store leaves no `.lock` beside it. Safe
because a lock counts only on the file still at the path: a writer that opened the file just
before it was removed, and locked it just after, finds another file (or none) there and takes
the lock again on the path's own (a killed holder's file stays, unlocked, and is reused).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from featx.errors import StoreError
from featx.runtime.atomic import make_output_folder


class StoreLock:
    """An exclusive, non-blocking lock on `<store>.lock`, released by the kernel if we die."""

    def __init__(self, store: Path):
        self.path = Path(str(store) + ".lock")
        self.fd: int | None = None

    def acquire(self) -> "StoreLock":
        """Take the lock, or raise StoreError naming the process that holds it."""
        while True:
            fd = self._lock_once()
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as it let go: lock the path's new file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd = fd
        return self

    def _lock_once(self) -> int:
        """The lock file opened (created if need be) and flocked: its descriptor."""
        try:
            make_output_folder(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder, or a file where the folder should be
            raise StoreError(f"{self.path}: cannot create the store's lock file "
                             f"({exc.strerror or exc}); choose a folder featx may write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise StoreError(f"{self.path.with_suffix('')}: already being written by {holder}; "
                                 "wait for it to finish (one writer per store)") from None
            raise StoreError(f"{self.path}: this file system does not support file locks "
                             f"({exc.strerror}); featx will not write a store without one "
                             "(NFS without lockd?): use a local disk") from None
        return fd

    def release(self) -> None:
        """Remove the lock file, if it is still ours, then let go of the lock."""
        if self.fd is not None:
            if _same_file(self.fd, self.path):  # removed while locked: no one else holds it
                try:
                    self.path.unlink()
                except OSError:  # a folder gone read-only: the file stays, unlocked and reusable
                    pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Is the open file `fd` the one at `path` now (not removed or replaced since it was opened)?"""
    try:
        at_path = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)
