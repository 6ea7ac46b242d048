"""Bad inputs of `featx predict` and of saved heads (featx/heads/predict.py, featx/heads/io.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.bad_input_harness import Case, World


def copy_head(tmp: Path, world: World) -> Path:
    """A copy of the world's head under tmp/h.* that a case may then damage."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(world.head.with_suffix(suffix), tmp / f"h{suffix}")
    return tmp / "h.json"


def edit_sidecar(change):
    def setup(tmp: Path, world: World) -> None:
        sidecar = copy_head(tmp, world)
        meta = json.loads(sidecar.read_text())
        change(meta)
        sidecar.write_text(json.dumps(meta))
    return setup


def write_weights(blob: bytes, drop_hash: bool = True):
    def setup(tmp: Path, world: World) -> None:
        sidecar = copy_head(tmp, world)
        if drop_hash:
            meta = json.loads(sidecar.read_text())
            meta.pop("weights_file_sha256", None)
            sidecar.write_text(json.dumps(meta))
        (tmp / "h.safetensors").write_bytes(blob)
    return setup


def other_head_weights(tmp: Path, world: World) -> None:
    """New weights beside an old sidecar: what a kill between the two renames of a save leaves."""
    copy_head(tmp, world)
    weights = bytearray((tmp / "h.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (tmp / "h.safetensors").write_bytes(bytes(weights))


PREDICT = ["predict", "{data}", "--out", "{out}/p.csv", "--head"]

CASES = [
    Case("predict-head-missing", PREDICT + ["{tmp}/nothing.safetensors"], r"nothing\.safetensors: no such file"),
    Case("predict-head-torn", PREDICT + ["{tmp}/h.safetensors"], r"h\.safetensors: these weights are not",
         setup=other_head_weights),
    Case("predict-head-pickle", PREDICT + ["{tmp}/h.safetensors"], r"h\.safetensors: unreadable head weights",
         setup=write_weights(b"\x80\x04\x95cos\nsystem\nq\x00X\x05\x00\x00\x00echo q\x01\x85q\x02Rq\x03.")),
    Case("predict-head-random-bytes", PREDICT + ["{tmp}/h.safetensors"], r"unreadable head weights",
         setup=write_weights(bytes(range(256)) * 4)),
    Case("predict-head-empty-weights", PREDICT + ["{tmp}/h.safetensors"], r"unreadable head weights",
         setup=write_weights(b"")),
    Case("predict-sidecar-not-json", PREDICT + ["{tmp}/h.safetensors"], r"h\.json: unreadable head sidecar",
         setup=lambda tmp, w: (copy_head(tmp, w).write_text("{not json"))),
    Case("predict-sidecar-a-list", PREDICT + ["{tmp}/h.safetensors"], r"h\.json: not a featx head",
         setup=lambda tmp, w: (copy_head(tmp, w).write_text("[1, 2]"))),
    Case("predict-sidecar-no-classes", PREDICT + ["{tmp}/h.safetensors"], r"h\.json: .*no 'classes'",
         setup=edit_sidecar(lambda m: m.pop("classes"))),
    Case("predict-sidecar-no-backbone", PREDICT + ["{tmp}/h.safetensors"], r"h\.json: .*no 'backbone'",
         setup=edit_sidecar(lambda m: m.pop("backbone"))),
    Case("predict-sidecar-wrong-kind", PREDICT + ["{tmp}/h.safetensors"], r"unknown head kind 'forest'",
         setup=edit_sidecar(lambda m: m.update(kind="forest"))),
    Case("predict-sidecar-class-count", PREDICT + ["{tmp}/h.safetensors"], r"3 classes, but the weights score 2",
         setup=edit_sidecar(lambda m: m.update(classes=["a", "b", "c"], class_names=["a", "b", "c"]))),
    Case("predict-sidecar-feature-dim", ["predict", "{store}", "--out", "{out}/p.csv", "--head", "{tmp}/h.safetensors"],
         r"h\.json: feature_dim 99, but the weights take 16 features",
         setup=edit_sidecar(lambda m: m.update(feature_dim=99))),
    Case("predict-top-k-zero", PREDICT + ["{head}", "--top-k", "0"], r"--top-k", code=2),
    Case("predict-top-k-negative", PREDICT + ["{head}", "--top-k", "-1"], r"--top-k", code=2),
    Case("predict-no-images", ["predict", "{tmp}", "--out", "{out}/p.csv", "--head", "{head}"], r"no images found"),
    Case("predict-class-map-missing", PREDICT + ["{head}", "--class-map", "{tmp}/none.json"], r"none\.json"),
    Case("predict-class-map-not-json", PREDICT + ["{head}", "--class-map", "{tmp}/m.json"], r"m\.json",
         setup=lambda tmp, w: (tmp / "m.json").write_text("ants: x")),
    Case("predict-head-is-a-store", ["predict", "{data}", "--out", "{out}/p.csv", "--head", "{store}"],
         r"\.h5: this is a feature store, not a head"),
    Case("predict-store-among-images", ["predict", "{data}", "{store}", "--out", "{out}/p.csv", "--head", "{head}"],
         r"\.h5: a feature store is predicted on its own", code=2),
    Case("predict-nothing-usable", ["predict", "{tmp}/bad.png", "--out", "{out}/p.csv", "--head", "{head}"],
         r"nothing to predict: none of the 1 input image", code=1,
         setup=lambda tmp, w: (tmp / "bad.png").write_text("not an image")),
    Case("predict-sidecar-feature-dim-text", PREDICT + ["{tmp}/h.safetensors"], r"feature_dim must be a whole number",
         setup=edit_sidecar(lambda m: m.update(feature_dim="abc"))),
    Case("predict-sidecar-classes-not-a-list", PREDICT + ["{tmp}/h.safetensors"], r"classes must be a list",
         setup=edit_sidecar(lambda m: m.update(classes="ab"))),
]
