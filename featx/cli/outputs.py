"""Where a command writes, checked before it works: `--out` of the right kind, in a folder this
process can create files in, with nothing in the way of the temporary file.

A file where a folder is expected (or a folder where a file is) is a usage error, exit 2; a
folder nothing can be written in is an error of the environment, exit 1. Both are found before
any extraction or training starts, so no work is lost to a bad `--out` at save time.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from featx.runtime import atomic
from featx.runtime.atomic import check_writable, temp_path
from featx.cli.core import err
from featx.errors import ConfigError, FeatxError


def out_folder(path: Path, option: str = "--out", probe: bool = True) -> Path:
    """`--out DIR`: a folder, or a path where one can be made; `probe`: and one that takes files
    now (False where the run may find nothing to write and checks when it must)."""
    path = Path(path)
    with _unusable(option, path):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{option} {path}: exists and is not a folder")
        if probe:
            writable(path, option, path)
    return path


def out_file(path: Path, option: str = "--out", example: str = "") -> Path:
    """`--out FILE`: not a folder, in a writable folder; temporary files that an interrupted run
    left beside it are removed (with a note), a folder where ours goes is an error."""
    path = Path(path)
    with _unusable(option, path):
        if path.is_dir():
            hint = f" such as {path / example}" if example else ""
            raise ConfigError(f"{option} {path}: is a folder; give a file name{hint}")
        writable(path.parent, option, path)
        staged = temp_path(path)
        if staged.is_dir():
            raise FeatxError(f"{staged}: a folder is in the way of the temporary file of {option} {path}; "
                             "remove it")
        remove_stale_temp_files(path)
    return path


@contextmanager
def _unusable(option: str, path: Path) -> Iterator[None]:
    """A path the system refuses to look at (a name too long, a loop of links): one line."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None


def writable(folder: Path, option: str, path: Path) -> None:
    """The nearest existing folder at or above `folder` takes new files (featx.runtime.atomic probes it)."""
    check_writable(folder, option, shown=path)


def remove_stale_temp_files(path: Path) -> None:
    """featx.runtime.atomic's sweep of a killed run's temporary files, each removal said on stderr."""
    for leftover in atomic.remove_stale_temp_files(path):
        err.print(f"note: removed {leftover}, left by an interrupted run", markup=False, highlight=False)
