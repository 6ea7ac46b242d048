"""Walking a dataset's folders: every real folder is read once per dataset, whatever the links.

A folder symlink may point anywhere: up to the dataset root (`train/good/up -> ..`, a loop that
would read train/bad/* again as train/good/up/bad/*, labelled good), into another class folder,
or to a folder a second link also reaches. So one FolderWalk serves a whole dataset:

1. the real trees of all its top folders (class folders, or the loose root) are read first,
   following no link, so a folder that really lies in class B is labelled B even when a link
   in class A, walked earlier, also reaches it;
2. then the links, each leading to a folder that is read only if no part of the dataset has
   read it yet and it does not contain the dataset; every link skipped is noted.

Folders featx created for its outputs (stores, heads, reports, exports: they hold OUTPUT_MARKER)
are never data: skipped, with a note. Files: hidden ones are ignored; non-image extensions are counted; non-UTF-8 names, broken
symlinks and unreadable folders go to `skipped` with a reason (docs/reliability.md item 12).

Paths are strings (a million Path objects would hold ~350 MB), and a file costs no system call
beyond its folder's listing: the listing says what is a folder or a link (d_type), and only a
link is checked for a target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from featx.data.images import is_image_file
from featx.runtime.atomic import OUTPUT_MARKER, is_output_folder

Skipped = list[tuple[str, str]]  # (path, reason)


@dataclass
class Found:
    """What one top folder holds: its image files, the files skipped, and non-image files."""

    images: list[str] = field(default_factory=list)  # paths: the folder's path + "/" + name
    skipped: Skipped = field(default_factory=list)
    ignored: int = 0


class FolderWalk:
    """One dataset's walk: `walk(tops)` once; `notes` then says what was skipped and why."""

    def __init__(self, root: Path, reserved: tuple[Path, ...] = ()):
        self.root = Path(root)
        self.root_real = os.path.realpath(root)
        # The root and the split folders are part of the dataset, but no class reads them.
        self.seen = {self.root_real, *(os.path.realpath(p) for p in reserved)}
        self.notes: list[str] = []
        self.skipped_tops: set[Path] = set()  # tops that are links to folders already read
        self._links: list[tuple[Found, str]] = []

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
            self._read_tree(os.fspath(top), found[i], recursive)
        while self._links:
            into, link = self._links.pop(0)
            problem = self._link_problem(link)
            if problem:
                self.notes.append(f"link '{self._rel(link)}' skipped: {problem}")
            else:
                self._read_tree(link, into, recursive=True)
        return found

    def _link_problem(self, link: str | Path) -> str | None:
        """Why the folder behind `link` must not be read, or None."""
        real = os.path.realpath(link)
        if real in self.seen:
            return "its folder is already part of the dataset (a loop, or a second way to it)"
        if self.root_real.startswith(real.rstrip(os.sep) + os.sep):
            return "it leads to a folder that contains the dataset"
        return None

    def _read_tree(self, top: str, into: Found, recursive: bool) -> None:
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
            for sub, is_link in reversed(subdirs):  # the stack pops them in sorted order
                if is_link:
                    self._links.append((into, sub))
                else:
                    stack.append(sub)

    def _read_folder(self, folder: str, into: Found) -> list[tuple[str, bool]]:
        """Files of `folder` into `into`; returns its visible subfolders, sorted, each with
        whether it is a link."""
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_name)
        except OSError as exc:
            into.skipped.append((folder, f"cannot read folder ({exc.strerror or exc})"))
            return []
        prefix = _prefix(folder)
        subdirs = []
        images = into.images
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            if _is_dir(entry):
                if is_output_folder(prefix + name):
                    self.notes.append(f"folder '{self._rel(prefix + name)}' skipped: featx's own "
                                      f"outputs ({OUTPUT_MARKER}), not data")
                else:
                    subdirs.append((prefix + name, _is_link(entry)))
                continue
            if not is_image_file(name):
                into.ignored += 1
            elif not (name.isascii() or _utf8(name)):
                into.skipped.append((prefix + name, "file name is not valid UTF-8"))
            elif _is_link(entry) and not os.path.exists(prefix + name):
                into.skipped.append((prefix + name, "broken symlink"))
            else:
                images.append(prefix + name)
        return subdirs

    def _rel(self, path: str | Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def walk_images(folder: Path, recursive: bool) -> tuple[list[str], Skipped, int]:
    """(image files, skipped, ignored count) under one folder (links followed, each real
    folder read once)."""
    found = FolderWalk(folder).walk([folder], recursive)[0]
    return found.images, found.skipped, found.ignored


def _prefix(folder: str) -> str:
    """What a name in `folder` is joined to: the same path pathlib's `Path(folder) / name` gives."""
    if folder in ("", "."):
        return ""
    return folder if folder.endswith(os.sep) else folder + os.sep


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links: a link to a folder is a folder
    except OSError:
        return False


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()  # from the listing (d_type): no system call
    except OSError:
        return False


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file system name
        return False
