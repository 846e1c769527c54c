"""Compact embeddings: ``--precision`` and ``--truncate-dim``, as sentence-transformers' ``encode`` has them.

=============  ==========================================================================================
``float32``    the rows as computed
``float16``    half precision (``--dtype float16`` is the same)
``int8``       per dimension, 256 buckets between the data's own minimum and maximum, stored minus 128
``uint8``      the same buckets, stored as 0..255
``binary``     one bit a dimension (value > 0), packed 8 to a byte, stored minus 128 as int8
``ubinary``    the same bits, packed, stored as uint8
=============  ==========================================================================================

The int8/uint8 formula and the bit packing are sentence-transformers' ``quantize_embeddings``
(``sentence_transformers/util/quantization.py``): ``steps = (max - min) / 255`` (a zero step becomes 1),
``q = clip(floor((x - min) / steps), 0, 255)``. The ranges are calibrated on the data itself (every row that is
encoded, as sentence-transformers does without ``calibration_embeddings``), and written to the sidecar, so that
``search`` can put a float query on the same scale: a stored value stands for the middle of its bucket,
``min + (q + 0.5) * steps`` (:func:`dequantize`).

``--truncate-dim D`` keeps the first ``D`` dimensions (Matryoshka-style), before the normalisation.
"""

from __future__ import annotations

import numpy as np

from esimcse_cli.core.errors import InputError

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
CALIBRATED = ("int8", "uint8")
BINARY = ("binary", "ubinary")
STORED = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "binary": np.int8,
          "ubinary": np.uint8}


def check_precision(precision: str | None, dtype: str | None = None, truncate_dim: int | None = None) -> str:
    """The precision ``--precision`` / ``--dtype`` ask for (``--dtype`` is the older name of float32 | float16)."""
    if dtype not in (None, "float32", "float16"):
        raise InputError(f"--dtype must be one of float32, float16, got '{dtype}'")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision is not None and dtype not in (None, "float32") and precision != dtype:
        raise InputError(f"--dtype {dtype} and --precision {precision} disagree; give --precision alone")
    if truncate_dim is not None and truncate_dim <= 0:
        raise InputError(f"--truncate-dim must be positive, got {truncate_dim}")
    return precision or dtype or "float32"


def check_truncate_dim(truncate_dim: int | None, dim: int) -> int:
    """The stored dimension: ``truncate_dim`` (at most the model's ``dim``), else ``dim``."""
    if truncate_dim is None:
        return dim
    if truncate_dim > dim:
        raise InputError(f"--truncate-dim {truncate_dim}: the model gives {dim}-dim vectors")
    return int(truncate_dim)


def stored_shape(n: int, dim: int, precision: str) -> tuple[int, int]:
    """The stored array's shape: one byte per 8 dimensions for the binary precisions."""
    return (n, (dim + 7) // 8) if precision in BINARY else (n, dim)


def calibrate(rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Per-dimension ``[min; max]`` of ``rows`` (shape ``(2, dim)``, float32), read in chunks (a memmap stays on disk)."""
    lo = np.full(rows.shape[1], np.inf, dtype=np.float64)
    hi = np.full(rows.shape[1], -np.inf, dtype=np.float64)
    for start in range(0, len(rows), chunk):
        part = np.asarray(rows[start:start + chunk], dtype=np.float64)
        lo = np.minimum(lo, part.min(axis=0))
        hi = np.maximum(hi, part.max(axis=0))
    return np.vstack((lo, hi)).astype(np.float32)


def _steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = np.asarray(ranges, dtype=np.float32)
    starts = ranges[0]
    steps = (ranges[1] - ranges[0]) / 255
    return starts, np.where(steps == 0, 1, steps)


def quantize(rows: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float rows -> stored rows at ``precision`` (``ranges`` from :func:`calibrate` for int8/uint8)."""
    rows = np.asarray(rows, dtype=np.float32)
    if precision in ("float32", "float16"):
        return rows.astype(STORED[precision])
    if precision in CALIBRATED:
        if ranges is None:
            raise ValueError(f"{precision} needs calibrated ranges")
        starts, steps = _steps(ranges)
        q = np.clip(np.floor((rows - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    if precision in BINARY:
        bits = np.packbits(rows > 0, axis=-1).reshape(rows.shape[0], -1)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown precision '{precision}'")


def dequantize(stored: np.ndarray, precision: str, ranges: np.ndarray | None = None, dim: int | None = None) -> np.ndarray:
    """Stored rows -> float32: bucket middles for int8/uint8, +-1 per bit for the binary ones (``dim`` bits kept)."""
    stored = np.asarray(stored)
    if precision in ("float32", "float16"):
        return stored.astype(np.float32)
    if precision in CALIBRATED:
        starts, steps = _steps(ranges)
        q = stored.astype(np.float32) + (128 if precision == "int8" else 0)
        return starts + (q + 0.5) * steps
    if precision in BINARY:
        bits = np.unpackbits(as_ubinary(stored, precision), axis=-1)
        if dim is not None:
            bits = bits[:, :dim]
        return bits.astype(np.float32) * 2 - 1
    raise ValueError(f"unknown precision '{precision}'")


def as_ubinary(stored: np.ndarray, precision: str) -> np.ndarray:
    """Packed bits as uint8, whichever binary precision stored them."""
    if precision == "binary":
        return (np.asarray(stored).astype(np.int16) + 128).astype(np.uint8)
    return np.asarray(stored, dtype=np.uint8)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Bits that differ, ``(Q, R)`` int32, between packed uint8 ``queries`` ``(Q, B)`` and ``rows`` ``(R, B)``."""
    out = np.empty((len(queries), len(rows)), dtype=np.int32)
    for i, q in enumerate(queries):
        out[i] = _POPCOUNT[np.bitwise_xor(rows, q)].sum(axis=1, dtype=np.int32)
    return out
