#!/usr/bin/env bash
# Build featx's wheel, install it alone into a clean virtual environment (not editable, not the
# source tree on the path) and run the main commands from there on a few generated images:
# scan, extract, train-head, predict, finetune (with its default augmentation recipe), report.
# Usage: .ci/wheel_smoke.sh  (TORCH_SPEC and PYTHON may be set; `make wheel-smoke` sets them)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

.venv/bin/python -m build --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log"; exit 1; }
if grep -qi "deprecat" "$WORK/build.log"; then
  echo "the build printed deprecation warnings:"; grep -i "deprecat" "$WORK/build.log"; exit 1
fi
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
# shellcheck disable=SC2086
"$BIN/python" -m pip install --quiet $TORCH_SPEC 2>&1 | grep -v "is ignored" || true
"$BIN/python" -m pip install --quiet "$WORK"/dist/featx-*.whl 2>&1 | grep -v "is ignored" || true

cd "$WORK"  # nothing of the checkout on the path from here on
"$BIN/python" - <<'PY'
import pathlib, sys
import featx
where = pathlib.Path(featx.__file__).resolve()
assert "site-packages" in where.parts, f"featx imported from {where}, not the installed wheel"
print(f"featx {featx.__version__} from {where.parent}")
from PIL import Image
import numpy as np
rng = np.random.default_rng(0)
for c, name in enumerate(["cats", "dogs"]):
    for i in range(8):
        folder = pathlib.Path("data") / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) // (c + 1)
        Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
PY
FX="$BIN/featx"
set -x
"$FX" --help >/dev/null
"$FX" scan data --val-frac 0.25 --test-frac 0.25
"$FX" extract data -b resnet18 --weights none --input-size 64 --views 1 --out stores \
  --val-frac 0.25 --test-frac 0.25
STORE=$(ls stores/*.h5)
"$FX" info "$STORE"
"$FX" train-head "$STORE" --epochs 3 --out heads/
HEAD=$(ls heads/*.safetensors)
"$FX" predict data/cats --head "$HEAD" --out predictions.csv
test "$(wc -l < predictions.csv)" -eq 9
"$FX" finetune data --head "$HEAD" --epochs 1 --batch-size 4 --out finetune/ \
  --val-frac 0.25 --test-frac 0.25
"$FX" report heads --out report.html
test -s report.html
set +x
echo "wheel smoke test passed"
