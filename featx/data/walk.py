"""Walking a dataset's folders: every real folder is read once per dataset, whatever the links.

A folder symlink may point anywhere: up to the dataset root (`train/good/up -> ..`, a loop that
would read train/bad/* again as train/good/up/bad/*, labelled good), into another class folder,
or to a folder a second link also reaches. So one FolderWalk serves a whole dataset:

1. the real trees of all its top folders (class folders, or the loose root) are read first,
   following no link, so a folder that really lies in class B is labelled B even when a link
   in class A, walked earlier, also reaches it;
2. then the links, each leading to a folder that is read only if no part of the dataset has
   read it yet and it does not contain the dataset; every link skipped is noted.

Files: hidden ones are ignored; non-image extensions are counted; non-UTF-8 names, broken
symlinks and unreadable folders go to `skipped` with a reason (docs/reliability.md item 12).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from featx.images import is_image_file

Skipped = list[tuple[str, str]]  # (path, reason)


@dataclass
class Found:
    """What one top folder holds: its image files, the files skipped, and non-image files."""

    images: list[Path] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)
    ignored: int = 0


class FolderWalk:
    """One dataset's walk: `walk(tops)` once; `notes` then says what was skipped and why."""

    def __init__(self, root: Path, reserved: tuple[Path, ...] = ()):
        self.root = root
        self.root_real = os.path.realpath(root)
        # The root and the split folders are part of the dataset, but no class reads them.
        self.seen = {self.root_real, *(os.path.realpath(p) for p in reserved)}
        self.notes: list[str] = []
        self.skipped_tops: set[Path] = set()  # tops that are links to folders already read
        self._links: list[tuple[Found, Path]] = []

    def walk(self, tops: list[Path], recursive: bool = True) -> list[Found]:
        """The images under each of `tops` (in the same order); links are followed last."""
        found = [Found() for _ in tops]
        # Real folders claim their own tree before a link that also names it (`wasps -> bees`).
        for i in sorted(range(len(tops)), key=lambda i: Path(tops[i]).is_symlink()):
            top = Path(tops[i])
            problem = self._link_problem(top) if top != self.root and top.is_symlink() else None
            if problem:
                self.notes.append(f"folder '{self._rel(top)}' skipped: {problem}")
                self.skipped_tops.add(top)
                continue
            self.seen.discard(os.path.realpath(top))  # a top may be the root (loose images)
            self._read_tree(top, found[i], recursive)
        while self._links:
            into, link = self._links.pop(0)
            problem = self._link_problem(link)
            if problem:
                self.notes.append(f"link '{self._rel(link)}' skipped: {problem}")
            else:
                self._read_tree(link, into, recursive=True)
        return found

    def _link_problem(self, link: Path) -> str | None:
        """Why the folder behind `link` must not be read, or None."""
        real = os.path.realpath(link)
        if real in self.seen:
            return "its folder is already part of the dataset (a loop, or a second way to it)"
        if self.root_real.startswith(real.rstrip(os.sep) + os.sep):
            return "it leads to a folder that contains the dataset"
        return None

    def _read_tree(self, top: Path, into: Found, recursive: bool) -> None:
        """Read `top` and, if `recursive`, its real subfolders; links are queued, not followed."""
        stack = [top]
        while stack:
            folder = stack.pop()
            real = os.path.realpath(folder)
            if real in self.seen:
                self.notes.append(f"folder '{self._rel(folder)}' skipped: already read")
                continue
            self.seen.add(real)
            subdirs = self._read_folder(folder, into)
            if not recursive:
                continue
            for sub in reversed(subdirs):  # the stack pops them in sorted order
                if sub.is_symlink():
                    self._links.append((into, sub))
                else:
                    stack.append(sub)

    def _read_folder(self, folder: Path, into: Found) -> list[Path]:
        """Files of `folder` into `into`; returns its visible subfolders, sorted."""
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            into.skipped.append((str(folder), f"cannot read folder ({exc.strerror or exc})"))
            return []
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            full = Path(folder) / entry.name
            if _is_dir(entry):
                subdirs.append(full)
            elif not is_image_file(entry.name):
                into.ignored += 1
            elif not _utf8(entry.name):
                into.skipped.append((os.fsdecode(full), "file name is not valid UTF-8"))
            elif not full.exists():
                into.skipped.append((str(full), "broken symlink"))
            else:
                into.images.append(full)
        return subdirs

    def _rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def walk_images(folder: Path, recursive: bool) -> tuple[list[Path], Skipped, int]:
    """(image files, skipped, ignored count) under one folder (links followed, each real
    folder read once)."""
    found = FolderWalk(folder).walk([folder], recursive)[0]
    return found.images, found.skipped, found.ignored


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links: a link to a folder is a folder
    except OSError:
        return False


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file system name
        return False
