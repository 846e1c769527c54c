"""``encode`` as a function: a text file (or stdin) in, a ``.npy`` of sentence vectors out.

Memory stays bounded: texts are streamed in chunks, vectors go into a memory-mapped ``.npy`` beside
the target, and that file is renamed into place only when complete (``-`` streams the finished
file to stdout). Just before that rename, the sidecar ``OUT.npy.json`` (:mod:`~esimcse_cli.core.search`)
records the model, pooling and shape, so that ``search`` encodes its queries the same way. An
interrupted run leaves no partial output: neither the matrix nor its sidecar; a previous pair under the
same name stays whole (its sidecar is set aside, not deleted, until the new matrix is in place).

Under ``torchrun --nproc_per_node N -m esimcse_cli encode IN -o OUT.npy`` every rank reads the input and
tokenises each chunk, and encodes every N-th of the chunk's length-sorted batches (:meth:`SentenceEncoder.encode`'s
``shard``): the batches are those of one process, so the rows are too, byte for byte. Rank 0 creates the
temporary ``.npy`` and tells the others its name; each rank writes its rows at their offsets through its own
map of it; rank 0 renames it into place once every rank has flushed. A failed or interrupted rank leaves
nothing: torchrun stops the others, and rank 0 removes the temporary file as it unwinds.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from esimcse_cli.core import corpus, distributed, precision as compact, search
from esimcse_cli.core.atomic import atomic_path, check_output_path, reserve_space
from esimcse_cli.core.encoder import SentenceEncoder
from esimcse_cli.core.errors import EsimcseError, InputError, first_line, naming_stdout

log = logging.getLogger("esimcse")

LONG_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Layout:
    """What is stored: the precision, and the dimensions kept (``--truncate-dim``, else the model's)."""

    precision: str
    dim: int

    @property
    def two_pass(self) -> bool:
        return self.precision in compact.CALIBRATED + compact.BINARY


@dataclass
class EncodeStats:
    rows: int = 0
    dim: int = 0
    precision: str = "float32"
    blank: int = 0
    long_lines: list[int] = field(default_factory=list)
    output: str = ""


def _watch(texts: Iterator[tuple[int, str]], stats: EncodeStats) -> Iterator[str]:
    for lineno, text in texts:
        if not text.strip():
            stats.blank += 1
        elif len(text) > LONG_LINE_BYTES:
            stats.long_lines.append(lineno)
        yield text


def check_encode_args(
    source: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    dtype: str | None = "float32",
    batch_size: int = 64,
    encoding_errors: str = "strict",
    text_column: str | None = None,
    world_size: int = 1,
    precision: str | None = None,
    truncate_dim: int | None = None,
) -> str:
    """Refuse bad arguments before any model is loaded or any work is done (``world_size``: torchrun's ranks).
    Returns the precision to store (``--precision``, or ``--dtype``)."""
    stored = compact.check_precision(precision, dtype, truncate_dim)
    if batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    corpus.check_encoding_errors(encoding_errors)
    if world_size > 1 and (source is None or str(source) in ("-", "") or str(output) == "-"):
        raise InputError("under torchrun, encode needs an input file and -o FILE.npy (every rank reads the file and "
                         "writes into the one output; stdin and stdout are not shared)")
    if source is None or str(source) == "-":
        corpus.check_stdin()
    else:
        corpus.check_input(source)
        if text_column is not None and corpus.input_format(source) == "txt":
            raise InputError(f"{source}: --text-column applies to csv, tsv, jsonl and parquet files, not plain text")
    if str(output) == "-":
        if _isatty(sys.stdout):
            raise InputError("-o -: stdout is a terminal; redirect it (> out.npy) or give -o FILE.npy (the output is binary .npy)")
    else:
        check_output_path(output)
        if source is not None and str(source) != "-" and Path(output).exists() and os.path.samefile(source, output):
            raise InputError(f"{output}: is also the input file; writing there would destroy it (choose another -o)")
    return stored


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def encode_file(
    encoder: SentenceEncoder,
    source: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    text_column: str | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    dtype: str | None = "float32",
    encoding_errors: str = "strict",
    chunk_size: int = 16384,
    progress_start: Callable[[int], Callable[[int], None]] | None = None,
    ranks: distributed.DistInfo | None = None,
    precision: str | None = None,
    truncate_dim: int | None = None,
) -> EncodeStats:
    """Encode every text of ``source`` (path, or ``-``/``None`` for stdin) into ``output`` (path, or ``-`` for stdout).

    ``model`` is the ``--model`` spec that loaded ``encoder``; the sidecar records it (``None``: no sidecar,
    the spec being unknown). ``progress_start(total)`` is called once with the row count and returns the
    per-batch ``advance`` callback. ``ranks``: the torchrun process group this process is one rank of (see the
    module's docstring); only rank 0 writes the sidecar, renames the file and shows progress.
    """
    ranks = ranks or distributed.DistInfo()
    stored = check_encode_args(source, output, dtype=dtype, batch_size=batch_size, encoding_errors=encoding_errors,
                               text_column=text_column, world_size=ranks.world_size, precision=precision, truncate_dim=truncate_dim)
    layout = Layout(stored, compact.check_truncate_dim(truncate_dim, encoder.dim))
    to_stdout = str(output) == "-"
    if not to_stdout:
        out_path = Path(output)
        if out_path.suffix != ".npy":
            log.warning("%s does not end in .npy; writing NumPy .npy format anyway", out_path)
    display = "<stdin>" if source is None or str(source) == "-" else str(source)
    stats = EncodeStats(dim=layout.dim, output=str(output), precision=stored)
    with corpus.materialize(source) as path:
        n = corpus.count_texts(path, text_column, encoding_errors, display=display)
        if n == 0:
            raise InputError(f"{display}: no texts (the input is empty); nothing to encode")
        stats.rows = n
        advance = progress_start(n) if progress_start and ranks.is_main else None
        if advance is not None and ranks.enabled:
            advance = _ForAllRanks(advance, n, ranks.world_size)
        texts = _watch(corpus.iter_texts(path, text_column, encoding_errors, display=display), stats)
        if not ranks.is_main:
            _write_rows_of_rank(encoder, texts, n, batch_size, normalize, chunk_size, ranks, source=display,
                                output_dir=Path(output).parent, layout=layout)
            return stats
        if to_stdout:
            fd, tmp = tempfile.mkstemp(prefix="esimcse-", suffix=".npy")
            os.close(fd)
            try:
                _write_npy(encoder, texts, Path(tmp), n, batch_size, normalize, layout, chunk_size, advance,
                           display=f"{tmp} (temporary file for -o -, in $TMPDIR)", source=display)
                with open(tmp, "rb") as f, naming_stdout():
                    shutil.copyfileobj(f, sys.stdout.buffer, length=1 << 20)
                    sys.stdout.buffer.flush()
            finally:
                Path(tmp).unlink(missing_ok=True)
            log.debug("-o -: no %s sidecar (stdout has no file beside it)", search.SIDECAR_SUFFIX)
        else:
            meta = None if model is None else search.embedding_meta(
                model, pooling=encoder.pooling, max_length=encoder.max_length, normalize=normalize, dim=layout.dim,
                rows=n, dtype=stored, source=None if display == "<stdin>" else str(Path(display).resolve()),
                model_dim=encoder.dim, truncate_dim=truncate_dim,
                backend="onnx" if encoder.backend.startswith("onnx") else "torch", quantize=getattr(encoder, "quantize", "none"))
            _write_npy_and_sidecar(encoder, texts, out_path, meta, n, batch_size, normalize, layout, chunk_size,
                                   advance, source=display, ranks=ranks)
    if stats.blank:
        log.warning("%s: %d blank line(s); each still gets a row (the vector of an empty text)", display, stats.blank)
    if stats.long_lines:
        log.warning(
            "%s: %d line(s) over 1 MB (first: line %d) were truncated to %d tokens",
            display, len(stats.long_lines), stats.long_lines[0], encoder.max_length,
        )
    return stats


def _write_npy_and_sidecar(encoder, texts, out_path: Path, meta: dict | None, n: int, batch_size, normalize, layout: Layout,
                           chunk_size, advance, source: str, ranks: distributed.DistInfo | None = None) -> None:
    """The matrix into a temporary file, its sidecar into place, then the matrix: both, or neither where it fails.

    The previous sidecar (of the matrix this one replaces) is moved aside first and put back where the new
    matrix does not arrive, so that a failure leaves the previous matrix with its own sidecar.
    """
    side = search.sidecar_path(out_path)
    previous = sidecar = None
    try:
        with atomic_path(out_path, suffix=".npy") as tmp:
            ranges = _write_npy(encoder, texts, tmp, n, batch_size, normalize, layout, chunk_size, advance,
                                display=out_path, source=source, ranks=ranks)
            if meta is not None and ranges is not None:
                meta = dict(meta, ranges=ranges.tolist())  # int8/uint8: the calibration, for search's queries
            previous = _set_aside(side)  # without a new sidecar (no model spec), none stays: it would describe the old matrix
            if meta is not None:
                sidecar = _sidecar_into_place(out_path, meta)
    except BaseException:
        # the new sidecar describes a matrix that never arrived; beside the old one it would mislead search
        if sidecar is not None:
            sidecar.unlink(missing_ok=True)
        if previous is not None:
            try:
                os.replace(previous, side)
            except OSError:  # the folder went away: nothing to put it back into
                pass
        raise
    if previous is not None:
        previous.unlink(missing_ok=True)


def _set_aside(path: Path) -> Path | None:
    """Rename an existing ``path`` to a temporary name beside it (None where there is none)."""
    if not path.exists():
        return None
    fd, aside = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
    os.close(fd)
    try:
        os.replace(path, aside)
    except BaseException:
        Path(aside).unlink(missing_ok=True)
        raise
    return Path(aside)


def _sidecar_into_place(out_path: Path, meta: dict) -> Path:
    """Write the sidecar; a failure (a full disk, the folder removed) is reported of the ``.npy`` the user asked for."""
    side = search.sidecar_path(out_path)
    try:
        return search.write_sidecar(out_path, meta)
    except InputError as exc:
        message = str(exc)
        if message.startswith(f"{side}:"):
            raise InputError(f"{out_path}:{message[len(str(side)) + 1:]}") from None
        raise


def _write_npy(encoder, texts, path: Path, n: int, batch_size, normalize, layout: Layout, chunk_size, advance,
               display=None, source: str = "input", ranks: distributed.DistInfo | None = None):
    """The rows into ``path`` at ``layout``'s precision; returns the int8/uint8 calibration (``None`` otherwise).

    The float rows go straight into ``path``, or for a compact precision into a float32 file beside it, which is
    then calibrated and quantized into ``path`` chunk by chunk and removed (memory stays bounded either way)."""
    display = display if display is not None else path
    ranks = ranks or distributed.DistInfo()
    rows_path = path if not layout.two_pass else _temporary_beside(path, display)
    try:
        arr = _open_rows(rows_path, (n, layout.dim), np.float16 if layout.precision == "float16" else np.float32, display)
        distributed.broadcast_object(rows_path.name, ranks)  # the other ranks map the same file, beside their own -o
        _encode_rows(encoder, texts, arr, n, batch_size, normalize, chunk_size, advance, ranks, source, layout.dim)
        del arr
        distributed.wait_all(ranks)  # every rank's rows are in the file before it is renamed into place
        if isinstance(advance, _ForAllRanks):
            advance.finish()
        return _quantize_file(rows_path, path, layout, display) if layout.two_pass else None
    finally:
        if rows_path != path:
            rows_path.unlink(missing_ok=True)


def _open_rows(path: Path, shape: tuple[int, int], dtype, display) -> np.ndarray:
    try:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    except OSError as exc:
        raise InputError(f"{display}: {exc.strerror or exc}") from None
    # the map is sparse: reserve its blocks now, or a full disk is SIGBUS halfway through instead of an error
    reserve_space(path, arr.offset + arr.nbytes, start=arr.offset, display=display)
    return arr


def _temporary_beside(path: Path, display) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".f32.npy", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{display}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    os.close(fd)
    return Path(tmp)


def _quantize_file(rows_path: Path, path: Path, layout: Layout, display, chunk: int = 65536):
    rows = np.load(rows_path, mmap_mode="r")
    ranges = compact.calibrate(rows) if layout.precision in compact.CALIBRATED else None
    out = _open_rows(path, compact.stored_shape(len(rows), layout.dim, layout.precision), compact.STORED[layout.precision], display)
    for start in range(0, len(rows), chunk):
        out[start:start + chunk] = compact.quantize(rows[start:start + chunk], layout.precision, ranges)
    out.flush()
    del out, rows
    return ranges


def _write_rows_of_rank(encoder, texts, n: int, batch_size, normalize, chunk_size, ranks: distributed.DistInfo,
                        source: str, output_dir: Path, layout: Layout) -> None:
    """A rank other than 0: its batches' rows into the temporary file rank 0 created and named."""
    path = Path(output_dir) / distributed.broadcast_object(None, ranks)
    try:
        arr = np.load(path, mmap_mode="r+")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: rank {ranks.rank} cannot open rank 0's output ({first_line(exc, type(exc).__name__)}); "
                         "every rank must see the same output folder") from None
    if arr.shape != (n, layout.dim):
        raise InputError(f"{source}: rank {ranks.rank} counted {n} rows of {layout.dim} and rank 0 {arr.shape[0]} of "
                         f"{arr.shape[1]}; every rank must read the same file with the same model")
    _encode_rows(encoder, texts, arr, n, batch_size, normalize, chunk_size, None, ranks, source, layout.dim)
    del arr
    distributed.wait_all(ranks)


def _encode_rows(encoder, texts, arr, n: int, batch_size, normalize, chunk_size, advance, ranks: distributed.DistInfo,
                 source: str, truncate_dim: int | None = None) -> None:
    shard = (ranks.rank, ranks.world_size) if ranks.enabled else None
    written = encoder.encode_stream(_at_most(texts, n, source), arr, batch_size=batch_size, normalize=normalize,
                                    chunk_size=chunk_size, progress=advance, shard=shard, truncate_dim=truncate_dim)
    if written != n:
        raise InputError(f"{source}: changed while it was read (had {n} lines when counted, {written} when encoded); run again")
    arr.flush()


class _ForAllRanks:
    """Rank 0's bar for the whole run: its own rows times the ranks (they share the batches in turn), capped at
    ``n``; :meth:`finish` fills it once every rank is done."""

    def __init__(self, advance: Callable[[int], None], n: int, world: int):
        self.advance, self.n, self.world, self.done = advance, n, world, 0

    def __call__(self, k: int) -> None:
        k = min(k * self.world, self.n - self.done)
        self.done += k
        self.advance(k)

    def finish(self) -> None:
        self(self.n)


def _at_most(texts: Iterator[str], n: int, source: str) -> Iterator[str]:
    """``texts``, refusing a text beyond the ``n`` counted (the input grew while it was read)."""
    for i, text in enumerate(texts):
        if i >= n:
            raise InputError(f"{source}: changed while it was read (more than the {n} lines counted); run again")
        yield text


def encode(
    source: str | os.PathLike | None,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = "auto",
    trust_remote_code: bool = False,
    backend: str = "torch",
    quantize: str | None = None,
    progress_start: Callable[[int], Callable[[int], None]] | None = None,
    on_export: Callable[[str], None] | None = None,
    **options,
) -> tuple[EncodeStats, SentenceEncoder, distributed.DistInfo]:
    """``esimcse encode`` as one call: check the arguments, join torchrun's ranks where there are several, load the
    encoder (rank 0 first, so that an ONNX export happens once), :func:`encode_file`. ``options`` are
    :func:`encode_file`'s (``text_column``, ``batch_size``, ``normalize``, ``dtype``, ``encoding_errors``).
    Returns the stats, the encoder and the ranks (the caller reports on rank 0 only)."""
    from esimcse_cli.core import onnx_export
    from esimcse_cli.core.models import load_encoder, resolve_device

    check_encode_args(source, output, world_size=distributed.env_world_size(),
                      **{k: options[k] for k in ("dtype", "batch_size", "encoding_errors", "text_column", "precision",
                                                 "truncate_dim") if k in options})
    onnx_export.check_backend_args(backend, quantize, pooling)
    use_cuda = backend == "torch" and resolve_device(device).startswith("cuda")
    ranks = distributed.init(use_cuda)
    first = ranks.local_rank == 0  # one rank a machine loads (and exports, into its cache) before the others
    try:
        if not first:
            distributed.wait_all(ranks)
        enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code,
                           backend=backend, quantize=quantize, on_export=on_export if ranks.is_main else log.debug)
        if first:
            distributed.wait_all(ranks)
        distributed.wait_all(ranks)  # all loaded: from here on rank 0's temporary file is written at once
        stats = encode_file(enc, source, output, model=model, progress_start=progress_start, ranks=ranks, **options)
    except RuntimeError as exc:
        if distributed.lost_peer(exc, ranks):  # not this rank's fault: the one that failed says why
            raise EsimcseError(f"rank {ranks.rank}: another rank stopped, so this one stops too "
                               f"({first_line(exc, type(exc).__name__)}); nothing was written") from None
        raise
    finally:
        distributed.shutdown(ranks)
    return stats, enc, ranks
