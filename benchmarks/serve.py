"""The exported model and `featx serve`, side by side, on one machine; and the exported model
against `featx predict` on a store's test split.

    python benchmarks/serve.py HEAD --store STORE [--work DIR]

1. agreement: the test split's image files through `featx predict` (decode + the store's resize,
   Pillow's or, for a store made before issue 29, torchvision's + the ONNX Runtime backbone +
   numpy head) and through the docs/deploy.md path (Pillow resize + the exported file): max |prob
   difference|, top-1 agreement.
2. warm `Head.predict_proba` of one image (median of 10, after one warm-up call).
3. the bare ORT forward at batch 32 (images/s), then `featx serve` under aiohttp at concurrency
   1, 8 and 32 (requests/s, images/s, p50/p99 latency; one image per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import featx
from featx.deploy.images import input_batch
from featx.deploy.model_file import ModelFile
from featx.store import FeatureStore


def test_images(store: Path, limit: int | None = None) -> list[str]:
    """Absolute paths of the store's test-split images (all splits when it has no test rows)."""
    with FeatureStore(store) as st:
        rows = st.rows()
        root = Path(st.attrs["dataset_root"])
        test = rows[st.splits[rows] == "test"]
        return [str(root / p) for p in st.paths_of((test if len(test) else rows)[:limit])]


def agreement(head, model: ModelFile, store: Path) -> dict:
    paths = test_images(store)
    found = featx.predict(head, paths)
    by_path = dict(zip(found.paths, found.scores))
    want = np.stack([by_path[str(Path(p).resolve())] for p in paths])
    got = np.concatenate([model(input_batch([Path(p).read_bytes() for p in paths[i:i + 64]], model.spec))
                          for i in range(0, len(paths), 64)])
    return {"images": len(paths), "max_abs_prob_diff": float(np.abs(got - want).max()),
            "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean())}


def warm_predict_proba(head, image: str) -> dict:
    head.predict_proba([image])  # warm-up: backbone, export cache, engine check
    times = []
    for _ in range(10):
        t = time.perf_counter()
        head.predict_proba([image])
        times.append(time.perf_counter() - t)
    return {"predict_proba_one_image_ms_median": 1000 * statistics.median(times)}


def bare_forward(model: ModelFile, images: list[bytes], batch: int = 32, rounds: int = 10) -> dict:
    x = input_batch((images * batch)[:batch], model.spec)
    model(x)
    t = time.perf_counter()
    for _ in range(rounds):
        model(x)
    return {"bare_ort_images_per_s_batch32": batch * rounds / (time.perf_counter() - t)}


async def load(url: str, image: bytes, concurrency: int, requests: int) -> dict:
    """`requests` POSTs of `image`, `concurrency` at a time, from aiohttp: httpx's AsyncClient
    costs more CPU than the service at 32 connections (encode/httpx#3215; GET /health on the
    2-core box: 136 req/s from httpx, 1,837 from aiohttp), and the client shares the server's cores."""
    import aiohttp

    latencies: list[float] = []
    headers = {"content-type": "image/png"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                t = time.perf_counter()
                async with client.post(url, data=image, headers=headers) as r:
                    r.raise_for_status()
                    await r.read()
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(worker(2) for _ in range(concurrency)))  # warm-up: open every connection
        latencies.clear()
        t = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - t
    ms = sorted(1000 * x for x in latencies)
    return {"concurrency": concurrency, "requests_per_s": len(ms) / wall, "p50_ms": ms[len(ms) // 2],
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))]}


def serve_load(model_path: Path, image: bytes, requests: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "featx", "serve", str(model_path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/predict"
        return [asyncio.run(load(url, image, c, max(requests, 4 * c))) for c in (1, 8, 32)]
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("head")
    parser.add_argument("--store", required=True, type=Path, help="the head's store: its test split is compared")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-serve"))
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--skip", nargs="*", default=[], choices=["agreement", "warm", "bare", "serve"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    head = featx.load_head(args.head)
    model_path = args.work / "model.onnx"
    head.to_onnx(model_path)
    model = ModelFile.open(model_path)
    results: dict = {"machine": f"{os.cpu_count()}-core CPU", "model": head.backbone}
    sample = test_images(args.store, 64)
    image = Path(sample[0]).read_bytes()
    steps = {"agreement": lambda: {"agreement": agreement(head, model, args.store)},
             "warm": lambda: warm_predict_proba(head, sample[0]),
             "bare": lambda: bare_forward(model, [Path(p).read_bytes() for p in sample]),
             "serve": lambda: {"serve": serve_load(model_path, image, args.requests)}}
    for name, step in steps.items():
        if name not in args.skip:
            results.update(step())
            print(json.dumps(results), flush=True)  # each step as it ends: a long run keeps its numbers


if __name__ == "__main__":
    main()
