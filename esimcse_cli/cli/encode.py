"""``esimcse encode``: texts -> core.embed.encode (checks, torchrun's ranks, load_encoder, encode_file; a bar once
rows flow) -> one line, from rank 0."""

from __future__ import annotations

from typing import Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import (Backend, choice_list, BatchSize, Device, EncodingErrors, MaxLength, Model, Pooling, Quantize, TextColumn,
                                     TrustRemoteCode)
from esimcse_cli.core.models import DEFAULT_MODEL
from esimcse_cli.core.precision import PRECISIONS


def encode(
    input: str = typer.Argument("-", help="Text file (one text per line), .csv/.tsv/.jsonl/.parquet, or - for stdin."),
    output: str = typer.Option(..., "-o", "--output", help="Output .npy path, or - for stdout."),
    model: Model = DEFAULT_MODEL,
    pooling: Pooling = None,
    max_length: MaxLength = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16: the older name of --precision's two float choices."),
    precision: Optional[str] = typer.Option(None, "--precision", help=f"{choice_list(PRECISIONS)} (default float32): int8/uint8 "
                                            "calibrated per dimension on the rows themselves (the ranges go to the sidecar); "
                                            "binary/ubinary one bit a dimension, 8 to a byte."),
    truncate_dim: Optional[int] = typer.Option(None, "--truncate-dim", help="Keep the first D dimensions (before the normalisation)."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise each row."),
    text_column: TextColumn = None,
    encoding_errors: EncodingErrors = "strict",
    trust_remote_code: TrustRemoteCode = False,
    backend: Backend = "torch",
    quantize: Quantize = "none",
) -> None:
    """Encode texts to a float32 .npy of shape (N, dim), rows in input order.

    Across processes: torchrun --nproc_per_node N -m esimcse_cli encode big.txt -o big.npy
    """
    from esimcse_cli.core.embed import encode as core_encode

    with ui.deferred_progress("encoding", unit="sent") as start:
        stats, enc, ranks = core_encode(
            input, output, model=model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code,
            backend=backend, quantize=quantize, progress_start=start, on_export=ui.info, text_column=text_column,
            batch_size=batch_size, normalize=normalize, dtype=dtype, encoding_errors=encoding_errors, precision=precision,
            truncate_dim=truncate_dim,
        )
    if output != "-" and ranks.is_main:
        across = f", {ranks.world_size} processes" if ranks.enabled else ""
        ui.info(f"wrote {stats.output}: {stats.rows} x {stats.dim} {stats.precision} ({enc.pooling} pooling, max length "
                f"{enc.max_length}, {enc.backend}{across})")
