"""Unsegmented text: augment --level word --segmenter jieba, and --length-unit chars (hand-written Chinese sentences)."""

from __future__ import annotations

import collections
import random
import sys

import pytest

from clirunner import run_main
from esimcse_cli.core import augment as aug
from esimcse_cli.core import evaluate, segment
from esimcse_cli.core.augment_text import Augmenter
from esimcse_cli.core.errors import ConfigError, InputError

jieba = pytest.importorskip("jieba")

SENTENCES = ["我今天很开心", "这个手机的电池很耐用", "花呗每天收利息吗", "他们 明天 去 北京 开会"]


def words(text):
    return [w for w in jieba.cut(text) if w]


def test_jieba_level_repeats_whole_words_and_joins_them_back():
    augmenter = Augmenter(None, "repetition", "word", dup_rate=0.5, seed=7, segmenter="jieba")
    changed = 0
    for text in SENTENCES:
        rec = augmenter.record(text)
        assert rec.tokens == words(text)  # jieba's own words, spaces kept as tokens
        # every added token is a copy of the word right before it: whole words, never half of one
        out = rec.new_tokens
        added = [i for i, a in enumerate(rec.added) if a]
        for i in added:
            assert out[i] == out[i - 1] and not out[i].isspace()
        assert "".join(out) == rec.augmented  # joined with nothing between the words
        # removing the copies gives the line back exactly (spaces where they were)
        assert "".join(t for i, t in enumerate(out) if not rec.added[i]) == text
        changed += len(added)
    assert changed > 0


def test_jieba_never_chooses_a_space_and_n_counts_words_only():
    text = "他们 明天 去 北京 开会"
    toks = words(text)
    content = [i for i, t in enumerate(toks) if not t.isspace()]
    seen = collections.Counter()
    for seed in range(300):
        rec = Augmenter(None, "repetition", "word", dup_rate=0.32, seed=seed, segmenter="jieba").record(text)
        k = sum(rec.added)
        seen[k] += 1
        assert k <= max(2, int(0.32 * len(content)))  # the paper's bound over the N words, spaces not counted
        assert not any(rec.new_tokens[i].isspace() for i, a in enumerate(rec.added) if a)
    assert set(seen) == set(range(0, max(2, int(0.32 * len(content))) + 1))


def test_jieba_draws_follow_augment_ids_with_the_content_positions():
    """The segmenter only changes the tokens: the draws are augment_ids' over the non-space words."""
    text = "这个手机的电池很耐用"
    toks = words(text)
    rec = Augmenter(None, "repetition", "word", dup_rate=0.32, seed=11, segmenter="jieba").record(text)
    expect, _ = aug.augment_ids(toks, "repetition", 0.32, "paper", random.Random(11), level="word",
                                content=[i for i, t in enumerate(toks) if not t.isspace()])
    assert rec.new_tokens == expect


def test_cli_jieba_end_to_end(tmp_path):
    src = tmp_path / "zh.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    r = run_main("augment", str(src), "-o", str(out), "--level", "word", "--segmenter", "jieba", "--seed", "3", "--dup-rate", "0.5")
    assert r.code == 0, r.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(SENTENCES)
    for original, augmented in zip(SENTENCES, lines):
        assert len(augmented) >= len(original) and set(augmented) <= set(original)


@pytest.mark.parametrize("args,needle", [
    (["--level", "char", "--segmenter", "jieba"], "goes with --level word"),
    (["--level", "word", "--segmenter", "icu"], "--segmenter must be one of"),
])
def test_cli_segmenter_refusals(tmp_path, args, needle):
    src = tmp_path / "zh.txt"
    src.write_text("我今天很开心\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    r = run_main("augment", str(src), "-o", str(out), *args)
    assert r.code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_jieba_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)
    with pytest.raises(InputError, match=r"needs the jieba package: pip install 'esimcse-cli\[zh\]'"):
        segment.check_segmenter("jieba", "word")
    with pytest.raises(ConfigError):
        segment.check_segmenter("jieba", "subword")


def test_length_unit_chars_counts_non_space_characters():
    got = evaluate.sentence_lengths(["我今天很开心", "他们 明天", "", "a b c"], "chars")
    assert got.tolist() == [6, 4, 0, 3]


def test_word_counts_of_unspaced_text_warn_and_name_chars(caplog):
    with caplog.at_level("WARNING", logger="esimcse"):
        got = evaluate.sentence_lengths(SENTENCES[:3], "words")
    assert got.tolist() == [1, 1, 1]
    assert any("no spaces" in r.message and "--length-unit chars" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="esimcse"):
        evaluate.sentence_lengths(["a man plays", "the dog runs home"], "words")
    assert not caplog.records
