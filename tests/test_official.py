"""``official`` variants against the RELEASED ESimCSE code (caskcsg/sentemb, folder ``ESimCSE/``).

Each released behaviour is re-implemented here, in the test, from its source (file and function cited), and the
core is held against it: the same outputs from the same :class:`random.Random` state where the call sequence is
the same, and the same distribution of counts (and positions) over many draws, on short sentences and on real
sentences (``../shared/data/corpus/wiki1m_for_simcse.random10k_seed42.txt``, read at test time, skipped when absent).

Released code, at the snapshot read for this test:

* ``ESimCSE/train.py``, ``main.prepare_features``: ``dup_type == "bpe"`` (sub-word, what ``run.sh`` uses) and
  ``dup_type == "word"``;
* ``ESimCSE/esimcse/models.py``, ``BertForCL.__init__`` / ``RobertaForCL.__init__`` (momentum encoder start);
* ``ESimCSE/esimcse/trainers.py``, ``CLTrainer.train`` (gradient clipping with ``args.max_grad_norm``, the HF
  ``TrainingArguments`` default 1.0, printed as ``max_grad_norm=1.0`` in every ``ESimCSE/logs/*.log``).
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import pytest

from esimcse_cli.core import augment as aug
from esimcse_cli.core.augment_text import Augmenter, augment_file
from esimcse_cli.core.models import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"
RATES = (0.0, 0.1, 0.2, 0.28, 0.3, 0.32, 0.5, 0.9)


# ============================================================================ the released functions, re-implemented
def released_subword(ids, dup_rate, rnd):
    """ESimCSE/train.py, prepare_features, ``dup_type == "bpe"`` branch (the second copy of each sentence).

    ``ids`` is the tokenizer's list WITH [CLS]/[SEP] (its ``input_len``). A count is drawn only when
    ``int(dup_rate * input_len) > 0``: ``randrange(min(10, int(dup_rate * input_len)))``; the positions are
    ``sorted(sample(range(1, input_len - 1), count))`` and each is emitted twice.
    """
    length = len(ids)
    if int(dup_rate * length) <= 0:
        return list(ids)
    count = rnd.randrange(min(10, int(dup_rate * length)))
    twice = set(rnd.sample(range(1, length - 1), count))  # raises ValueError where count > length - 2
    out = []
    for i, t in enumerate(ids):
        out += [t, t] if i in twice else [t]
    return out


def released_word(sentence, dup_rate, rnd):
    """ESimCSE/train.py, prepare_features, ``dup_type == "word"`` branch (``add_stop`` off).

    ``sent.split(' ')``; ``randrange(min(10, n, max(2, int(dup_rate * n))))`` words, at
    ``sorted(sample(range(0, n - 1), count))`` (so never the last word), each followed by a copy of itself.
    """
    words = sentence.split(" ")
    n = len(words)  # >= 1: "".split(" ") == [""]
    count = rnd.randrange(min(10, n, max(2, int(dup_rate * n))))
    for i in sorted(rnd.sample(range(0, n - 1), count)):
        words[i] = words[i] + " " + words[i]
    return " ".join(words)


def released_subword_probs(n, rate):
    """Exact count distribution of :func:`released_subword` for ``n`` content tokens (``L = n + 2``), r < 1."""
    t = int(rate * (n + 2))
    if t <= 0:
        return {0: 1.0}
    m = min(10, t)
    return {k: 1 / m for k in range(m)}


def released_word_probs(n, rate):
    m = min(10, n, max(2, int(rate * n)))
    return {k: 1 / m for k in range(m)}


def _chi2_p(counts, probs):
    from scipy.stats import chisquare

    keys = sorted(probs)
    total = sum(counts.values())
    return chisquare([counts.get(k, 0) for k in keys], [probs[k] * total for k in keys]).pvalue


def _check_hist(counts, probs, what):
    assert set(counts) <= {k for k, p in probs.items() if p > 0}, (what, counts, probs)
    if len(probs) > 1:
        assert _chi2_p(counts, probs) > 1e-5, (what, counts, probs)


def _mix(dists):
    out = collections.Counter()
    for d in dists:
        for k, p in d.items():
            out[k] += p / len(dists)
    return dict(out)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def wiki_lines():
    if not WIKI.is_file():
        pytest.skip(f"real sentences not found at {WIKI}")
    lines = [line for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:3000]


# ============================================================================ sub-word (dup_type bpe): exact outputs
CLS, SEP, PAD, UNK, MASK = 2, 3, 0, 1, 4  # the tiny fixture vocabulary's special ids


def _synthetic_batch(seed=0):
    r = random.Random(seed)
    batch = []
    for n in list(range(0, 41)) + [r.randint(0, 30) for _ in range(60)]:
        content = [r.randint(5, 249) for _ in range(n)]
        if n > 3 and r.random() < 0.3:
            content[r.randrange(n)] = UNK  # a special token INSIDE the sentence: counted and repeatable, as released
        batch.append([CLS] + content + [SEP])
    return batch


@pytest.mark.parametrize("rate", RATES)
def test_augment_batch_official_equals_released_subword(rate):
    batch = _synthetic_batch()
    for seed in range(4):
        rnd = random.Random(seed)
        expected = [released_subword(ids, rate, rnd) for ids in batch]
        got = aug.augment_batch(batch, "repetition", rate, "official", random.Random(seed),
                                special_ids={CLS, SEP, PAD, UNK, MASK})
        assert got == expected
        specials = {CLS, SEP, PAD, UNK, MASK}  # one sentence at a time, through the same generator: the same lines
        assert [aug.augment_ids(ids, "repetition", rate, "official", r, content=aug.content_positions(ids, specials, "official"))[0]
                for r in [random.Random(seed)] for ids in batch] == expected


def test_official_subword_at_rate_one_clips_where_released_raises():
    """r = 1: randrange(min(10, L)) can exceed the L - 2 positions; the released sample() raises, we clip to N."""
    rnd = random.Random(0)
    with pytest.raises(ValueError):
        for _ in range(200):
            released_subword([CLS, 7, 8, SEP], 1.0, rnd)
    rng = random.Random(0)
    seen = collections.Counter()
    for _ in range(2000):
        out = aug.augment_batch([[CLS, 7, 8, SEP]], "repetition", 1.0, "official", rng, {CLS, SEP})[0]
        seen[len(out) - 4] += 1
    assert set(seen) == set(aug.repeat_support(2, 1.0, "official")) == {0, 1, 2}
    _check_hist(seen, {0: 1 / 4, 1: 1 / 4, 2: 2 / 4}, "clip")  # randrange(4) with 3 clipped to 2
    # long sentences never reach the clip: exact equality with the released code even at r = 1
    long = [[CLS] + list(range(10, 10 + n)) + [SEP] for n in range(9, 30)]
    assert aug.augment_batch(long, "repetition", 1.0, "official", random.Random(5), {CLS, SEP}) == [
        released_subword(ids, 1.0, r) for r in [random.Random(5)] for ids in long]


def test_content_positions_official_leaves_out_only_the_two_ends():
    ids = [CLS, 9, UNK, 11, SEP]
    assert aug.content_positions(ids, {CLS, SEP, UNK}, "official") == [1, 2, 3]
    assert aug.content_positions(ids, {CLS, SEP, UNK}, "paper") == [1, 3]
    assert aug.content_positions([CLS, SEP], {CLS, SEP}, "official") == []
    assert aug.content_positions([9, 10], {CLS, SEP}, "official") == [0, 1]
    assert aug.content_positions(ids, None, "official") == [0, 1, 2, 3, 4]


def test_insertion_and_deletion_share_count_and_positions_with_official_repetition():
    batch = _synthetic_batch(1)
    rep = aug.augment_batch(batch, "repetition", 0.32, "official", random.Random(3), {CLS, SEP, UNK})
    ins = aug.augment_batch(batch, "insertion", 0.32, "official", random.Random(3), {CLS, SEP, UNK}, insert=lambda r: -1)
    dele = aug.augment_batch(batch, "deletion", 0.32, "official", random.Random(3), {CLS, SEP, UNK})
    for src, r, i, d in zip(batch, rep, ins, dele):
        assert [r[j - 1] if t == -1 else t for j, t in enumerate(i)] == r  # the inserted token sits where the copy does
        assert len(src) - len(d) == len(r) - len(src)  # at r = 0.32 the count is always <= N - 1: the same count
        assert d[0] == CLS and d[-1] == SEP


def test_subword_text_level_equals_released_on_the_tokenizer_list(tok):
    lines = ["the man plays the guitar in the park today", "a dog", "she reads", "zzqx happily runs run ran walks again",
             "they were cutting tomato and onion for the long night here and there always"] * 6
    for rate in RATES:
        a = Augmenter(tok, "repetition", "subword", rate, "official", seed=random.Random(11))
        rnd = random.Random(11)
        for rec in a.records(lines):
            expected = released_subword([tok.cls_token] + rec.tokens + [tok.sep_token], rate, rnd)[1:-1]
            assert rec.new_tokens == expected, (rate, rec.original)


# ============================================================================ sub-word: distributions
@pytest.mark.parametrize("n", range(1, 7))
def test_official_subword_count_histogram_short_sentences(n):
    draws = 3000
    for rate in RATES:
        probs = released_subword_probs(n, rate)
        assert set(aug.repeat_support(n, rate, "official", "subword")) == set(probs)
        ours = collections.Counter(aug.repeat_count(n, rate, "official", random.Random(rate * 1000 + n + d), "subword")
                                   for d in range(draws))
        rnd = random.Random(99)
        ids = [CLS] + list(range(10, 10 + n)) + [SEP]
        theirs = collections.Counter(len(released_subword(ids, rate, rnd)) - len(ids) for _ in range(draws))
        _check_hist(ours, probs, ("ours", n, rate))
        _check_hist(theirs, probs, ("released", n, rate))


def test_official_subword_positions_uniform_over_content():
    rng, rnd = random.Random(1), random.Random(2)
    n, draws = 8, 6000
    ids = [CLS] + list(range(100, 100 + n)) + [SEP]
    ours, theirs = collections.Counter(), collections.Counter()
    for _ in range(draws):
        out = aug.augment_batch([ids], "repetition", 0.9, "official", rng, {CLS, SEP})[0]
        ours.update(t for t, u in zip(out[1:], out) if t == u)
        out = released_subword(ids, 0.9, rnd)
        theirs.update(t for t, u in zip(out[1:], out) if t == u)
    assert set(ours) == set(theirs) == set(ids[1:-1])  # never [CLS] / [SEP]
    for hist in (ours, theirs):
        _check_hist(hist, {t: 1 / n for t in ids[1:-1]}, "positions")


def test_official_subword_on_real_sentences(tok, wiki_lines):
    """Training path: tokenizer ids truncated to 32 (as the trainer's Batcher and the released run.sh do)."""
    ids = tok(wiki_lines, truncation=True, max_length=32)["input_ids"]
    specials = set(tok.all_special_ids)
    for rate in (0.32, 0.28):
        # exact, batch by batch
        for start in range(0, len(ids), 64):
            chunk = ids[start:start + 64]
            rnd = random.Random(start)
            assert aug.augment_batch(chunk, "repetition", rate, "official", random.Random(start), specials) == [
                released_subword(x, rate, rnd) for x in chunk]
        # distribution over the corpus: ours, the released code with another seed, and the exact mixture
        probs = _mix([released_subword_probs(len(x) - 2, rate) for x in ids])
        rng, rnd = random.Random(7), random.Random(8)
        ours = collections.Counter(len(y) - len(x) for x in ids for y in aug.augment_batch([x], "repetition", rate,
                                                                                            "official", rng, specials))
        theirs = collections.Counter(len(released_subword(x, rate, rnd)) - len(x) for x in ids)
        _check_hist(ours, probs, "ours")
        _check_hist(theirs, probs, "released")
        assert max(ours) <= 9
        for x in ids:
            n = len(aug.content_positions(x, specials, "official"))
            assert n == len(x) - 2
            assert set(aug.repeat_support(n, rate, "official")) == set(released_subword_probs(n, rate))


@pytest.mark.slow
def test_official_subword_on_real_sentences_with_the_bert_uncased_vocabulary(wiki_lines):
    """The bundled model's tokenizer is BERT's uncased WordPiece (the vocabulary of run.sh's bert-base-uncased)."""
    tok = load_tokenizer("default")
    ids = tok(wiki_lines, truncation=True, max_length=32)["input_ids"]
    specials = set(tok.all_special_ids)
    rnd = random.Random(0)
    assert aug.augment_batch(ids, "repetition", 0.32, "official", random.Random(0), specials) == [
        released_subword(x, 0.32, rnd) for x in ids]


# ============================================================================ word level (dup_type word)
WORD_LINES = ["A man is playing a guitar.", "Two", "Two dogs", "The cat sat on the mat .", "one two three",
              "Some songs were even played on a consistent basis for certain teams and other teams too, in the end."]


@pytest.mark.parametrize("rate", RATES)
def test_word_level_official_equals_released_word(rate, tmp_path):
    lines = WORD_LINES * 20
    for seed in range(3):
        a = Augmenter(None, "repetition", "word", rate, "official", seed=random.Random(seed))
        rnd = random.Random(seed)
        assert [r.augmented for r in a.records(lines)] == [released_word(s, rate, rnd) for s in lines]
    # the public text entry point, as `esimcse augment --level word --variant official` calls it
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    augment_file(Augmenter(None, "repetition", "word", rate, "official", seed=random.Random(4)), src, dst)
    got = dst.read_text(encoding="utf-8").split("\n")[:-1]
    rnd = random.Random(4)
    assert got == [released_word(s, rate, rnd) for s in lines]


@pytest.mark.parametrize("n", range(1, 7))
def test_official_word_count_histogram_short_sentences(n):
    draws = 3000
    line = " ".join(f"w{i}" for i in range(n))
    for rate in RATES:
        probs = released_word_probs(n, rate)
        assert set(aug.repeat_support(n, rate, "official", "word")) == set(probs)
        rng, rnd = random.Random(n), random.Random(n + 100)
        ours = collections.Counter(aug.repeat_count(n, rate, "official", rng, "word") for _ in range(draws))
        theirs = collections.Counter(len(released_word(line, rate, rnd).split(" ")) - n for _ in range(draws))
        _check_hist(ours, probs, ("ours", n, rate))
        _check_hist(theirs, probs, ("released", n, rate))
    # the paper variant is unchanged at word level (and differs from the released formula on short lines)
    assert set(aug.repeat_support(n, 0.32, "paper", "word")) == set(aug.repeat_support(n, 0.32, "paper", "subword"))


def test_official_word_positions_never_the_last_word():
    n, draws = 6, 6000
    line = " ".join(f"w{i}" for i in range(n))
    rng, rnd = random.Random(3), random.Random(4)
    ours, theirs = collections.Counter(), collections.Counter()
    a = Augmenter(None, "repetition", "word", 0.5, "official", seed=rng)
    for _ in range(draws):
        rec = a.record(line)
        ours.update(t for t, added in zip(rec.new_tokens, rec.added) if added)
        out = released_word(line, 0.5, rnd).split(" ")
        theirs.update(t for t, u in zip(out[1:], out) if t == u)
    assert f"w{n - 1}" not in ours and f"w{n - 1}" not in theirs
    for hist in (ours, theirs):
        _check_hist(hist, {f"w{i}": 1 / (n - 1) for i in range(n - 1)}, "word positions")


def test_official_word_on_real_sentences(wiki_lines):
    single = [s for s in wiki_lines if s.split(" ") == s.split()]  # the released split(' ') == our split()
    assert len(single) > 0.9 * len(wiki_lines)
    for rate in (0.32, 0.1):
        a = Augmenter(None, "repetition", "word", rate, "official", seed=random.Random(21))
        rnd = random.Random(21)
        assert [r.augmented for r in a.records(single)] == [released_word(s, rate, rnd) for s in single]
        probs = _mix([released_word_probs(len(s.split()), rate) for s in single])
        rng, rnd = random.Random(5), random.Random(6)
        ours = collections.Counter(aug.repeat_count(len(s.split()), rate, "official", rng, "word") for s in single)
        theirs = collections.Counter(len(released_word(s, rate, rnd).split(" ")) - len(s.split()) for s in single)
        _check_hist(ours, probs, "ours")
        _check_hist(theirs, probs, "released")


def test_cli_augment_official_word_and_subword(tmp_path, tiny_model_dir):
    """End to end: `esimcse augment --variant official` at both levels (in-process CLI runner)."""
    from typer.testing import CliRunner

    from esimcse_cli.cli import app

    src = tmp_path / "in.txt"
    src.write_text("\n".join(WORD_LINES) + "\n", encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(app, ["augment", str(src), "--level", "word", "--variant", "official", "--seed", "3"])
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert len(out) == len(WORD_LINES)
    for s, o in zip(WORD_LINES, out):
        assert len(o.split()) - len(s.split()) in aug.repeat_support(len(s.split()), 0.32, "official", "word")
        last = s.split()[-1]
        if s.split().count(last) == 1:  # the last word is never repeated
            assert o.split().count(last) == 1
    rnd = random.Random(3)  # --seed 3 is random.Random(3): the released function gives the same lines
    assert out == [released_word(s, 0.32, rnd) for s in WORD_LINES]
    r = runner.invoke(app, ["augment", str(src), "--level", "subword", "--variant", "official", "--model",
                            str(tiny_model_dir), "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == len(WORD_LINES)


# ============================================================================ momentum encoder start (models.py)
def released_momentum_start(config):
    """ESimCSE/esimcse/models.py, BertForCL.__init__ (RobertaForCL alike), then from_pretrained.

    ``self.bert = BertModel(config)`` and ``self.momentum_model = BertModel(config)`` are built, the first's
    (still random) parameters are copied into the second, ``cl_init`` calls ``init_weights()``, and only then does
    ``from_pretrained`` load the checkpoint, which has no ``momentum_model.*`` keys: the momentum encoder keeps a
    fresh initialisation (the release logs list every ``momentum_model.*`` weight as "newly initialized").
    """
    from transformers import BertModel

    bert = BertModel(config)
    momentum_model = BertModel(config)
    momentum_model.load_state_dict(bert.state_dict())
    return momentum_model


@pytest.fixture()
def online(tiny_model_dir):
    import torch

    from esimcse_cli.core.contrastive import ContrastiveModel
    from esimcse_cli.core.models import load_backbone

    m = ContrastiveModel(load_backbone(str(tiny_model_dir), device="cpu").model, pooler="cls", mlp=True, seed=0)
    with torch.no_grad():  # move the online weights far from any fresh init, so a copy is told apart
        for p in m.backbone.parameters():
            p.mul_(3.0).add_(0.25)
    return m


def test_official_momentum_starts_from_a_fresh_init_paper_from_a_copy(online):
    import torch

    from esimcse_cli.core.momentum import MomentumEncoder

    rng_before = torch.get_rng_state()
    official = MomentumEncoder(online, 0.995, "official", seed=42)
    assert torch.equal(rng_before, torch.get_rng_state())  # the run's RNG stream does not move
    paper = MomentumEncoder(online, 0.995, "paper", seed=42)
    cfg = online.backbone.config
    torch.manual_seed(0)  # the reference's draw does not depend on what ran before (a 2x32 embedding's std is noisy)
    reference = dict(released_momentum_start(cfg).named_parameters())
    theirs = dict(online.backbone.named_parameters())
    mine = dict(official.backbone.named_parameters())
    assert mine.keys() == theirs.keys() == reference.keys()
    for name, p in mine.items():
        ref = reference[name]
        assert not torch.equal(p, theirs[name]), name
        assert torch.equal(dict(paper.backbone.named_parameters())[name], theirs[name]), name  # paper: exact copy
        if ref.std() == 0:  # LayerNorm weight 1, biases 0: the same constants as a fresh model
            torch.testing.assert_close(p, ref)
        else:  # Linear / Embedding weights: normal(0, initializer_range)
            assert abs(p.float().std().item() - cfg.initializer_range) < 0.2 * cfg.initializer_range, name
            assert abs(p.float().std().item() - ref.float().std().item()) < 0.2 * cfg.initializer_range, name
            assert abs(p.float().mean().item()) < 0.2 * cfg.initializer_range, name
    for name, p in mine.items():
        if "LayerNorm.weight" in name:
            assert torch.equal(p, torch.ones_like(p))
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p))
    assert not any(p.requires_grad for p in official.parameters()) and not official.training
    assert official.mlp is None and paper.mlp is not None


def test_official_momentum_start_is_seeded(online):
    import torch

    from esimcse_cli.core.momentum import MomentumEncoder

    a = MomentumEncoder(online, 0.995, "official", seed=1)
    b = MomentumEncoder(online, 0.995, "official", seed=1)
    c = MomentumEncoder(online, 0.995, "official", seed=2)
    pa, pb, pc = (list(m.backbone.parameters()) for m in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))
    # the EMA then moves it towards the online weights as before
    before = [p.clone() for p in pa]
    a.update(online)
    for p, q, t in zip(a.backbone.parameters(), before, online.backbone.parameters()):
        torch.testing.assert_close(p, 0.995 * q + 0.005 * t, rtol=1e-5, atol=1e-6)


# ============================================================================ gradient clipping (trainers.py)
def test_official_momentum_variant_clips_at_the_trainer_default():
    """CLTrainer.train clips with args.max_grad_norm; run.sh never sets it, so it is TrainingArguments' 1.0."""
    from esimcse_cli.core.config import TrainConfig, build_config

    assert TrainConfig(momentum_variant="official").resolved().max_grad_norm == 1.0
    assert TrainConfig(momentum_variant="paper").resolved().max_grad_norm is None
    assert TrainConfig().resolved().max_grad_norm is None
    assert TrainConfig(momentum_variant="official", max_grad_norm=5.0).resolved().max_grad_norm == 5.0
    assert build_config({"momentum_variant": "official"}).resolved().max_grad_norm == 1.0
    assert build_config({"momentum_variant": "official", "max_grad_norm": 0.5}).resolved().max_grad_norm == 0.5
    try:  # the same default in the installed transformers (the release pinned 4.2.1)
        from transformers import TrainingArguments
    except Exception:  # pragma: no cover - Trainer extras not installed
        return
    assert TrainingArguments.__dataclass_fields__["max_grad_norm"].default == 1.0


def test_train_with_official_momentum_variant_random_start_seeded_and_clipped(tiny_model_dir, tmp_path):
    """Through `train`: the saved momentum encoder is far from the online one after a step (random start), the same
    for the same --seed, and the resolved config records the clipping (trainer.py passes seed=cfg.seed)."""
    import yaml
    from safetensors.torch import load_file

    from conftest import WORDS
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    r = random.Random(0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(r.choice(WORDS) for _ in range(r.randint(3, 10))) for _ in range(40)) + "\n",
                      encoding="utf-8")

    def run(name, seed):
        out = tmp_path / name
        train(build_config({"corpus": str(corpus), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 8,
                            "max_steps": 2, "save_steps": 1, "eval_steps": 0, "max_length": 16,
                            "momentum_variant": "official", "repetition_variant": "official", "seed": seed,
                            "keep_state": True}))
        state = load_file(str(out / "state" / "state.safetensors"))
        return out, {k: v for k, v in state.items() if k.startswith(("momentum.", "online."))}

    out, a = run("a", 1)
    _, b = run("b", 1)
    key = next(k for k in a if k.startswith("momentum.") and k.endswith("word_embeddings.weight"))
    online_key = next(k for k in a if k.startswith("online.") and k.endswith("word_embeddings.weight"))
    assert (a[key] - a[online_key]).abs().mean() > 0.01  # after step 1: 0.995 * random start + 0.005 * online
    assert all(a[k].equal(b[k]) for k in a if k.startswith("momentum."))  # seeded by --seed (other seeds: above)
    assert yaml.safe_load((out / "train_config.yaml").read_text())["max_grad_norm"] == 1.0
