"""featx extract images/s against a bare forward loop of the same model, in one run.

    python benchmarks/extract_throughput.py                        # efficientnet_lite0, CPU/GPU
    python benchmarks/extract_throughput.py --backbone resnet50 --weights none -n 20000 --batch-size 256

The data is ELPV converted to JPEG (quality 95), repeated to `-n` files. The bare loop gets the
same clean views already decoded and resized in memory, and runs only normalise + forward on the
same engine as featx (ONNX Runtime on CPU, torch with autocast + channels_last on CUDA), with the
same batch size. featx is timed from files to
a finished store (decode, transform, forward, HDF5 writes), with nothing cached between runs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from featx.backbones import create_backbone
from featx.data import DatasetOptions, open_dataset
from featx.runtime.device import resolve_device
from featx.extraction.engines import create_engine
from featx.extraction import ExtractConfig, extract
from featx.data.images import image_to_tensor, load_image
from featx.data.transforms import clean_view


def make_jpeg_dataset(folder: Path, n: int) -> Path:
    """n JPEG files from ELPV's PNGs (cycled), in class folders so every sample is labelled."""
    elpv = open_dataset("elpv")
    for i in range(n):
        sample = elpv.samples[i % len(elpv.samples)]
        out = folder / f"c{sample.label}" / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(elpv.abspath(sample)).convert("RGB").save(out, quality=95)
    return folder


def bare_forward(engine, images: torch.Tensor, device: torch.device, batch_size: int) -> float:
    """Images/s of normalise + forward over uint8 tensors already in memory."""
    if device.type == "cuda":
        images = images.pin_memory()
    with torch.inference_mode():
        engine(images[:batch_size]).cpu()  # warm-up: kernels, allocator, ORT graph
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            engine(images[i:i + batch_size]).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="default")
    parser.add_argument("-n", type=int, default=512, help="number of JPEG files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--decode", default="auto")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--engine", default="auto", help="auto | torch | onnxruntime")
    args = parser.parse_args()

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="featx-bench-"))
    try:
        data = make_jpeg_dataset(tmp / "data", args.n)
        ds = open_dataset(data, DatasetOptions(val_frac=0.0, test_frac=0.0))
        backbone = create_backbone(args.backbone, args.weights)
        decoded = torch.stack([clean_view(image_to_tensor(load_image(ds.abspath(s))), backbone.preprocess)
                               for s in ds.samples])
        engine = create_engine(backbone, args.engine, device, amp=args.amp)
        bare = bare_forward(engine, decoded, device, args.batch_size)
        del decoded

        config = ExtractConfig(batch_size=args.batch_size, device=args.device, weights=args.weights,
                               workers=args.workers, decode=args.decode, amp=args.amp,
                               engine=args.engine)
        start = time.perf_counter()
        result = extract(ds, args.backbone, tmp / "stores", config, show_progress=False)
        wall = time.perf_counter() - start
        featx_rate = result.images / wall
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"backbone {args.backbone}, {args.n} ELPV JPEGs, batch {args.batch_size}, {name}, "
          f"engine {engine.name}")
    print(f"  bare forward (in-memory tensors)   {bare:10.1f} img/s")
    print(f"  featx extract (files -> store)     {featx_rate:10.1f} img/s  "
          f"({result.images_per_second:.1f} img/s excluding model load and store creation)")
    print(f"  ratio featx / bare                 {featx_rate / bare:10.3f}")


if __name__ == "__main__":
    main()
