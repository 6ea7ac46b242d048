"""`featx serve`: an exported classifier behind HTTP (FastAPI on uvicorn).

    POST /predict     one image as the raw body (image/*, application/octet-stream), or one or
                      more as multipart/form-data files; ?top_k=K -> JSON top-k per image
    GET  /health      {"status": "ok"}
    GET  /metadata    classes, preprocessing, provenance, batching

Concurrent requests are batched (featx.deploy.batching). A bad request (empty, not an image,
truncated, a decompression bomb, too large, a wrong content type) gets a 4xx JSON
`{"error": "..."}` naming the problem and nothing else changes; uvicorn stops cleanly on SIGTERM
(the requests in flight are answered first).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request,
# imported inside create_app) as objects.

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np

from featx.deploy.batching import BatchConfig, DynamicBatcher
from featx.deploy.images import input_batch
from featx.deploy.model_file import ModelFile
from featx.errors import ConfigError, ImageError

RAW_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"
log = logging.getLogger("featx.serve")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    batch: BatchConfig = BatchConfig()
    top_k: int = 3  # classes per image when the request does not say
    max_upload_mb: float = 20.0  # a request body above this is refused (413)
    max_images: int = 64  # images per request
    threads: int | None = None  # ONNX Runtime intra-op threads (None: every core)


class RequestProblem(Exception):
    """A request that cannot be served: answered `status` with {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def require_server_stack() -> None:
    """The one-line error for a featx installed without its server extra."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401 - python-multipart, for multipart/form-data uploads
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"featx serve needs the server stack ({exc.name} is not installed): "
                          "pip install 'featx[serve]'") from None


def create_app(model: ModelFile, config: ServeConfig = ServeConfig()):
    """The FastAPI app serving `model` (the batcher starts and stops with the app's lifespan)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    batcher = DynamicBatcher(model, config.batch)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="featx serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    @app.exception_handler(RequestProblem)
    async def problem(request: Request, exc: RequestProblem):
        log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.message)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid value')}"}, status_code=422)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return {**model.metadata(), "batching": {"max_batch": config.batch.max_batch,
                                                 "max_wait_ms": config.batch.max_wait_ms,
                                                 "batches_run": batcher.batches}}

    @app.post("/predict")
    async def predict(request: Request, top_k: int | None = None):
        k = config.top_k if top_k is None else top_k
        if k < 1:
            raise RequestProblem(422, f"top_k: must be at least 1, got {k}")
        with batcher.arriving():
            names, blobs = await read_images(request, config)
            try:
                batch = await asyncio.to_thread(input_batch, blobs, model.spec, names)
            except ImageError as exc:
                status = 413 if "decompression bomb" in exc.reason else 400
                raise RequestProblem(status, str(exc)) from None
        probs = await batcher.submit(batch)
        return {"predictions": [{"image": name, "top": top_classes(row, model.classes, k)}
                                for name, row in zip(names, probs)]}

    return app


def top_classes(probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": classes[i], "probability": round(float(probs[i]), 6)} for i in order]


async def read_images(request, config: ServeConfig) -> tuple[list[str], list[bytes]]:
    """(names, encoded images) of a request: its raw body, or the files of a multipart form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith(RAW_TYPES) or kind == MULTIPART):
        raise RequestProblem(415, f"content type {kind or 'none'!r}: send an image as the body "
                                  f"(image/*, application/octet-stream) or files as {MULTIPART}")
    body = await read_body(request, int(config.max_upload_mb * 2 ** 20))
    if not body:
        raise RequestProblem(400, "empty request body: send an image")
    if kind != MULTIPART:
        return ["image 1"], [body]
    return await _form_images(request, body, config.max_images)


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes; read to its end first, so the client gets the
    answer rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit or (declared.isdigit() and int(declared) > limit):
        raise RequestProblem(413, f"request body of {size / 2 ** 20:.1f} MB is over the "
                                  f"{limit / 2 ** 20:g} MB limit (featx serve --max-upload-mb)")
    return b"".join(chunks)


async def _form_images(request, body: bytes, max_images: int) -> tuple[list[str], list[bytes]]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once():
        yield body

    try:
        form = await MultiPartParser(request.headers, once(), max_files=max_images).parse()
    except MultiPartException as exc:
        raise RequestProblem(400, f"malformed multipart body ({exc.message})") from None
    files = [(f"{key} ({v.filename})" if v.filename else key, v) for key, v in form.multi_items()
             if isinstance(v, UploadFile)]
    if not files:
        raise RequestProblem(400, "the multipart form holds no files: send images as file fields")
    return [name for name, _ in files], [await v.read() for _, v in files]


def serve(model: ModelFile, config: ServeConfig = ServeConfig()) -> None:
    """Run the service until SIGTERM or Ctrl-C."""
    import signal
    import sys

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler
    # it found: this one makes that a normal exit (status 0), not a death by signal (-15).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(model, config), host=config.host, port=config.port, log_level="info",
                timeout_graceful_shutdown=10)
