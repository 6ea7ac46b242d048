"""featx.deploy's exported model: one ONNX file that reproduces `featx predict`, with the metadata a
client needs, refused for kinds without a graph, and docs/deploy.md's client run without featx."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featx.data import DatasetOptions, open_dataset
from featx.data.images import image_to_tensor, load_image
from featx.data.transforms import clean_view
from featx.deploy import export_model
from featx.deploy.images import InputSpec, input_batch, to_input
from featx.deploy.model_file import ModelFile
from featx.deploy.onnx_model import metadata
from featx.errors import FeatxError
from featx.extraction import ExtractConfig, extract
from featx.heads.io import head_paths, load_head
from featx.heads.predict import predict
from featx.probes.sweep import HeadConfig
from featx.probes.train import train_head

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cracked", "fine", "soiled")


def smooth_image(path: Path, seed: int, size=(45, 38)) -> Path:
    """A photo-like image (gradients and blobs, not pixel noise), in one of three looks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    look = seed % 3
    channels = [np.sin((x * (1 + look) + y * rng.uniform(0.5, 2)) * np.pi * rng.uniform(1, 3) + k)
                for k in range(3)]
    arr = (127.5 + 100 * np.stack(channels, -1) + rng.normal(0, 4, (size[1], size[0], 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def image_tree(root: Path, per_class: int = 8) -> Path:
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            smooth_image(root / name / f"{name}_{i:02d}.png", 3 * i + c)
    return root


def trained_head(tmp: Path, kind: str = "linear", backbone: str = "tiny_features", **head_options):
    """A head of `kind` on a tiny backbone's store (with tiny_features: pooled block columns)."""
    root = image_tree(tmp / "data")
    ds = open_dataset(root, DatasetOptions(val_frac=0.25, test_frac=0.25))
    store = extract(ds, backbone, tmp / "stores", ExtractConfig(weights="none", workers=0, dtype="float32"),
                    show_progress=False).store
    head = train_head(store, kind, HeadConfig(epochs=3, **head_options), out=tmp / f"head_{kind}",
                      show_progress=False)
    return root, head


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    root, head = trained_head(tmp)
    return root, head, export_model(head, tmp / "model.onnx").path


def featx_inputs(files: list[Path], crop: int, head) -> np.ndarray:
    """featx's own clean views (decode + the head's resize) as the model's NHWC input."""
    from featx.data.preprocess import Preprocess

    pre = Preprocess.from_dict(head.meta["preprocess"])
    views = [clean_view(image_to_tensor(load_image(f)), pre) for f in files]
    return torch.stack(views).permute(0, 2, 3, 1).contiguous().numpy()


def test_the_file_reproduces_featx_predict_on_the_same_pixels(exported):
    root, head, path = exported
    files = sorted(root.rglob("*.png"))
    model = ModelFile.open(path)
    want = predict(head, files, workers=0)
    got = model(featx_inputs(files, model.spec.crop, head))
    assert head.meta["pool"] and head.feature_dim > 16  # the pooled block columns are in the graph
    np.testing.assert_allclose(got, want.scores, atol=1e-5)
    assert model.session.get_outputs()[1].name == "features"
    assert model.session.get_outputs()[1].shape[1] == head.feature_dim


def test_featx_pixels_are_a_pillow_clients_pixels_and_so_are_the_answers(exported):
    root, head, path = exported
    files = sorted(root.rglob("*.png"))
    model = ModelFile.open(path)
    assert head.meta["preprocess"]["resize_with"] == "pillow"
    pillow = input_batch([f.read_bytes() for f in files], model.spec)
    np.testing.assert_array_equal(featx_inputs(files, model.spec.crop, head), pillow)
    want = predict(head, files, workers=0).scores
    got = model(pillow)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_an_old_head_predicts_with_the_resize_it_was_trained_on(exported, tmp_path):
    root, head, path = exported
    old = load_head(legacy_head(Path(head.path), tmp_path / "old.linear"))
    files = sorted(root.rglob("*.png"))
    legacy = featx_inputs(files, 32, old)  # the old sidecar's Preprocess: torchvision's kernel
    assert (legacy != featx_inputs(files, 32, head)).any()  # the two resizes differ on these images
    np.testing.assert_allclose(predict(old, files, workers=0).scores, ModelFile.open(path)(legacy), atol=1e-5)
    assert json.loads(metadata(old)["featx.preprocess"])["resize_with"] == "torchvision"


def legacy_head(head_path: Path, out: Path) -> Path:
    """A copy of the head whose sidecar names no resize (a head trained before issue 29)."""
    (weights, sidecar), (new_weights, new_sidecar) = head_paths(head_path), head_paths(out)
    shutil.copy(weights, new_weights)
    meta = json.loads(sidecar.read_text())
    del meta["preprocess"]["resize_with"]
    new_sidecar.write_text(json.dumps(meta))
    return new_weights


def test_metadata_names_classes_preprocessing_and_provenance(exported):
    _, head, path = exported
    model = ModelFile.open(path)
    assert model.classes == list(head.class_names) == list(CLASSES)
    pre = head.meta["preprocess"]
    assert model.spec == InputSpec(pre["resize_size"], pre["input_size"], "BILINEAR", "RGB", "pillow")
    assert model.provenance["featx.backbone"] == "tiny_features"
    assert model.provenance["featx.head_sha256"] == head.meta["weights_file_sha256"]
    assert model.provenance["featx.weights_sha256"] == head.meta["weights_sha256"]
    assert set(model.provenance) >= {"featx.version", "featx.store_version"}
    batch = model.session.get_inputs()[0]
    assert (batch.name, batch.type, batch.shape[1:]) == ("images", "tensor(uint8)", [pre["input_size"]] * 2 + [3])


def test_head_to_onnx_writes_the_same_model(exported, tmp_path):
    root, head, path = exported
    again = load_head(head.path).to_onnx(tmp_path / "again.onnx")
    x = input_batch([f.read_bytes() for f in sorted(root.rglob("*.png"))[:4]], ModelFile.open(path).spec)
    np.testing.assert_array_equal(ModelFile.open(again)(x), ModelFile.open(path)(x))


@pytest.mark.parametrize("kind", ["mlp", "logreg"])
def test_other_kinds_export_and_agree(tmp_path, kind):
    root, head = trained_head(tmp_path, kind, backbone="tiny_cnn")
    model = ModelFile.open(export_model(head, tmp_path / f"{kind}.onnx").path)
    files = sorted(root.rglob("*.png"))
    np.testing.assert_allclose(model(featx_inputs(files, model.spec.crop, head)),
                               predict(head, files, workers=0).scores, atol=1e-5)


@pytest.mark.parametrize("kind, why", [("knn", "votes among its stored training rows"),
                                       ("svm", "margins, not probabilities")])
def test_kinds_without_a_graph_are_refused_saying_why(tmp_path, kind, why):
    _, head = trained_head(tmp_path, kind, backbone="tiny_cnn")
    with pytest.raises(FeatxError, match=why) as info:
        export_model(head, tmp_path / "m.onnx")
    assert "\n" not in str(info.value) and not (tmp_path / "m.onnx").exists()


def test_the_client_resize_is_featx_resize_on_odd_shapes():
    """Pillow's pixels exactly; against torchvision's kernel (old stores) the same sizes, one grey
    level of rounding at most."""
    from featx.data.preprocess import Preprocess

    spec = InputSpec(resize=37, crop=32)
    for w, h in [(45, 38), (38, 45), (101, 37), (33, 70)]:
        img = Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8))
        client = to_input(img, spec).astype(int)
        for resize_with, most in (("pillow", 0), ("torchvision", 1)):
            ours = clean_view(image_to_tensor(img), Preprocess(32, 37, resize_with=resize_with))
            assert np.abs(ours.permute(1, 2, 0).numpy().astype(int) - client).max() <= most, (w, h, resize_with)


def test_a_grayscale_upload_is_resized_gray_and_gives_the_rgb_pixels(tmp_path):
    """The service resizes an "L" image before converting it (a third of the work): the input
    must be the pixels of converting first, as featx and the docs client do."""
    from featx.data.preprocess import Preprocess

    spec = InputSpec(resize=37, crop=32)
    for w, h in [(45, 38), (38, 45), (101, 37)]:
        gray = Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w), dtype=np.uint8), "L")
        gray.save(tmp_path / "g.png")
        got = input_batch([(tmp_path / "g.png").read_bytes()], spec)[0]
        assert got.shape == (32, 32, 3)
        np.testing.assert_array_equal(got, to_input(gray.convert("RGB"), spec))
        ours = clean_view(image_to_tensor(gray.convert("RGB")), Preprocess(32, 37, resize_with="pillow"))
        np.testing.assert_array_equal(got, ours.permute(1, 2, 0).numpy())


BLOCKER = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('featx', 'torch', 'torchvision'):
            raise ImportError(f'{name} is blocked: the client must run without it')
sys.meta_path.insert(0, Blocked())
for name in ('featx', 'torch'):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f'{name} could still be imported')
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def docs_client() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    return re.search(r"```python client\n(.*?)```", text, re.S).group(1)


def test_the_docs_client_runs_without_featx_or_torch_and_matches(exported, tmp_path):
    root, head, path = exported
    code = docs_client()
    assert len(code.strip().splitlines()) <= 30
    client = tmp_path / "client.py"
    client.write_text(code)
    files = sorted(root.rglob("*.png"))[:5]
    # -I: no PYTHONPATH, no user site, no current folder; the blocker refuses featx and torch.
    run = subprocess.run([sys.executable, "-I", "-c", BLOCKER, str(client), str(path), *map(str, files)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    probs = ModelFile.open(path)(input_batch([f.read_bytes() for f in files], ModelFile.open(path).spec))
    assert [a["image"] for a in answers] == [str(f) for f in files]
    for answer, row in zip(answers, probs):
        assert answer["class"] == CLASSES[int(row.argmax())]
        assert abs(answer["probability"] - float(row.max())) < 1e-6
