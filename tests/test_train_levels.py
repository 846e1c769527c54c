"""train --repetition-level word|char (with --segmenter): the second view repeats whole words or characters.

The tiny random BERT here has CJK characters in its vocabulary; the sentences are hand-written.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from clirunner import run_main
from conftest import build_tiny_bert
from esimcse_cli.core import augment as aug
from esimcse_cli.core.augment_text import Augmenter
from esimcse_cli.core.config import TrainConfig
from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.views import Batcher

ZH = ["花呗每天收利息吗", "我今天很开心", "这个手机的电池很耐用", "他们明天去北京开会"]
CJK = sorted(set("".join(ZH)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    d = build_tiny_bert(tmp_path_factory.mktemp("cjk"))
    vocab = (d / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (d / "vocab.txt").write_text("\n".join(vocab + CJK) + "\n", encoding="utf-8")
    (d / "tokenizer.json").unlink(missing_ok=True)
    from transformers import BertModel

    m = BertModel.from_pretrained(d)
    m.resize_token_embeddings(len(vocab) + len(CJK))
    m.save_pretrained(d, safe_serialization=True)
    t = AutoTokenizer.from_pretrained(d)
    assert t.convert_tokens_to_ids("花") != t.unk_token_id
    return t


def batcher(tok, **kw):
    return Batcher(tok, TrainConfig(**kw).resolved().validate(), 128)


def content(tok, ids):
    return [t for t in tok.convert_ids_to_tokens(ids) if t not in tok.all_special_tokens]


def is_repetition_of(orig, copy):
    """``copy`` is ``orig`` with some elements doubled in place: the added ones, else None."""
    i, added = 0, 0
    for j, t in enumerate(copy):
        if i < len(orig) and t == orig[i]:
            i += 1
        elif i > 0 and t == orig[i - 1] and copy[j - 1] == t:
            added += 1
        else:
            return None
    return added if i == len(orig) else None


def test_word_level_equals_augment_of_the_text_and_repeats_whole_multi_piece_words(tok):
    texts = ["the onions and tomatoes", "cutting onions slowly"]  # onions -> onion ##s: one word, two pieces
    b = batcher(tok, repetition_level="word", dup_rate=0.5)
    ids = b.tokenize(texts)
    doubled_multi = False
    for seed in range(30):
        v2 = b.second_view(ids, seed, texts)
        rng = random.Random(seed)
        a = Augmenter(tok, "repetition", "word", 0.5, seed=rng)
        expect = [tok(a.record(t).augmented)["input_ids"] for t in texts]
        assert v2 == expect
        for t, y in zip(texts, v2):
            words, copy_words = t.split(), tok.decode(y, skip_special_tokens=True).split()
            assert is_repetition_of(words, copy_words) is not None
            doubled_multi |= "onions onions" in " ".join(copy_words)
    assert doubled_multi


def test_char_level_repeats_characters_and_n_counts_them(tok):
    b = batcher(tok, repetition_level="char")
    ids = b.tokenize(ZH)
    seen = set()
    for seed in range(40):
        for t, x, y in zip(ZH, ids, b.second_view(ids, seed, ZH)):
            added = is_repetition_of(content(tok, x), content(tok, y))
            assert added is not None and added <= max(aug.repeat_support(len(t), 0.32, "paper", "char"))
            seen.add(added)
    assert max(seen) >= 2 and 0 in seen


def test_jieba_word_level_adds_whole_jieba_words(tok):
    jieba = pytest.importorskip("jieba")
    b = batcher(tok, repetition_level="word", segmenter="jieba", dup_rate=0.5)
    ids = b.tokenize(ZH)
    multi_char_word_doubled = False
    for seed in range(20):
        for t, y in zip(ZH, b.second_view(ids, seed, ZH)):
            words = [w for w in jieba.cut(t) if w]
            copy = "".join(content(tok, y))
            rng_words = Augmenter(None, "repetition", "word", 0.5, seed=0, segmenter="jieba").tokenize(t)
            assert rng_words == words
            # the copy is the words with some doubled whole: rebuild it from the word list greedily
            out, i = [], 0
            pos = 0
            while pos < len(copy):
                w = words[i] if i < len(words) else None
                if w is not None and copy.startswith(w, pos):
                    out.append(w); pos += len(w); i += 1
                elif out and copy.startswith(out[-1], pos):
                    multi_char_word_doubled |= len(out[-1]) > 1
                    out.append(out[-1]); pos += len(out[-1])
                else:
                    pytest.fail(f"{copy!r} is not {words} with whole words repeated")
            assert i == len(words)
    assert multi_char_word_doubled


def test_truncated_sentence_repeats_only_what_view_1_kept(tok):
    long = "the man plays the guitar in the park and the woman sings a song by the river today"
    b = batcher(tok, repetition_level="word", max_length=8, dup_rate=0.5)
    ids = b.tokenize([long])
    assert len(ids[0]) == 8
    assert b.kept_texts([long]) == ["the man plays the guitar in"]
    for seed in range(10):
        y = b.second_view(ids, seed, [long])[0]
        assert is_repetition_of(content(tok, ids[0]), content(tok, y)) is not None


def test_subword_default_is_unchanged_and_word_level_is_deterministic(tok):
    texts = ["the man plays the guitar", "a dog runs in the park"]
    b = batcher(tok)
    ids = b.tokenize(texts)
    assert b.second_view(ids, 5, texts) == aug.augment_batch(ids, "repetition", 0.32, "paper", random.Random(5),
                                                              special_ids=set(tok.all_special_ids))
    w = batcher(tok, repetition_level="word")
    assert w.second_view(ids, 5, texts) == w.second_view(ids, 5, texts)


@pytest.mark.parametrize("kw,needle", [
    ({"repetition_level": "phrase"}, "--repetition-level"),
    ({"segmenter": "jieba"}, "goes with --repetition-level word"),
    ({"repetition_level": "char", "repetition_variant": "official"}, "char has no official formula"),
    ({"repetition_level": "word", "segmenter": "icu"}, "--segmenter"),
])
def test_bad_values_refused(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**kw).resolved().validate()


def test_cli_train_word_jieba_end_to_end_and_refusal(tok, tmp_path):
    pytest.importorskip("jieba")
    model = Path(tok.name_or_path)
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(ZH * 4) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    r = run_main("train", str(corpus), "-o", str(out), "--model", str(model), "--batch-size", "4", "--max-steps", "2",
                 "--eval-steps", "0", "--repetition-level", "word", "--segmenter", "jieba", "--device", "cpu")
    assert r.code == 0, r.stderr
    cfg = yaml.safe_load((out / "train_config.yaml").read_text(encoding="utf-8"))
    assert cfg["repetition_level"] == "word" and cfg["segmenter"] == "jieba"
    assert "whole words (jieba segmentation)" in (out / "README.md").read_text(encoding="utf-8")
    bad = tmp_path / "bad"
    r = run_main("train", str(corpus), "-o", str(bad), "--model", str(model), "--repetition-level", "char",
                 "--segmenter", "jieba", "--device", "cpu")
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1 and "goes with --repetition-level word" in r.stderr
    assert not bad.exists()
