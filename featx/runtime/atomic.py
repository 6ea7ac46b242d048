"""One way to write a file so that a kill at any moment leaves the old file or the new one.

    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(path, json.dumps(meta))

The recipe (docs/reliability.md, 6): write a temporary file in the same folder, fsync it, `os.replace`
it over the target, fsync the folder so the rename itself survives a power cut. Temporary
files are named `NAME.tmp-PID`, so a later run can sweep the ones a killed run left behind.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable


# Every folder featx creates for its outputs holds this empty file, so a dataset walk skips it:
# `cd DATA; featx extract .; featx lr-find ...` must never make heads/*.png a class "heads".
OUTPUT_MARKER = ".featx-output"


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` and its missing parents, marking each one created here as featx's output
    (OUTPUT_MARKER); a folder that already existed is the user's and is left unmarked."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for made in missing:
        try:
            (made / OUTPUT_MARKER).touch()
        except OSError:  # a race with another writer, or a folder that takes no more files
            pass
    return folder


def is_output_folder(folder: str | os.PathLike) -> bool:
    """Was `folder` created by featx for its outputs (it holds OUTPUT_MARKER)?"""
    return os.path.isfile(os.path.join(folder, OUTPUT_MARKER))


def temp_path(path: Path) -> Path:
    """Where `atomic_write` stages `path` (same folder, so the rename is atomic)."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename still happened
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to produce the file, then move it over `path` atomically."""
    path = Path(path)
    make_output_folder(path.parent)
    tmp = temp_path(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the `NAME.tmp-PID` files that a killed writer of `path` left behind (its process
    is gone); a live writer's stay. Returns what was removed."""
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"):
        pid = leftover.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not process_alive(int(pid)) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a writer's temporary files stay while it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process (or no valid pid at all)
    return True


def nearest_existing(path: str | os.PathLike) -> Path:
    """`path` or its closest ancestor that exists (where new files under it will land)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: str | os.PathLike, option: str = "--out", error: type = None,
                   shown: str | os.PathLike | None = None) -> None:
    """`folder` is, or can be made as, a folder we may create files in; one line if not.

    Checked before the work starts, so a read-only `--out` is not found at the save after hours
    of work. Probed by creating a file, because permission bits lie: root passes os.access on a
    read-only mount or an immutable folder. A file where the folder should be is a usage error
    (ConfigError); a folder that refuses writes is `error` (FeatxError by default). Messages
    name `shown` (the option's value, when it is a file in `folder`) or else `folder`.
    """
    from featx.errors import ConfigError, FeatxError

    error = error or FeatxError
    folder = Path(folder)
    shown = shown or folder
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {shown}: {folder} is a file, not a folder"
                          if shown != folder else f"{option} {folder}: exists and is not a folder")
    base = nearest_existing(folder)
    if not base.is_dir():
        raise ConfigError(f"{option} {shown}: {base} is a file, not a folder")
    probe = base / f".featx-write-check.tmp-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # our own probe of a moment ago: the folder takes files
        return
    except OSError as exc:
        raise error(f"{option} {shown}: cannot write in {base} ({exc.strerror or exc}: a read-only "
                    "folder?)") from None
    os.close(fd)
    probe.unlink(missing_ok=True)
