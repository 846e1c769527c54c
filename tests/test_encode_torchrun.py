"""encode under torchrun: the ranks share the length-sorted batches of one process, so the file is byte for byte
the one-process file; a failed run (a refused stdin / stdout, or a rank that fails halfway) leaves no output."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clirunner import run_group
from conftest import WORDS

from esimcse_cli.core.models import load_encoder

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    e.pop("WORLD_SIZE", None)
    e.pop("RANK", None)
    return e


def lines(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 0 to 40 words (a few blank), so the length-sorted batches differ in size."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = 0 if i % 53 == 7 else rng.choice([1, 2, 3, 5, 8, 12, 20, 40])
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)))
    return out


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines(300)) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the shards, in process
def test_shards_together_are_the_one_process_rows(tiny_model_dir):
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    texts = lines(120, seed=1)
    whole = enc.encode(texts, batch_size=1)  # budget 64 tokens: many batches
    parts = []
    for rank in (0, 1):
        out = np.full((len(texts), enc.dim), np.nan, dtype=np.float32)
        enc.encode(texts, batch_size=1, out=out, shard=(rank, 2))
        parts.append(out)
    filled = [~np.isnan(p).any(axis=1) for p in parts]
    for p, f in zip(parts, filled):
        assert np.isnan(p[~f]).all()  # a row is written whole or not at all
    assert filled[0].any() and filled[1].any()  # both ranks have work
    assert not (filled[0] & filled[1]).any()  # disjoint
    assert (filled[0] | filled[1]).all()  # and together every row
    union = np.where(filled[0][:, None], parts[0], parts[1])
    np.testing.assert_array_equal(union, whole)  # exactly, not merely close

    # in chunks, as encode_file streams them: the shards follow each chunk's batches
    whole_stream = np.zeros_like(whole)
    enc.encode_stream(iter(texts), whole_stream, batch_size=1, chunk_size=37)
    merged = np.full_like(whole, np.nan)
    for rank in (0, 1):
        enc.encode_stream(iter(texts), merged, batch_size=1, chunk_size=37, shard=(rank, 2))
    np.testing.assert_array_equal(merged, whole_stream)


def test_one_shard_of_one_is_everything(tiny_model_dir):
    enc = load_encoder(str(tiny_model_dir), device="cpu")
    texts = lines(40, seed=2)
    out = np.full((len(texts), enc.dim), np.nan, dtype=np.float32)
    enc.encode(texts, batch_size=2, out=out, shard=(0, 1))
    np.testing.assert_array_equal(out, enc.encode(texts, batch_size=2))


# ---------------------------------------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_two_process_encode_is_byte_identical(tiny_model_dir, corpus, tmp_path):
    common = ["--model", str(tiny_model_dir), "--batch-size", "4"]
    one, two = tmp_path / "one.npy", tmp_path / "two" / "two.npy"
    two.parent.mkdir()
    r1 = run_group([sys.executable, "-m", "esimcse_cli", "encode", str(corpus), "-o", str(one), *common], 120, env=env(), cwd=REPO)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run_group([*TORCHRUN, "-m", "esimcse_cli", "encode", str(corpus), "-o", str(two), *common], 120, env=env(), cwd=REPO)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert one.read_bytes() == two.read_bytes()
    arr = np.load(two)
    assert arr.shape == (300, 32) and np.isfinite(arr).all()
    assert "2 processes" in r2.stderr and r2.stderr.count("wrote ") == 1  # rank 0 reports, once
    side1 = json.loads((tmp_path / "one.npy.json").read_text())
    side2 = json.loads((two.parent / "two.npy.json").read_text())
    assert side2 == side1 and side2["rows"] == 300
    assert sorted(p.name for p in two.parent.iterdir()) == ["two.npy", "two.npy.json"]  # no temporary file left


@pytest.mark.slow
def test_stdin_and_stdout_are_refused_under_torchrun(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = run_group([*TORCHRUN, "-m", "esimcse_cli", "encode", "-", "-o", str(out / "v.npy"), "--model", str(tiny_model_dir)], 90,
                  env=env(), cwd=REPO, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    errors = [l for l in r.stderr.splitlines() if l.startswith("esimcse: error:")]
    assert errors and all("under torchrun, encode needs an input file" in l for l in errors), r.stderr[-3000:]
    assert list(out.iterdir()) == []
    r = run_group([*TORCHRUN, "-m", "esimcse_cli", "encode", str(corpus), "-o", "-", "--model", str(tiny_model_dir)], 90,
                  env=env(), cwd=REPO)
    assert r.returncode != 0
    assert r.stdout == ""  # nothing binary on stdout
    errors = [l for l in r.stderr.splitlines() if l.startswith("esimcse: error:")]
    assert errors and all("under torchrun" in l for l in errors), r.stderr[-3000:]


@pytest.mark.slow
def test_a_rank_that_fails_halfway_leaves_no_output(tiny_model_dir, corpus, tmp_path):
    """Rank 1 fails after a few batches: torchrun stops rank 0, which removes the temporary .npy; no sidecar either."""
    script = tmp_path / "failing_rank.py"
    script.write_text(textwrap.dedent("""
        import os
        import sys

        from esimcse_cli.core.encoder import SentenceEncoder

        original = SentenceEncoder.embed
        calls = [0]

        def embed(self, input_ids, attention_mask):
            calls[0] += 1
            if os.environ.get("RANK") == "1" and calls[0] >= 3:
                raise RuntimeError("rank 1 fails on purpose")
            return original(self, input_ids, attention_mask)

        SentenceEncoder.embed = embed
        from esimcse_cli.cli import main

        sys.argv[0] = "esimcse"
        main()
    """), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "v.npy"
    # a previous matrix under the same name stays whole, with its own sidecar
    np.save(target, np.zeros((2, 32), dtype=np.float32))
    (out / "v.npy.json").write_text('{"previous": true}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run_group([*TORCHRUN, str(script), "encode", str(corpus), "-o", str(target), "--model", str(tiny_model_dir),
                   "--batch-size", "1"], 120, env=env(), cwd=REPO)
    assert r.returncode != 0, r.stderr[-3000:]
    assert "rank 1 fails on purpose" in r.stderr, r.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary file, nothing replaced
