"""Property-based tests (hypothesis): augment over arbitrary Unicode, and every reader over random bytes.

Readers must either parse or raise the clean :class:`InputError` (a one-line message naming the file);
any other exception is a bug. Example counts are kept small so the file runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esimcse_cli.core import augment as aug
from esimcse_cli.core import corpus, pairs_file, sts
from esimcse_cli.core.augment_text import Augmenter
from esimcse_cli.core.errors import EsimcseError, InputError
from esimcse_cli.core.models import load_tokenizer

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Lines as a file holds them: any Unicode except "\n" (the line separator) and lone surrogates (not encodable).
line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=60)
lines = st.lists(line_text, min_size=1, max_size=8)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


def _write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------- augment
@FAST
@given(texts=lines, seed=st.integers(0, 2**31 - 1), rate=st.floats(0, 1), level=st.sampled_from(["word", "subword"]),
       method=st.sampled_from(["repetition", "insertion", "deletion"]), variant=st.sampled_from(["paper", "official"]))
def test_augment_one_line_out_per_line_in(tokenizer, scratch, texts, seed, rate, level, method, variant):
    """Through the file reader, as the CLI does: N lines in -> N lines out, none containing a line break."""
    src = _write(scratch, "in.txt", "\n".join(texts).encode("utf-8") + b"\n")
    read = [text for _, text in corpus.iter_lines(src)]
    assert len(read) == len(texts)
    out = [rec.augmented for rec in Augmenter(tokenizer, method, level, rate, variant, seed=seed).records(read)]
    assert len(out) == len(texts)
    for line in out:
        assert isinstance(line, str)
        assert len(line.splitlines()) <= 1, repr(line)
    joined = "\n".join(out) + "\n"
    assert joined.count("\n") == len(texts)


def _check_repetition(rec) -> None:
    """Copies sit right after their original; dropping them gives back the original tokens, in order."""
    assert len(rec.added) == len(rec.new_tokens)
    kept = [t for t, a in zip(rec.new_tokens, rec.added) if not a]
    assert kept == rec.tokens
    for i, a in enumerate(rec.added):
        if a:
            assert i > 0 and rec.new_tokens[i] == rec.new_tokens[i - 1]


@FAST
@given(texts=lines, seed=st.integers(0, 2**31 - 1), rate=st.floats(0, 1), variant=st.sampled_from(["paper", "official"]))
def test_word_repetition_keeps_the_original_words_in_order(texts, seed, rate, variant):
    a = Augmenter(None, "repetition", "word", rate, variant, seed=seed)
    for text, rec in zip(texts, a.records(texts)):
        if not text.strip():
            assert rec.augmented == ""
            continue
        assert rec.tokens == text.split()
        _check_repetition(rec)
        assert rec.augmented.split() == rec.new_tokens
        assert sum(rec.added) in aug.repeat_support(len(rec.tokens), rate, variant, "word")


@FAST
@given(texts=lines, seed=st.integers(0, 2**31 - 1), rate=st.floats(0, 1), variant=st.sampled_from(["paper", "official"]))
def test_subword_repetition_keeps_the_original_tokens_in_order(tokenizer, texts, seed, rate, variant):
    a = Augmenter(tokenizer, "repetition", "subword", rate, variant, seed=seed)
    for text, rec in zip(texts, a.records(texts)):
        if not text.strip():
            continue
        assert rec.tokens == tokenizer.tokenize(text)
        _check_repetition(rec)
        assert sum(rec.added) in aug.repeat_support(len(rec.tokens), rate, variant)


@FAST
@given(texts=lines, seed=st.integers(0, 2**31 - 1))
def test_augment_is_deterministic_for_a_seed(tokenizer, texts, seed):
    run = lambda: [r.augmented for r in Augmenter(tokenizer, "repetition", "subword", 0.5, seed=seed).records(texts)]  # noqa: E731
    assert run() == run()


# --------------------------------------------------------------------------------------------- random bytes
# Bytes that look a little like the formats (tabs, numbers, quotes, JSON punctuation, BOMs, CRs) reach deeper
# into the parsers than uniform noise, which mostly stops at the UTF-8 check.
_PIECES = [b"\t", b"\n", b"\r\n", b"\r", b",", b'"', b"{", b"}", b":", b"[", b"]", b" ", b"1", b"2.5", b"-3", b"nan", b"inf",
           b"1e999", b"text", b"score", b"sentence1", b"a dog", b"caf\xc3\xa9", b"\xef\xbb\xbf", b"\xff", b"\x00", b"PAR1", b"null"]
noisy_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_PIECES), max_size=60).map(b"".join),
)
OK_OR_CLEAN = (InputError,)


def _clean(exc: BaseException) -> None:
    assert isinstance(exc, OK_OR_CLEAN), f"{type(exc).__name__}: {exc}"
    assert str(exc) and "\n" not in str(exc)


@FAST
@given(data=noisy_bytes, suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl", ".parquet"]),
       errors=st.sampled_from(["strict", "replace"]))
@example(data=b"0\n1\n", suffix=".jsonl", errors="strict")  # scalar JSON lines: pandas names the column 0 (an int)
def test_corpus_reader_parses_or_raises_input_error(scratch, data, suffix, errors):
    path = _write(scratch, "corpus" + suffix, data)
    try:
        n = corpus.count_texts(path, encoding_errors=errors)
        rows = list(corpus.iter_texts(path, encoding_errors=errors))
    except EsimcseError as exc:
        _clean(exc)
        return
    assert all(isinstance(t, str) for _, t in rows)
    if suffix != ".parquet":
        assert n == len(rows)


@FAST
@given(data=noisy_bytes)
def test_augment_and_probe_readers_parse_or_raise_input_error(scratch, data):
    from esimcse_cli.core.length import read_probe_corpus

    path = _write(scratch, "lines.txt", data)
    for read in (lambda: [text for _, text in corpus.iter_lines(path)], lambda: read_probe_corpus(path)):
        try:
            out = read()
        except EsimcseError as exc:
            _clean(exc)
            continue
        assert all(isinstance(t, str) for t in out)


@FAST
@given(data=noisy_bytes, suffix=st.sampled_from([".tsv", ".txt", ".csv", ".jsonl", ".parquet"]))
def test_pairs_reader_parses_or_raises_input_error(scratch, data, suffix):
    path = _write(scratch, "pairs" + suffix, data)
    try:
        pairs = pairs_file.read_pairs_file(path)
    except EsimcseError as exc:
        _clean(exc)
        return
    assert pairs and all(isinstance(p.a, str) and isinstance(p.b, str) and isinstance(p.score, float) for p in pairs)


@pytest.fixture(scope="module")
def senteval_tree(scratch) -> Path:
    """A minimal SentEval tree: STS-B, SICK and STS12 folders whose files each test overwrites."""
    root = scratch / "senteval"
    (root / "STS" / "STSBenchmark").mkdir(parents=True)
    (root / "SICK").mkdir(parents=True)
    (root / "STS" / "STS12-en-test").mkdir(parents=True)
    return root


@FAST
@given(data=noisy_bytes, gold=noisy_bytes, task=st.sampled_from(["STSBenchmark", "SICKRelatedness", "STS12"]))
def test_sts_readers_parse_or_raise_input_error(senteval_tree, data, gold, task):
    root = senteval_tree
    if task == "STSBenchmark":
        (root / "STS/STSBenchmark/sts-test.csv").write_bytes(data)
    elif task == "SICKRelatedness":
        (root / "SICK/SICK_test_annotated.txt").write_bytes(data)
    else:
        folder = root / "STS/STS12-en-test"
        for subset in sts.STS_SUBSETS["STS12"]:
            (folder / f"STS.input.{subset}.txt").write_bytes(data)
            (folder / f"STS.gs.{subset}.txt").write_bytes(gold)
    try:
        pairs = sts.load_task(root, task, "test")
    except EsimcseError as exc:
        _clean(exc)
        return
    assert pairs and all(isinstance(p.score, float) for p in pairs)
