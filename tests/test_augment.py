"""Tests for esimcse_cli.core.augment, esimcse_cli.core.augment_text and the `esimcse augment` command."""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from clirunner import run_main
from esimcse_cli.core import augment as aug
from esimcse_cli.core import corpus
from esimcse_cli.core.augment_text import Augmenter, augment_file, check_augment_args
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.models import load_tokenizer

REPO = Path(__file__).resolve().parents[1]

LINES = [
    "The old man walks his dog in the park every morning.",
    "",
    "A child plays the piano while her father sings a song.",
    "Three horses ran along the river road yesterday.",
    "   ",
    "Is the red car faster than the blue one?",
    "They were cutting tomato and onion for the long night.",
]


def paper_upper(n, rate):
    """The paper's formula, written out independently of the implementation."""
    return min(n, max(2, int(rate * n)))


def official_values(n, rate, level="subword"):
    """The released code's counts (caskcsg/sentemb ESimCSE/train.py, prepare_features), written out here.

    subword (dup_type bpe): L = n + 2 with [CLS]/[SEP]; randrange(min(10, int(r*L))) if int(r*L) > 0, else 0;
    clipped to n (where the released sample() would raise). word: randrange(min(10, n, max(2, int(r*n)))).
    """
    if n <= 0:
        return {0}
    if level == "word":
        return set(range(min(10, n, max(2, int(rate * n)))))
    t = int(rate * (n + 2))
    return {min(k, n) for k in range(min(10, t))} if t > 0 else {0}


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def augment_lines(texts, *args, **kwargs):
    """Each line's augmented text, through one Augmenter (what `esimcse augment` writes)."""
    return [rec.augmented for rec in Augmenter(*args, **kwargs).records(texts)]


def strip_copies(out, positions):
    """Remove the added copy of each repeated/inserted position (the copy sits at p + j + 1)."""
    added = {p + j + 1 for j, p in enumerate(positions)}
    return [t for i, t in enumerate(out) if i not in added]


# ------------------------------------------------------------------------------------------------
# counts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["subword", "word"])
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_repeat_count_support(variant, level):
    rng = random.Random(123)
    for n in range(0, 70):
        for rate in (0.0, 0.1, 0.2, 0.32, 0.5, 0.9, 1.0):
            expected = set(range(paper_upper(n, rate) + 1)) if variant == "paper" else official_values(n, rate, level)
            if n == 0:
                expected = {0}
            assert set(aug.repeat_support(n, rate, variant, level)) == expected, (n, rate)
            seen = {aug.repeat_count(n, rate, variant, rng, level) for _ in range(60)}
            assert seen <= expected, (n, rate, seen - expected)


def test_official_subword_zero_when_range_empty_and_capped_at_9():
    rng = random.Random(0)
    # L = n + 2: int(0.32 * 3) == 0 (randrange(0) is not called: 0), int(0.32 * 4..6) == 1 (randrange(1) is 0)
    for n in (0, 1, 2, 3, 4):
        assert {aug.repeat_count(n, 0.32, "official", rng) for _ in range(50)} == {0}
    # n = 5: L = 7, int(2.24) == 2 -> randrange(2)
    assert {aug.repeat_count(5, 0.32, "official", rng) for _ in range(200)} == {0, 1}
    # the released code's cap: at most 9 repeats however long the sentence
    assert max(aug.repeat_count(1000, 0.32, "official", rng) for _ in range(500)) == 9
    # r = 1, n = 3: randrange(min(10, 5)) could give 4 > 3 positions (the released sample() raises): clipped to 3
    assert {aug.repeat_count(3, 1.0, "official", rng) for _ in range(300)} == {0, 1, 2, 3}


def test_official_word_short_sentences_and_last_word():
    rng = random.Random(0)
    assert {aug.repeat_count(1, 0.32, "official", rng, "word") for _ in range(50)} == {0}
    # max(2, int(r*n)) lets two- and three-word lines repeat one word; min(10, n, ...) caps at n - 1
    assert {aug.repeat_count(2, 0.32, "official", rng, "word") for _ in range(200)} == {0, 1}
    assert {aug.repeat_count(3, 0.0, "official", rng, "word") for _ in range(200)} == {0, 1}
    assert max(aug.repeat_count(1000, 0.32, "official", rng, "word") for _ in range(500)) == 9
    # the last word is never chosen, by repetition, insertion or deletion
    for n in range(1, 12):
        words = [f"w{i}" for i in range(n)]
        for _ in range(100):
            _, pos = aug.augment_ids(words, "repetition", 1.0, "official", rng, level="word")
            assert all(0 <= p < n - 1 for p in pos) or not pos
            _, ipos = aug.augment_ids(words, "insertion", 1.0, "official", rng, level="word", insert=lambda r: "X")
            _, dpos = aug.augment_ids(words, "deletion", 1.0, "official", rng, level="word")
            assert n - 1 not in ipos and n - 1 not in dpos


def _chi_square_p(counts, expected_probs, draws):
    from scipy.stats import chisquare

    keys = sorted(expected_probs)
    obs = [counts.get(k, 0) for k in keys]
    exp = [expected_probs[k] * draws for k in keys]
    return chisquare(obs, exp).pvalue


@pytest.mark.parametrize(
    "n,rate,variant,probs",
    [
        (25, 0.32, "paper", {k: 1 / 9 for k in range(9)}),       # U{0..8}
        (4, 0.32, "paper", {k: 1 / 3 for k in range(3)}),        # max(2, 1) = 2 -> U{0..2}
        (1, 0.32, "paper", {0: 1 / 3, 1: 2 / 3}),                # U{0..2} clipped to N = 1
        (25, 0.32, "official", {k: 1 / 8 for k in range(8)}),    # L = 27: randrange(int(8.64))
        (100, 0.32, "official", {k: 1 / 10 for k in range(10)}), # randrange(min(10, 32))
        (5, 0.32, "official", {0: 1 / 2, 1: 1 / 2}),             # L = 7: randrange(2)
        (30, 0.32, "official-word", {k: 1 / 9 for k in range(9)}),  # randrange(min(10, 30, 9))
        (3, 0.32, "official-word", {0: 1 / 2, 1: 1 / 2}),           # randrange(min(10, 3, max(2, 0)))
    ],
)
def test_repeat_count_distribution(n, rate, variant, probs):
    rng = random.Random(2024)
    draws = 20000
    variant, _, level = variant.partition("-")
    counts = collections.Counter(aug.repeat_count(n, rate, variant, rng, level or "subword") for _ in range(draws))
    assert set(counts) <= set(probs)
    for k, p in probs.items():
        assert abs(counts[k] / draws - p) < 0.015, (k, counts[k] / draws, p)
    assert _chi_square_p(counts, probs, draws) > 1e-4


def test_positions_distinct_sorted_and_uniform():
    rng = random.Random(5)
    n, draws = 12, 12000
    tokens = list(range(n))
    hits = collections.Counter()
    total = 0
    for _ in range(draws):
        _, pos = aug.augment_ids(tokens, "repetition", 0.32, "paper", rng)
        assert pos == sorted(set(pos))
        assert all(0 <= p < n for p in pos)
        hits.update(pos)
        total += len(pos)
    # each position equally likely: expected share 1/n of all chosen positions
    for p in range(n):
        assert abs(hits[p] / total - 1 / n) < 0.01


def test_bad_rate_and_variant_raise_config_error():
    for bad in (-0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            aug.check_rate(bad)
    with pytest.raises(ConfigError):
        aug.repeat_count(10, 0.32, "nope", random.Random(0))
    with pytest.raises(ConfigError):
        Augmenter(None, level="word", dup_rate=2.0)
    with pytest.raises(ConfigError):
        Augmenter(None, level="subword")  # needs a tokenizer


# ------------------------------------------------------------------------------------------------
# what happens to the tokens
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_repetition_keeps_every_token_in_order(variant):
    rng = random.Random(11)
    for n in range(0, 40):
        tokens = [f"t{i}" for i in range(n)]
        for _ in range(20):
            out, pos = aug.augment_ids(tokens, "repetition", 0.32, variant, rng)
            assert len(out) == n + len(pos)
            assert len(pos) in aug.repeat_support(n, 0.32, variant)
            assert strip_copies(out, pos) == tokens
            for j, p in enumerate(pos):  # each copy sits right after its original
                assert out[p + j] == out[p + j + 1] == tokens[p]
            assert aug.added_marks(n, pos).count(True) == len(pos)


def test_repetition_over_ids_with_duplicates():
    tokens = [5, 5, 7, 5, 9, 9, 9]
    rng = random.Random(1)
    for _ in range(200):
        out, pos = aug.augment_ids(tokens, "repetition", 0.5, "paper", rng)
        assert strip_copies(out, pos) == tokens
        assert collections.Counter(out) - collections.Counter(tokens) == collections.Counter(tokens[p] for p in pos)


def test_insertion_grows_and_keeps_originals():
    rng = random.Random(3)
    insert = lambda r: "NEW"  # noqa: E731
    for n in range(0, 30):
        tokens = [f"w{i}" for i in range(n)]
        for _ in range(10):
            out, pos = aug.augment_ids(tokens, "insertion", 0.32, "paper", rng, insert=insert)
            assert len(out) == n + len(pos) >= n
            assert len(pos) in aug.repeat_support(n, 0.32, "paper")
            assert strip_copies(out, pos) == tokens
            marks = aug.added_marks(n, pos)
            assert [t for t, m in zip(out, marks) if m] == ["NEW"] * len(pos)


def test_deletion_shrinks_never_below_one():
    rng = random.Random(4)
    assert aug.augment_ids([], "deletion", 0.32, "paper", rng)[0] == []
    for n in range(1, 30):
        tokens = list(range(n))
        for _ in range(30):
            out, pos = aug.augment_ids(tokens, "deletion", 1.0, "paper", rng)
            assert 1 <= len(out) <= n
            assert len(out) == n - len(pos)
            assert out == [t for t in tokens if t not in set(pos)]  # survivors keep their order
    # with the paper formula, rate 1 on n tokens can draw n; deletion clips it to n - 1
    lengths = {len(aug.augment_ids(list(range(5)), "deletion", 1.0, "paper", rng)[0]) for _ in range(300)}
    assert min(lengths) == 1


def test_augment_batch_repetition_specials_and_speed():
    import time

    cls, sep = 101, 102
    batch = [[cls] + list(range(1000 + 10 * b, 1000 + 10 * b + 30)) + [sep] for b in range(64)]
    rng = random.Random(0)
    out = aug.augment_batch(batch, "repetition", 0.32, "paper", rng, special_ids={cls, sep})
    assert len(out) == 64
    for src, dst in zip(batch, out):
        assert dst[0] == cls and dst[-1] == sep
        assert dst.count(cls) == 1 and dst.count(sep) == 1
        assert len(dst) - len(src) in aug.repeat_support(30, 0.32, "paper")
    # same seed -> same batch; input untouched
    again = aug.augment_batch(batch, "repetition", 0.32, "paper", random.Random(0), special_ids={cls, sep})
    assert again == out
    assert batch[0][0] == cls and len(batch[0]) == 32
    t0 = time.perf_counter()
    for _ in range(20):
        aug.augment_batch(batch, "repetition", 0.32, "paper", rng, special_ids={cls, sep})
    per_step = (time.perf_counter() - t0) / 20
    assert per_step < 0.05, per_step  # ~1 ms here; generous for a loaded CI box


def test_augment_batch_insertion_and_deletion_on_ids():
    rng = random.Random(9)
    batch = [[101, 7, 8, 9, 10, 102], [101, 11, 102]]
    ins = aug.augment_batch(batch, "insertion", 0.32, "paper", rng, {101, 102}, insert=lambda r: 4)
    for src, dst in zip(batch, ins):
        assert len(dst) >= len(src) and dst[0] == 101 and dst[-1] == 102
        assert [t for t in dst if t != 4] == src
    dele = aug.augment_batch(batch, "deletion", 1.0, "paper", rng, {101, 102})
    for src, dst in zip(batch, dele):
        assert dst[0] == 101 and dst[-1] == 102 and len(dst) >= 3


# ------------------------------------------------------------------------------------------------
# text level
# ------------------------------------------------------------------------------------------------
def test_text_augmentation_deterministic_and_line_aligned(tok):
    a = list(augment_lines(LINES, tok, seed=1))
    b = list(augment_lines(LINES, tok, seed=1))
    assert a == b
    assert len(a) == len(LINES)
    assert a[1] == "" and a[4] == ""
    many = [f"the man plays the guitar in the park {i} times." for i in range(30)]
    assert list(augment_lines(many, tok, seed=1)) != list(augment_lines(many, tok, seed=2))


def test_text_subword_repetition_reconstructs(tok):
    a = Augmenter(tok, "repetition", "subword", 0.32, "paper", seed=0)
    for line in LINES:
        rec = a.record(line)
        if not line.strip():
            assert rec.augmented == ""
            continue
        assert rec.tokens == tok.tokenize(line)
        kept = [t for t, m in zip(rec.new_tokens, rec.added) if not m]
        assert kept == rec.tokens
        assert rec.augmented == tok.convert_tokens_to_string(rec.new_tokens)
        # the display segments spell out exactly the augmented text
        assert "".join(t for t, _ in a.display_segments(rec.new_tokens, rec.added)) == rec.augmented


def test_word_level_splits_on_whitespace():
    out = list(augment_lines(["  one   two three  ", "solo"], None, level="word", seed=5, dup_rate=1.0))
    words = out[0].split(" ")
    assert out[0] == " ".join(words)  # single spaces
    assert [w for i, w in enumerate(words) if i == 0 or words[i - 1] != w] == ["one", "two", "three"]
    assert out[1] in ("solo", "solo solo")


def test_insert_tokens(tok):
    mask_out = list(augment_lines(LINES, tok, method="insertion", insert_token="mask", seed=3, dup_rate=1.0))
    assert any("[MASK]" in line for line in mask_out)
    a = Augmenter(tok, "insertion", "subword", 1.0, "paper", "random", seed=3)
    vocab = set(aug.insertion_vocab(tok))
    assert vocab and not any(v.startswith("##") or v in tok.all_special_tokens for v in vocab)
    inserted = []
    for line in LINES * 5:
        rec = a.record(line)
        inserted += [t for t, m in zip(rec.new_tokens, rec.added) if m]
    assert inserted and set(inserted) <= vocab
    w = Augmenter(None, "insertion", "word", 1.0, "paper", "stopword", seed=3)
    rec = w.record("cats chase mice")
    added = [t for t, m in zip(rec.new_tokens, rec.added) if m]
    assert set(added) <= set(aug.STOPWORDS)
    assert [t for t, m in zip(rec.new_tokens, rec.added) if not m] == ["cats", "chase", "mice"]


def test_batched_tokenisation_equals_one_by_one(tok):
    a = Augmenter(tok, seed=0)
    texts = LINES + ["héllo wörld ½ 𝔘𝔫𝔦", "[MASK] and [CLS] here", "x" * 500, "isn't it?"]
    assert a.tokenize_many(texts) == [a.tokenize(t) for t in texts]
    one_by_one = Augmenter(tok, seed=4)
    batched = Augmenter(tok, seed=4)
    assert [one_by_one.record(t).augmented for t in texts] == [r.augmented for r in batched.records(texts, chunk=3)]


@pytest.mark.parametrize("level", ["subword", "word"])
def test_output_never_breaks_lines(tok, level):
    weird = ["a\u2028b man\x85dog", "the\x0bcat\x0c plays \u2029 ball", "\x1c\x1d\x1e"]
    for method in aug.METHODS:
        out = list(augment_lines(weird, tok, method=method, level=level, insert_token="mask", seed=0, dup_rate=1.0))
        assert len(out) == len(weird)
        assert all(len(line.splitlines()) <= 1 for line in out), out


def test_deletion_text_keeps_one_token():
    out = list(augment_lines(["single", "two words"], None, method="deletion", level="word", dup_rate=1.0, seed=0))
    assert out[0] == "single"
    assert out[1] in ("two", "words", "two words")


def test_read_lines_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe oops\n")
    with pytest.raises(InputError, match=r"bad.txt:2:"):
        list(corpus.iter_lines(bad))
    with pytest.raises(InputError):
        check_augment_args(tmp_path / "missing.txt")
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbfa b\r\nc\r\n")
    assert [text for _, text in corpus.iter_lines(crlf)] == ["a b", "c"]
    assert corpus.count_lines(crlf) == 2


def test_bytes_not_utf8_fail_before_the_tokenizer_loads_when_stdout_gets_the_lines(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe oops\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        check_augment_args(bad)
    check_augment_args(bad, tmp_path / "out.txt")  # to a file: met while writing, the old file kept
    r = run_main("augment", str(bad), "--model", str(tmp_path / "nonexistent"))
    assert r.code == 2 and r.stdout == b""
    assert len(r.lines) == 1 and "bad.txt:2: not valid UTF-8" in r.lines[0], r.stderr


def test_augment_file_counts_shows_and_refuses_its_own_input(tmp_path):
    import contextlib

    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    dst = tmp_path / "out.txt"
    seen = []

    @contextlib.contextmanager
    def progress(total):
        seen.append(total)
        yield lambda n: seen.append(n)

    res = augment_file(Augmenter(None, level="word", seed=3), src, dst, show_limit=2, progress=progress)
    assert dst.read_text(encoding="utf-8").split("\n")[:-1] == augment_lines(LINES, None, level="word", seed=3)
    assert res.lines == len(LINES) and len(res.shown) == 2 and not res.reader_gone
    assert res.changed == sum(r.n_changed for r in Augmenter(None, level="word", seed=3).records(LINES)) > 0
    assert seen[0] == len(LINES) and sum(seen[1:]) == len(LINES)
    with pytest.raises(InputError, match="is also the input file"):
        augment_file(Augmenter(None, level="word"), src, src)
    with pytest.raises(ConfigError, match="--show-limit"):
        check_augment_args(src, dst, level="word", show_limit=-1)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    before = dst.read_bytes()
    with pytest.raises(InputError, match="no lines"):
        augment_file(Augmenter(None, level="word"), empty, dst)
    assert dst.read_bytes() == before  # a failed run leaves the old file as it was


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()


def _run(runner, args, input=None):
    from esimcse_cli.cli import app

    return runner.invoke(app, args, input=input)


def test_cli_stdin_to_stdout(runner, tiny_model_dir):
    text = "\n".join(LINES) + "\n"
    r1 = _run(runner, ["augment", "-", "--model", str(tiny_model_dir), "--seed", "7"], input=text)
    assert r1.exit_code == 0, r1.output
    r2 = _run(runner, ["augment", "--model", str(tiny_model_dir), "--seed", "7"], input=text)
    assert r2.exit_code == 0
    assert r1.stdout == r2.stdout
    out_lines = r1.stdout.split("\n")
    assert out_lines[-1] == "" and len(out_lines) - 1 == len(LINES)
    assert out_lines[1] == "" and out_lines[4] == ""
    core = list(augment_lines(LINES, load_tokenizer(str(tiny_model_dir)), seed=7))
    assert out_lines[:-1] == core


def test_cli_output_file_and_word_level(runner, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    dst = tmp_path / "out.txt"
    r = _run(runner, ["augment", str(src), "-o", str(dst), "--level", "word", "--seed", "3", "--dup-rate", "0.5"])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    got = dst.read_text(encoding="utf-8").split("\n")[:-1]
    assert got == list(augment_lines(LINES, None, level="word", seed=3, dup_rate=0.5))
    assert got[1] == "" and got[4] == ""
    for orig, new in zip(LINES, got):
        words = new.split()
        assert len(words) >= len(orig.split())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_cli_show_keeps_stdout_clean(runner, tiny_model_dir):
    text = "\n".join(LINES) + "\n"
    r = _run(runner, ["augment", "--model", str(tiny_model_dir), "--seed", "7", "--show"], input=text)
    assert r.exit_code == 0
    plain = _run(runner, ["augment", "--model", str(tiny_model_dir), "--seed", "7"], input=text)
    assert r.stdout == plain.stdout
    assert "augmented" in r.stderr


def _subprocess(args, input_text=None, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "esimcse_cli", *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=120,
    )


@pytest.mark.parametrize("rate", ["-0.1", "1.5", "nan"])
def test_cli_bad_dup_rate_exit_2(rate, tmp_path):
    dst = tmp_path / "out.txt"
    p = _subprocess(["augment", "-", "--level", "word", f"--dup-rate={rate}", "-o", str(dst)], "a b c\n")
    assert p.returncode == 2
    assert p.stdout == ""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--dup-rate" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not dst.exists()


def test_cli_deterministic_across_processes(tiny_model_dir):
    text = "\n".join(LINES * 3) + "\n"
    args = ["augment", "--model", str(tiny_model_dir), "--seed", "11", "--method", "insertion", "--insert-token", "random"]
    a = _subprocess(args, text, {"PYTHONHASHSEED": "1"})  # this process runs with its own (random) hash seed
    assert a.returncode == 0, a.stderr
    here = augment_lines(LINES * 3, load_tokenizer(str(tiny_model_dir)), method="insertion", seed=11)
    assert a.stdout == "".join(line + "\n" for line in here)


# ------------------------------------------------------------------------------------------------
# sample_data/ (generated by benchmarks/make_sample_data.py)
# ------------------------------------------------------------------------------------------------
SAMPLE = REPO / "sample_data"


def _load_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "benchmarks" / "make_sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_data_matches_generator():
    gen = _load_generator()
    assert gen.main(["--out", str(SAMPLE), "--check"]) == 0, "sample_data/ differs from benchmarks/make_sample_data.py output"
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 100 * 1024


def test_sample_corpus_is_varied():
    gen = _load_generator()
    lines = (SAMPLE / "corpus.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert len(lines) >= 500
    assert len(set(lines)) == len(lines)
    assert all(5 <= len(line.split()) <= 30 for line in lines)
    assert sum(line.endswith("?") for line in lines) >= 50
    assert sum(any(c.isdigit() for c in line) for line in lines) >= 50
    sets = [gen.content_words(line) for line in lines]
    worst = max(len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert worst <= 0.4


def test_sample_senteval_loads_and_scores_follow_construction():
    from esimcse_cli.core import sts

    root = SAMPLE / "senteval"
    dev = sts.load_task(root, "STSBenchmark", "dev")
    test = sts.load_task(root, "STSBenchmark", "test")
    assert len(dev) == len(test) == 60
    assert all(0.0 <= p.score <= 5.0 for p in dev + test)
    assert len(sts.load_task(root, "STS12")) == 60
    sick = sts.load_task(root, "SICKRelatedness", "test")
    assert len(sick) == 60 and all(1.0 <= p.score <= 5.0 for p in sick)
    # word overlap should already rank the pairs roughly as the scores do
    from scipy.stats import spearmanr

    def overlap(p):
        a, b = set(p.a.lower().split()), set(p.b.lower().split())
        return len(a & b) / len(a | b)

    assert spearmanr([overlap(p) for p in dev], [p.score for p in dev]).correlation > 0.5


def test_sample_corpus_not_from_shared_data(shared_data):
    ours = set((SAMPLE / "corpus.txt").read_text(encoding="utf-8").splitlines())
    for path in sorted((shared_data / "corpus").glob("*.txt")):
        theirs = {line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()}
        assert not ours & theirs, path


def test_cli_on_sample_corpus_word_level(runner, tmp_path):
    dst = tmp_path / "aug.txt"
    r = _run(runner, ["augment", str(SAMPLE / "corpus.txt"), "-o", str(dst), "--level", "word", "--variant", "official"])
    assert r.exit_code == 0, r.output
    src = (SAMPLE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    out = dst.read_text(encoding="utf-8").splitlines()
    assert len(out) == len(src)
    extra = [len(o.split()) - len(s.split()) for s, o in zip(src, out)]
    assert all(e in aug.repeat_support(len(s.split()), 0.32, "official", "word") for s, e in zip(src, extra))
    assert sum(extra) > 0


# ------------------------------------------------------------------------------------------------
# char level: text without spaces (Chinese); sentences written for these tests
# ------------------------------------------------------------------------------------------------
ZH_LINES = [
    "今天下午我们去公园散步",
    "这本书的故事非常有意思",
    "",
    "他每天早上六点起床跑步",
    "我 喜欢 喝 绿茶",
    "猫",
]


def without_added(rec):
    """The augmented tokens with the added ones (repeated / inserted) taken out."""
    return [t for t, m in zip(rec.new_tokens, rec.added) if not m]


def test_char_level_repeats_whole_characters_only():
    for seed in range(40):
        for rec in Augmenter(None, level="char", seed=seed, dup_rate=0.5).records(ZH_LINES):
            if not rec.original.strip():
                assert rec.augmented == ""
                continue
            assert "".join(without_added(rec)) == rec.original  # removing the added characters gives the input
            assert rec.augmented == "".join(rec.new_tokens)
            for i, m in enumerate(rec.added):
                if m:  # a copy right after its character, never a space
                    assert rec.new_tokens[i] == rec.new_tokens[i - 1] and not rec.new_tokens[i].isspace()
                    assert len(rec.new_tokens[i]) == 1
            assert rec.augmented.count(" ") == rec.original.count(" ")


def test_char_level_counts_follow_the_paper_formula():
    text = "春天来了花园里的花都开了小鸟在树上唱歌"  # N = 19 characters
    n = len(text)
    for rate in (0.0, 0.32, 0.5):
        upper = paper_upper(n, rate)
        seen = collections.Counter(
            len(Augmenter(None, level="char", seed=s, dup_rate=rate).record(text).augmented) - n for s in range(3500))
        assert set(seen) == set(range(upper + 1))  # U{0..max(2, int(r*N))}: every value, nothing else
        for k in range(upper + 1):  # uniform: each value near 1/(upper+1); 5 sigma at 3500 draws
            assert abs(seen[k] / 3500 - 1 / (upper + 1)) < 0.035, (rate, k, seen)
    assert aug.repeat_support(n, 0.32, "paper", "char") == range(0, paper_upper(n, 0.32) + 1)


def test_char_level_n_counts_non_space_characters_only():
    # "我 喜欢" has 3 non-space characters: at most min(3, max(2, int(r*3))) = 3 at r = 1, never a space
    seen = set()
    for s in range(300):
        rec = Augmenter(None, level="char", seed=s, dup_rate=1.0).record("我 喜欢")
        seen.add(len(rec.augmented) - len("我 喜欢"))
        assert rec.augmented.count(" ") == 1
    assert seen == {0, 1, 2, 3}


def test_char_level_seeded_and_english_keeps_its_spaces():
    a = list(augment_lines(ZH_LINES, None, level="char", seed=11))
    assert a == list(augment_lines(ZH_LINES, None, level="char", seed=11))
    assert a != list(augment_lines(ZH_LINES, None, level="char", seed=12))  # the seed matters
    for seed in range(30):
        text = "the  cat sat on a mat"
        rec = Augmenter(None, level="char", seed=seed, dup_rate=0.5).record(text)
        assert "".join(without_added(rec)) == text
        assert [len(w) > 0 for w in rec.augmented.split(" ")] == [len(w) > 0 for w in text.split(" ")]  # same spacing


def test_char_level_insertion_and_deletion():
    for seed in range(30):
        ins = Augmenter(None, "insertion", "char", 0.5, "paper", "stopword", seed=seed).record(ZH_LINES[0])
        assert "".join(without_added(ins)) == ZH_LINES[0]
        assert all(t in aug.CHAR_STOPWORDS for t, m in zip(ins.new_tokens, ins.added) if m)
        dele = Augmenter(None, "deletion", "char", 1.0, "paper", seed=seed).record("我 爱 你")
        kept = dele.augmented
        assert kept.count(" ") == 2 and len(kept.replace(" ", "")) >= 1  # spaces stay, one character at least
        it = iter("我 爱 你")
        assert all(c in it for c in kept)  # a subsequence of the input
    from esimcse_cli.core.augment_text import needs_tokenizer

    assert not needs_tokenizer("repetition", "char", "random")
    assert not needs_tokenizer("insertion", "char", "stopword")


def test_char_level_random_insertion_draws_single_characters(tok):
    vocab = aug.insertion_vocab(tok, "char")
    assert vocab and all(len(v) == 1 and v.isalpha() for v in vocab)
    rec = Augmenter(tok, "insertion", "char", 1.0, "paper", "random", seed=2).record(ZH_LINES[1])
    assert "".join(without_added(rec)) == ZH_LINES[1]
    assert all(t in set(vocab) for t, m in zip(rec.new_tokens, rec.added) if m)


def test_char_level_official_is_refused():
    with pytest.raises(ConfigError, match="--level char has no official formula; use --variant paper"):
        aug.check_options(level="char", variant="official")
    with pytest.raises(ConfigError):
        aug.repeat_count(5, 0.32, "official", random.Random(0), level="char")
    with pytest.raises(ConfigError):
        Augmenter(None, level="char", variant="official")


def test_char_level_show_segments_per_character():
    a = Augmenter(None, level="char", seed=0)
    assert a.display_segments(list("我爱爱你"), [False, False, True, False]) == [("我爱", False), ("爱", True), ("你", False)]
    assert a.display_segments(list("a b"), [False, False, False]) == [("a b", False)]


def test_cli_char_level_end_to_end(tmp_path):
    src = tmp_path / "zh.txt"
    src.write_text("\n".join(ZH_LINES) + "\n", encoding="utf-8")
    dst = tmp_path / "out.txt"
    r = run_main("augment", src, "--level", "char", "--seed", "4", "-o", dst, "--show")  # no --model: no tokenizer
    assert r.code == 0, r.stderr
    got = dst.read_text(encoding="utf-8").split("\n")[:-1]
    assert got == list(augment_lines(ZH_LINES, None, level="char", seed=4))
    assert "original" in r.stdout.decode("utf-8") and "--level char" in r.stdout.decode("utf-8")  # the --show table
    piped = run_main("augment", "-", "--level", "char", "--seed", "4", stdin=src.read_bytes())
    assert piped.code == 0 and piped.stdout.decode("utf-8").split("\n")[:-1] == got


def test_cli_char_level_official_exit_2(tmp_path):
    dst = tmp_path / "out.txt"
    r = run_main("augment", "-", "--level", "char", "--variant", "official", "-o", dst, stdin="我们\n".encode("utf-8"))
    assert r.code == 2
    assert r.lines == ["esimcse: error: --level char has no official formula; use --variant paper"]
    assert not dst.exists()
