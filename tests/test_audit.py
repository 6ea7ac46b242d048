"""featx audit on a dataset with planted faults: exact copies, re-encoded and resized copies
across train and test, flipped labels. The audit must find them (issue 20's acceptance bar)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx.audit import AuditConfig, DuplicateSettings, audit
from featx.data import open_dataset
from featx.extraction import ExtractConfig, extract

CLASSES = ("red", "green", "blue")
PER_CLASS = {"train": 30, "val": 6, "test": 12}


def smooth_image(rng: np.random.Generator, c: int) -> Image.Image:
    """A 64x64 picture: a coarse random pattern (the content) tinted by its class colour."""
    coarse = rng.uniform(0, 160, (6, 6, 3))
    coarse[..., c] += 90  # the class is the dominant colour
    img = Image.fromarray(coarse.clip(0, 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC)
    return img


def near_copy(src: Path, dst: Path) -> None:
    """What a scrape or a re-upload does: resized and re-encoded as JPEG q85."""
    Image.open(src).convert("RGB").resize((56, 56), Image.BILINEAR).save(dst, quality=85)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted") / "data"
    rng = np.random.default_rng(0)
    files = {}
    for split, n in PER_CLASS.items():
        for c, name in enumerate(CLASSES):
            for i in range(n):
                path = root / split / name / f"{split}_{name}_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                smooth_image(rng, c).save(path)
                files[(split, c, i)] = path
    cross = set()  # planted (held-out path, train path) pairs, relative to root
    for c, name in enumerate(CLASSES):  # 4 near-copies per class from train into test, 1 into val
        for i in range(4):
            src = files[("train", c, i)]
            dst = root / "test" / name / f"copy_{name}_{i}.jpg"
            near_copy(src, dst)
            cross.add((dst, src))
        src = files[("train", c, 10)]
        other = CLASSES[(c + 1) % 3]  # the copy carries another label: a conflicting leak
        dst = root / "val" / other / f"copy_{name}_10.jpg"
        near_copy(src, dst)
        cross.add((dst, src))
    exact = root / "test" / "red" / "exact_copy.png"  # a byte-identical file across splits
    shutil.copy(files[("train", 0, 20)], exact)
    cross.add((exact, files[("train", 0, 20)]))
    same = root / "train" / "green" / "exact_twin.png"  # a byte-identical file within train
    shutil.copy(files[("train", 1, 20)], same)
    flipped = set()
    for c, name in enumerate(CLASSES):  # 3 per class moved to the next class's folder
        for i in range(25, 28):
            src = files[("train", c, i)]
            dst = root / "train" / CLASSES[(c + 1) % 3] / f"flipped_{src.name}"
            src.rename(dst)
            flipped.add(dst)
    ds = open_dataset(root)
    config = ExtractConfig(weights="none", input_size=32, workers=0, dtype="float32")
    store = extract(ds, "tiny_cnn", root.parent / "stores", config, show_progress=False).store
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    return {"root": root, "store": store, "cross": {(rel(a), rel(b)) for a, b in cross},
            "flipped": {rel(p) for p in flipped}, "twin": (rel(files[("train", 1, 20)]), rel(same))}


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    return audit(planted["store"], out, log=lambda line: None)


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_planted_leaks_are_found_with_high_recall_and_precision(planted, audited):
    pairs = read(audited.files["duplicates"])
    reported = {(r["path_a"], r["path_b"]) if r["split_a"] != "train" else (r["path_b"], r["path_a"])
                for r in pairs if (r["split_a"] == "train") != (r["split_b"] == "train")}
    found = planted["cross"] & reported
    recall = len(found) / len(planted["cross"])
    precision = len(found) / max(1, len(reported))
    print(f"FIXTURE recall {recall:.3f} precision {precision:.3f} ({len(found)}/{len(planted['cross'])}, {len(reported)} reported)")
    assert recall >= 0.95, f"recall {recall:.2f}: missed {planted['cross'] - reported}"
    assert precision >= 0.90, f"precision {precision:.2f}: also reported {reported - planted['cross']}"


def test_exact_duplicates_are_grouped_by_content(planted, audited):
    exact = {frozenset((r["path_a"], r["path_b"])) for r in read(audited.files["duplicates"]) if r["exact"] == "True"}
    assert frozenset(planted["twin"]) in exact
    assert audited.summary["duplicates"]["exact_groups"] == 2  # the twin in train, the copy into test


def test_leakage_is_counted_by_split_and_label(planted, audited):
    leak = audited.summary["leakage"]
    assert leak["test"]["leaked"] == 13 and leak["test"]["conflicting_label"] == 0
    assert leak["val"]["leaked"] == 3 and leak["val"]["conflicting_label"] == 3
    rows = read(audited.files["leakage"])
    assert {r["path"] for r in rows if r["conflicting"] == "True"} == {
        a for a, _ in planted["cross"] if a.startswith("val/")}
    accuracy = audited.summary["labels"]["test_accuracy"]
    assert accuracy["removed"] == 13 and accuracy["samples"] == 3 * 12 + 13


def test_flipped_labels_rank_among_the_top_suspects(planted, audited):
    suspects = [r["path"] for r in read(audited.files["labels"]) if r["split"] == "train"]
    top = set(suspects[:2 * len(planted["flipped"])])
    print(f"FIXTURE flipped in top {len(top)}: {len(top & planted['flipped'])}/{len(planted['flipped'])}")
    assert len(top & planted["flipped"]) >= 0.7 * len(planted["flipped"]), suspects[:20]


def test_outliers_and_page_are_written(planted, audited):
    outliers = read(audited.files["outliers"])
    assert len(outliers) >= 1 and float(outliers[0]["distance"]) >= float(outliers[-1]["distance"])
    page = audited.files["page"].read_text()
    assert "data:image/jpeg;base64" in page and "duplicate in train" in page
    assert json.loads(audited.files["summary"].read_text())["samples"] == audited.summary["samples"]


def test_without_the_images_pixel_checks_are_skipped_and_said(planted, tmp_path):
    moved = planted["root"].with_name("moved")
    planted["root"].rename(moved)
    notes = []
    try:
        result = audit(planted["store"], tmp_path / "a", AuditConfig(checks=("duplicates", "outliers")),
                       log=notes.append)
    finally:
        moved.rename(planted["root"])
    assert any("pixel checks skipped" in n for n in notes)
    assert result.summary["duplicates"]["pixels"].startswith("skipped")
    assert result.summary["duplicates"]["exact_groups"] == 2  # from the store's own sha256 of each file


def test_a_store_without_labels_gets_duplicates_and_outliers(tmp_path):
    """Every label -1 and every split "unlabeled" (a folder of images without classes): the audit
    does what needs no labels, and says that label checks were skipped."""
    from featx.store import open_h5
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5")
    with open_h5(store, "r+") as f:
        f["samples/label"][:] = -1
        f["samples/split"][:] = np.array(["unlabeled"] * len(f["samples/split"]), dtype=object)
        # One sample pointing away from the three blobs: the outlier the audit must name.
        f["features/clean"][7] = -5.0 * f["features/clean"][:].mean(0)
        outlier = f["samples/path"][7].decode()
    notes = []
    result = audit(store, tmp_path / "a", AuditConfig(), log=notes.append)
    assert result.summary["labels"] == {"skipped": "no labels"}
    assert result.summary["outliers"]["flagged"] >= 1 and "duplicates" in result.summary
    with open(result.files["outliers"], newline="") as f:
        top = next(csv.DictReader(f))
    assert top["path"] == outlier and top["flagged"] == "True"
    assert any("no labels: label checks skipped" in n for n in notes), notes


def test_threshold_without_pixels_decides_alone(tmp_path):
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5", separation=0.0)
    loose = audit(store, tmp_path / "a", AuditConfig(DuplicateSettings(threshold_without_pixels=-1.0),
                                                     checks=("duplicates",)), log=lambda _: None)
    strict = audit(store, tmp_path / "b", AuditConfig(DuplicateSettings(threshold_without_pixels=0.999),
                                                      checks=("duplicates",)), log=lambda _: None)
    assert loose.summary["duplicates"]["near_pairs"] > 0 == strict.summary["duplicates"]["near_pairs"]


def test_report_shows_the_audit_beside_the_heads(tmp_path):
    from featx.probes.sweep import HeadConfig
    from featx.report import write_report
    from featx.probes.train import train_head
    from tests.conftest import make_feature_store

    store = make_feature_store(tmp_path / "s.h5")
    train_head(store, "logreg", HeadConfig(), out=tmp_path / "run" / "heads" / "h", show_progress=False)
    audit(store, tmp_path / "run" / "audit", AuditConfig(checks=("duplicates", "outliers")), log=lambda _: None)
    html = write_report(tmp_path / "run" / "heads", tmp_path / "r.html").read_text()
    md = write_report(tmp_path / "run" / "heads", tmp_path / "r.md", "md").read_text()
    assert "Data audit" in html and "have a duplicate in train" in html
    assert "## Data audit" in md
