"""`train` never leaves a model worse than it started (issue 10, sections 1 and 3).

* ``--pooler auto`` (the default) trains with the pooling the base model declares;
* the starting model is a selection candidate, scored at step 0 with the pooling that is exported;
* without dev data, one warning says that no selection is done;
* ``--max-length`` above the model's positions is refused; near the limit a sentence is shortened so that
  its repeated copy fits, and the copy is never cut.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clirunner import run_main
from conftest import WORDS, build_tiny_bert
from sts_fixtures import make_senteval
from esimcse_cli.core import trainer as trainer_mod
from esimcse_cli.core.augment import augment_batch, repeat_support
from esimcse_cli.core.config import build_config
from esimcse_cli.core.contrastive import choose_pooler
from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.trainer import train
from esimcse_cli.core.views import Batcher, fit_for_copy


def sentences(n: int, seed: int = 0, lo: int = 3, hi: int = 12) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi))) for _ in range(n)]


@pytest.fixture()
def corpus(tmp_path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(sentences(80)) + "\n", encoding="utf-8")
    return p


@pytest.fixture()
def dev_dir(tmp_path) -> Path:
    return make_senteval(tmp_path / "senteval")  # its STS-B dev scores are scripted below anyway


def st_folder(src: Path, dst: Path, mode: str) -> Path:
    """A copy of ``src`` laid out as a sentence-transformers folder declaring ``mode`` pooling."""
    shutil.copytree(src, dst)
    (dst / "1_Pooling").mkdir()
    flags = {"word_embedding_dimension": 32, "pooling_mode_cls_token": mode == "cls", "pooling_mode_mean_tokens": mode == "mean"}
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    return dst


def cfg_for(model, corpus, out, **kw):
    values = {"corpus": str(corpus), "output_dir": str(out), "model": str(model), "batch_size": 8, "max_steps": 3,
              "save_steps": 0, "log_steps": 1, "eval_steps": 1, "max_length": 16}
    values.update(kw)
    return build_config(values)


# ------------------------------------------------------------------------------ --pooler auto
def test_auto_is_the_default_and_follows_what_the_model_declares(tiny_model_dir, tmp_path):
    assert build_config({}).pooler == "auto"
    mean = st_folder(tiny_model_dir, tmp_path / "mean", "mean")
    cls = st_folder(tiny_model_dir, tmp_path / "cls", "cls")
    assert choose_pooler(str(mean))[0] == "avg" and "1_Pooling" in choose_pooler(str(mean))[1]
    assert choose_pooler(str(cls))[0] == "cls"
    assert choose_pooler(str(tiny_model_dir)) == ("cls", "the model declares no pooling: the paper's [CLS] + training-only MLP")
    assert choose_pooler(str(mean), preset="bert-base")[0] == "cls"  # a preset is the paper's recipe
    ours = tmp_path / "ours"
    shutil.copytree(tiny_model_dir, ours)
    (ours / "esimcse.json").write_text(json.dumps({"pooling": "avg_top2", "max_seq_length": 64}))
    assert choose_pooler(str(ours)) == ("avg_top2", f"declared by {ours / 'esimcse.json'}")
    # the bundled model declares mean pooling in its sentence-transformers files
    pooler, why = choose_pooler("default")
    assert pooler == "avg" and why.endswith("1_Pooling/config.json")


@pytest.mark.parametrize("mode, given, trained, exported, mlp", [
    ("mean", None, "avg", "avg", False),
    ("cls", None, "cls", "cls_before_pooler", True),
    ("mean", "cls", "cls", "cls_before_pooler", True),  # an explicit --pooler wins
])
def test_trained_and_exported_pooling(tiny_model_dir, corpus, tmp_path, mode, given, trained, exported, mlp):
    model = st_folder(tiny_model_dir, tmp_path / "m", mode)
    extra = {"pooler": given} if given else {}
    out = tmp_path / "out"
    res = train(cfg_for(model, corpus, out, eval_steps=0, max_steps=1, **extra))
    assert (res.pooler, res.export_pooling) == (trained, exported)
    assert json.loads((out / "esimcse.json").read_text())["pooling"] == exported
    saved = (out / "train_config.yaml").read_text()
    assert f"pooler: {trained}\n" in saved and f"mlp: {str(mlp).lower()}\n" in saved  # --resume sees the real pooler
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pooler"]["train"] == trained and manifest["pooler"]["exported"] == exported


def test_start_summary_names_the_pooler_and_why(tiny_model_dir, corpus, tmp_path):
    model = st_folder(tiny_model_dir, tmp_path / "m", "mean")
    r = run_main("train", corpus, "-o", tmp_path / "out", "--model", model, "--batch-size", "8", "--max-steps", "1",
                 "--max-length", "16", "--dev-data", "none")
    assert r.code == 0, r.stderr
    assert "pooler avg, exported as avg (declared by" in r.stderr


# ------------------------------------------------------------------------------ the start is a candidate
def scripted_dev(monkeypatch, scores):
    """Replace STS-B dev scoring with a script: the n-th evaluation returns scores[n]."""
    calls = []

    def make(cfg):
        def score(encoder):
            calls.append(len(calls))
            return scores[min(len(calls) - 1, len(scores) - 1)]

        return score if cfg.dev_data else None

    monkeypatch.setattr(trainer_mod, "make_dev_scorer", make)
    return calls


def test_when_no_step_beats_the_start_the_output_is_the_starting_model(tiny_model_dir, corpus, dev_dir, tmp_path, monkeypatch):
    calls = scripted_dev(monkeypatch, [50.0, 40.0, 45.0, 49.9])
    out = tmp_path / "out"
    r = run_main("train", corpus, "-o", out, "--model", tiny_model_dir, "--batch-size", "8", "--max-steps", "3",
                 "--eval-steps", "1", "--max-length", "16", "--dev-data", dev_dir)
    assert r.code == 0, r.stderr
    assert len(calls) == 4  # steps 0, 1, 2, 3
    assert "no step beat the starting model on STS-B dev (50.00); the output is the starting model" in r.stderr
    assert "start STS-B dev" in r.stdout.decode() and "pooling exported" in r.stdout.decode()
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    assert set(start) <= set(got) or set(got) <= set(start)
    for k in set(start) & set(got):  # the exported weights are the starting weights
        assert (got[k] == start[k]).all(), k
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["best_step"], manifest["start_dev"], manifest["kept_starting_model"]) == (0, 50.0, True)
    assert json.loads((out / "esimcse.json").read_text())["step"] == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 0, "dev_spearman": 50.0, "best_dev": 50.0, "best_step": 0}
    assert [r["best_step"] for r in rows if "dev_spearman" in r] == [0, 0, 0, 0]
    # a complete folder that loads
    from esimcse_cli.core.models import load_encoder

    assert load_encoder(str(out), device="cpu").encode(["a man plays"]).shape == (1, 32)


def test_a_step_must_beat_the_start_to_be_kept(tiny_model_dir, corpus, dev_dir, tmp_path, monkeypatch):
    scripted_dev(monkeypatch, [50.0, 40.0, 60.0, 55.0])
    res = train(cfg_for(tiny_model_dir, corpus, tmp_path / "out", dev_data=str(dev_dir)))
    assert (res.start_dev, res.best_dev, res.best_step, res.kept_start) == (50.0, 60.0, 2, False)
    assert json.loads((tmp_path / "out" / "esimcse.json").read_text())["step"] == 2


def test_without_dev_data_one_warning_says_no_selection(tiny_model_dir, corpus, tmp_path):
    r = run_main("train", corpus, "-o", tmp_path / "out", "--model", tiny_model_dir, "--batch-size", "8", "--max-steps", "1",
                 "--max-length", "16", "--dev-data", "none")
    assert r.code == 0, r.stderr
    warned = [l for l in r.lines if "no model selection" in l]
    assert len(warned) == 1 and "--dev-data" in warned[0]


# ------------------------------------------------------------------------------ length and positions
@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("short-bert") / "model", positions=32)


def test_max_length_above_the_positions_is_one_line_exit_2(short_model, corpus, tmp_path):
    r = run_main("train", corpus, "-o", tmp_path / "out", "--model", short_model, "--max-length", "33", "--dev-data", "none")
    assert r.code == 2
    assert r.lines == ["esimcse: error: --max-length 33: the model takes at most 32 tokens (its position embeddings)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_near_the_limit_the_sentence_is_shortened_so_its_copy_fits(short_model, variant):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(short_model)
    cfg = build_config({"max_length": 32, "repetition_variant": variant}).resolved()
    batcher = Batcher(tok, cfg, position_limit=32)
    texts = sentences(40, seed=4, lo=20, hi=40)
    plain = Batcher(tok, cfg).tokenize(texts)
    ids = batcher.tokenize(texts)
    most = lambda n: max(repeat_support(n, cfg.dup_rate, variant))
    for full, fitted in zip(plain, ids):
        assert fitted[0] == full[0] and fitted[-1] == full[-1]  # [CLS] ... [SEP] kept
        assert fitted[1:-1] == full[1 : len(fitted) - 1]  # a prefix of the content
        assert len(fitted) + most(len(fitted) - 2) <= 32
        assert len(fitted) == 2 or len(fitted) + 1 + most(len(fitted) - 1) > 32 or fitted == full  # shortened no more than needed
    for seed in range(20):
        copies = augment_batch(ids, "repetition", cfg.dup_rate, variant, random.Random(seed), special_ids=set(tok.all_special_ids))
        assert all(len(c) <= 32 for c in copies)
        assert any(len(c) > len(o) for c, o in zip(copies, ids))  # the copies are not cut back


def test_fit_for_copy_leaves_short_sentences_alone():
    assert fit_for_copy([1, 5, 6, 2], 32, lambda n: 9, {1, 2}) == [1, 5, 6, 2]
    assert fit_for_copy([1] + [5] * 30 + [2], 32, lambda n: 3, {1, 2}) == [1] + [5] * 27 + [2]


def test_training_at_the_position_limit_runs(short_model, tmp_path):
    """Before the fix: RuntimeError 'The expanded size of the tensor ...' on the first long line."""
    p = tmp_path / "long.txt"
    p.write_text("\n".join(sentences(24, seed=5, lo=30, hi=45)) + "\n", encoding="utf-8")
    res = train(cfg_for(short_model, p, tmp_path / "out", max_length=32, max_steps=2, eval_steps=0))
    assert res.step == 2


def test_the_default_model_refuses_max_length_past_512(tmp_path, corpus):
    with pytest.raises(ConfigError, match="--max-length 513: the model takes at most 512"):
        train(build_config({"corpus": str(corpus), "output_dir": str(tmp_path / "o"), "max_length": 513, "max_steps": 1}))


def test_resume_with_selection_off_reports_the_last_step_not_the_saved_best(tiny_model_dir, corpus, dev_dir, tmp_path, monkeypatch):
    """A run that kept its start, resumed with --dev-data none: the folder gets the last step, and says so."""
    scripted_dev(monkeypatch, [50.0, 40.0, 40.0])
    out = tmp_path / "out"
    first = train(cfg_for(tiny_model_dir, corpus, out, dev_data=str(dev_dir), max_steps=4), should_stop=lambda s: s == 2)
    assert (first.stopped, first.best_step) == ("callback", 0)
    r = run_main("train", "--resume", "-o", out, "--dev-data", "none")
    assert r.code == 0, r.stderr
    assert "no step beat the starting model" not in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["best_step"], manifest["kept_starting_model"]) == (None, False)
    assert json.loads((out / "esimcse.json").read_text())["step"] == 4
    assert "as the run being resumed chose it" in r.stderr  # where the pooler came from, on resume


def test_fit_for_copy_official_counts_inner_specials_as_content():
    # [CLS] [UNK] a ... [SEP]: the official variant leaves out only one special at each end, so [UNK] counts
    ids = [1, 3] + [5] * 20 + [2]
    most = lambda n: n // 4
    paper = fit_for_copy(ids, 26, most, {1, 2, 3})
    official = fit_for_copy(ids, 26, most, {1, 2, 3}, "official")
    assert len(official) - 2 + most(len(official) - 2) + 2 <= 26
    assert len(paper) >= len(official)


def test_p_exactly_at_the_level_is_not_significant():
    import numpy as np

    from esimcse_cli.core.stats import Estimate, paired

    reps = np.array([-1.0] * 25 + [1.0] * 975)  # 25 of 1000 on the other side of 0: p = 0.05
    row = paired(Estimate(1.0, reps), Estimate(0.0, np.zeros(1000)), level=0.95)
    assert row["p"] == 0.05 and row["significant"] is False
