"""The one way featx hashes a file's bytes: sha256, streamed, never blocking on a FIFO.

Store rows (their identity), head and weights files (their provenance) and the audit's exact
duplicates all use it, so "the same file" means the same thing everywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

CHUNK = 1 << 20
# O_NONBLOCK: a FIFO named like an image opens at once (and is then refused) instead of hanging.
OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of the file's bytes. Raises OSError when it cannot be read (or is not a
    regular file: a FIFO or a device is never read)."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        return read_sha256(fd, os.fstat(fd))
    finally:
        os.close(fd)


def read_sha256(fd: int, st: os.stat_result) -> str:
    """sha256 hex of the open file `fd` (fstat `st`): a small file in one read."""
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    block = os.read(fd, min(st.st_size + 1, CHUNK))
    h = hashlib.sha256(block)
    if len(block) == st.st_size:  # all its bytes, and not one more: the end (no read to see it)
        return h.hexdigest()
    while block:
        block = os.read(fd, CHUNK)
        h.update(block)
    return h.hexdigest()
