"""``esimcse export-onnx``: MODEL -> core.onnx_export.export_onnx (export with torch.onnx, int8 with ONNX Runtime) -> a line a file."""

from __future__ import annotations

from typing import Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import MODEL_HELP, Quantize, TrustRemoteCode


def export_onnx_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="A new (or empty) folder to write the whole model into, with onnx/ "
                                         "(default: MODEL's own folder gets onnx/)."),
    quantize: Quantize = "none",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Write MODEL as ONNX in sentence-transformers' layout: onnx/model.onnx; --quantize int8 adds onnx/model_qint8_avx2.onnx
    (what esimcse --quantize int8 runs) and onnx/model_quint8_avx2.onnx (sentence-transformers' avx2 int8).

    The folder then loads with SentenceTransformer(DIR, backend="onnx"), and esimcse encode --backend onnx uses it as it is.
    """
    from esimcse_cli.core.onnx_export import export_onnx

    folder, written = export_onnx(model, output, quantize, trust_remote_code=trust_remote_code)
    for path in written:
        ui.info(f"wrote {path}")
    if not written:
        ui.info(f"{folder}: up to date (exported from these weights already)")
