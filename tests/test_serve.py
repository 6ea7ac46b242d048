"""`featx serve`: a real uvicorn process on a free port, a real HTTP client, concurrent requests
answered as the ONNX session answers them, bad requests refused in JSON without harm, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from featx.deploy.batching import BatchConfig, DynamicBatcher
from featx.deploy.images import input_batch
from featx.deploy.model_file import ModelFile
from tests.test_deploy import CLASSES, exported  # noqa: F401 (the module fixture)

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(exported):  # noqa: F811
    root, head, path = exported
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "featx", "serve", str(path), "--port", str(port),
                             "--max-batch", "8", "--max-wait-ms", "20", "--max-upload-mb", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail(f"featx serve exited: {proc.stdout.read()}")
    yield url, proc, ModelFile.open(path), sorted(root.rglob("*.png"))
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def expected(model: ModelFile, files) -> np.ndarray:
    return model(input_batch([f.read_bytes() for f in files], model.spec))


def check(answer: dict, row: np.ndarray) -> None:
    order = np.argsort(-row, kind="stable")
    assert [t["class"] for t in answer["top"]] == [CLASSES[i] for i in order[:len(answer["top"])]]
    np.testing.assert_allclose([t["probability"] for t in answer["top"]], row[order[:len(answer["top"])]],
                               atol=2e-6)


def test_concurrent_bad_then_good_requests_and_a_clean_sigterm(server):
    url, proc, model, files = server
    want = expected(model, files)

    def post(i: int) -> dict:
        r = httpx.post(f"{url}/predict?top_k=3", content=files[i].read_bytes(),
                       headers={"content-type": "image/png"}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(post, range(len(files))))
    for answer, row in zip(answers, want):
        check(answer, row)

    several = httpx.post(f"{url}/predict", timeout=120,
                         files=[("cells", (f.name, f.read_bytes(), "image/png")) for f in files[:3]])
    assert several.status_code == 200
    got = several.json()["predictions"]
    assert [a["image"] for a in got] == [f"cells ({f.name})" for f in files[:3]]
    for answer, row in zip(got, want[:3]):
        check(answer, row)

    good = files[0].read_bytes()
    bad = [  # (body, content type, status, words the error must hold)
        (b"", "image/png", 400, "empty"),
        (b"hello, this is not a picture", "image/png", 400, "not an image"),
        (good[:len(good) // 2], "image/png", 400, "truncated"),
        (png_header(30000, 30000), "image/png", 413, "decompression bomb"),
        (b"\0" * (3 * 2 ** 20), "image/png", 413, "over the 2 MB limit"),
        (good, "text/plain", 415, "content type 'text/plain'"),
    ]
    for body, kind, status, words in bad:
        r = httpx.post(f"{url}/predict", content=body, headers={"content-type": kind}, timeout=120)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["error"]
    big = httpx.post(f"{url}/predict", content=b"\0" * (50 * 2 ** 20), headers={"content-type": "image/png"},
                     timeout=120)
    assert big.status_code == 413
    assert httpx.post(f"{url}/predict?top_k=0", content=good, headers={"content-type": "image/png"}).status_code == 422

    check(post(1), want[1])  # still serving, same answers
    meta = httpx.get(f"{url}/metadata").json()
    assert meta["classes"] == list(CLASSES) and meta["provenance"]["backbone"] == "tiny_features"
    assert meta["preprocess"] == {"resize": model.spec.resize, "crop": model.spec.crop,
                                  "interpolation": "BILINEAR", "mode": "RGB", "resize_with": "pillow"}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = proc.stdout.read()
    assert "Traceback" not in log and "decompression bomb" in log


def recording_model():
    """(sizes, run): a stand-in model that answers each image's first value and records the
    size of every batch it is run on."""
    sizes: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return x.reshape(len(x), -1)[:, :1].astype(np.float32)

    return sizes, run


def test_a_batch_is_cut_at_max_batch_and_a_large_request_runs_alone():
    sizes, run = recording_model()

    async def main():
        batcher = DynamicBatcher(run, BatchConfig(max_batch=4, max_wait_ms=50))
        batcher.start()
        requests = [np.full((1, 2, 2, 3), i, np.uint8) for i in range(5)] + [np.full((6, 2, 2, 3), 9, np.uint8)]
        out = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert sizes == [4, 1, 6]  # the 6-image request would overfill the second batch: it waits its turn
    assert [o[:, 0].tolist() for o in out] == [[i] for i in range(5)] + [[9] * 6]


def test_a_lone_request_runs_at_once_and_one_on_its_way_is_waited_for():
    sizes, run = recording_model()

    async def main():
        # max_wait_ms of a minute: a batch cut before it is up was cut by the nobody-else rule.
        batcher = DynamicBatcher(run, BatchConfig(max_batch=8, max_wait_ms=60_000))
        batcher.start()
        await asyncio.wait_for(batcher.submit(np.zeros((1, 2, 2, 3), np.uint8)), 30)

        async def late():  # read and decoded while the first request waits in the batch
            with batcher.arriving():
                await asyncio.sleep(0.05)
                image = np.ones((1, 2, 2, 3), np.uint8)
            return await batcher.submit(image)

        async def early():
            with batcher.arriving():
                image = np.full((1, 2, 2, 3), 2, np.uint8)
            return await batcher.submit(image)

        pending = asyncio.ensure_future(late())
        await asyncio.sleep(0)  # late() is on its way before early() submits
        out = await asyncio.wait_for(asyncio.gather(early(), pending), 30)
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert sizes == [1, 2]  # the lone request alone, at once; the second batch waited for late()
    assert [o[:, 0].tolist() for o in out] == [[2], [1]]


def test_serve_without_the_extra_says_what_to_install(tmp_path):
    blocker = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
               "  if n.split('.')[0] in ('fastapi', 'uvicorn'): raise ImportError(n)\n"
               "sys.meta_path.insert(0, B())\nfrom featx.cli import main\nsys.argv = ['featx', 'serve', 'm.onnx']\nmain()")
    run = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode != 0 and "pip install 'featx[serve]'" in run.stderr
    assert "Traceback" not in run.stderr
