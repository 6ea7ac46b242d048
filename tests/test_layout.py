"""The shape of the package: layers import downwards only, modules stay readable, a head loads light.

These rules are docs/store.md's "Data flow and import layers"; a change to one changes the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "featx"
MAX_LINES = 420  # "about 400": room for a docstring, not for a second responsibility

# First component under featx -> layer; a module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "atomic": 0, "device": 0, "progress": 0, "metrics": 0, "scoring": 0,
    "schedules": 0, "balance": 0, "config": 0, "distributed": 0, "plots": 0, "neighbours": 0, "knn_index": 0, "uncertainty": 0,
    "memory": 0,
    "images": 1, "data": 1,
    "backbones": 2, "transforms": 2, "engines": 2,
    "store": 3,
    "extraction": 4,
    "heads": 5, "head_io": 5, "head_backbone": 5, "baselines": 5, "feature_data": 5, "train": 5,
    "lr_range": 5, "estimators": 5, "export": 5, "resplits": 5, "selection": 5, "train_cv": 5, "batched": 5,
    "finetuning": 6,
    "prediction": 7, "comparison": 7, "report": 7, "audit": 7,
    "cli": 9, "__main__": 9,
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def component(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if rel.parts != ("__init__",) else "__init__"


def featx_imports(path: Path):
    """(line, imported module, imported names) for every featx import, lazy ones included,
    leaving out `if TYPE_CHECKING:` blocks (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featx"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("featx"):
                    yield node.lineno, alias.name, []


def test_every_module_has_a_layer():
    unknown = sorted({component(p) for p in modules()} - set(LAYERS) - {"__init__"})
    assert not unknown, f"add these to LAYERS (and docs/store.md): {unknown}"


def test_layers_import_downwards_only():
    wrong = []
    for path in modules():
        if component(path) == "__init__":
            continue
        mine = LAYERS[component(path)]
        for line, module, names in featx_imports(path):
            parts = module.split(".")
            if len(parts) == 1:  # `from featx import x`: x is a submodule or a lazy public name
                targets = names
            else:
                targets = [parts[1]]
            for target in targets:
                if LAYERS.get(target, -1) > mine:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} {names or ''}")
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = [f"{p.relative_to(PACKAGE.parent)}:{line} {module} {name}"
             for p in modules() for line, module, names in featx_imports(p)
             for name in names if name.startswith("_") and name != "__version__"]
    assert not wrong, "private names imported across modules:\n" + "\n".join(wrong)


def test_modules_stay_readable():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def imports_h5py(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "h5py" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "h5py":
            return True
    return False


def test_only_the_store_opens_hdf5():
    wrong = [str(p.relative_to(PACKAGE.parent)) for p in modules()
             if component(p) != "store" and imports_h5py(p)]
    assert not wrong, f"h5py used outside featx/store/: {wrong}"


def test_loading_a_head_and_scoring_features_stays_light(tmp_path):
    """A saved head scores features without pulling in the image, HDF5 or training stack."""
    probe = f"""
import sys, numpy as np
import featx
from featx.head_io import save_head
meta = {{"kind": "linear", "classes": ["a", "b"], "feature_dim": 3, "backbone": "x",
         "normalize": "none"}}
save_head({str(tmp_path / "h")!r}, {{"layers.0.weight": np.eye(3, 2, dtype=np.float32),
                                     "layers.0.bias": np.zeros(2, np.float32)}}, meta)
head = featx.load_head({str(tmp_path / "h")!r})
assert head.predict(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == ["a", "b"]
print(",".join(m for m in ("h5py", "PIL", "sklearn", "torch") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
