"""``search`` as a function: an encoded corpus (``.npy``, N x D) and query vectors (Q x D) in, top-k hits out.

The matrix is memory-mapped and read in chunks of rows sized from a byte budget, so memory stays flat in
N: each chunk becomes a tensor (float32 on the device), is scored against every query with one torch matmul, and
cut to its own top-k, which is merged into a running top-k. Queries are L2-normalised here, and each row's
score is divided by the row's norm, so scores are cosines whether or not ``encode`` normalised the rows
(a row of zeros, or a query of zeros, scores 0). Equal scores rank the lower row first, always.

Beside the matrix, ``encode`` writes a sidecar, ``corpus.npy`` -> ``corpus.npy.json``: the model that
encoded it (spec to load it again), pooling, max length, normalisation, shape, dtype and esimcse version.
Queries are encoded with that model unless ``--model`` says otherwise; a different model, pooling or
dimension is refused in one line.

``--texts FILE`` turns rows into their texts: row *i* is line *i + 1* of the file encode read (blank lines
included: encode gives each its own row). One pass records each line's byte offset (8 bytes a line); a hit's
text is then read by seeking, so the corpus is never held in memory. Search writes no file.

The command is :func:`search_queries`: every check (the matrix, the sidecar against ``--model``/``--pooling``,
the queries, the texts' count) -> load_encoder -> the query model's dimension -> encode the queries -> search.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch

from esimcse_cli.core import corpus
from esimcse_cli.core.atomic import atomic_write_text
from esimcse_cli.core.errors import ConfigError, InputError, first_line

log = logging.getLogger("esimcse")

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "esimcse-embeddings/1"
SIDECAR_KEYS = ("model", "pooling", "max_length", "normalize", "dim", "rows", "dtype")
CHUNK_BYTES = 256 << 20  # a chunk's float32 copy plus its scores against every query of a block
QUERY_BLOCK = 4096  # more queries than this are scored in blocks, each reading the matrix once


@dataclass(frozen=True)
class Hit:
    """One result: query ``query`` (0-based, its place among the queries given), ``rank`` (1-based), its cosine,
    and matrix ``row`` (0-based)."""

    query: int
    rank: int
    score: float
    row: int
    text: str | None = None


# ------------------------------------------------------------------------------------------------ the sidecar
def sidecar_path(npy_path: str | os.PathLike) -> Path:
    return Path(os.fspath(npy_path) + SIDECAR_SUFFIX)


def model_key(spec: str | os.PathLike | None) -> str:
    """The ``--model`` spec as the sidecar records it: ``default``, a folder's absolute path, or a hub name.

    A folder is made absolute so that ``search`` run from another directory loads the same model, and so that
    ``./m`` and ``m`` compare equal.
    """
    from esimcse_cli.core.models import DEFAULT_MODEL

    if spec is None or str(spec).strip() == DEFAULT_MODEL:
        return DEFAULT_MODEL
    path = Path(str(spec)).expanduser()
    return str(path.resolve()) if path.exists() else str(spec)


def embedding_meta(model: str | os.PathLike | None, *, pooling: str, max_length: int, normalize: bool, dim: int,
                   rows: int, dtype: str, source: str | None = None, backend: str = "torch", quantize: str = "none",
                   model_dim: int | None = None, truncate_dim: int | None = None) -> dict:
    """The sidecar's content for a matrix ``encode`` wrote with ``--model model`` (and ``--backend``, ``--quantize``).

    ``dtype`` is the ``--precision`` stored (float32, float16, int8, uint8, binary, ubinary); ``dim`` the dimensions
    kept (``--truncate-dim``, else the model's ``model_dim``); a binary matrix holds ``ceil(dim / 8)`` bytes a row.
    ``encode`` adds ``ranges`` (the int8/uint8 calibration) once the rows are in."""
    from esimcse_cli import __version__

    return {
        "format": SIDECAR_FORMAT, "model": model_key(model), "pooling": pooling, "max_length": int(max_length),
        "normalize": bool(normalize), "dim": int(dim), "rows": int(rows), "dtype": str(dtype), "source": source,
        "backend": backend, "quantize": quantize, "model_dim": int(model_dim if model_dim is not None else dim),
        "truncate_dim": truncate_dim, "esimcse_version": __version__,
    }


def model_dim(meta: dict) -> int:
    """The dimension of the model that encoded the matrix: ``dim``, or where ``--truncate-dim`` cut it, ``model_dim``."""
    return int(meta["model_dim"]) if meta.get("truncate_dim") and meta.get("model_dim") else int(meta["dim"])


def stored_precision(meta: dict | None, matrix: np.ndarray) -> str:
    """The precision of a matrix: its sidecar's ``dtype``, else (no sidecar) its own float dtype."""
    if meta is not None:
        return str(meta.get("dtype", "float32"))
    return "float16" if matrix.dtype == np.float16 else "float32"


def write_sidecar(npy_path: str | os.PathLike, meta: dict) -> Path:
    path = sidecar_path(npy_path)
    atomic_write_text(path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return path


def read_sidecar(npy_path: str | os.PathLike) -> dict | None:
    """The sidecar of ``npy_path``, or ``None`` where there is none (a matrix from another tool).

    The dict also holds ``_path``, the file it was read from, for messages (it is not written back).
    """
    path = sidecar_path(npy_path)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not valid JSON ({first_line(exc, type(exc).__name__)}); delete it or encode again") from None
    if not isinstance(meta, dict) or any(key not in meta for key in SIDECAR_KEYS):
        missing = [key for key in SIDECAR_KEYS if not isinstance(meta, dict) or key not in meta]
        raise InputError(f"{path}: not an esimcse sidecar (missing {', '.join(missing)}); delete it or encode again")
    return {**meta, "_path": str(path)}


def check_compatible(meta: dict | None, model_name: str | os.PathLike | None, pooling: str | None, dim: int | None) -> None:
    """Refuse query settings that do not match the sidecar: another model, another pooling, another dimension.

    ``None`` for any of them means "not chosen" and is not compared; no sidecar means nothing to compare.
    """
    if meta is None:
        return
    where = meta.get("_path", "the sidecar")
    if model_name is not None and model_key(model_name) != meta["model"]:
        raise ConfigError(f"--model {model_name}: the matrix was encoded with {meta['model']} ({where}); "
                          "vectors of different models do not compare (omit --model, or encode again)")
    if pooling is not None and pooling != meta["pooling"]:
        raise ConfigError(f"--pooling {pooling}: the matrix was encoded with {meta['pooling']} pooling ({where})")
    if dim is not None and int(dim) != model_dim(meta):
        raise InputError(f"the query model gives {dim}-dim vectors; the matrix holds {meta['dim']}-dim ones ({where})")


def query_encoder_args(npy_path: str | os.PathLike, meta: dict | None, model: str | None = None,
                       pooling: str | None = None, max_length: int | None = None) -> dict:
    """``load_encoder`` keyword arguments that encode queries as the corpus was encoded (after :func:`check_compatible`)."""
    check_compatible(meta, model, pooling, None)
    if meta is None:
        if model is None:
            raise ConfigError(f"{npy_path}: no {sidecar_path(npy_path).name} says which model encoded it; give --model")
        return {"spec": model, "pooling": pooling, "max_length": max_length}
    same_model = model is None
    return {"spec": meta["model"] if same_model else model, "pooling": pooling or meta["pooling"],
            "max_length": max_length or meta["max_length"],
            # the queries through the same forward as the rows (an int8 matrix: int8 queries); absent before 0.1
            "backend": meta.get("backend", "torch") if same_model else "torch",
            "quantize": meta.get("quantize", "none") if same_model else "none"}


# ------------------------------------------------------------------------------------------------- the matrix
def open_matrix(npy_path: str | os.PathLike, integers: bool = False) -> np.ndarray:
    """Memory-map a 2-D float ``.npy`` (only its header is read here); ``integers``: int8/uint8 too (a sidecar says
    how to read them)."""
    path = corpus.check_input(npy_path)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a .npy matrix ({first_line(exc, type(exc).__name__)})") from None
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
        shape = getattr(matrix, "shape", "?")
        raise InputError(f"{path}: expected a 2-D matrix (rows x dim), got shape {shape}")
    if matrix.dtype.kind != "f" and not (integers and matrix.dtype in (np.int8, np.uint8)):
        raise InputError(f"{path}: dtype {matrix.dtype} is not searchable (search reads float16 and float32 matrices, and "
                         "the int8/uint8/binary ones encode --precision wrote with their sidecar)")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputError(f"{path}: the matrix is empty (shape {matrix.shape})")
    return matrix


def chunk_rows_for(dim: int, queries: int, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk: the float32 copy of the chunk (dim) and its scores (one per query) fit ``budget`` bytes."""
    return max(1, budget // (4 * (int(dim) + max(1, int(queries)))))


def top_k(matrix: np.ndarray, queries: np.ndarray, k: int, *, chunk_rows: int | None = None, device: str = "cpu",
          normalize_rows: bool = True, display: str = "matrix", decode=None,
          normalize_queries: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)``, each ``(Q, min(k, N))``: every query's best rows by cosine, best first, ties by lower row.

    ``normalize_rows=False`` trusts the rows to be unit vectors already (scores are then dot products). ``decode``
    turns a chunk of stored rows into float32 ones (a compact precision, :func:`row_decoder`).
    """
    n = matrix.shape[0]
    dim = queries.shape[-1] if decode is not None else matrix.shape[1]
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32), device=device).reshape(-1, dim)
    if normalize_queries:
        q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min(1e-12)
    k = min(int(k), n)
    scores_out, rows_out = [], []
    for start_q in range(0, q.shape[0], QUERY_BLOCK):
        block = q[start_q:start_q + QUERY_BLOCK]
        step = chunk_rows or chunk_rows_for(dim, block.shape[0])
        best_s = torch.empty((block.shape[0], 0), device=device)
        best_r = torch.empty((block.shape[0], 0), dtype=torch.long, device=device)
        for start in range(0, n, step):
            part = matrix[start:start + step]
            x = _rows_tensor(decode(part) if decode is not None else part).to(device).float()
            s = block @ x.T
            if normalize_rows:
                s /= torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)
            cs, cr = _chunk_top(s, k)
            # topk ranks NaN above every number, so a row that would spoil the hits shows up among them
            if not torch.isfinite(cs).all():
                bad = int(cr[~torch.isfinite(cs)].min()) + start
                raise InputError(f"{display}: row {bad} holds NaN or infinite values")
            # running hits (lower rows) first, then this chunk's in row order: a stable sort keeps ties by row
            all_s, all_r = torch.cat([best_s, cs], dim=1), torch.cat([best_r, cr + start], dim=1)
            order = torch.sort(all_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_r = all_s.gather(1, order), all_r.gather(1, order)
        scores_out.append(best_s.cpu().numpy())
        rows_out.append(best_r.cpu().numpy())
    if not scores_out:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate(scores_out), np.concatenate(rows_out)


def _rows_tensor(rows: np.ndarray) -> torch.Tensor:
    """A chunk of the map as a tensor, without a copy where its layout allows."""
    if not (rows.flags.c_contiguous and rows.dtype.isnative):  # a Fortran-order or big-endian file
        rows = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # the map is read-only and torch warns about that; the tensor is only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(rows)


def _chunk_top(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's ``k`` best columns of ``s`` by (score desc, column asc), returned in column order.

    The k best are one set unless the k-th score equals the (k+1)-th; ``torch.topk`` then picks an arbitrary
    subset of the tied ones, so for such a query (rare, but every query of a zero vector) the selection is
    redone: every column above the k-th score, then the lowest columns equal to it.
    """
    n = s.shape[1]
    vals, cols = torch.topk(s, min(k + 1, n), dim=1)
    if n > k:
        kth = vals[:, k - 1]
        for i in torch.nonzero(vals[:, k] == kth).flatten().tolist():
            above = torch.nonzero(~(s[i] <= kth[i])).flatten()  # NaN too: it must reach the finiteness check
            equal = torch.nonzero(s[i] == kth[i]).flatten()[: k - above.numel()]
            cols[i, :k] = torch.cat([above, equal])
        cols = cols[:, :k]
    cols = torch.sort(cols, dim=1).values
    return s.gather(1, cols), cols


# ------------------------------------------------------------------------------------------------- the texts
class TextRows:
    """Row -> text of the file ``encode`` read, by seeking to recorded byte offsets (``len`` = its rows)."""

    def __init__(self, fh: BinaryIO, offsets: np.ndarray, display: str, plain: bool, encoding_errors: str):
        self._fh = fh
        self.offsets = offsets  # int64, rows + 1: row i is bytes offsets[i]:offsets[i + 1]
        self.display = display
        self.plain = plain  # a text file read in place (lines end in \n); else a spool of exact UTF-8 texts
        self._errors = encoding_errors

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def get(self, rows: Sequence[int]) -> list[str]:
        out = []
        for row in rows:
            start, end = int(self.offsets[row]), int(self.offsets[row + 1])
            self._fh.seek(start)
            raw = self._fh.read(end - start)
            if not self.plain:
                out.append(raw.decode("utf-8"))
                continue
            out.append(corpus.decode_line(raw, self.display, int(row) + 1, self._errors))
        return out

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "TextRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def open(cls, path: str | os.PathLike, rows: int | None = None, *, text_column: str | None = None,
             encoding_errors: str = "strict") -> "TextRows":
        """Index ``path`` in one pass; ``rows`` (the matrix's) must equal its count of texts."""
        corpus.check_encoding_errors(encoding_errors)
        path = corpus.check_input(path)
        display = str(path)
        if corpus.input_format(path) == "txt":
            if text_column is not None:
                raise InputError(f"{display}: --text-column applies to csv, tsv, jsonl and parquet files, not plain text")
            fh = open(path, "rb")
            offsets = _line_offsets(fh)
            plain = True
        else:
            # tabular rows are not lines (quoted newlines, parquet): their texts go to an unnamed spool file
            fh = tempfile.TemporaryFile(prefix="esimcse-texts-")
            ends, pos = [0], 0
            try:
                for _, text in corpus.iter_texts(path, text_column, encoding_errors, display=display):
                    pos += fh.write(text.encode("utf-8"))
                    ends.append(pos)
            except BaseException:
                fh.close()
                raise
            offsets = np.asarray(ends, dtype=np.int64)
            plain = False
        lookup = cls(fh, offsets, display, plain, encoding_errors)
        if rows is not None and len(lookup) != rows:
            lookup.close()
            raise InputError(_mismatch(display, len(lookup), rows, plain))
        return lookup


def _line_offsets(fh: BinaryIO) -> np.ndarray:
    """Start of every line and the end of the last, as :func:`corpus.count_lines` counts lines (split on ``\\n``)."""
    ends, pos, last = [np.zeros(1, np.int64)], 0, b"\n"
    while block := fh.read(1 << 24):
        ends.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10).astype(np.int64) + (pos + 1))
        pos += len(block)
        last = block[-1:]
    if last != b"\n":  # a last line without \n still counts
        ends.append(np.array([pos], np.int64))
    return np.concatenate(ends)


def _mismatch(display: str, count: int, rows: int, plain: bool) -> str:
    unit = "lines (blank ones included, as encode counts them)" if plain else "texts"
    return f"{display}: {count} {unit}, but the matrix has {rows} rows; --texts must be the file that was encoded"


# ---------------------------------------------------------------------------------------------- the command
def check_search_args(npy_path: str | os.PathLike, *, k: int = 10, chunk_rows: int | None = None,
                      encoding_errors: str = "strict", batch_size: int = 64, rescore: int = 0) -> dict | None:
    """Refuse bad options and a bad matrix before any model is loaded; return the sidecar (``None`` where there
    is none). ``--texts`` is checked where it is indexed, by :meth:`TextRows.open`."""
    if k <= 0:
        raise ConfigError(f"-k must be positive, got {k}")
    if chunk_rows is not None and chunk_rows <= 0:
        raise ConfigError(f"--chunk-rows must be positive, got {chunk_rows}")
    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    corpus.check_encoding_errors(encoding_errors)
    from esimcse_cli.core import precision as compact

    meta = read_sidecar(npy_path)
    matrix = open_matrix(npy_path, integers=meta is not None)
    if meta is not None:
        precision = stored_precision(meta, matrix)
        if precision not in compact.PRECISIONS or matrix.dtype != np.dtype(compact.STORED[precision]):
            raise InputError(f"{meta['_path']}: records {precision}, but {npy_path} holds {matrix.dtype}; the sidecar is "
                             "stale (encode again)")
        if compact.stored_shape(int(meta["rows"]), int(meta["dim"]), precision) != matrix.shape:
            raise InputError(f"{meta['_path']}: records {meta['rows']} x {meta['dim']}, but {npy_path} is "
                             f"{matrix.shape[0]} x {matrix.shape[1]}; the sidecar is stale (encode again)")
        if precision in compact.CALIBRATED:
            try:
                shape = np.asarray(meta.get("ranges"), dtype=np.float32).shape
            except (TypeError, ValueError):
                shape = None
            if shape != (2, int(meta["dim"])):
                raise InputError(f"{meta['_path']}: a {precision} matrix needs its calibration, ranges of 2 x {meta['dim']} "
                                 f"numbers; found {'none' if not meta.get('ranges') else shape}: the sidecar is stale (encode again)")
    if rescore < 0:
        raise ConfigError(f"--rescore must be 0 (off) or a positive multiplier, got {rescore}")
    return meta


def row_decoder(precision: str, meta: dict | None):
    """``decode(stored rows) -> float32 rows`` for a compact precision (``None`` for float16/float32): int8/uint8 as
    their buckets' middles (the sidecar's ``ranges``), binary as +-1 a bit."""
    from esimcse_cli.core import precision as compact

    if precision in ("float32", "float16"):
        return None
    if precision in compact.CALIBRATED and (meta is None or not meta.get("ranges")):
        raise InputError(f"a {precision} matrix needs its sidecar's ranges (the calibration); encode again")
    ranges = np.asarray(meta["ranges"], dtype=np.float32) if precision in compact.CALIBRATED else None
    dim = int(meta["dim"]) if meta is not None else None
    return lambda rows: compact.dequantize(rows, precision, ranges, dim)


def search(npy_path: str | os.PathLike, queries: np.ndarray, *, k: int = 10, texts: TextRows | None = None,
           chunk_rows: int | None = None, device: str = "cpu", normalize_rows: bool = True, meta: dict | None = None,
           rescore: int = 0) -> list[Hit]:
    """Every query's ``k`` best rows of the matrix at ``npy_path`` (all rows where ``k`` exceeds them), as records.

    A compact matrix (``meta``: its sidecar) is scored against the float queries on its own scale: int8/uint8 rows
    as their buckets' middles; binary rows by Hamming distance to the query's own bits, the score being
    ``1 - 2 h / dim`` (the cosine of the +-1 vectors, computed as their product: exact). ``rescore=M`` (binary)
    re-ranks the ``M * k`` best by Hamming with the float query against the +-1 rows, as sentence-transformers'
    rescoring does."""
    from esimcse_cli.core import precision as compact

    matrix = open_matrix(npy_path, integers=meta is not None)
    precision = stored_precision(meta, matrix)
    decode = row_decoder(precision, meta)
    dim = int(meta["dim"]) if decode is not None else matrix.shape[1]
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InputError(f"{npy_path}: holds {dim}-dim rows; the queries are {queries.shape[-1]}-dim")
    if texts is not None and len(texts) != matrix.shape[0]:
        raise InputError(_mismatch(texts.display, len(texts), matrix.shape[0], texts.plain))
    binary = precision in compact.BINARY
    if rescore and not binary:
        log.warning("--rescore re-ranks binary matrices; this one is %s, scored against the float queries already", precision)
    wanted = min(k * max(1, rescore), matrix.shape[0]) if binary and rescore else k
    if binary:  # +-1 against +-1: integer products, exact in float32, dim - 2 h; ties by lower row as everywhere
        bits = np.where(queries > 0, 1.0, -1.0).astype(np.float32)
        scores, rows = top_k(matrix, bits, wanted, chunk_rows=chunk_rows, device=device, normalize_rows=False,
                             normalize_queries=False, display=str(npy_path), decode=decode)
        scores = scores / dim
    else:
        scores, rows = top_k(matrix, queries, wanted, chunk_rows=chunk_rows, device=device,
                             normalize_rows=normalize_rows or decode is not None, display=str(npy_path), decode=decode)
    if binary and rescore:
        scores, rows = _rescore(matrix, queries, rows, k, decode)
    hits = []
    for qi in range(rows.shape[0]):
        found = texts.get(rows[qi].tolist()) if texts is not None else [None] * rows.shape[1]
        hits += [Hit(qi, rank + 1, float(scores[qi, rank]), int(rows[qi, rank]), found[rank]) for rank in range(rows.shape[1])]
    return hits


def _rescore(matrix: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int, decode) -> tuple[np.ndarray, np.ndarray]:
    """The candidates ``rows`` re-ranked by the float query's cosine with their +-1 rows; ties by lower row."""
    out_s, out_r = [], []
    for q, cand in zip(queries, rows):
        cand = np.sort(cand)
        x = decode(matrix[cand]).astype(np.float64)
        q64 = q.astype(np.float64)
        # row by row, the same sum for the same row (a matrix product may round equal rows differently): ties stay ties
        s = (x * q64).sum(axis=1) / (np.sqrt((x * x).sum(axis=1)).clip(1e-12) * max(float(np.sqrt((q64 * q64).sum())), 1e-12))
        order = np.lexsort((cand, -s))[:k]
        out_s.append(s[order])
        out_r.append(cand[order])
    return np.asarray(out_s, dtype=np.float32), np.asarray(out_r, dtype=np.int64)


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search_queries` found: the queries by index (in input order) and their hits, query by query."""

    queries: dict[int, str]
    hits: list[Hit]
    model: str  # the spec that encoded the queries
    pooling: str


def read_queries(queries: Sequence[str] | None, encoding_errors: str = "strict") -> dict[int, str]:
    """Index -> query: the arguments, or with none, the lines of stdin (never a terminal). Blank ones are skipped
    (an empty text has no meaning to match), so an index is always the query's place in the input."""
    if queries:
        given, where = enumerate(queries), "QUERY argument"
    else:
        try:
            corpus.check_stdin()
        except InputError:
            raise InputError("no queries: give them after NPY, or pipe them into stdin, one a line "
                             "(e.g. esimcse search corpus.npy --texts corpus.txt \"a man plays a guitar\")") from None
        given, where = ((lineno - 1, text) for lineno, text in corpus.iter_lines("-", encoding_errors)), "stdin line"
    found, blank = {}, 0
    for index, text in given:
        if text.strip():
            found[index] = text
        else:
            blank += 1
    if not found:
        raise InputError("no queries: stdin held no text" if not queries else "no queries: every QUERY is blank")
    if blank:
        log.warning("%d blank %s(s) skipped", blank, where)
    return found


def search_queries(npy_path: str | os.PathLike, queries: Sequence[str] | None = None, *, k: int = 10,
                   texts: str | os.PathLike | None = None, text_column: str | None = None, model: str | None = None,
                   pooling: str | None = None, max_length: int | None = None, device: str | None = "auto",
                   trust_remote_code: bool = False, batch_size: int = 64, chunk_rows: int | None = None,
                   encoding_errors: str = "strict", rescore: int = 0) -> SearchResult:
    """``esimcse search`` as one call: each query's ``k`` best rows of the matrix, with their texts from ``texts``.

    Every check runs before the model loads; ``model``/``pooling``/``max_length`` default to the sidecar's.
    """
    from esimcse_cli.core.models import load_encoder

    meta = check_search_args(npy_path, k=k, chunk_rows=chunk_rows, encoding_errors=encoding_errors, batch_size=batch_size,
                             rescore=rescore)
    if text_column is not None and texts is None:
        raise InputError("--text-column names a column of --texts; give --texts FILE")
    load_args = query_encoder_args(npy_path, meta, model, pooling, max_length)
    wanted = read_queries(queries, encoding_errors)
    rows, columns = open_matrix(npy_path, integers=meta is not None).shape
    dim = model_dim(meta) if meta is not None else columns
    truncate = int(meta["truncate_dim"]) if meta is not None and meta.get("truncate_dim") else None
    # the texts are indexed now, not after the model: a file of another length is refused first
    lookup = TextRows.open(texts, rows, text_column=text_column, encoding_errors=encoding_errors) if texts is not None else None
    try:
        enc = load_encoder(**load_args, device=device, trust_remote_code=trust_remote_code)
        check_compatible(meta, None, None, enc.dim)
        if enc.dim != dim:  # no sidecar to name: the matrix itself
            raise InputError(f"the query model gives {enc.dim}-dim vectors; {npy_path} holds {dim}-dim ones")
        log.debug("search: %d queries, %s, %s pooling", len(wanted), load_args["spec"], enc.pooling)
        vectors = enc.encode(list(wanted.values()), batch_size=batch_size, truncate_dim=truncate)
        index = list(wanted)
        hits = [replace(hit, query=index[hit.query])
                for hit in search(npy_path, vectors, k=k, texts=lookup, chunk_rows=chunk_rows, device=str(enc.device),
                                  meta=meta, rescore=rescore)]
    finally:
        if lookup is not None:
            lookup.close()
    return SearchResult(wanted, hits, str(load_args["spec"]), enc.pooling)
