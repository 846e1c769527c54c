"""The model card (issue 14, section 1): ``train`` writes README.md; ``eval-sts --update-card`` adds its evaluation."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from clirunner import run_main
from test_do_no_harm import cfg_for, corpus, dev_dir, sentences  # noqa: F401 (corpus, dev_dir: fixtures)
from esimcse_cli.core import card
from esimcse_cli.core.config import TrainConfig
from esimcse_cli.core.run_folder import config_for_resume
from esimcse_cli.core.trainer import train




def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def table_after(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first markdown table after ``heading``."""
    rest = text[text.index(heading):].splitlines()
    rows = [l for l in rest if l.startswith("|")]
    first = rest.index(rows[0])
    rows = []
    for l in rest[first:]:
        if not l.startswith("|"):
            break
        rows.append([c.strip() for c in l.strip("|").split("|")])
    return rows[2:]  # header and rule left out


@pytest.fixture()
def trained(tiny_model_dir, corpus, dev_dir, tmp_path):
    out = tmp_path / "out"
    train(cfg_for(tiny_model_dir, corpus, out, dev_data=str(dev_dir), max_steps=3, eval_steps=1, lr=1e-4))
    return out


def test_train_writes_a_card_with_front_matter_hyperparameters_curve_and_command(trained, corpus):
    text = (trained / "README.md").read_text(encoding="utf-8")
    fm = front_matter(text)
    assert fm["library_name"] == "sentence-transformers" and fm["pipeline_tag"] == "sentence-similarity"
    assert {"sentence-transformers", "sentence-similarity", "feature-extraction", "esimcse"} <= set(fm["tags"])
    assert "base_model" not in fm  # a local folder without an esimcse.json naming a hub model
    assert fm["esimcse"]["corpus"] == "corpus.txt" and fm["esimcse"]["sentences"] == 80 and fm["esimcse"]["finished"] is True
    assert "https://arxiv.org/abs/2109.04380" in text and "https://arxiv.org/abs/2104.08821" in text

    # hyperparameters: the non-defaults first, then the defaults
    defaults = TrainConfig()
    rows = table_after(text, "## Hyperparameters")
    names = [r[0].strip("`") for r in rows]
    changed = [r[1] != r[2] for r in rows]
    assert changed == sorted(changed, reverse=True) and any(changed) and not all(changed)
    assert {"lr", "batch_size", "max_steps", "max_length"} <= {n for n, c in zip(names, changed) if c}
    assert {"temperature", "dup_rate"} <= {n for n, c in zip(names, changed) if not c}
    assert rows[names.index("lr")][1:] == ["`0.0001`", f"`{defaults.lr}`"]

    # dev curve rows are metrics.jsonl's evaluation rows
    metrics = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [(str(r["step"]), f"{r['dev_spearman']:.2f}") for r in metrics if "dev_spearman" in r]
    assert [tuple(r) for r in table_after(text, "## STS-B dev curve")] == evals and evals[0][0] == "0"
    assert (trained / "dev_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(dev_curve.png)" in text

    manifest = json.loads((trained / "manifest.json").read_text())
    if manifest["best_step"] == 0:
        assert "the starting model was kept" in text
    else:
        assert f"step {manifest['best_step']} of 3, **{manifest['best_dev']:.2f}**" in text
    assert shlex.join(manifest["equivalent_command"]) in text
    assert "last_hidden_state[:, 0]" in text or "attention_mask" in text
    assert f"`{manifest['device']}`" in text and manifest["versions"]["torch"] in text
    assert not list(trained.glob(".*.tmp"))


def test_selection_lines_without_dev_data_and_when_the_start_is_kept(tiny_model_dir, corpus, dev_dir, tmp_path, monkeypatch):
    out = tmp_path / "nodev"
    train(cfg_for(tiny_model_dir, corpus, out, max_steps=2, dev_data=None))
    text = (out / "README.md").read_text()
    assert "no model selection (no dev data): the last step (2)" in text.lower()
    assert "Not scored (no dev data)." in text and not (out / "dev_curve.png").exists()

    from esimcse_cli.core import trainer as trainer_mod

    scores = iter([50.0, 40.0, 30.0])  # step 0 scores best: the starting model is kept
    monkeypatch.setattr(trainer_mod, "make_dev_scorer", lambda cfg: (lambda enc: next(scores)))
    kept = tmp_path / "kept"
    train(cfg_for(tiny_model_dir, corpus, kept, dev_data=str(dev_dir), max_steps=2))
    assert "the starting model was kept" in (kept / "README.md").read_text()


def test_a_stopped_run_says_unfinished_and_resume_rewrites_the_card(tiny_model_dir, corpus, dev_dir, tmp_path):
    out = tmp_path / "part"
    res = train(cfg_for(tiny_model_dir, corpus, out, dev_data=str(dev_dir), max_steps=4, eval_steps=2), should_stop=lambda s: s == 2)
    assert res.stopped == "callback"
    text = (out / "README.md").read_text()
    assert "Unfinished run" in text and "step 2 of 4" in text and "--resume" in text
    assert front_matter(text)["esimcse"]["finished"] is False

    train(config_for_resume(str(out)))
    text = (out / "README.md").read_text()
    assert "Unfinished run" not in text and front_matter(text)["esimcse"]["finished"] is True
    assert front_matter(text)["esimcse"]["steps"] == 4
    assert [r[0] for r in table_after(text, "## STS-B dev curve")] == ["0", "2", "4"]
    assert "resumed from step 2" in text


def test_a_card_failure_never_fails_training(tiny_model_dir, corpus, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no plot today")

    monkeypatch.setattr(card, "_write_plot", broken)
    out = tmp_path / "out"
    res = train(cfg_for(tiny_model_dir, corpus, out, max_steps=2, dev_data=None))
    assert res.stopped is None and (out / "model.safetensors").is_file() and not (out / "README.md").exists()


def test_base_model_for_the_default_a_hub_name_and_a_trained_folder(tmp_path):
    assert card.base_model_id({"model": "default"}, {}) == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.base_model_id({"model": "bert-base-uncased"}, {}) == "bert-base-uncased"
    folder = tmp_path / "m"
    folder.mkdir()
    assert card.base_model_id({"model": str(folder)}, {}) is None
    (folder / "esimcse.json").write_text(json.dumps({"base_model": "princeton-nlp/unsup-simcse-bert-base-uncased"}))
    assert card.base_model_id({"model": str(folder)}, {}) == "princeton-nlp/unsup-simcse-bert-base-uncased"


def test_update_card_adds_then_replaces_the_evaluation_section(trained, dev_dir):
    before = (trained / "README.md").read_text()
    r = run_main("eval-sts", str(dev_dir), "--model", str(trained), "--tasks", "stsb,sick", "--update-card")
    assert r.code == 0, r.stderr
    text = (trained / "README.md").read_text()
    assert text.startswith(before.rstrip("\n")) and text.count(card.EVAL_BEGIN) == 1 and text.count(card.EVAL_END) == 1
    rows = table_after(text, card.EVAL_BEGIN)
    assert [r[0] for r in rows] == ["STSBenchmark", "SICKRelatedness", "**avg**"] and len(rows[0]) == 4

    r = run_main("eval-sts", str(dev_dir), "--model", str(trained), "--tasks", "stsb", "--bootstrap", "100", "--update-card")
    assert r.code == 0, r.stderr
    text = (trained / "README.md").read_text()
    assert text.count(card.EVAL_BEGIN) == 1 and text.startswith(before.rstrip("\n"))
    rows = table_after(text, card.EVAL_BEGIN)
    assert [r[0] for r in rows] == ["STSBenchmark", "**avg**"] and rows[0][4].startswith("[")


def test_update_card_on_a_folder_without_a_card_and_refused_without_a_folder(tiny_model_dir, dev_dir, tmp_path):
    import shutil

    folder = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, folder)
    pairs = tmp_path / "mine.tsv"
    pairs.write_text("".join(f"{a}\t{b}\t{i % 5}\n" for i, (a, b) in enumerate(zip(sentences(12, 1), sentences(12, 2)))))
    r = run_main("eval-sts", "--pairs", str(pairs), "--model", str(folder), "--update-card")
    assert r.code == 0, r.stderr
    text = (folder / "README.md").read_text()
    assert text.startswith(card.EVAL_BEGIN) and "| mine |" in text

    r = run_main("eval-sts", str(dev_dir), "--update-card")
    assert r.code == 2 and len(r.lines) == 1 and "--update-card" in r.lines[0]


def test_update_card_is_refused_before_the_data_is_read_and_overwrite_removes_the_card(tmp_path):
    r = run_main("eval-sts", str(tmp_path / "no-such-data"), "--model", "default", "--update-card")
    assert r.code == 2 and len(r.lines) == 1 and "--update-card" in r.lines[0] and "no-such-data" not in r.lines[0]

    from esimcse_cli.core.run_folder import clear_previous_run

    out = tmp_path / "run"
    out.mkdir()
    for name in ("README.md", "dev_curve.png", "notes.txt"):
        (out / name).write_text("x")
    clear_previous_run(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
