"""featx export-model | serve: a trained head as one ONNX file, and that file behind HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from featx.cli.core import out
from featx.cli.options import Config
from featx.errors import ConfigError

HeadArg = Annotated[Path, typer.Argument(metavar="HEAD", show_default=False,
                                         help="A trained head (NAME, NAME.safetensors or NAME.json).")]
ModelArg = Annotated[Path, typer.Argument(metavar="MODEL.onnx|HEAD", show_default=False,
                                          help="A model written by export-model, or a head (exported first).")]
ModelOut = Annotated[Path, typer.Option("--out", metavar="FILE.onnx", help="The model file to write.")]
Host = Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")]
Port = Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port.", min=1, max=65535)]
MaxBatch = Annotated[int, typer.Option("--max-batch", metavar="N", min=1,
                                       help="Images per forward: concurrent requests are batched up to N.")]
MaxWait = Annotated[float, typer.Option("--max-wait-ms", metavar="MS", min=0.0,
                                        help="How long a request waits for others to share its forward.")]
TopK = Annotated[int, typer.Option("--top-k", metavar="K", min=1,
                                   help="Classes per image when the request has no ?top_k=.")]
MaxUpload = Annotated[float, typer.Option("--max-upload-mb", metavar="MB", min=0.001,
                                          help="Request bodies above this are refused (413).")]
Threads = Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, show_default="every core",
                                                help="ONNX Runtime threads.")]


def export_model(head: HeadArg, out_file: ModelOut = Path("model.onnx")) -> None:
    """Write a head with its backbone, pooling, standardiser and softmax as one ONNX file."""
    from featx.deploy import export_model as run_export

    found = run_export(head, out_file)
    out.print(f"{found.path}: images uint8 [batch, {found.crop}, {found.crop}, 3] RGB -> probabilities "
              f"over {len(found.classes)} classes (max difference from featx on a probe batch "
              f"{found.max_difference:.1e})", markup=False, highlight=False)


def serve(
    model: ModelArg,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    max_batch: MaxBatch = 32,
    max_wait_ms: MaxWait = 5.0,
    top_k: TopK = 3,
    max_upload_mb: MaxUpload = 20.0,
    threads: Threads = None,
    config: Config = None,
) -> None:
    """Serve an exported model over HTTP: POST /predict, GET /health, GET /metadata (docs/deploy.md)."""
    from featx.deploy.serve import require_server_stack

    require_server_stack()  # before a head is exported: the missing extra is said first
    import tempfile

    from featx.deploy.batching import BatchConfig
    from featx.deploy.model_file import ModelFile
    from featx.deploy.serve import ServeConfig, serve as run_serve

    config = ServeConfig(host, port, BatchConfig(max_batch, max_wait_ms), top_k, max_upload_mb,
                         threads=threads)
    if model.suffix == ".onnx":
        run_serve(ModelFile.open(model, threads), config)
        return
    if model.is_dir():
        raise ConfigError(f"{model}: a folder; give a MODEL.onnx or a head")
    from featx.deploy import export_model as run_export

    with tempfile.TemporaryDirectory(prefix="featx-serve-") as tmp:
        exported = run_export(model, Path(tmp) / "model.onnx")
        run_serve(ModelFile.open(exported.path, threads), config)
