"""Compact embeddings: ``--precision`` (int8/uint8/binary/ubinary, float16) and ``--truncate-dim``.

* :mod:`esimcse_cli.core.precision` against sentence-transformers' ``quantize_embeddings``
  (``sentence_transformers/util/quantization.py``): its formula re-implemented here from its source, and the
  library itself where it imports;
* ``dequantize`` (bucket middles, +-1 bits), ``hamming`` against a naive bit count, ``calibrate`` in chunks;
* ``esimcse encode --precision P`` / ``--truncate-dim D``: dtype, shape, sidecar, and the stored values equal to
  ``quantize`` of a float32 encode of the same file; refusals in one line;
* ``esimcse search`` over every precision: own row first, Hamming scores ``1 - 2h/dim``, ties by lower row,
  ``--rescore`` against a numpy re-implementation, stale sidecars refused.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

from clirunner import run_main

from esimcse_cli.core import embed
from esimcse_cli.core import precision as P
from esimcse_cli.core.embed import encode_file
from esimcse_cli.core.models import load_encoder
from esimcse_cli.core.search import embedding_meta, read_sidecar, search, sidecar_path, write_sidecar

LINES = [
    "a dog runs in the park", "the man plays a guitar", "two birds sit on the red tree", "the woman reads a book",
    "a cat eats food at night", "children play ball in the street", "the old horse walks slowly", "he sings a song today",
    "she writes a long book about the city", "they ride a bike on the beach", "a man is cutting an onion",
    "the team played a good game", "water runs in the river", "the big house is white", "we often go to the park",
    "a small bird sings happily", "people look at the film", "the first day of the year", "my car is red and new",
    "a woman is slicing a tomato",
]
N = len(LINES)
DIM = 32  # the tiny BERT's hidden size
COMPACT = ("float16", "int8", "uint8", "binary", "ubinary")


# ----------------------------------------------------------------------- sentence-transformers' formula, by hand
def st_formula(x: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``quantize_embeddings`` (sentence_transformers/util/quantization.py), re-implemented from its source."""
    x = np.asarray(x, dtype=np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None:
            ranges = np.vstack((np.min(x, axis=0), np.max(x, axis=0)))
        ranges = ranges.astype(np.float32)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((x - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    if precision == "binary":
        return (np.packbits(x > 0, axis=-1).astype(np.int16) - 128).astype(np.int8)
    if precision == "ubinary":
        return np.packbits(x > 0, axis=-1)
    raise ValueError(precision)


def random_embeddings(rows: int = 200, dim: int = 37, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    x[:, 5] = 0.25  # a constant column: zero step -> 1
    x[:, 9] = 0.0  # zeros: not > 0, bit 0
    x[:3, 11] = [-0.0, 0.0, 1e-30]
    return x


@pytest.mark.parametrize("dim", [37, 32, 8, 1])
@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_is_sentence_transformers_formula(precision, dim):
    x = random_embeddings(dim=max(dim, 12))[:, :dim] if dim < 12 else random_embeddings(dim=dim)
    got = P.quantize(x, precision, P.calibrate(x))
    want = st_formula(x, precision)
    assert got.dtype == want.dtype == np.dtype(P.STORED[precision])
    assert got.shape == want.shape == P.stored_shape(len(x), dim, precision)
    np.testing.assert_array_equal(got, want)
    if precision in P.CALIBRATED:
        # explicit ranges (e.g. of other data): values outside are clipped to the end buckets, like the library's
        ranges = np.vstack((x.min(0) + 0.1, x.max(0) - 0.1)).astype(np.float32)
        np.testing.assert_array_equal(P.quantize(x, precision, ranges), st_formula(x, precision, ranges))
        if dim == 37:  # the constant column is all in bucket 0
            assert (got[:, 5].astype(np.int16) == (0 if precision == "uint8" else -128)).all()
            # the buckets span the data: the min maps to 0, the max to 255 (254 where (max - min) / step rounds down)
            q = got.astype(np.int16) + (128 if precision == "int8" else 0)
            assert (q.min(0)[[0, 1, 2]] == 0).all() and (q.max(0)[[0, 1, 2]] >= 254).all()
    else:
        assert got.shape[1] == (dim + 7) // 8


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "uint8", "binary", "ubinary"])
def test_quantize_equals_the_installed_sentence_transformers(precision):
    try:
        from sentence_transformers import quantize_embeddings
    except Exception as exc:  # pragma: no cover - the venv has it
        pytest.skip(f"sentence_transformers not importable: {exc}")
    x = random_embeddings()
    got = P.quantize(x, precision, P.calibrate(x) if precision in P.CALIBRATED else None)
    if precision == "float16":  # not one of the library's precisions: a plain cast
        np.testing.assert_array_equal(got, x.astype(np.float16))
        return
    want = quantize_embeddings(x, precision=precision)  # ranges from the embeddings themselves
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    if precision in P.CALIBRATED:
        np.testing.assert_array_equal(got, quantize_embeddings(x, precision=precision, ranges=P.calibrate(x)))
        other = random_embeddings(seed=5)
        np.testing.assert_array_equal(P.quantize(x, precision, P.calibrate(other)),
                                      quantize_embeddings(x, precision=precision, calibration_embeddings=other))


def test_quantize_needs_ranges_and_a_known_precision():
    x = random_embeddings(rows=4)
    with pytest.raises(ValueError):
        P.quantize(x, "int8")
    with pytest.raises(ValueError):
        P.quantize(x, "int4")


# ------------------------------------------------------------------------------- dequantize, hamming, calibrate
@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_dequantize_gives_bucket_middles_within_half_a_step(precision):
    x = random_embeddings()
    ranges = P.calibrate(x)
    stored = P.quantize(x, precision, ranges)
    back = P.dequantize(stored, precision, ranges)
    assert back.dtype == np.float32 and back.shape == x.shape
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    q = stored.astype(np.float64) + (128 if precision == "int8" else 0)
    np.testing.assert_allclose(back, ranges[0] + (q + 0.5) * steps, rtol=1e-6, atol=1e-6)  # the bucket middle
    assert (np.abs(back - x) <= steps / 2 * (1 + 1e-4) + 1e-6).all()
    np.testing.assert_allclose(back[:, 5], 0.25 + 0.5)  # the constant column: step 1, bucket 0
    # int8 and uint8 are the same buckets
    other = "uint8" if precision == "int8" else "int8"
    np.testing.assert_array_equal(back, P.dequantize(P.quantize(x, other, ranges), other, ranges))


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("dim", [37, 32, 3])
def test_dequantize_binary_is_plus_minus_one_with_dim_bits(precision, dim):
    x = random_embeddings(dim=40)[:, :dim]
    stored = P.quantize(x, precision)
    back = P.dequantize(stored, precision, dim=dim)
    assert back.dtype == np.float32 and back.shape == (len(x), dim)
    np.testing.assert_array_equal(back, np.where(x > 0, 1.0, -1.0))
    padded = P.dequantize(stored, precision)  # no dim: every packed bit, padding ones as -1
    assert padded.shape == (len(x), 8 * ((dim + 7) // 8))
    np.testing.assert_array_equal(padded[:, :dim], back)
    np.testing.assert_array_equal(padded[:, dim:], -1.0)
    np.testing.assert_array_equal(P.as_ubinary(stored, precision), P.quantize(x, "ubinary"))


def naive_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[sum(bin(int(u) ^ int(v)).count("1") for u, v in zip(qa, rb)) for rb in b] for qa in a])


@pytest.mark.parametrize("width", [1, 5, 13])
def test_hamming_equals_a_naive_bit_count(width):
    rng = np.random.default_rng(width)
    q = rng.integers(0, 256, (7, width), dtype=np.uint8)
    r = rng.integers(0, 256, (31, width), dtype=np.uint8)
    r[3] = q[2]  # a distance of 0
    r[4] = ~q[1]  # every bit differs
    h = P.hamming(q, r)
    assert h.shape == (7, 31) and h.dtype == np.int32
    np.testing.assert_array_equal(h, naive_hamming(q, r))
    assert h[2, 3] == 0 and h[1, 4] == 8 * width
    np.testing.assert_array_equal(P.hamming(q, q).diagonal(), 0)


@pytest.mark.parametrize("chunk", [1, 7, 64, 199, 200, 10_000])
def test_calibrate_in_chunks_of_a_memmap_is_the_whole_min_max(tmp_path, chunk):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((200, 37)) * rng.uniform(0.1, 10, 37)).astype(np.float32)
    x[150, 4] = 1e6  # extremes far from the first chunk
    x[199, 6] = -1e6
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = P.calibrate(mm, chunk=chunk)
    assert got.dtype == np.float32 and got.shape == (2, 37)
    np.testing.assert_array_equal(got, np.vstack((x.min(axis=0), x.max(axis=0))))


def test_check_precision_and_truncate_dim():
    assert P.check_precision(None) == "float32"
    assert P.check_precision(None, "float16") == "float16"
    assert P.check_precision("int8", "float32") == "int8"
    assert P.check_precision("float16", "float16") == "float16"
    for args in [("int8", "float16"), ("int4", None), (None, "int8")]:
        with pytest.raises(Exception) as info:
            P.check_precision(*args)
        assert getattr(info.value, "exit_code", 2) == 2
    with pytest.raises(Exception):
        P.check_precision(None, None, 0)
    assert P.check_truncate_dim(None, 32) == 32 and P.check_truncate_dim(32, 32) == 32 and P.check_truncate_dim(5, 32) == 5
    with pytest.raises(Exception):
        P.check_truncate_dim(33, 32)
    assert P.stored_shape(4, 37, "binary") == (4, 5) == P.stored_shape(4, 40, "ubinary")
    assert P.stored_shape(4, 37, "int8") == (4, 37)


# ------------------------------------------------------------------------------------------- encode on the CLI
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    src = folder / "corpus.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return src


class Encoded:
    """``esimcse encode`` runs of the corpus, each into its own folder, cached for the module."""

    def __init__(self, src, model, root):
        self.src, self.model, self.root, self.cache = src, model, root, {}

    def __call__(self, *extra: str):
        if extra not in self.cache:
            folder = self.root / f"run{len(self.cache)}"
            folder.mkdir()
            out = folder / "out.npy"
            r = run_main("encode", str(self.src), "-o", str(out), "-m", str(self.model), *extra)
            assert r.code == 0, r.stderr
            self.cache[extra] = (out, r)
        return self.cache[extra][0]

    def result(self, *extra):
        self(*extra)
        return self.cache[extra][1]


@pytest.fixture(scope="module")
def encoded(corpus, tiny_model_dir, tmp_path_factory):
    return Encoded(corpus, tiny_model_dir, tmp_path_factory.mktemp("runs"))


def float_rows(encoded, *extra) -> np.ndarray:
    arr = np.load(encoded("--precision", "float32", *extra))
    assert arr.dtype == np.float32
    return arr


def sidecar(npy) -> dict:
    return json.loads(sidecar_path(npy).read_text(encoding="utf-8"))


def one_line_exit_2(r, *needles):
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.lines) == 1, r.stderr
    assert r.lines[0].startswith("esimcse: error: "), r.lines[0]
    for needle in needles:
        assert needle in r.lines[0], r.lines[0]


@pytest.mark.parametrize("precision", ["float32", *COMPACT])
def test_cli_encode_stores_quantize_of_the_float_rows(encoded, precision):
    npy = encoded("--precision", precision)
    x = float_rows(encoded)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    stored = np.load(npy)
    assert stored.dtype == np.dtype(P.STORED[precision])
    assert stored.shape == ((N, (DIM + 7) // 8) if precision in P.BINARY else (N, DIM))
    ranges = P.calibrate(x) if precision in P.CALIBRATED else None
    np.testing.assert_array_equal(stored, P.quantize(x, precision, ranges))
    if precision != "float32":
        np.testing.assert_array_equal(stored, st_formula(x, precision) if precision != "float16" else x.astype(np.float16))
    meta = sidecar(npy)
    assert meta["dtype"] == precision and meta["dim"] == DIM and meta["model_dim"] == DIM
    assert meta["truncate_dim"] is None and meta["rows"] == N
    if precision in P.CALIBRATED:
        got = np.asarray(meta["ranges"], dtype=np.float32)
        assert got.shape == (2, DIM)
        np.testing.assert_array_equal(got, ranges)
    else:
        assert "ranges" not in meta
    # nothing beside the pair: no float32 temporary, no .tmp
    assert sorted(p.name for p in npy.parent.iterdir()) == ["out.npy", "out.npy.json"]
    assert f"{N} x {DIM} {precision}" in encoded.result("--precision", precision).stderr


def test_cli_dtype_float16_is_precision_float16(encoded):
    old = encoded("--dtype", "float16")
    new = encoded("--precision", "float16")
    a, b = np.load(old), np.load(new)
    assert a.dtype == b.dtype == np.float16
    np.testing.assert_array_equal(a, b)
    assert sidecar(old)["dtype"] == "float16"
    both = encoded("--dtype", "float16", "--precision", "float16")
    np.testing.assert_array_equal(np.load(both), b)
    np.testing.assert_array_equal(np.load(encoded("--dtype", "float32", "--precision", "int8")),
                                  np.load(encoded("--precision", "int8")))


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_cli_encode_to_stdout(encoded, corpus, tiny_model_dir, precision):
    r = run_main("encode", str(corpus), "-o", "-", "-m", str(tiny_model_dir), "--precision", precision)
    assert r.code == 0, r.stderr
    arr = np.load(io.BytesIO(r.stdout))
    np.testing.assert_array_equal(arr, np.load(encoded("--precision", precision)))


def test_core_encode_quantizes_in_chunks(tiny_model_dir, corpus, tmp_path, monkeypatch, encoded):
    """Calibration and quantization read the float rows chunk by chunk: small chunks give the same file."""
    real = P.calibrate
    monkeypatch.setattr(P, "calibrate", lambda rows, chunk=65536: real(rows, chunk=3))
    monkeypatch.setattr(embed._quantize_file, "__defaults__", (7,))
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    for precision in ("int8", "ubinary"):
        out = tmp_path / f"{precision}.npy"
        stats = encode_file(enc, corpus, out, model=str(tiny_model_dir), precision=precision, chunk_size=6, batch_size=2)
        assert (stats.rows, stats.dim, stats.precision) == (N, DIM, precision)
        np.testing.assert_array_equal(np.load(out), np.load(encoded("--precision", precision)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.npy", "int8.npy.json", "ubinary.npy", "ubinary.npy.json"]


def test_a_failure_while_quantizing_leaves_the_previous_pair_and_no_temporary(tiny_model_dir, corpus, tmp_path, monkeypatch):
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    out = tmp_path / "out.npy"
    encode_file(enc, corpus, out, model=str(tiny_model_dir))  # a float32 pair already there
    before, meta_before = np.load(out), sidecar(out)

    def broken(rows, precision, ranges=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(P, "quantize", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        encode_file(enc, corpus, out, model=str(tiny_model_dir), precision="int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "out.npy.json"]
    np.testing.assert_array_equal(np.load(out), before)
    assert sidecar(out) == meta_before


def test_cli_encode_refusals_are_one_line(corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "out.npy"
    base = ("encode", str(corpus), "-o", str(out), "-m", str(tiny_model_dir))
    cases = [
        (["--dtype", "float16", "--precision", "int8"], ["--dtype float16", "--precision int8"]),
        (["--precision", "int4"], ["--precision must be one of", "int4"]),
        (["--precision", "FLOAT16"], ["--precision must be one of"]),
        (["--dtype", "int8"], ["--dtype must be one of"]),
        (["--truncate-dim", "0"], ["--truncate-dim must be positive"]),
        (["--truncate-dim", "-4"], ["--truncate-dim must be positive"]),
        (["--truncate-dim", "33"], ["--truncate-dim 33", "32"]),
        (["--truncate-dim", "33", "--precision", "binary"], ["--truncate-dim 33"]),
    ]
    for extra, needles in cases:
        one_line_exit_2(run_main(*base, *extra), *needles)
        assert list(tmp_path.iterdir()) == [], extra  # nothing written, no temporary left


# ------------------------------------------------------------------------------------------------ --truncate-dim
@pytest.mark.parametrize("d", [1, 12, 31, 32])
def test_cli_truncate_dim_is_first_dims_then_normalised(encoded, d):
    raw = np.load(encoded("--no-normalize"))
    assert raw.shape == (N, DIM)
    want = raw[:, :d] / np.linalg.norm(raw[:, :d], axis=1, keepdims=True)
    npy = encoded("--truncate-dim", str(d))
    got = np.load(npy)
    assert got.shape == (N, d) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    if d < DIM:  # not the first d dims of the normalised full vector
        assert not np.allclose(got, np.load(encoded())[:, :d], atol=1e-3)
    meta = sidecar(npy)
    assert (meta["dim"], meta["model_dim"], meta["truncate_dim"], meta["dtype"]) == (d, DIM, d, "float32")
    raw_trunc = np.load(encoded("--truncate-dim", str(d), "--no-normalize"))
    np.testing.assert_allclose(raw_trunc, raw[:, :d], atol=1e-6)


@pytest.mark.parametrize("precision", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_cli_truncate_dim_with_a_precision(encoded, precision):
    x = float_rows(encoded, "--truncate-dim", "12")
    npy = encoded("--precision", precision, "--truncate-dim", "12")
    stored = np.load(npy)
    assert stored.shape == ((N, 2) if precision in P.BINARY else (N, 12))
    ranges = P.calibrate(x) if precision in P.CALIBRATED else None
    np.testing.assert_array_equal(stored, P.quantize(x, precision, ranges))
    meta = sidecar(npy)
    assert (meta["dim"], meta["model_dim"], meta["truncate_dim"], meta["dtype"]) == (12, DIM, 12, precision)
    if ranges is not None:
        np.testing.assert_array_equal(np.asarray(meta["ranges"], np.float32), ranges)
        assert np.asarray(meta["ranges"]).shape == (2, 12)
    assert sorted(p.name for p in npy.parent.iterdir()) == ["out.npy", "out.npy.json"]


# ------------------------------------------------------------------------------------------------------- search
def cli_hits(r) -> list[dict]:
    assert r.code == 0, r.stderr
    return [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]


def lowest_same_bits(stored_u8: np.ndarray, row: int) -> int:
    """The lowest row whose packed bits equal ``row``'s (a tie at distance 0 ranks the lower row first)."""
    return int(np.flatnonzero((stored_u8 == stored_u8[row]).all(axis=1))[0])


@pytest.mark.parametrize("precision", ["float32", *COMPACT])
@pytest.mark.parametrize("truncate", [None, 12])
def test_cli_search_each_line_finds_its_own_row(encoded, precision, truncate):
    extra = ("--precision", precision) + (("--truncate-dim", str(truncate)) if truncate else ())
    npy = encoded(*extra)
    queries = [0, 3, 7, 11, 19]
    hits = cli_hits(run_main("search", str(npy), *[LINES[i] for i in queries], "-k", "4", "--json"))
    assert len(hits) == 4 * len(queries)
    stored = np.load(npy)
    for qi, line in enumerate(queries):
        mine = [h for h in hits if h["query_index"] == qi]
        assert [h["rank"] for h in mine] == [1, 2, 3, 4]
        scores = [h["score"] for h in mine]
        assert scores == sorted(scores, reverse=True)
        top = mine[0]
        if precision in P.BINARY:
            assert top["row"] == lowest_same_bits(P.as_ubinary(stored, precision), line)
            assert top["score"] == 1.0
        else:
            assert top["row"] == line
            assert top["score"] == pytest.approx(1.0, abs=1e-3 if precision in P.CALIBRATED else 1e-5)
            assert top["score"] > mine[1]["score"]


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("truncate", [None, 12])
def test_binary_scores_are_one_minus_two_h_over_dim(encoded, precision, truncate):
    extra = ("--precision", precision) + (("--truncate-dim", str(truncate)) if truncate else ())
    npy = encoded(*extra)
    dim = truncate or DIM
    x = float_rows(encoded, *(("--truncate-dim", str(truncate)) if truncate else ()))
    meta = read_sidecar(npy)
    stored = np.load(npy)
    rows_u8 = P.as_ubinary(stored, precision)
    np.testing.assert_array_equal(P.quantize(x, "ubinary"), rows_u8)  # each query's own bits are its row
    h = P.hamming(rows_u8, rows_u8)
    assert (h.diagonal() == 0).all()
    for chunk_rows in (None, 3):
        hits = search(npy, x, k=N, meta=meta, chunk_rows=chunk_rows)
        scores = np.array([hit.score for hit in hits]).reshape(N, N)
        rows = np.array([hit.row for hit in hits]).reshape(N, N)
        for q in range(N):
            order = np.lexsort((np.arange(N), h[q]))  # distance ascending, then the lower row
            np.testing.assert_array_equal(rows[q], order)
            want = (1 - 2 * h[q, order] / dim).astype(np.float32)
            np.testing.assert_allclose(scores[q], want, rtol=0, atol=1e-7)
            if dim == 32:
                np.testing.assert_array_equal(scores[q], 1 - 2 * h[q, order] / dim)
            assert scores[q, 0] == 1.0
    # the corpus does hold rows with the same bits (ties at distance 0): the lower one ranks first
    dup = [(q, lowest_same_bits(rows_u8, q)) for q in range(N) if lowest_same_bits(rows_u8, q) != q]
    if truncate:
        assert dup, "expected identical 12-bit rows in this corpus"
    for q, low in dup:  # every row at distance 0, in row order, then the rest
        hit = search(npy, x[q:q + 1], k=N, meta=meta)
        same = np.flatnonzero((rows_u8 == rows_u8[q]).all(axis=1)).tolist()
        assert [(h.row, h.score) for h in hit[:len(same)]] == [(r, 1.0) for r in same]
        assert hit[0].row == low and hit[len(same)].score < 1.0


def numpy_rescore(stored_u8, dim, query, m, k):
    """Candidates: the m*k best by Hamming (ties by lower row); re-ranked by the float query's cosine with +-1 rows."""
    n = len(stored_u8)
    qbits = np.packbits(query > 0)[None]
    h = P.hamming(qbits, stored_u8)[0]
    cand = np.lexsort((np.arange(n), h))[:min(m * k, n)]
    pm = np.unpackbits(stored_u8[cand], axis=1)[:, :dim].astype(np.float64) * 2 - 1
    s = pm @ query.astype(np.float64) / (np.linalg.norm(pm, axis=1) * np.linalg.norm(query.astype(np.float64)))
    order = np.lexsort((cand, -s))[:k]
    return cand[order], s[order], cand


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("truncate", [None, 12])
def test_rescore_reranks_hamming_candidates_by_float_cosine(encoded, tiny_model_dir, precision, truncate):
    extra = ("--precision", precision) + (("--truncate-dim", str(truncate)) if truncate else ())
    npy = encoded(*extra)
    dim = truncate or DIM
    stored_u8 = P.as_ubinary(np.load(npy), precision)
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    queries = ["a dog plays in the park", "the woman sings a song", "a man rides a red bike", LINES[4]]
    vectors = enc.encode(queries, truncate_dim=truncate)
    k, m = 3, 4
    hits = cli_hits(run_main("search", str(npy), *queries, "-k", str(k), "--rescore", str(m), "--json"))
    assert len(hits) == k * len(queries)
    core = search(npy, vectors, k=k, meta=read_sidecar(npy), rescore=m)
    for qi in range(len(queries)):
        want_rows, want_s, cand = numpy_rescore(stored_u8, dim, vectors[qi], m, k)
        mine = [h for h in hits if h["query_index"] == qi]
        assert [h["rank"] for h in mine] == list(range(1, k + 1))
        assert [h["row"] for h in mine] == want_rows.tolist()
        np.testing.assert_allclose([h["score"] for h in mine], want_s, atol=2e-6)
        c = [h for h in core if h.query == qi]
        assert [h.row for h in c] == want_rows.tolist()
        np.testing.assert_allclose([h.score for h in c], want_s, atol=1e-6)
        assert len(cand) == m * k < N  # the candidates are a strict subset of the rows
    # rescoring with every row as candidate is the float cosine over all +-1 rows
    full = search(npy, vectors, k=k, meta=read_sidecar(npy), rescore=N)
    for qi in range(len(queries)):
        want_rows, _, _ = numpy_rescore(stored_u8, dim, vectors[qi], N, k)
        assert [h.row for h in full if h.query == qi] == want_rows.tolist()


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
@pytest.mark.parametrize("dim", [32, 37])
@pytest.mark.parametrize("k, m", [(1, 2), (3, 2), (5, 4)])
def test_rescore_on_a_synthetic_matrix_equals_numpy(tmp_path, precision, dim, k, m):
    """Many random queries over 300 random rows: exactly the m*k Hamming candidates, re-ranked, in every chunking."""
    rng = np.random.default_rng(dim * 100 + k)
    x = rng.standard_normal((300, dim)).astype(np.float32)
    x[150:160] = x[10]  # identical rows: ties broken by the lower row
    npy = tmp_path / "bits.npy"
    np.save(npy, P.quantize(x, precision))
    meta = embedding_meta("default", pooling="avg", max_length=32, normalize=True, dim=dim, rows=300, dtype=precision)
    write_sidecar(npy, meta)
    meta = read_sidecar(npy)
    queries = np.vstack([rng.standard_normal((60, dim)), x[10:11], x[150:151]]).astype(np.float32)
    stored_u8 = P.quantize(x, "ubinary")
    changed = 0
    for chunk_rows in (None, 7):
        hits = search(npy, queries, k=k, meta=meta, rescore=m, chunk_rows=chunk_rows)
        plain = search(npy, queries, k=k, meta=meta, chunk_rows=chunk_rows)
        assert len(hits) == k * len(queries)
        for qi, q in enumerate(queries):
            want_rows, want_s, _ = numpy_rescore(stored_u8, dim, q, m, k)
            got = [h for h in hits if h.query == qi]
            assert [h.rank for h in got] == list(range(1, k + 1))
            assert [h.row for h in got] == want_rows.tolist(), qi
            np.testing.assert_allclose([h.score for h in got], want_s, atol=1e-6)
            changed += [h.row for h in got] != [h.row for h in plain if h.query == qi]
    assert changed  # rescoring does re-rank something here, so the test would see a wrong candidate set
    top = search(npy, queries[-2:], k=3, meta=meta, rescore=m)
    assert [h.row for h in top][:2] == [10, 150]  # x[10] == x[150..159]: equal cosines, lower row first


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_int8_search_scores_against_bucket_middles(encoded, precision):
    npy = encoded("--precision", precision)
    meta = read_sidecar(npy)
    ranges = np.asarray(meta["ranges"], np.float32)
    stored = np.load(npy).astype(np.float64) + (128 if precision == "int8" else 0)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    middles = ranges[0] + (stored + 0.5) * steps
    rng = np.random.default_rng(0)
    q = np.vstack([float_rows(encoded)[:5], rng.standard_normal((3, DIM))]).astype(np.float32)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (middles / np.linalg.norm(middles, axis=1, keepdims=True)).T
    hits = search(npy, q, k=N, meta=meta, chunk_rows=4)
    scores = np.array([h.score for h in hits]).reshape(len(q), N)
    rows = np.array([h.row for h in hits]).reshape(len(q), N)
    np.testing.assert_allclose(scores, np.take_along_axis(cos, rows, axis=1), atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-cos, axis=1), atol=1e-5)
    assert (rows[:5, 0] == np.arange(5)).all()


def test_rescore_on_a_float_matrix_warns_and_changes_nothing(encoded):
    npy = encoded("--precision", "float32")
    base = cli_hits(run_main("search", str(npy), LINES[2], "-k", "3", "--json"))
    r = run_main("search", str(npy), LINES[2], "-k", "3", "--json", "--rescore", "4")
    assert cli_hits(r) == base
    assert "--rescore" in r.stderr


# ------------------------------------------------------------------------------------- stale sidecars, refusals
def copy_pair(npy, folder):
    folder.mkdir()
    shutil.copy(npy, folder / "m.npy")
    shutil.copy(sidecar_path(npy), sidecar_path(folder / "m.npy"))
    return folder / "m.npy"


def edit_sidecar(npy, **changes):
    meta = read_sidecar(npy)
    meta.pop("_path")
    meta.update(changes)
    for key, value in list(meta.items()):
        if value is _DROP:
            del meta[key]
    write_sidecar(npy, meta)


_DROP = object()


@pytest.mark.parametrize("precision, changes, needles", [
    ("int8", {"dtype": "float32"}, ["records float32", "holds int8", "stale"]),
    ("int8", {"dtype": "uint8"}, ["records uint8", "holds int8", "stale"]),
    ("int8", {"dtype": "int4"}, ["int4", "stale"]),
    ("int8", {"dim": 31}, ["31", "stale"]),
    ("int8", {"rows": N + 1}, ["stale"]),
    ("int8", {"dtype": "binary"}, ["stale"]),
    ("int8", {"ranges": _DROP}, ["ranges"]),
    ("uint8", {"dtype": "ubinary"}, ["stale"]),
    ("binary", {"dtype": "ubinary"}, ["records ubinary", "holds int8", "stale"]),
    ("binary", {"dtype": "float32"}, ["stale"]),
    ("binary", {"dim": 48}, ["stale"]),
    ("ubinary", {"dtype": "uint8"}, ["stale"]),
    ("float16", {"dtype": "float32"}, ["records float32", "holds float16", "stale"]),
    ("float32", {"dim": 16}, ["stale"]),
])
def test_stale_sidecar_is_one_line(encoded, tmp_path, precision, changes, needles):
    npy = copy_pair(encoded("--precision", precision), tmp_path / "copy")
    edit_sidecar(npy, **changes)
    one_line_exit_2(run_main("search", str(npy), LINES[0], "-k", "2"), *needles)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("bad", ["31 columns", "3 rows", "flat", "text", "null", "empty"])
def test_stale_ranges_are_one_line(encoded, tmp_path, precision, bad):
    """ranges that are not 2 x dim numbers describe another calibration (or none): refused in one line, exit 2."""
    npy = copy_pair(encoded("--precision", precision), tmp_path / "copy")
    ranges = np.asarray(read_sidecar(npy)["ranges"])
    edit_sidecar(npy, ranges={"31 columns": ranges[:, :31].tolist(), "3 rows": np.vstack([ranges, ranges[:1]]).tolist(),
                              "flat": ranges.ravel().tolist(), "text": [["a"] * DIM] * 2, "null": None, "empty": []}[bad])
    one_line_exit_2(run_main("search", str(npy), LINES[0], "-k", "2"), "ranges")


@pytest.mark.parametrize("changes", [{"truncate_dim": None}, {"truncate_dim": 8}, {"model_dim": 12}])
def test_a_truncated_matrix_with_a_stale_truncation_is_one_line(encoded, tmp_path, changes):
    npy = copy_pair(encoded("--precision", "int8", "--truncate-dim", "12"), tmp_path / "copy")
    edit_sidecar(npy, **changes)
    r = run_main("search", str(npy), LINES[0], "-k", "2")
    one_line_exit_2(r)


def test_rescore_refusals(encoded):
    npy = encoded("--precision", "binary")
    one_line_exit_2(run_main("search", str(npy), LINES[0], "--rescore", "-1"), "--rescore must be 0")
    one_line_exit_2(run_main("search", str(npy), LINES[0], "-k", "0", "--rescore", "2"), "-k must be positive")


def test_a_compact_matrix_without_its_sidecar_is_refused(encoded, tmp_path, tiny_model_dir):
    npy = copy_pair(encoded("--precision", "int8"), tmp_path / "copy")
    sidecar_path(npy).unlink()
    one_line_exit_2(run_main("search", str(npy), LINES[0], "--model", str(tiny_model_dir)), "int8", "not searchable")
