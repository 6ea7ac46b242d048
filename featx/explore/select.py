"""`featx select STORE --budget N`: which unlabelled images to label next, and why.

    picks = featx.select("stores/cells.h5", budget=50, strategy="margin", head="heads/cells.linear")
    picks.to_csv("picks.csv")          # path, score, strategy, reason, predicted, label (to fill)
    picks.copy_to("to_label/")         # the picked files, for a labelling tool

The pool is every usable row without a label (a manifest's rows with an empty label, a folder
dataset's images in `unlabeled/`). Before a
strategy sees it, the pool loses its near-copies, found by the audit's detector
(featx.audit.duplicates: cosine of clean features confirmed by pixel hashes, or cosine alone
at the stricter threshold when the images are not there): a row that is a near-copy of a
labelled image is dropped (its label is known already), and of each group of near-duplicate
unlabelled rows one is kept. No two picks are then near-duplicates of each other.

Labelling closes the loop without a forward: fill the `label` column into the manifest (or, in
a folder dataset, move each pick from `unlabeled/` into its class folder) and run `featx extract`
again; the store update finds each image by its content and relabels its row in place
(featx.store.update), then `featx train-head`. With augmented views, a newly labelled training
image gets its views computed: views are seeded by the path, so a moved file's are new (it is
forwarded, alone); `Selection.how_to_label()` says which applies.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from featx.audit.duplicates import DuplicateSettings, duplicate_pairs
from featx.audit.pixels import PixelHashes, hash_pixels
from featx.audit.run import StoreRows
from featx.data.folders import is_unlabeled_folder
from featx.errors import ConfigError, DataError, StoreError
from featx.explore.fast_head import FastHead
from featx.explore.strategies import NEEDS_PROBABILITIES, NO_LABELS_NEEDED, check_strategy, choose
from featx.runtime.atomic import atomic_write_text
from featx.search.neighbours import self_neighbours
from featx.store import FeatureStore

# benchmarks/results/label_efficiency.md: the strategy that reached 95% of the full-data
# accuracy with the fewest labels across ELPV-4, ELPV-2 and Fashion-MNIST (3 seeds each).
DEFAULT_STRATEGY = "margin"
NEIGHBOURS = 10  # near-duplicate candidates searched per row (the audit's k)
CSV_FIELDS = ["rank", "path", "score", "strategy", "reason", "predicted", "label"]


@dataclass(frozen=True)
class SelectConfig:
    budget: int
    strategy: str = DEFAULT_STRATEGY
    head: str | Path | None = None  # margin/entropy: its probabilities (else a head fitted on the labels)
    duplicates: DuplicateSettings = field(default_factory=DuplicateSettings)
    pixels: bool = True  # confirm near-duplicates by pixel hashes when the images are there
    seed: int = 0

    def __post_init__(self):
        if self.budget < 1:
            raise ConfigError(f"--budget {self.budget}: must be at least 1")
        check_strategy(self.strategy)


@dataclass
class Selection:
    """The picks, best first, and the unlabelled rows left out as near-copies."""

    store: Path
    dataset_root: Path
    strategy: str
    paths: list[str]
    scores: np.ndarray
    reasons: list[str]
    predicted: list[str]
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    pool: int = 0  # unlabelled rows before exclusion
    layout: str = "manifest"  # the store's dataset layout: how a user labels the picks
    views: int = 0  # the store's augmented views per training image
    cleared: int = 0  # an earlier round's copies that copy_to removed from its folder
    left_alone: int = 0  # picks copy_to did not copy: a file not of its making was at their path

    def __len__(self) -> int:
        return len(self.paths)

    def how_to_label(self) -> str:
        """What the user does next, for the dataset's layout: 'move each pick from unlabeled/
        into its class folder (mv unlabeled/x.png CLASS/, in the dataset folder), then re-run the
        featx extract that made the store (a relabel, no forward) on DATA'."""
        cost = ("a relabel, no forward" if not self.views else
                f"a relabel; picks that land in the train split are forwarded for their {self.views} views")
        again = f"re-run the featx extract that made the store ({cost})"
        root = shlex.quote(str(self.dataset_root))
        if self.layout == "unlabeled-folder" and self.paths:  # loose images: no folder says "unlabelled" yet
            first = shlex.quote(str(PurePosixPath(self.paths[0])))
            return (f"make class folders and an unlabeled/ folder, move each pick into its class folder "
                    f"(mv {first} CLASS/) and every other image into unlabeled/, in the dataset folder, "
                    f"then {again} on {root}")
        if self.layout not in ("class-folders", "split-folders") or not self.paths:
            return f"label them in the manifest (the label column), then {again}"
        first = PurePosixPath(self.paths[0])
        into = "CLASS/" if self.layout == "class-folders" else "train/CLASS/"
        where = "its class folder" if self.layout == "class-folders" else "a class folder of train/, val/ or test/"
        return (f"move each pick from {_pool_folder(first)}/ into {where} (mv {shlex.quote(str(first))} "
                f"{into}, in the dataset folder), then {again} on {root}")

    def to_csv(self, path: str | Path) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for i, (p, s, r, y) in enumerate(zip(self.paths, self.scores, self.reasons, self.predicted)):
            writer.writerow({"rank": i + 1, "path": p, "score": f"{s:.6g}", "strategy": self.strategy,
                             "reason": r, "predicted": y, "label": ""})
        return atomic_write_text(Path(path), buffer.getvalue())

    def copy_to(self, folder: str | Path) -> list[Path]:
        """Copy the picked images into `folder`, keeping their paths under the dataset root. The
        copies an earlier copy_to left there (listed in COPIED_LIST) go first, unless they were
        changed since: a folder for a labelling tool holds this round's picks, not every round's.
        A file already at a pick's path that is not such a copy is kept, never overwritten.
        Returns the copies made."""
        folder, copied = Path(folder), []
        sources = [self.dataset_root / rel for rel in self.paths]
        for source in sources:
            if not source.is_file():
                raise DataError(f"{source}: cannot copy a pick, the file is not there (dataset moved?)")
        self.cleared, self.left_alone = clear_earlier_copies(folder), 0
        for rel, source in zip(self.paths, sources):
            target = folder / rel
            if target.exists():  # not a copy of ours (those are cleared): the user's, kept as it is
                self.left_alone += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copy2(source, target)))
        listing = [{"path": c.relative_to(folder).as_posix(), "size": c.stat().st_size,
                    "mtime_ns": c.stat().st_mtime_ns} for c in copied]
        atomic_write_text(folder / COPIED_LIST, json.dumps(listing, indent=0) + "\n")
        return copied


COPIED_LIST = ".featx-copied.json"  # in a --copy-to folder: the copies featx made there last


def clear_earlier_copies(folder: Path) -> int:
    """Remove the copies the last copy_to into `folder` listed, where each is still the file it
    made (same size and mtime: one edited or replaced since is kept), and the folders that
    leaves empty. Returns how many were removed."""
    listed = folder / COPIED_LIST
    try:
        earlier = json.loads(listed.read_text())
    except (OSError, ValueError):  # none, or not ours to trust: remove nothing
        return 0
    removed = 0
    for entry in earlier if isinstance(earlier, list) else []:
        copy = folder / str(entry.get("path", "")) if isinstance(entry, dict) else folder
        if copy == folder or not copy.resolve().is_relative_to(folder.resolve()) or not copy.is_file():
            continue
        st = copy.stat()
        if (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
            continue
        copy.unlink()
        removed += 1
        for parent in copy.parents:
            if parent == folder or any(parent.iterdir()):
                break
            parent.rmdir()
    listed.unlink()
    return removed


def select(store: str | Path, budget: int, strategy: str = DEFAULT_STRATEGY, head: str | Path | None = None,
           config: SelectConfig | None = None, log=print) -> Selection:
    """The `budget` unlabelled samples of `store` to label next (see the module docstring)."""
    config = config or SelectConfig(budget, strategy, head)
    with FeatureStore(store) as st:
        st.require_complete()
        rows = st.rows()
        labels = st.labels[rows]
        unlabelled = np.flatnonzero(labels < 0)
        if not len(unlabelled):
            raise StoreError(f"{store}: no unlabelled samples to choose from (give images without a "
                             "label: manifest rows with an empty label column, or images in an "
                             "unlabeled/ folder beside the class folders)")
        source = StoreRows(st, rows)
        x = source.take(np.arange(len(rows)))  # [n, D] clean final features
        paths = np.array(st.paths_of(rows), dtype=object)
        root = Path(st.attrs["dataset_root"])
        keep, excluded = _without_near_copies(st, source, rows, labels, paths, root, config, log)
        pool = unlabelled[keep[unlabelled]]
        labelled = np.flatnonzero(labels >= 0)
        probabilities, names = _probabilities(st, store, config, x, labels, rows, pool)
        if config.budget > len(pool):
            log(f"note: --budget {config.budget}: only {len(pool)} unlabelled samples remain after "
                "near-copies are left out; all are picked")
        picked, scores = choose(config.strategy, x[pool], x[labelled], labels[labelled], probabilities,
                                config.budget, config.seed, len(st.classes))
        predicted = ([names[j] for j in np.argmax(probabilities[picked], axis=1)]
                     if probabilities is not None else [""] * len(picked))
        reasons = [_reason(config.strategy, s, probabilities[i] if probabilities is not None else None, names)
                   for i, s in zip(picked, scores)]
        return Selection(Path(store), root, config.strategy, [paths[pool[i]] for i in picked], scores, reasons,
                         predicted, excluded, int(len(unlabelled)),
                         str(st.attrs.get("dataset_layout", "manifest")), int(st.attrs.get("num_aug_views", 0)))


def _pool_folder(path: PurePosixPath) -> str:
    """The `unlabeled` folder a pick lies in ('unlabeled', 'train/unlabeled'), from its path."""
    parts = path.parts[:-1]
    at = next((i for i, p in enumerate(parts) if is_unlabeled_folder(p)), None)
    return "/".join(parts[:at + 1]) if at is not None else "/".join(parts) or "."


def _without_near_copies(st, source, rows, labels, paths, root, config, log):
    """keep [n] bool over the rows (False: an unlabelled near-copy) and (path, why) of each dropped."""
    found = self_neighbours(source, min(NEIGHBOURS, len(rows) - 1) if len(rows) > 1 else 1)
    hashes = _pixel_hashes(st, rows, root, config.pixels, log)
    pairs = duplicate_pairs(source, found, hashes, config.duplicates)
    keep = np.ones(len(rows), bool)
    why: dict[int, str] = {}
    for a, b in pairs.ab:  # a near-copy of a labelled image: its label is known already
        for u, other in ((a, b), (b, a)):
            if labels[u] < 0 <= labels[other] and keep[u]:
                keep[u], why[u] = False, f"near-copy of labelled {paths[other]}"
    for group in _groups(pairs.ab, len(rows)):  # of near-duplicate unlabelled rows, keep the first
        group = [r for r in group if labels[r] < 0 and keep[r]]
        for r in group[1:]:
            keep[r], why[r] = False, f"near-duplicate of {paths[group[0]]}"
    return keep, [(paths[r], why[r]) for r in sorted(why)]


def _groups(ab: np.ndarray, n: int) -> list[list[int]]:
    """Connected components (>= 2 rows) of the pair graph, each sorted."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in ab:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in np.unique(ab):
        groups.setdefault(root(int(i)), []).append(int(i))
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _pixel_hashes(st, rows, root: Path, pixels: bool, log) -> PixelHashes | None:
    known = st.content_hashes()
    known = [known[r] or None for r in rows] if known is not None else None
    if not root.is_dir() or not pixels:
        if not root.is_dir():
            log(f"note: the dataset folder {root} is not here: near-copies are judged by features alone")
        return PixelHashes(known, np.zeros((len(rows), 8), np.uint8), np.zeros(len(rows), bool)) if known else None
    return hash_pixels(root, list(st.paths_of(rows)), known)


def _probabilities(st, store, config: SelectConfig, x, labels, rows, pool):
    """A head's probabilities on the pool [len(pool), C] and its class names, or (None, [])."""
    if config.head is not None:
        from featx.heads.io import load_head
        from featx.heads.predict import predict

        head = load_head(config.head)
        scored = predict(head, [store])
        at = {p: i for i, p in enumerate(scored.paths)}
        wanted = st.paths_of(rows[pool])
        return scored.scores[[at[p] for p in wanted]], list(head.classes)
    if config.strategy not in NEEDS_PROBABILITIES and not (labels >= 0).any():
        return None, []
    labelled = labels >= 0
    if len(np.unique(labels[labelled])) < 2:
        if config.strategy in NEEDS_PROBABILITIES:
            default = " (the default)" if config.strategy == DEFAULT_STRATEGY else ""
            raise ConfigError(f"--strategy {config.strategy}{default}: needs --head, or labels of at least 2 classes "
                              f"in the store to fit one; with no labels yet, start with {NO_LABELS_NEEDED}")
        return None, []
    fitted = FastHead().fit(x[labelled], labels[labelled], config.seed)
    return fitted.predict_proba(x[pool]), [st.classes[c] for c in fitted.classes_]


def _reason(strategy: str, score: float, p: np.ndarray | None, names: list[str]) -> str:
    if strategy == "random":
        return "a seeded random draw"
    if strategy == "margin":
        top = np.argsort(-p)[:2]
        return f"the head hesitates: {names[top[0]]} {p[top[0]]:.2f} vs {names[top[1]]} {p[top[1]]:.2f}"
    if strategy == "entropy":
        return f"the head is unsure: entropy {score:.3f} nats"
    if strategy == "coreset":
        return f"far from every labelled or picked image (distance {score:.3f})"
    if strategy == "typiclust":
        return f"the most typical image of a cluster with no label yet (typicality {score:.3g})"
    return f"covers {score:.0f} images no label covers yet"
