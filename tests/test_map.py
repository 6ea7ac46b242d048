"""Issue 30: `featx map`, the page's JSON, the coordinate cache, the sample above max_points,
and the page rendered by headless Chromium with no script error."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from featx.explore import MapConfig, map_store
from featx.explore.coords import Projection, cache_path
from tests.conftest import write_image
from tests.test_explore import clusters, make_store

QUIET = dict(log=lambda line: None)
PCA = Projection(method="pca")


def _points(page: Path) -> dict:
    text = page.read_text()
    found = re.search(r'<script type=\'application/json\' id=\'featx-map\'>(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def _image_store(tmp_path: Path, n_per=20) -> tuple[Path, Path]:
    root = tmp_path / "data"
    x, which = clusters([n_per, n_per, n_per], dim=12, seed=11)
    names = [f"img/{'abc'[c]}_{i:03d}.png" for i, c in enumerate(which)]
    for i, name in enumerate(names):
        write_image(root / name, 300 + i)
    labels = np.where(np.arange(len(x)) % 10 == 9, -1, which)
    splits = np.where(labels < 0, "unlabeled", np.where(np.arange(len(x)) % 4 == 0, "test", "train"))
    return make_store(tmp_path / "s.h5", x, labels, splits, root=root, names=names), root


def test_the_page_holds_one_entry_per_sample_with_finite_coordinates(tmp_path):
    store, _ = _image_store(tmp_path)
    result = map_store(store, tmp_path / "map.html", MapConfig(projection=Projection()), **QUIET)
    data = _points(result.page)
    points = data["points"]
    assert len(points) == 60 == data["meta"]["rows"] == data["meta"]["shown"]
    assert {p["path"] for p in points} == set(result.paths)
    assert all(np.isfinite([p["x"], p["y"]]).all() for p in points)
    assert data["meta"]["method"].startswith("UMAP") and result.method.startswith("UMAP")
    assert {p["label"] for p in points} == {"a", "b", "c", ""} and {p["split"] for p in points} == \
        {"train", "test", "unlabeled"}
    assert all(p["thumb"].startswith("data:image/jpeg;base64,") for p in points)
    assert "http://" not in result.page.read_text() and "https://" not in result.page.read_text()  # no CDN
    # the map shows the clusters: each point's nearest point is mostly of its own class
    xy = np.array([[p["x"], p["y"]] for p in points])
    labelled = [i for i, p in enumerate(points) if p["label"]]
    d = ((xy[labelled, None] - xy[None, labelled]) ** 2).sum(-1) + np.eye(len(labelled)) * 1e9
    same = [points[labelled[j]]["label"] == points[i]["label"] for i, j in zip(labelled, d.argmin(1))]
    assert np.mean(same) > 0.9


def test_a_second_map_reads_the_cached_coordinates_and_a_relabel_keeps_them(tmp_path):
    store, _ = _image_store(tmp_path)
    first = map_store(store, tmp_path / "m1.html", MapConfig(projection=PCA, thumbnails=False), **QUIET)
    assert not first.cached and cache_path(store).is_file()
    second = map_store(store, tmp_path / "m2.html", MapConfig(projection=PCA, thumbnails=False), **QUIET)
    assert second.cached and np.array_equal(first.coords, second.coords)
    other = map_store(store, tmp_path / "m3.html", MapConfig(projection=Projection("pca", pca_dims=3),
                                                             thumbnails=False), **QUIET)
    assert not other.cached  # other settings: computed again


def test_above_max_points_a_stratified_sample_is_shown_and_every_row_keeps_coordinates(tmp_path):
    store, _ = _image_store(tmp_path)
    result = map_store(store, tmp_path / "map.html", MapConfig(projection=PCA, max_points=15,
                                                               thumbnails=False), **QUIET)
    data = _points(result.page)
    assert result.shown == len(data["points"]) == 15 and data["meta"]["rows"] == 60
    labels = [p["label"] for p in data["points"]]
    assert {labels.count(c) for c in "abc"} <= {4, 5} and labels.count("") >= 1  # shares kept
    assert any("15 of 60 samples shown" in n for n in data["meta"]["notes"])
    table = list(csv.DictReader(open(result.table)))
    assert len(table) == 60 and all(np.isfinite([float(r["x"]), float(r["y"])]).all() for r in table)


def test_audit_findings_and_a_heads_predictions_colour_the_points(tmp_path):
    store, _ = _image_store(tmp_path)
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "leakage.csv").write_text("path,split,label\nimg/a_000.png,test,a\n")
    (audit / "outliers.csv").write_text("rank,path,split,label,distance,flagged\n"
                                        "1,img/b_021.png,train,b,0.9,True\n2,img/b_022.png,train,b,0.5,False\n")
    result = map_store(store, tmp_path / "map.html", MapConfig(audit=audit, projection=PCA, thumbnails=False),
                       **QUIET)
    data = _points(result.page)
    finding = {p["path"]: p["finding"] for p in data["points"]}
    assert finding["img/a_000.png"] == "leaked" and finding["img/b_021.png"] == "outlier"
    assert finding["img/b_022.png"] == "" and "finding" in data["meta"]["colour_by"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (make browser installs Debian's chromium)")
def test_the_page_renders_in_headless_chromium_with_no_script_error(tmp_path):
    store, _ = _image_store(tmp_path)
    page = map_store(store, tmp_path / "map.html", MapConfig(projection=PCA), **QUIET).page
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(browser + ["--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<p id="status"([^>]*)>([^<]*)</p>', dom.stdout)
    assert status.group(2) == "drawn 60 points, coloured by label"  # the script ran to its end
    assert "data-error" not in status.group(1)
    assert dom.stdout.count("<option") == 2  # label and split: no head, no audit given
    shot = tmp_path / "shot.png"
    subprocess.run(browser + [f"--screenshot={shot}", "--window-size=1300,800", page.resolve().as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # points drawn, not a blank canvas


def test_map_and_select_and_label_curve_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from featx.cli import app

    store, _ = _image_store(tmp_path)
    runner = CliRunner()
    mapped = runner.invoke(app, ["map", str(store), "--method", "pca", "--out", str(tmp_path / "m.html")])
    assert mapped.exit_code == 0, mapped.output
    assert "60 of 60 samples mapped" in mapped.output and (tmp_path / "m.csv").is_file()
    assert mapped.stdout.splitlines()[-1] == f"next: featx select --budget N {store}"
    picked = runner.invoke(app, ["select", str(store), "--budget", "3", "--strategy", "coreset",
                                 "--out", str(tmp_path / "p.csv"), "--copy-to", str(tmp_path / "copies")])
    assert picked.exit_code == 0, picked.output
    assert "3 of 6 unlabelled images picked by coreset" in picked.output
    assert picked.stdout.splitlines()[-1].startswith("next: label them")
    assert len(list((tmp_path / "copies").rglob("*.png"))) == 3
    bad = runner.invoke(app, ["select", str(store), "--budget", "3", "--strategy", "clever"])
    assert bad.exit_code != 0 and "clever" in bad.output and "Traceback" not in bad.output


def test_umaps_neighbours_come_exact_with_each_row_first_even_beside_its_duplicate():
    from featx.explore.coords import exact_knn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    x[7] = x[3]  # a duplicate: either may come first in a search
    ids, dists, _ = exact_knn(x, 4)
    assert (ids[:, 0] == np.arange(40)).all() and (dists[:, 0] == 0).all()
    assert 7 in ids[3] and 3 in ids[7] and dists[3][list(ids[3]).index(7)] == 0
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    for i in (0, 11, 39):  # the same neighbours as brute force, nearest first
        assert set(ids[i]) == set(np.argsort(full[i], kind="stable")[:4])
        assert np.allclose(dists[i], np.sort(full[i])[:4], atol=1e-5)


def test_umaps_numba_functions_are_cached_on_disk_once_imported():
    """umap-learn compiles its functions in every process unless told to cache them: the JIT was
    most of a cold ELPV map (benchmarks/map_speed.py)."""
    pytest.importorskip("umap")
    from numba.core.caching import NullCache

    from featx.explore.coords import import_umap

    umap = import_umap()
    layout = umap.layouts._nb_optimize_layout_euclidean_single_epoch
    assert not isinstance(layout._cache, NullCache)
    assert not isinstance(umap.umap_.smooth_knn_dist._cache, NullCache)


def test_thumbnails_on_threads_are_the_serial_ones_in_order(tmp_path):
    from featx.explore.map import _thumbnail, _thumbnails

    files = [write_image(tmp_path / f"{i}.png", i) for i in range(6)] + [tmp_path / "missing.png"]
    assert _thumbnails(files, 16) == [_thumbnail(f, 16) for f in files]
    assert _thumbnails(files, 16)[-1] == "" and all(_thumbnails(files, 16)[:-1])


def test_the_epochs_are_part_of_the_cache_key(tmp_path):
    store, _ = _image_store(tmp_path)
    config = MapConfig(projection=Projection(epochs=30), thumbnails=False)
    assert not map_store(store, tmp_path / "a.html", config, **QUIET).cached
    assert map_store(store, tmp_path / "b.html", config, **QUIET).cached
    other = MapConfig(projection=Projection(epochs=40), thumbnails=False)
    assert not map_store(store, tmp_path / "c.html", other, **QUIET).cached


def test_a_pca_stand_in_for_a_missing_umap_is_not_served_once_umap_is_installed(tmp_path, monkeypatch):
    """Without umap-learn the map is PCA's (and says so); that stand-in was cached under the UMAP
    settings, so installing umap-learn kept showing it."""
    import importlib.util

    import featx.explore.coords as coords

    store, _ = _image_store(tmp_path)
    config = MapConfig(projection=Projection(epochs=30), thumbnails=False)
    real_find_spec = importlib.util.find_spec

    def missing(*args, **kwargs):
        raise ImportError("no umap")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real_find_spec(name, *a))
    monkeypatch.setattr(coords, "import_umap", missing)
    without = map_store(store, tmp_path / "a.html", config, **QUIET)
    assert "PCA" in without.method
    assert map_store(store, tmp_path / "b.html", config, **QUIET).cached  # still no umap: the cache serves
    monkeypatch.undo()
    assert not map_store(store, tmp_path / "c.html", config, **QUIET).cached  # umap-learn now: made again


def test_a_big_store_fits_umap_on_a_sample_and_places_every_other_row_among_its_neighbours(tmp_path, monkeypatch):
    """Above SAMPLE_ABOVE rows (100,000: 200 s of UMAP on 2 cores) UMAP fits FIT_ROWS of them and
    every other row lands at the weighted mean of its nearest fitted rows' points."""
    pytest.importorskip("umap")
    from featx.audit.run import StoreRows
    from featx.explore import coords
    from featx.store import FeatureStore

    monkeypatch.setattr(coords, "SAMPLE_ABOVE", 300)
    monkeypatch.setattr(coords, "FIT_ROWS", 150)
    x, which = clusters([200, 200, 200], dim=12, seed=3)
    store = make_store(tmp_path / "big.h5", x, which, ["train"] * len(x))
    projection = Projection(epochs=30)
    result = map_store(store, tmp_path / "map.html", MapConfig(projection=projection, thumbnails=False), **QUIET)
    xy = result.coords
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    assert "fitted on a seeded sample of 150 of the 600 rows" in result.method
    with FeatureStore(store) as st:
        stored = StoreRows(st, st.rows()).take(np.arange(600))
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    fit = coords.fit_rows(600, projection)
    reduced, _ = coords.reduce(unit, projection, fit)
    # the fitted rows keep UMAP's embedding of the sample alone, untouched by the placed ones
    assert np.array_equal(xy[fit], coords.embed(reduced[fit], projection, exact_up_to=150))
    # each placed row lies within the box of its 5 nearest fitted rows' points, in its own cluster
    rest = np.setdiff1d(np.arange(600), fit)
    d = ((reduced[rest, None] - reduced[None, fit]) ** 2).sum(-1)
    near = fit[np.argsort(d, axis=1)[:, :5]]
    assert (xy[rest] >= xy[near].min(1) - 1e-4).all() and (xy[rest] <= xy[near].max(1) + 1e-4).all()
    nearest_on_map = fit[((xy[rest, None] - xy[None, fit]) ** 2).sum(-1).argmin(1)]
    assert np.mean(which[nearest_on_map] == which[rest]) > 0.95
    # deterministic: computed again (no cache), the same coordinates
    again, method = coords.project(stored, projection, QUIET["log"])
    assert np.array_equal(again, xy) and method == result.method
