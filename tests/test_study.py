"""The results-study runner (benchmarks/study.py) and its report (benchmarks/study_report.py).

Fast: a tiny matrix on the tiny random BERT and sample_data/ (2 training steps), plus report generation
from fake cell JSON files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import study  # noqa: E402
import study_report  # noqa: E402

SAMPLE = REPO / "sample_data"


def write_matrix(tmp_path: Path, model: Path, extra_groups: str = "") -> Path:
    corpus_a = tmp_path / "a.txt"
    corpus_b = tmp_path / "b.txt"
    lines = (SAMPLE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    corpus_a.write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
    corpus_b.write_text("\n".join(lines[300:400]) + "\nthis last line is cut", encoding="utf-8")
    text = f"""
data_dir: {SAMPLE / 'senteval'}
corpus:
  - path: {corpus_a}
  - {{path: {corpus_b}, drop_last_line: true}}
defaults:
  model: {model}
  batch_size: 8
  max_length: 16
  max_steps: 2
  eval_steps: 1
  log_steps: 1
  save_steps: 0
eval: {{batch_size: 32, probe_sentences: 20}}
groups:
  core:
    - {{name: untrained-cls, kind: untrained, pooling: cls_before_pooler, label: "untrained start ([CLS])"}}
    - {{name: simcse, label: SimCSE, seeds: [1, 2], train: {{method: simcse}}}}
    - {{name: esimcse, label: ESimCSE, seeds: [1, 2], train: {{method: esimcse}}}}
  positives:
    unsupported: no positive-builder option
    cells:
      - {{name: insertion, seeds: [1], train: {{method: esimcse}}}}
{extra_groups}
"""
    p = tmp_path / "matrix.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_matrix_expansion_order_and_selection(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    core = [c.name for c in m.group("core").cells]
    # seed by seed: all first seeds, then the second seeds
    # and the evaluation-only starts last
    assert core == ["simcse-s1", "esimcse-s1", "simcse-s2", "esimcse-s2", "untrained-cls"]
    assert [c.name for c in study.select_cells(m, only="core", max_cells=2)] == ["simcse-s1", "esimcse-s1"]
    assert [c.name for c in study.select_cells(m, names="esimcse-s2,simcse-s1")] == ["simcse-s1", "esimcse-s2"]
    with pytest.raises(study.StudyError, match="unknown cell"):
        study.select_cells(m, names="nope")
    with pytest.raises(study.StudyError, match="no group"):
        study.select_cells(m, only="nope")
    assert m.group("positives").cells[0].unsupported


def test_matrix_refuses_unknown_train_key(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("defaults: {learning_rate: 1}\ngroups: {}\n", encoding="utf-8")
    with pytest.raises(study.StudyError, match="learning_rate"):
        study.load_matrix(p)


def test_fingerprint_tracks_settings(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    cell = m.group("core").cells[1]
    a = study.fingerprint(study.cell_settings(m, cell, study.Options(), "x"))
    assert a == study.fingerprint(study.cell_settings(m, cell, study.Options(device="cpu"), "x"))  # run-only option
    assert a != study.fingerprint(study.cell_settings(m, cell, study.Options(steps=3), "x"))
    assert a != study.fingerprint(study.cell_settings(m, cell, study.Options(), "y"))  # another corpus


def test_corpus_concatenation_drops_truncated_last_line(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    c = study.CorpusFile(m)
    try:
        lines = Path(c.path).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 400 and "this last line is cut" not in lines
        assert not Path(c.path).resolve().is_relative_to(REPO)
        assert c.shell().startswith("cat ") and "head -n -1" in c.shell()
    finally:
        c.close()
    assert not Path(c.path).exists()


def test_runner_skips_finished_cells_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    res, runs = tmp_path / "results", tmp_path / "runs"
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n<!-- study:begin -->\nOLDSECTION\n<!-- study:end -->\n", encoding="utf-8")
    base = ["--matrix", str(mpath), "--results-dir", str(res), "--runs-dir", str(runs), "--device", "cpu",
            "--results-md", str(md), "--plots-dir", str(tmp_path / "plots")]
    assert study.main(base + ["--cells", "untrained-cls,simcse-s1"]) == 0
    done = sorted(p.name for p in res.glob("*.json"))
    assert done == ["simcse-s1.json", "untrained-cls.json"]
    doc = json.loads((res / "simcse-s1.json").read_text())
    assert doc["train"]["steps"] == 2 and doc["train"]["dev_curve"][0][0] == 0
    assert set(doc["eval"]["tasks"]) >= {"STS12", "STSBenchmark", "SICKRelatedness"}
    assert doc["eval"]["tasks"]["STSBenchmark"]["buckets"][0]["name"] == "<=3"
    assert doc["eval"]["probe"]["sentences"] == 20
    assert doc["command"].startswith("python benchmarks/study.py --cells simcse-s1")
    assert any("esimcse train" in c and "--method simcse" in c for c in doc["cli_commands"])
    assert doc["train"]["corpus"]["sentences"] == 400
    assert not (runs / "simcse-s1").exists()  # model folder removed once the JSON is written
    assert "## Results study" in md.read_text() and "OLDSECTION" not in md.read_text()
    assert (tmp_path / "plots" / "study_dev_curves.png").is_file()

    # a re-run skips the finished cells: nothing may be trained again
    calls = []
    real = study.run_cell
    monkeypatch.setattr(study, "run_cell", lambda c, *a, **k: (calls.append(c.name), real(c, *a, **k))[1])
    before = (res / "simcse-s1.json").read_text()
    assert study.main(base + ["--only", "core", "--max-cells", "1", "--no-report"]) == 0
    assert calls == ["esimcse-s1"]
    assert (res / "simcse-s1.json").read_text() == before
    # the recorded command reproduces the cell (same seed, same numbers)
    calls.clear()
    assert study.main(base + ["--cells", "simcse-s1", "--force", "--no-report"]) == 0
    redo = json.loads((res / "simcse-s1.json").read_text())
    assert calls == ["simcse-s1"]
    assert redo["eval"]["avg"] == doc["eval"]["avg"] and redo["train"]["dev_curve"] == doc["train"]["dev_curve"]
    # other settings (--steps): finished cells are stale and skipped without --force
    calls.clear()
    assert study.main(base + ["--cells", "simcse-s1", "--steps", "1", "--no-report"]) == 0
    assert calls == []


def test_runner_evaluates_a_finished_training_without_retraining(tmp_path, tiny_model_dir, monkeypatch):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    res, runs = tmp_path / "results", tmp_path / "runs"
    base = ["--matrix", str(mpath), "--results-dir", str(res), "--runs-dir", str(runs), "--device", "cpu", "--no-report"]
    assert study.main(base + ["--cells", "esimcse-s1", "--keep-runs"]) == 0
    first = json.loads((res / "esimcse-s1.json").read_text())
    (res / "esimcse-s1.json").unlink()  # as if the study was stopped during evaluation

    import esimcse_cli.core.trainer as trainer

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert study.main(base + ["--cells", "esimcse-s1"]) == 0
    again = json.loads((res / "esimcse-s1.json").read_text())
    assert again["train"]["reused_finished_run"] is True
    assert again["eval"]["avg"] == first["eval"]["avg"]
    assert again["train"]["best_dev"] == first["train"]["best_dev"]


# ------------------------------------------------------------------------------ report from fake JSONs
def fake_cell(name, label, seed, avg_shift, kind="train", group="core", dev=80.0, best_step=36, pooling=None, lo=80.0, hi=70.0):
    tasks = {}
    for i, t in enumerate(study_report.TASKS):
        tasks[t] = {"spearman": 70.0 + i + avg_shift,
                    "buckets": [{"name": "<=3", "pairs": 900, "spearman": lo + avg_shift},
                                {"name": ">3", "pairs": 479, "spearman": hi}]}
    avg = sum(v["spearman"] for v in tasks.values()) / len(tasks)
    d = {"cell": name, "label": label, "group": group, "kind": kind, "seed": seed, "wall_s": 100.0,
         "eval": {"tasks": tasks, "avg": avg, "avg_gap": 10.0, "seconds": 30.0, "length_unit": "words",
                  "probe": {"sentences": 1000, "dup_rate": 0.32, "variant": "paper", "seed": 42, "mean_cosine": 0.95,
                            "slope": -0.004, "per_count": [{"inserted": 0, "pairs": 10, "mean_cosine": 0.99},
                                                           {"inserted": 3, "pairs": 10, "mean_cosine": 0.93}]}}}
    if kind == "untrained":
        d["settings"] = {"kind": "untrained", "pooling": pooling}
        d["eval"]["stsb_dev"] = dev
        return d
    d["settings"] = {"kind": "train", "train": {"max_steps": 36}, "corpus": [{"path": "x/wiki.txt", "drop_last_line": False}]}
    d["config"] = {"model": "default", "pooler": "cls", "mlp": True, "batch_size": 64, "grad_accum": 1, "max_length": 32,
                   "lr": 3e-5, "scheduler": "linear", "temperature": 0.05, "dup_rate": 0.32, "queue_ratio": 2.5,
                   "momentum": 0.995, "momentum_variant": "paper", "bf16": False, "eval_steps": 6}
    d["train"] = {"steps": 36, "total_steps": 36, "best_dev": dev, "best_step": best_step, "start_dev": 79.73,
                  "dev_curve": [[0, 79.73], [18, dev - 1], [36, dev]], "wall_s": 500.0, "step_seconds_mean": 5.0,
                  "sentences_per_s": 12.8, "corpus": {"sentences": 10000}}
    return d


def test_report_numbers_come_from_the_jsons(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    cells = [fake_cell("untrained-cls", "untrained start ([CLS])", 42, -5.0, kind="untrained", pooling="cls_before_pooler", dev=79.73),
             fake_cell("untrained-avg", "untrained start (avg)", 42, 3.0, kind="untrained", pooling="avg", dev=86.7)]
    cells += [fake_cell(f"simcse-s{s}", "SimCSE", s, sh, dev=84.0 + sh) for s, sh in ((42, 0.0), (43, 0.2), (44, 0.4))]
    cells += [fake_cell(f"esimcse-s{s}", "ESimCSE", s, sh, dev=84.3 + sh) for s, sh in ((42, 0.3), (43, 0.5), (44, 0.7))]
    cells.append(fake_cell("rep-only-s42", "repetition only", 42, 0.1, dev=84.1))
    cells.append(fake_cell("old-s42", "SimCSE", 45, 9.0))
    cells[-1]["settings"]["train"]["max_steps"] = 2  # another budget: left out
    for c in cells:
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n", encoding="utf-8")
    written = study_report.write_report(res, None, md, tmp_path, command="python benchmarks/study.py --report-only")
    text = md.read_text()
    assert "keep me" in text and "<!-- study:begin -->" in text
    # SimCSE avg: 73.0 + {0, .2, .4} -> 73.20 ± 0.20; ESimCSE: 73.50 ± 0.20; difference +0.30
    assert "73.20 ± 0.20" in text and "73.50 ± 0.20" in text
    assert "+0.30" in text and "reproduces in direction only" in text
    assert "76.25" in text and "78.27" in text and "81.48" in text
    assert "Equal step budget: 36" in text
    assert "old-s42" in text and "left out" in text  # other budget excluded, and said so
    assert "does not beat SimCSE" in text and "Budget." in text  # proposal when the goal is missed
    assert len(written) == 3 and all(p.is_file() and p.stat().st_size > 1000 for p in written)


def test_report_without_cells(tmp_path):
    md = tmp_path / "RESULTS.md"
    study_report.write_report(tmp_path / "none", None, md, tmp_path)
    assert "No cell has finished yet." in md.read_text()
