"""search: chunked top-k equals a numpy brute force (ties by lower row), the sidecar, the row -> text lookup, bad input,
and ``esimcse search`` after ``esimcse encode`` (TSV, JSONL, stdin queries, one-line refusals)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clirunner import run_main

from esimcse_cli.core import corpus
from esimcse_cli.core.embed import encode_file
from esimcse_cli.core.errors import ConfigError, EsimcseError, InputError
from esimcse_cli.core.models import load_encoder
from esimcse_cli.core.search import (
    TextRows,
    check_compatible,
    check_search_args,
    embedding_meta,
    model_key,
    query_encoder_args,
    read_sidecar,
    search,
    search_queries,
    sidecar_path,
    top_k,
    write_sidecar,
)


def brute_force(x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines in float64 (zero vectors score 0) and each query's rows by (score desc, row asc)."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    cos = qn @ xn.T
    return cos, np.argsort(-cos, axis=1, kind="stable")


def assert_matches(x, q, k, scores, rows, atol=1e-5):
    cos, order = brute_force(x, q)
    k = min(k, x.shape[0])
    assert scores.shape == rows.shape == (q.shape[0], k)
    best = np.take_along_axis(cos, order[:, :k], axis=1)
    np.testing.assert_allclose(scores, best, atol=atol)
    np.testing.assert_allclose(np.take_along_axis(cos, rows, axis=1), best, atol=atol)  # the rows really score that
    for r in rows:
        assert len(set(r.tolist())) == k
    # where the brute-force ranking is clear of near ties, the rows are exactly its rows
    padded = np.concatenate([best, np.full((best.shape[0], 1), -np.inf)], axis=1)
    gap_after = padded[:, :-1] - padded[:, 1:]
    gap_before = np.concatenate([np.full((best.shape[0], 1), np.inf), gap_after[:, :-1]], axis=1)
    clear = (gap_after > 10 * atol) & (gap_before > 10 * atol)
    np.testing.assert_array_equal(rows[clear], order[:, :k][clear])


@pytest.fixture
def matrix(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((503, 24)).astype(np.float32)
    path = tmp_path / "corpus.npy"
    np.save(path, x)
    return path, x, rng.standard_normal((7, 24)).astype(np.float32)


@pytest.mark.parametrize("chunk_rows", [None, 1, 5, 64, 502, 10_000])
@pytest.mark.parametrize("k", [1, 10, 503, 900])
def test_top_k_equals_brute_force_across_chunks(matrix, chunk_rows, k):
    path, x, q = matrix
    scores, rows = top_k(np.load(path, mmap_mode="r"), q, k, chunk_rows=chunk_rows)
    assert_matches(x, q, k, scores, rows)
    if k >= x.shape[0]:  # k beyond the rows: every row, once
        assert sorted(rows[0].tolist()) == list(range(x.shape[0]))


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, None])
@pytest.mark.parametrize("k", [1, 4, 9, 60])
def test_ties_rank_the_lower_row_first(tmp_path, chunk_rows, k):
    # one-hot rows (and zero rows): every score is exactly 1 or 0, so ties are exact and everywhere
    rng = np.random.default_rng(3)
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 50)]
    x[rng.integers(0, 50, 8)] = 0
    q = np.eye(4, dtype=np.float32)
    scores, rows = top_k(x, q, k, chunk_rows=chunk_rows)
    cos, order = brute_force(x, q)
    np.testing.assert_array_equal(rows, order[:, :min(k, 50)])
    np.testing.assert_array_equal(scores, np.take_along_axis(cos, rows, axis=1).astype(np.float32))


def test_float16_matrix(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 16)).astype(np.float16)
    path = tmp_path / "half.npy"
    np.save(path, x)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    hits = search(path, q, k=12, chunk_rows=37)
    scores = np.array([h.score for h in hits]).reshape(4, 12)
    rows = np.array([h.row for h in hits]).reshape(4, 12)
    assert_matches(x.astype(np.float64), q, 12, scores, rows)


def test_zero_rows_and_zero_queries_score_zero_not_nan():
    x = np.zeros((6, 5), np.float32)
    x[2] = [1, 2, 3, 4, 5]
    q = np.stack([x[2], np.zeros(5, np.float32)])
    scores, rows = top_k(x, q, 6, chunk_rows=4)
    assert np.isfinite(scores).all()
    assert rows[0, 0] == 2 and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(scores[0, 1:], 0.0)
    np.testing.assert_array_equal(rows[0, 1:], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(scores[1], 0.0)
    np.testing.assert_array_equal(rows[1], range(6))


@pytest.mark.parametrize("normalize_rows", [True, False])
def test_a_row_as_query_finds_itself_with_cosine_one(tmp_path, normalize_rows):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # encode's rows are unit vectors by default
    path = tmp_path / "unit.npy"
    np.save(path, x)
    picks = [0, 1, 999, 1000, 1999]
    hits = [h for h in search(path, x[picks], k=3, chunk_rows=250, normalize_rows=normalize_rows) if h.rank == 1]
    assert [h.row for h in hits] == picks
    assert [h.query for h in hits] == list(range(len(picks)))
    for h in hits:
        assert h.score == pytest.approx(1.0, abs=1e-5)


def test_rows_need_not_be_normalised(matrix):
    _, x, q = matrix
    scaled = x * np.random.default_rng(1).uniform(0.01, 100, (x.shape[0], 1)).astype(np.float32)
    a = top_k(x, q, 20)
    b = top_k(scaled, q * 3, 20, chunk_rows=33)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert_matches(x, q, 20, *b)


def test_many_queries_are_scored_in_blocks(monkeypatch, matrix):
    from esimcse_cli.core import search as search_mod

    _, x, _ = matrix
    q = np.random.default_rng(2).standard_normal((23, 24)).astype(np.float32)
    monkeypatch.setattr(search_mod, "QUERY_BLOCK", 5)
    assert_matches(x, q, 8, *top_k(x, q, 8, chunk_rows=50))


def test_encode_then_search_finds_each_sentence(tmp_path, tiny_model_dir):
    lines = ["a dog runs in the park", "", "the man plays a guitar", "two birds sit on a tree", "the man plays a guitar"]
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(lines), encoding="utf-8")  # no final newline; a blank line keeps its row
    out = tmp_path / "corpus.npy"
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    stats = encode_file(enc, src, out, model=str(tiny_model_dir))  # the sidecar beside it
    meta = check_search_args(out, k=2)
    args = query_encoder_args(out, meta)
    assert args == {"spec": model_key(tiny_model_dir), "pooling": enc.pooling, "max_length": enc.max_length,
                    "backend": "torch", "quantize": "none"}
    check_compatible(meta, str(tiny_model_dir), enc.pooling, enc.dim)
    with TextRows.open(src, stats.rows) as texts:
        hits = search(out, enc.encode(["two birds sit on a tree", "the man plays a guitar"]), k=2, texts=texts)
    assert [(h.query, h.rank, h.row, h.text) for h in hits] == [
        (0, 1, 3, "two birds sit on a tree"), (0, 2, hits[1].row, lines[hits[1].row]),
        (1, 1, 2, "the man plays a guitar"), (1, 2, 4, "the man plays a guitar"),  # equal vectors: the lower row first
    ]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------- sidecar
def meta_for(tmp_path, **over):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    meta = embedding_meta(str(model), pooling="avg", max_length=128, normalize=True, dim=24, rows=503, dtype="float32",
                          source="corpus.txt")
    meta.update(over)
    return meta


def test_sidecar_round_trip(matrix, tmp_path):
    path, _, _ = matrix
    meta = meta_for(tmp_path)
    written = write_sidecar(path, meta)
    assert written == sidecar_path(path) == tmp_path / "corpus.npy.json"
    back = read_sidecar(path)
    assert back.pop("_path") == str(written)
    assert back == meta
    assert json.loads(written.read_text(encoding="utf-8"))["esimcse_version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.npy", "corpus.npy.json", "model"]  # no temporary left
    assert check_search_args(path, k=5)["model"] == str((tmp_path / "model").resolve())


def test_no_sidecar(matrix):
    path, _, _ = matrix
    assert read_sidecar(path) is None
    assert check_search_args(path) is None
    with pytest.raises(ConfigError, match="corpus.npy.json says which model.*give --model"):
        query_encoder_args(path, None)
    assert query_encoder_args(path, None, "default") == {"spec": "default", "pooling": None, "max_length": None}


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ('{"model": "default"}', "missing pooling"),
                                               ("[1, 2]", "not an esimcse sidecar")])
def test_bad_sidecar_is_one_line(matrix, content, message):
    path, _, _ = matrix
    sidecar_path(path).write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as exc:
        read_sidecar(path)
    assert "\n" not in str(exc.value)


def test_stale_sidecar_is_refused(matrix, tmp_path):
    path, _, _ = matrix
    write_sidecar(path, meta_for(tmp_path, rows=400))
    with pytest.raises(InputError, match="records 400 x 24, but .* is 503 x 24; the sidecar is stale"):
        check_search_args(path)


def test_mismatches_are_refused(matrix, tmp_path, monkeypatch):
    path, _, _ = matrix
    write_sidecar(path, meta_for(tmp_path))
    meta = read_sidecar(path)
    monkeypatch.chdir(tmp_path)
    check_compatible(meta, "./model", "avg", 24)  # the same folder, spelled another way
    check_compatible(meta, None, None, None)
    check_compatible(None, "anything", "cls", 7)
    with pytest.raises(ConfigError, match="--model default: the matrix was encoded with .*model .*corpus.npy.json"):
        check_compatible(meta, "default", None, None)
    with pytest.raises(ConfigError, match="--pooling cls: the matrix was encoded with avg pooling"):
        check_compatible(meta, None, "cls", None)
    with pytest.raises(InputError, match="gives 32-dim vectors; the matrix holds 24-dim"):
        check_compatible(meta, None, None, 32)
    with pytest.raises(ConfigError):
        query_encoder_args(path, meta, model="default")
    assert query_encoder_args(path, meta, max_length=64) == {"spec": meta["model"], "pooling": "avg", "max_length": 64,
                                                             "backend": "torch", "quantize": "none"}


# ---------------------------------------------------------------------------------------------------- texts
def test_text_rows_align_with_the_rows_encode_writes(tmp_path):
    raw = "\ufefffirst\r\n\nthird line ünï 文字\n   \nlast without newline".encode("utf-8")
    src = tmp_path / "t.txt"
    src.write_bytes(raw)
    expected = [text for _, text in corpus.iter_lines(src)]
    assert corpus.count_texts(src) == len(expected) == 5  # encode's row count: blank lines included
    with TextRows.open(src, 5) as rows:
        assert len(rows) == 5
        assert rows.get([4, 0, 2, 1, 3]) == [expected[i] for i in (4, 0, 2, 1, 3)]
        assert rows.get([0]) == ["first"]
    src.write_bytes(b"a\nb\n")
    with TextRows.open(src) as rows:
        assert rows.get([0, 1]) == ["a", "b"] and len(rows) == 2


def test_text_rows_of_a_csv(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text('id,text\n1,"two\nlines"\n2,\n3,plain\n', encoding="utf-8")
    assert corpus.count_texts(src) == 3
    with TextRows.open(src, 3) as rows:
        assert rows.get([2, 0, 1]) == ["plain", "two\nlines", ""]


def test_text_rows_undecodable_line_is_one_line(tmp_path):
    src = tmp_path / "t.txt"
    src.write_bytes(b"ok\n\xff\xfe bad\n")
    with TextRows.open(src, 2) as rows:
        with pytest.raises(InputError, match=r"t.txt:2: not valid UTF-8"):
            rows.get([1])
    with TextRows.open(src, 2, encoding_errors="replace") as rows:
        assert rows.get([1]) == ["\ufffd\ufffd bad"]


def test_text_count_mismatch(matrix, tmp_path):
    path, _, _ = matrix
    src = tmp_path / "t.txt"
    src.write_text("\n".join(["x"] * 502) + "\n\n", encoding="utf-8")  # 503 lines, the last one blank
    TextRows.open(src, 503).close()
    src.write_text("\n".join(["x"] * 502) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.txt: 502 lines \(blank ones included.*matrix has 503 rows"):
        search_queries(path, ["x"], texts=src, model=str(tmp_path / "no-model"))  # the texts are refused before the model loads
    with pytest.raises(InputError, match="502 lines"):
        TextRows.open(src, 503)
    with TextRows.open(src) as rows, pytest.raises(InputError, match="502 lines"):
        search(path, np.ones((1, 24), np.float32), texts=rows)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line(matrix, tmp_path):
    path, _, _ = matrix
    np.save(tmp_path / "flat.npy", np.zeros(5, np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((5, 3), np.int64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    (tmp_path / "text.npy").write_text("not numpy", encoding="utf-8")
    cases = [
        (dict(npy_path=tmp_path / "missing.npy"), "missing.npy: no such file"),
        (dict(npy_path=tmp_path), "is a folder"),
        (dict(npy_path=tmp_path / "text.npy"), "text.npy: not a .npy matrix"),
        (dict(npy_path=tmp_path / "flat.npy"), "expected a 2-D matrix .*shape \\(5,\\)"),
        (dict(npy_path=tmp_path / "ints.npy"), "dtype int64 is not searchable"),
        (dict(npy_path=tmp_path / "empty.npy"), "the matrix is empty"),
        (dict(npy_path=path, k=0), "-k must be positive, got 0"),
        (dict(npy_path=path, chunk_rows=-1), "--chunk-rows must be positive, got -1"),
        (dict(npy_path=path, batch_size=0), "--batch-size must be positive, got 0"),
        (dict(npy_path=path, encoding_errors="loose"), "--encoding-errors must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EsimcseError, match=message) as exc:
            check_search_args(**kwargs)
        assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
        if "must be positive" in message:  # an option's value, as other commands say it
            assert isinstance(exc.value, ConfigError)
    with pytest.raises(EsimcseError, match="none.txt: no such file") as exc:
        search_queries(path, ["x"], texts=tmp_path / "none.txt", model=str(tmp_path / "no-model"))
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_bad_values_in_search(matrix, tmp_path):
    path, x, q = matrix
    with pytest.raises(InputError, match="holds 24-dim rows; the queries are 8-dim"):
        search(path, q[:, :8])
    bad = x.copy()
    bad[321, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="nan.npy: row 321 holds NaN or infinite values"):
        search(tmp_path / "nan.npy", q, chunk_rows=100)
    assert search(path, q[:0]) == []


@pytest.mark.parametrize("layout", ["big-endian", "fortran", "float64"])
def test_other_npy_layouts(tmp_path, layout):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((120, 12)).astype(np.float32)
    stored = {"big-endian": x.astype(">f4"), "fortran": np.asfortranarray(x), "float64": x.astype(np.float64)}[layout]
    np.save(tmp_path / "m.npy", stored)
    q = rng.standard_normal((3, 12)).astype(np.float32)
    assert_matches(x, q, 7, *top_k(np.load(tmp_path / "m.npy", mmap_mode="r"), q, 7, chunk_rows=50))


def test_an_infinite_row_is_refused(tmp_path):
    x = np.ones((10, 4), np.float32)
    x[6, 1] = np.inf
    with pytest.raises(InputError, match="row 6 holds NaN or infinite values"):
        top_k(x, np.ones((2, 4), np.float32), 3, chunk_rows=4, display="m.npy")


# ------------------------------------------------------------------------------------------ the command line
LINES = ["a dog runs in the park", "", "the man plays a guitar", "two birds\tsit on a [red] tree", "the woman reads a book"]


@pytest.fixture
def encoded(tmp_path, tiny_model_dir):
    """``esimcse encode`` of a small file (a blank line, a tab, markup-like brackets), as a user runs it."""
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    r = run_main("encode", str(src), "-o", str(tmp_path / "corpus.npy"), "-m", str(tiny_model_dir))
    assert r.code == 0, r.stderr
    return tmp_path / "corpus.npy", src


def tsv(r) -> list[list[str]]:
    assert r.code == 0, r.stderr
    return [line.split("\t") for line in r.stdout.decode("utf-8").splitlines()]


def test_cli_each_line_finds_itself_first_with_the_sidecar_model(encoded):
    npy, src = encoded
    queries = [LINES[0], LINES[2], LINES[4]]
    rows = tsv(run_main("search", npy, "--texts", src, *queries, "-k", "3"))  # no --model: the sidecar's
    assert len(rows) == 9 and all(len(row) == 5 for row in rows)
    assert [int(row[0]) for row in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [int(row[1]) for row in rows] == [1, 2, 3] * 3
    for qi, line in enumerate(queries):
        top = rows[3 * qi]
        assert (top[2], int(top[3]), top[4]) == ("1.000000", LINES.index(line), line)
        scores = [float(row[2]) for row in rows[3 * qi:3 * qi + 3]]
        assert scores == sorted(scores, reverse=True)
    # a text with a tab stays one field; without --texts the field is empty
    rows = tsv(run_main("search", npy, "--texts", src, LINES[3], "-k", "1"))
    assert rows == [["0", "1", "1.000000", "3", "two birds\\tsit on a [red] tree"]]
    assert tsv(run_main("search", npy, LINES[3], "-k", "1")) == [["0", "1", "1.000000", "3", ""]]


def test_cli_json_lines(encoded):
    npy, src = encoded
    r = run_main("search", npy, "--texts", src, LINES[2], LINES[3], "-k", "2", "--json")
    assert r.code == 0, r.stderr
    hits = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
    assert [sorted(h) for h in hits] == [sorted(["query", "query_index", "rank", "score", "row", "text"])] * 4
    assert [(h["query_index"], h["rank"], h["query"]) for h in hits] == [
        (0, 1, LINES[2]), (0, 2, LINES[2]), (1, 1, LINES[3]), (1, 2, LINES[3])]
    assert (hits[0]["row"], hits[0]["text"], round(hits[0]["score"], 4)) == (2, LINES[2], 1.0)
    assert (hits[2]["row"], hits[2]["text"], round(hits[2]["score"], 4)) == (3, LINES[3], 1.0)
    assert hits[1]["text"] == LINES[hits[1]["row"]]
    r = run_main("search", npy, LINES[0], "-k", "1", "--json")
    assert json.loads(r.stdout)["text"] is None


def test_cli_queries_from_stdin(encoded):
    """One query a line; a blank line is skipped, and each index is still the query's line (0-based)."""
    npy, src = encoded
    r = run_main("search", npy, "--texts", src, "-k", "1", stdin=f"{LINES[4]}\n\n{LINES[0]}\n".encode("utf-8"))
    assert [(row[0], row[3], row[4]) for row in tsv(r)] == [("0", "4", LINES[4]), ("2", "0", LINES[0])]
    assert "1 blank stdin line(s) skipped" in r.stderr
    r = run_main("search", npy, "-k", "1", stdin=b"")
    assert r.code == 2 and r.lines == ["esimcse: error: no queries: stdin held no text"]


def test_cli_k_beyond_the_rows_gives_every_row(encoded):
    npy, _ = encoded
    rows = tsv(run_main("search", npy, LINES[0], "-k", "50", "--chunk-rows", "2"))
    assert sorted(int(row[3]) for row in rows) == list(range(len(LINES)))


def one_line_exit_2(r, *needles):
    assert r.code == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.lines) == 1, r.stderr
    assert r.lines[0].startswith("esimcse: error: ") and r.stdout == b""
    for needle in needles:
        assert needle in r.lines[0], r.lines[0]


def test_cli_refusals_are_one_line(encoded, tmp_path, tiny_model_dir):
    npy, src = encoded
    short = tmp_path / "short.txt"
    short.write_text("\n".join(LINES[:3]) + "\n", encoding="utf-8")
    np.save(tmp_path / "other.npy", np.ones((5, 24), np.float32))  # another tool's matrix: no sidecar, 24 dims
    cases = [
        (["-k", "0"], "-k must be positive, got 0"),
        (["--top-k", "-3"], "-k must be positive, got -3"),
        (["--chunk-rows", "0"], "--chunk-rows must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--texts", str(short)], "short.txt: 3 lines (blank ones included, as encode counts them), but the matrix has 5 rows"),
        (["--texts", str(tmp_path / "none.txt")], "none.txt: no such file"),
        (["--text-column", "text"], "--text-column names a column of --texts"),
        (["--model", "default"], "the matrix was encoded with"),
        (["--pooling", "cls"], "--pooling cls: the matrix was encoded with avg pooling"),
    ]
    for extra, needle in cases:
        one_line_exit_2(run_main("search", npy, "a dog", *extra), needle)
    one_line_exit_2(run_main("search", tmp_path / "missing.npy", "a dog"), "missing.npy: no such file")
    one_line_exit_2(run_main("search", src, "a dog"), "corpus.txt: not a .npy matrix")
    one_line_exit_2(run_main("search", tmp_path / "other.npy", "a dog"), "no other.npy.json says which model", "give --model")
    one_line_exit_2(run_main("search", tmp_path / "other.npy", "a dog", "--model", tiny_model_dir),
                    "the query model gives 32-dim vectors", "other.npy holds 24-dim ones")


def test_cli_sidecar_dimension_mismatch_is_one_line(encoded, tiny_model_dir):
    """A sidecar that says 24 dims (the matrix too) and a model of 32: refused before any query is encoded."""
    npy, _ = encoded
    np.save(npy, np.ones((len(LINES), 24), np.float32))
    meta = read_sidecar(npy)
    meta.pop("_path")
    write_sidecar(npy, {**meta, "dim": 24})
    one_line_exit_2(run_main("search", npy, "a dog"), "the query model gives 32-dim vectors; the matrix holds 24-dim ones",
                    "corpus.npy.json")


def test_cli_a_table_per_query_on_a_terminal(encoded, monkeypatch):
    import io

    from esimcse_cli import console as ui

    npy, src = encoded
    screen = io.StringIO()
    monkeypatch.setattr(ui, "out", ui._Console(file=screen, force_terminal=True, width=120, color_system=None))
    r = run_main("search", npy, "--texts", src, LINES[3], LINES[0], "-k", "2")
    assert r.code == 0 and r.stdout == b"", r.stderr
    shown = screen.getvalue()
    assert "query 0: two birds" in shown and "query 1: a dog runs in the park" in shown
    assert "[red]" in shown  # a corpus line is text, not Rich markup
    assert shown.count("1.0000") == 2 and "rank" in shown and "score" in shown


def test_a_terminal_on_stdin_is_refused_not_waited_on(monkeypatch):
    from esimcse_cli.core.search import read_queries

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    with pytest.raises(InputError, match="no queries: give them after NPY, or pipe them into stdin"):
        read_queries(None)
    assert read_queries(["a", " ", "b"]) == {0: "a", 2: "b"}
    with pytest.raises(InputError, match="every QUERY is blank"):
        read_queries([""])


@pytest.mark.slow
def test_cli_into_a_closed_pipe_exits_quietly(encoded):
    """`esimcse search ... | head -1`: exit 0, nothing on stderr (click alone would exit 1)."""
    import subprocess
    import sys

    npy, src = encoded
    proc = subprocess.Popen([sys.executable, "-m", "esimcse_cli", "search", str(npy), "--texts", str(src), "-k", "5"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(("the man plays\n" * 20000).encode("utf-8"))
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert first.startswith(b"0\t1\t")
    assert proc.returncode == 0, err
    assert err.strip() == ""
