"""``esimcse encode``: texts -> check_encode_args -> load_encoder -> encode_file (a bar once rows flow) -> one line."""

from __future__ import annotations

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import BatchSize, Device, EncodingErrors, MaxLength, Model, Pooling, TextColumn, TrustRemoteCode
from esimcse_cli.core.models import DEFAULT_MODEL


def encode(
    input: str = typer.Argument("-", help="Text file (one text per line), .csv/.tsv/.jsonl/.parquet, or - for stdin."),
    output: str = typer.Option(..., "-o", "--output", help="Output .npy path, or - for stdout."),
    model: Model = DEFAULT_MODEL,
    pooling: Pooling = None,
    max_length: MaxLength = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    dtype: str = typer.Option("float32", "--dtype", help="Output array dtype: float32 or float16."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="L2-normalise each row."),
    text_column: TextColumn = None,
    encoding_errors: EncodingErrors = "strict",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Encode texts to a float32 .npy of shape (N, dim), rows in input order."""
    from esimcse_cli.core.embed import check_encode_args, encode_file
    from esimcse_cli.core.models import load_encoder

    check_encode_args(input, output, dtype=dtype, batch_size=batch_size, encoding_errors=encoding_errors, text_column=text_column)
    enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
    with ui.deferred_progress("encoding", unit="sent") as start:
        stats = encode_file(
            enc, input, output, model=model, text_column=text_column, batch_size=batch_size, normalize=normalize,
            dtype=dtype, encoding_errors=encoding_errors, progress_start=start,
        )
    if output != "-":
        ui.info(f"wrote {stats.output}: {stats.rows} x {stats.dim} {dtype} ({enc.pooling} pooling, max length {enc.max_length})")
