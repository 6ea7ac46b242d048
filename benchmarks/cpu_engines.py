"""CPU engines side by side: torch eager, torch channels_last, ONNX Runtime, and featx extract.

    python benchmarks/cpu_engines.py                       # lite0, resnet50, convnext_tiny
    python benchmarks/cpu_engines.py -n 2624 --backbones efficientnet_lite0

Bare forwards run over in-memory uint8 batches (batch 32, the backbone's input size); featx
extract runs files (ELPV PNGs, a stratified subset of `-n`) to a finished store with its default
engine (ONNX Runtime on CPU). resnet50 and convnext_tiny use random-init weights (no hub here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from featx.backbones import create_backbone
from featx.data import open_dataset, subset
from featx.extraction.engines import OnnxEngine, TorchEngine
from featx.extraction import ExtractConfig, extract
from featx.store import FeatureStore

CPU = torch.device("cpu")


def rate(engine, images: torch.Tensor, batch: int) -> float:
    engine(images[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        engine(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+",
                        default=["efficientnet_lite0", "resnet50", "convnext_tiny"])
    parser.add_argument("-n", type=int, default=1024, help="ELPV images for featx extract")
    parser.add_argument("--bare", type=int, default=128, help="images per bare-forward timing")
    args = parser.parse_args()
    elpv = open_dataset("elpv")
    data = subset(elpv, args.n) if args.n < len(elpv.samples) else elpv
    print(f"{torch.get_num_threads()} CPU threads; bare: batch 32 over {args.bare} images; "
          f"featx extract: {len(data.samples)} ELPV PNGs, batch 64")
    print(f"{'backbone':20} {'eager':>8} {'ch_last':>8} {'ORT':>8} {'featx':>8}   img/s "
          "(featx: files to finished store)")
    for name in args.backbones:
        weights = "default" if name.startswith("efficientnet_lite") else "none"
        backbone = create_backbone(name, weights)
        size = backbone.preprocess.input_size
        images = torch.randint(0, 256, (args.bare, 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        eager = rate(TorchEngine(backbone, CPU, channels_last=False), images, 32)
        channels_last = rate(TorchEngine(backbone, CPU, channels_last=True), images, 32)
        ort = rate(OnnxEngine(backbone), images, 32)
        with tempfile.TemporaryDirectory() as tmp:
            r = extract(data, name, Path(tmp), ExtractConfig(weights=weights), show_progress=False)
            with FeatureStore(r.store) as store:
                used = store.attrs["engine"]
        print(f"{name:20} {eager:8.1f} {channels_last:8.1f} {ort:8.1f} {r.images_per_second:8.1f}"
              f"   (featx engine: {used})", flush=True)


if __name__ == "__main__":
    main()
