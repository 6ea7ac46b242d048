"""One writer per store (docs/reliability.md, 4): an flock on `<store>.lock` that names its holder.

    with StoreLock(path):
        prepare_store(path, dataset, spec)

flock, not a lock file's mere existence: the kernel drops it when the holder dies, so a SIGKILLed
extraction never leaves a stale lock behind. Readers take no lock (the store's writes never move
HDF5 metadata), so `featx info` works during an extraction.
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (harmless, reused)
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
