"""The results-study runner (benchmarks/study.py) and its report (benchmarks/study_report.py).

Fast: a tiny matrix on the tiny random BERT and sample_data/ (2 training steps, 100 bootstrap replicates), the
corpus rule on hand-made files (and the real corpus count where ../shared/data is), plus report generation
from fake cell JSON files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import study  # noqa: E402
import study_report  # noqa: E402

SAMPLE = REPO / "sample_data"
SHARED_CORPUS = (REPO.parent / "shared" / "data" / "corpus").resolve()


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
  pooler: cls
  batch_size: 8
  max_length: 16
  max_steps: 2
  eval_steps: 1
  log_steps: 1
  save_steps: 0
eval: {{batch_size: 32, probe_sentences: 20, bootstrap: 100}}
groups:
  core:
    - {{name: simcse, label: SimCSE, seeds: [1, 2], train: {{method: simcse}}}}
    - {{name: esimcse, label: ESimCSE, seeds: [1, 2], train: {{method: esimcse}}}}
  do_no_harm:
    - {{name: simcse-auto, label: "SimCSE (pooler auto)", seed: 1, train: {{method: simcse, pooler: auto}}}}
  positives:
    unsupported: no positive-builder option
    cells:
      - {{name: insertion, seeds: [1], train: {{method: esimcse}}}}
  starting_points:
    - {{name: untrained-cls, kind: untrained, pooling: cls_before_pooler, label: "untrained start ([CLS])"}}
{extra_groups}
"""
    p = tmp_path / "matrix.yaml"
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------ the matrix
def test_matrix_expansion_order_and_selection(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    # seed by seed within a group: all first seeds, then the second seeds; groups in the file's order
    assert [c.name for c in m.group("core").cells] == ["simcse-s1", "esimcse-s1", "simcse-s2", "esimcse-s2"]
    assert [c.name for c in m.cells()] == ["simcse-s1", "esimcse-s1", "simcse-s2", "esimcse-s2", "simcse-auto",
                                           "insertion-s1", "untrained-cls"]
    assert [c.name for c in study.select_cells(m, only="core", max_cells=2)] == ["simcse-s1", "esimcse-s1"]
    assert [c.name for c in study.select_cells(m, names="esimcse-s2,simcse-s1")] == ["simcse-s1", "esimcse-s2"]
    with pytest.raises(study.StudyError, match="unknown cell"):
        study.select_cells(m, names="nope")
    with pytest.raises(study.StudyError, match="no group"):
        study.select_cells(m, only="nope")
    assert m.group("positives").cells[0].unsupported


def test_the_study_matrix_runs_the_core_first():
    """benchmarks/study.yaml: core (interleaved by seed), do no harm, ablations, official, starting points."""
    m = study.load_matrix(REPO / study.DEFAULT_MATRIX)
    assert [c.name for c in m.cells()] == [
        "simcse-s42", "esimcse-s42", "simcse-s43", "esimcse-s43", "simcse-s44", "esimcse-s44",
        "simcse-auto", "esimcse-auto", "rep-only", "queue-only", "esimcse-official", "untrained-cls", "untrained-avg"]
    assert [g.name for g in m.groups] == ["core", "do_no_harm", "ablations", "official", "starting_points"]
    opts = study.Options()
    cfg = {c.name: study.cell_settings(m, c, opts, "x") for c in m.cells()}
    core = cfg["esimcse-s42"]["train"]
    assert core["epochs"] == 1 and core["max_steps"] is None and core["eval_steps"] == 125
    assert (core["batch_size"], core["max_length"], core["lr"], core["temperature"]) == (64, 32, 3e-5, 0.05)
    assert (core["dup_rate"], core["queue_ratio"], core["momentum"], core["pooler"]) == (0.32, 2.5, 0.995, "cls")
    assert m.defaults["save_steps"] == 125
    assert cfg["simcse-s43"]["train"]["method"] == "simcse" and cfg["simcse-s43"]["train"]["seed"] == 43
    assert cfg["simcse-auto"]["train"]["pooler"] == "auto" and cfg["esimcse-auto"]["train"]["method"] == "esimcse"
    assert cfg["rep-only"]["train"]["momentum_queue"] is False and cfg["rep-only"]["train"]["repetition"] is True
    assert cfg["queue-only"]["train"]["repetition"] is False and cfg["queue-only"]["train"]["momentum_queue"] is True
    off = cfg["esimcse-official"]["train"]
    assert off["repetition_variant"] == "official" and off["momentum_variant"] == "official" and off["pooler"] == "cls"
    assert cfg["untrained-cls"]["pooling"] == "cls_before_pooler" and cfg["untrained-avg"]["pooling"] == "avg"
    assert m.eval["bootstrap"] == 1000
    assert m.corpus_dedupe and m.corpus_sentences == 36368 and len(m.corpus) == 5


def test_matrix_refuses_unknown_train_key(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("defaults: {learning_rate: 1}\ngroups: {}\n", encoding="utf-8")
    with pytest.raises(study.StudyError, match="learning_rate"):
        study.load_matrix(p)
    p.write_text("corpus: {files: [a.txt], dedup: true}\ngroups: {}\n", encoding="utf-8")
    with pytest.raises(study.StudyError, match="dedup"):
        study.load_matrix(p)
    p.write_text("corpus: [{path: a.tsv, column: 0}]\ngroups: {}\n", encoding="utf-8")
    with pytest.raises(study.StudyError, match="1-based"):
        study.load_matrix(p)


def test_fingerprint_tracks_settings(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    cell = m.group("core").cells[1]
    a = study.fingerprint(study.cell_settings(m, cell, study.Options(), "x"))
    assert a == study.fingerprint(study.cell_settings(m, cell, study.Options(device="cpu"), "x"))  # run-only option
    assert a != study.fingerprint(study.cell_settings(m, cell, study.Options(steps=3), "x"))
    assert a != study.fingerprint(study.cell_settings(m, cell, study.Options(), "y"))  # another corpus
    m.corpus_dedupe = True
    assert a != study.fingerprint(study.cell_settings(m, cell, study.Options(), "x"))


# ------------------------------------------------------------------------------ the corpus
def test_corpus_concatenation_drops_truncated_last_line(tmp_path, tiny_model_dir):
    m = study.load_matrix(write_matrix(tmp_path, tiny_model_dir))
    c = study.CorpusFile(m)
    try:
        lines = Path(c.path).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 400 and "this last line is cut" not in lines and c.sentences == 400
        assert not Path(c.path).resolve().is_relative_to(REPO)
        assert "head -n -1" in c.shell() and c.shell().endswith("|")
        if shutil.which("bash"):
            assert c.shell_reproduces() is True
    finally:
        c.close()
    assert not Path(c.path).exists()


def _dedupe_matrix(tmp_path: Path, sentences=None) -> Path:
    d = tmp_path / "corpus"
    d.mkdir(parents=True)
    (d / "first.txt").write_bytes(b"alpha one\nbeta two\n\n   \nalpha one\ngamma three\r\n")
    (d / "cut.txt").write_bytes(b"beta two\ndelta four\nepsilon five\nzeta si")  # cut at a byte count
    (d / "split.tsv").write_bytes(b"eta seven\teta . <::::> seven .\ndelta four\tx\n\tonly a second field\n"
                                  b"theta eight\n\t\nalpha one\tagain\niota nine\tlast\n")
    sent = f"  sentences: {sentences}\n" if sentences else ""
    p = tmp_path / "m.yaml"
    p.write_text(f"""
corpus:
  dedupe: true
{sent}  files:
    - {d / 'first.txt'}
    - {{path: {d / 'cut.txt'}, drop_last_line: true}}
    - {{path: {d / 'split.tsv'}, column: 1}}
groups: {{}}
""", encoding="utf-8")
    return p


def test_corpus_dedupe_rule_on_hand_made_files(tmp_path):
    """device_pack.sh's rule: files in order, the cut last line dropped, column 1 of the tsv, blank lines and
    lines already seen skipped (first occurrence kept), a trailing \\r dropped."""
    m = study.load_matrix(_dedupe_matrix(tmp_path))
    c = study.CorpusFile(m)
    try:
        want = ["alpha one", "beta two", "gamma three", "delta four", "epsilon five", "eta seven", "theta eight", "iota nine"]
        data = Path(c.path).read_bytes()
        assert data == ("\n".join(want) + "\n").encode()
        assert c.sentences == 8 and c.sha256 == hashlib.sha256(data).hexdigest()
        info = c.info()
        assert [(f["lines"], f["kept"], f["blank"], f["duplicates"]) for f in info["files"]] == [(6, 3, 2, 1), (3, 2, 0, 1), (7, 3, 2, 2)]
        assert info["sentences"] == 8 and info["dedupe"] is True
        assert "cut -f1" in info["shell"] and "!seen[$0]++" in info["shell"]
        if shutil.which("bash") and shutil.which("awk") and shutil.which("cut"):
            assert info["shell_reproduces"] is True  # the recorded pipeline rebuilds the very bytes
    finally:
        c.close()
    with pytest.raises(study.StudyError, match="gives 8 sentences, not the 9"):
        study.CorpusFile(study.load_matrix(_dedupe_matrix(tmp_path / "x", sentences=9)))


def test_corpus_option_suffixes():
    got = study.parse_corpus_option("a.txt,b.txt:drop-last,c.tsv:col=2,d.tsv:drop-last:col=1")
    assert got == [{"path": "a.txt", "drop_last_line": False, "column": None},
                   {"path": "b.txt", "drop_last_line": True, "column": None},
                   {"path": "c.tsv", "drop_last_line": False, "column": 2},
                   {"path": "d.tsv", "drop_last_line": True, "column": 1}]
    assert study.parse_corpus_option(study.corpus_option(got)) == got


@pytest.mark.skipif(not (SHARED_CORPUS / "wikisplit" / "test.tsv").is_file(), reason=f"real corpus not found at {SHARED_CORPUS}")
def test_real_corpus_has_36368_sentences(monkeypatch):
    monkeypatch.chdir(REPO)
    m = study.load_matrix(study.DEFAULT_MATRIX)
    c = study.CorpusFile(m)  # checks the matrix's `sentences: 36368` itself
    try:
        assert c.sentences == 36368 and c.sentences // 64 == 568
        assert len(Path(c.path).read_text(encoding="utf-8").splitlines()) == 36368
        if shutil.which("bash") and shutil.which("awk"):
            assert c.shell_reproduces() is True
    finally:
        c.close()


# ------------------------------------------------------------------------------ code version
def test_code_version_hashes_the_imported_package_files(tmp_path):
    code = study.preload()
    assert code is study.CODE and len(code["package_sha256"]) == 64
    files = code["package_files"]
    assert "esimcse_cli/core/scores_file.py" in files and "esimcse_cli/core/trainer.py" in files
    assert all(f.startswith("esimcse_cli/") for f in files)
    assert len(code["study_sha256"]) == 64
    if code.get("git_head"):  # a git checkout
        assert isinstance(code["uncommitted"], list)
    assert study.code_version()["package_sha256"] == code["package_sha256"]  # stable (HEAD plays no part)
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    h1 = study.code_version([a, b])["package_sha256"]
    assert study.code_version([b, a])["package_sha256"] == h1
    b.write_text("y = 3\n")
    assert study.code_version([a, b])["package_sha256"] != h1


# ------------------------------------------------------------------------------ running cells
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
    assert doc["train"]["steps"] == 2 and doc["train"]["dev_curve"][0][0] == 0 and doc["train"]["dev_curve"][-1][0] == 2
    assert set(doc["eval"]["tasks"]) >= {"STS12", "STSBenchmark", "SICKRelatedness"}
    sts_b = doc["eval"]["tasks"]["STSBenchmark"]
    assert sts_b["buckets"][0]["name"] == "<=3" and len(sts_b["ci"]) == 2 and "ci" in sts_b["buckets"][0]
    assert doc["eval"]["avg_ci"] and doc["eval"]["bootstrap"]["n"] == 100 and "STSBenchmark" in doc["eval"]["gap_ci"]
    assert doc["eval"]["probe"]["sentences"] == 20
    assert doc["command"].startswith("python benchmarks/study.py --cells simcse-s1")
    assert any("esimcse train" in c and "--method simcse" in c and "head -n -1" in c for c in doc["cli_commands"])
    assert any("--bootstrap 100" in c for c in doc["cli_commands"])
    assert doc["train"]["corpus"]["sentences"] == 400 and doc["corpus"]["sentences"] == 400
    assert doc["corpus"]["sha256"] == doc["settings"]["corpus_sha256"] == doc["train"]["corpus"]["sha256"]
    assert doc["code"]["package_sha256"] == study.CODE["package_sha256"]
    # the per-pair test scores, for esimcse compare
    from esimcse_cli.core.scores_file import load_scores

    assert doc["scores"]["path"] == "scores/simcse-s1.npz"
    scores, meta = load_scores(res / doc["scores"]["path"])
    assert set(scores) == set(doc["eval"]["tasks"]) and meta["cell"] == "simcse-s1" and meta["split"] == "test"
    assert meta["aggregate"] == "all" and meta["pooling"] == doc["eval"]["pooling"]
    assert (res / "scores" / "untrained-cls.npz").is_file()
    assert not (runs / "simcse-s1").exists()  # model folder removed once the JSON is written
    assert "## Results study" in md.read_text() and "OLDSECTION" not in md.read_text()
    assert "missing" in md.read_text() and "esimcse-s1" in md.read_text()
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
    # another code version: redone only when asked
    doc2 = json.loads((res / "simcse-s1.json").read_text())
    doc2["code"]["package_sha256"] = "0" * 64
    (res / "simcse-s1.json").write_text(json.dumps(doc2))
    assert study.main(base + ["--cells", "simcse-s1", "--no-report"]) == 0 and calls == []
    assert study.main(base + ["--cells", "simcse-s1", "--redo-other-code", "--no-report"]) == 0 and calls == ["simcse-s1"]


@pytest.mark.parametrize("cell", ["esimcse-s1", "simcse-auto"])  # --pooler auto: the saved state holds the chosen pooler
def test_runner_resumes_a_half_finished_run(tmp_path, tiny_model_dir, monkeypatch, cell):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    res, runs = tmp_path / "results", tmp_path / "runs"
    base = ["--matrix", str(mpath), "--results-dir", str(res), "--runs-dir", str(runs), "--device", "cpu", "--no-report",
            "--cells", cell, "--steps", "4", "--eval-steps", "2"]
    import esimcse_cli.core.trainer as trainer

    real = trainer.train
    monkeypatch.setattr(trainer, "train", lambda cfg, **k: real(cfg, **dict(k, should_stop=lambda step: step == 2)))
    assert study.main(base) == 130  # stopped after step 2: the state is saved, no JSON
    assert not (res / f"{cell}.json").exists() and (runs / cell / "state").is_dir()
    monkeypatch.setattr(trainer, "train", real)
    assert study.main(base) == 0
    doc = json.loads((res / f"{cell}.json").read_text())
    assert doc["train"]["resumed_from_step"] == 2 and doc["train"]["steps"] == 4
    assert [s for s, _ in doc["train"]["dev_curve"]] == [0, 2, 4]


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


def test_list_and_report_ignore_the_archive(tmp_path, tiny_model_dir, capsys):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    res = tmp_path / "results"
    (res / "archive").mkdir(parents=True)
    old = fake_cell("simcse-s1", "SimCSE", 1, 0.0)
    (res / "archive" / "simcse-s1.json").write_text(json.dumps(old))
    assert study.main(["--matrix", str(mpath), "--results-dir", str(res), "--list"]) == 0
    out = capsys.readouterr().out
    assert "simcse-s1" in out and all("pending" in ln for ln in out.splitlines() if "simcse-s1" in ln)
    assert study_report.load_results(res) == []
    md = tmp_path / "RESULTS.md"
    assert study.main(["--matrix", str(mpath), "--results-dir", str(res), "--report-only", "--results-md", str(md),
                       "--plots-dir", str(tmp_path)]) == 0
    assert "No cell has finished yet." in md.read_text() and "simcse-s1" in md.read_text()


# ------------------------------------------------------------------------------ report from fake JSONs
def fake_cell(name, label, seed, avg_shift, kind="train", group="core", dev=80.0, best_step=568, pooling=None, lo=80.0,
              hi=70.0, code="a" * 64, steps=568):
    tasks = {}
    for i, t in enumerate(study_report.TASKS):
        s = 70.0 + i + avg_shift
        tasks[t] = {"spearman": s, "ci": [s - 1.0, s + 1.0],
                    "buckets": [{"name": "<=3", "pairs": 900, "spearman": lo + avg_shift, "ci": [lo - 2, lo + 2]},
                                {"name": ">3", "pairs": 479, "spearman": hi, "ci": [hi - 3, hi + 3]}]}
    avg = sum(v["spearman"] for v in tasks.values()) / len(tasks)
    d = {"cell": name, "label": label, "group": group, "kind": kind, "seed": seed, "wall_s": 100.0,
         "code": {"package_sha256": code, "git_head": "1234567890abcdef", "package_files": {"esimcse_cli/core/x.py": code[:16]}},
         "scores": {"path": f"scores/{name}.npz"},
         "eval": {"tasks": tasks, "avg": avg, "avg_ci": [avg - 0.5, avg + 0.5], "avg_gap": 10.0, "avg_gap_ci": [8.0, 12.0],
                  "gap": {"STSBenchmark": lo + avg_shift - hi}, "gap_ci": {"STSBenchmark": [5.0, 15.0]},
                  "seconds": 30.0, "length_unit": "words", "bootstrap": {"n": 1000, "level": 0.95, "seed": 42},
                  "probe": {"sentences": 1000, "dup_rate": 0.32, "variant": "paper", "seed": 42, "mean_cosine": 0.95,
                            "slope": -0.004, "per_count": [{"inserted": 0, "pairs": 10, "mean_cosine": 0.99},
                                                           {"inserted": 3, "pairs": 10, "mean_cosine": 0.93}]}}}
    if kind == "untrained":
        d["settings"] = {"kind": "untrained", "pooling": pooling}
        d["eval"]["stsb_dev"] = dev
        return d
    d["settings"] = {"kind": "train", "train": {"max_steps": None, "epochs": 1},
                     "corpus": {"files": [{"path": "x/wiki.txt", "drop_last_line": False, "column": None}], "dedupe": True}}
    d["config"] = {"model": "default", "pooler": "cls", "mlp": True, "batch_size": 64, "grad_accum": 1, "max_length": 32,
                   "lr": 3e-5, "scheduler": "linear", "temperature": 0.05, "dup_rate": 0.32, "queue_ratio": 2.5,
                   "momentum": 0.995, "momentum_variant": "paper", "bf16": False, "eval_steps": 125}
    d["corpus"] = {"sentences": 36368, "sha256": "f" * 64, "dedupe": True, "shell_reproduces": True}
    d["train"] = {"steps": steps, "total_steps": steps, "best_dev": dev, "best_step": best_step, "start_dev": 79.73,
                  "dev_curve": [[0, 79.73], [125, dev - 1], [steps, dev]], "wall_s": 500.0, "step_seconds_mean": 5.0,
                  "sentences_per_s": 12.8, "corpus": {"sentences": 36368}, "pooler": {"train": "cls", "exported": "cls_before_pooler"}}
    return d


def _fake_study(res: Path):
    res.mkdir()
    cells = [fake_cell("untrained-cls", "untrained start ([CLS])", 42, -5.0, kind="untrained", group="starting_points",
                       pooling="cls_before_pooler", dev=79.73),
             fake_cell("untrained-avg", "untrained start (avg)", 42, 3.0, kind="untrained", group="starting_points",
                       pooling="avg", dev=86.7)]
    cells += [fake_cell(f"simcse-s{s}", "SimCSE", s, sh, dev=84.0 + sh) for s, sh in ((42, 0.0), (43, 0.2), (44, 0.4))]
    cells += [fake_cell(f"esimcse-s{s}", "ESimCSE", s, sh, dev=84.3 + sh) for s, sh in ((42, 0.3), (43, 0.5), (44, 0.7))]
    cells.append(fake_cell("rep-only", "repetition only", 42, 0.1, group="ablations", dev=84.1))
    cells.append(fake_cell("simcse-auto", "SimCSE (pooler auto)", 42, 2.0, group="do_no_harm", dev=86.7, best_step=0))
    cells.append(fake_cell("esimcse-official", "ESimCSE (official variants)", 42, 0.6, group="official", code="b" * 64))
    cells.append(fake_cell("queue-only", "momentum queue only", 42, 9.0, group="ablations", steps=32))  # another budget
    for c in cells:
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    (res / "archive").mkdir()
    (res / "archive" / "esimcse-auto.json").write_text(json.dumps(fake_cell("esimcse-auto", "x", 42, 50.0, group="do_no_harm")))
    return cells


def test_report_numbers_come_from_the_jsons(tmp_path):
    res = tmp_path / "results"
    _fake_study(res)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n", encoding="utf-8")
    matrix = study.load_matrix(REPO / study.DEFAULT_MATRIX)
    written = study_report.write_report(res, matrix, md, tmp_path, command="python benchmarks/study.py --report-only")
    text = md.read_text()
    assert "keep me" in text and "<!-- study:begin -->" in text
    # SimCSE avg: 73.0 + {0, .2, .4} -> 73.20 ± 0.20; ESimCSE: 73.50 ± 0.20; difference +0.30
    assert "73.20 ± 0.20" in text and "73.50 ± 0.20" in text
    assert "+0.30" in text and "reproduces in direction only" in text
    assert "76.25" in text and "78.27" in text and "81.48" in text
    assert "Equal step budget: 568" in text and "36,368 sentences" in text
    assert "queue-only` left out" in text  # other budget excluded, and said so
    assert "missing" in text and "esimcse-auto" in text and "| x |" not in text  # the archived JSON is not read
    assert "ESimCSE does not beat SimCSE by ≥ 1.0" in text and "Budget." in text
    # one-run rows carry the bootstrap interval; the per-cell table too
    assert "73.10 [72.60, 73.60]" in text  # rep-only's avg [ci]
    # dev curves table of the core seeds: steps 0, 125, 568 and the ESimCSE − SimCSE difference
    assert "| 125 |" in text and "ESimCSE − SimCSE" in text
    # do no harm: against untrained-avg (76.00), kept the start
    assert "kept the starting model" in text and "-1.00" in text
    # code version: the odd one out named
    assert "did not all run one package version" in text and "`esimcse-official` (bbbbbbbbbbbbbbbb" in text
    assert "not compared yet" in text  # no scores files: no paired comparison
    assert len(written) == 3 and all(p.is_file() and p.stat().st_size > 1000 for p in written)


def test_report_one_code_version(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    for c in (fake_cell("simcse-s42", "SimCSE", 42, 0.0), fake_cell("esimcse-s42", "ESimCSE", 42, 0.3)):
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    st = study_report.Study(study_report.load_results(res), None)
    ok, text = study_report.code_check(st)
    assert ok and "All 2 cells ran one package version" in text


def test_dev_gap_trend_tells_a_lead_that_levels_off_from_one_that_keeps_rising():
    steps = [125, 250, 375, 500, 568]
    # the study's core curve: the lead opens by step 250 and then stays at about +0.21
    assert study_report.dev_gap_trend(steps, [0.01, 0.21, 0.21, 0.22, 0.21]).startswith("it opens by step 250")
    assert study_report.dev_gap_trend(steps, [0.0, 0.1, 0.2, 0.3, 0.4]).startswith("rising")
    assert study_report.dev_gap_trend(steps, [0.3, 0.2, 0.2, 0.1, 0.0]).startswith("falling or flat")
    assert study_report.dev_gap_trend(steps, [0.2, 0.21, 0.2, 0.22, 0.21]).startswith("falling or flat")


def test_length_claim_quotes_the_paired_gap_test(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    for c in (fake_cell("simcse-s42", "SimCSE", 42, 0.0), fake_cell("esimcse-s42", "ESimCSE", 42, 0.3)):
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    st = study_report.Study(study_report.load_results(res), None)

    def core(diff, ci, p, sig):
        cell = {"gap": 9.7, "ci": [1.0, 18.0], "diff": diff, "diff_ci": ci, "p": p, "significant": sig}
        return {"models": [{"label": "SimCSE"}, {"label": "ESimCSE"}], "avg": {"models": {}},
                "gaps": {"tasks": {"STSBenchmark": {"models": {"SimCSE": {"gap": 10.0}, "ESimCSE": cell}}}}}

    claim4 = lambda text: next(line for line in text.splitlines() if line.startswith("4."))  # noqa: E731
    text, _ = study_report.claims(st, core(-0.93, [-2.56, 0.62], 0.244, False))
    assert "-0.93 [-2.56, +0.62], p 0.244: **within noise**" in claim4(text)
    text, _ = study_report.claims(st, core(-3.1, [-5.0, -1.2], 0.002, True))
    assert "-3.10 [-5.00, -1.20], p 0.002: **a significant narrowing**" in claim4(text)
    text, _ = study_report.claims(st, None)  # no paired comparison yet: no paired sentence
    assert "paired over the pairs" not in claim4(text) and "ESimCSE's gap is" in claim4(text)


def test_do_no_harm_claim_quotes_the_paired_test_and_names_harmed_tasks():
    def rep(diff, ci, p, sig, sick=None):
        tasks = {"SICKRelatedness": {"models": {"X": sick}}} if sick else {}
        return {"avg": {"models": {"X": {"diff": diff, "diff_ci": ci, "p": p, "significant": sig}}}, "tasks": tasks}

    sick = {"diff": -1.99, "diff_ci": [-2.29, -1.67], "p": 0.0, "significant": True}
    text = study_report._paired_verdict(rep(1.12, [0.89, 1.37], 0.0, True, sick), "X")
    assert text == ("paired Δ +1.12 [+0.89, +1.37], p < 0.001, **significantly better than the start**, "
                    "though significantly worse on SICK-R -1.99")
    assert "**significantly worse than the start**" in study_report._paired_verdict(rep(-0.5, [-0.8, -0.2], 0.01, True), "X")
    assert "**no measurable change**" in study_report._paired_verdict(rep(0.1, [-0.2, 0.4], 0.5, False), "X")
    assert "**the same model as the start**" in study_report._paired_verdict(rep(0.0, [0.0, 0.0], 1.0, False), "X")
    assert "**significantly better than SimCSE**" in study_report._paired_verdict(rep(0.5, [0.2, 0.8], 0.01, True), "X", "SimCSE")
    assert study_report._paired_verdict(None, "X") == "" and study_report._paired_verdict(rep(1.0, None, 0.1, False), "X") == ""


def test_hypotheses_flag_a_default_pooler_run_whose_dev_only_fell(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    cells = [fake_cell("simcse-s42", "SimCSE", 42, 0.0), fake_cell("esimcse-s42", "ESimCSE", 42, 0.3)]
    for name, label, curve in (("simcse-auto", "SimCSE (pooler auto)", [86.7, 87.2, 87.3]),
                               ("esimcse-auto", "ESimCSE (pooler auto)", [86.7, 85.9, 85.4])):
        c = fake_cell(name, label, 42, 1.0, group="do_no_harm")
        c["train"]["dev_curve"] = [[s, v] for s, v in zip((0, 125, 568), curve)]
        cells.append(c)
    for c in cells:
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    st = study_report.Study(study_report.load_results(res), None)
    _, fig = study_report.claims(st)
    text = study_report.hypotheses(st, fig)
    assert ("ESimCSE (pooler auto)'s STS-B dev fell below its start (86.70) at every evaluation (lowest 85.40, last 85.40)"
            in text) and "SimCSE (pooler auto)'s rose to 87.30" in text
    cells[-1]["train"]["dev_curve"][1][1] = 86.9  # one evaluation above the start: nothing to flag
    (res / "esimcse-auto.json").write_text(json.dumps(cells[-1]))
    st = study_report.Study(study_report.load_results(res), None)
    assert "Mean pooling." not in study_report.hypotheses(st, study_report.claims(st)[1])


def test_hypotheses_name_a_released_code_lead_only_when_the_paired_test_finds_it(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    for c in (fake_cell("simcse-s42", "SimCSE", 42, 0.0), fake_cell("esimcse-s42", "ESimCSE", 42, 0.3),
              fake_cell("esimcse-official", "ESimCSE (official variants)", 42, 1.0, group="official")):
        (res / f"{c['cell']}.json").write_text(json.dumps(c))
    st = study_report.Study(study_report.load_results(res), None)

    def parts(sig):
        cell = {"diff": 1.0, "diff_ci": [0.5, 1.5] if sig else [-0.1, 2.0], "p": 0.001 if sig else 0.2, "significant": sig}
        return {"avg": {"models": {"ESimCSE (official variants)": cell}}, "tasks": {}}

    text, fig = study_report.claims(st, None, None, parts(True))
    assert "against SimCSE's seeds, paired Δ +1.00 [+0.50, +1.50], p 0.001, **significantly better than SimCSE**" in text
    hyp = study_report.hypotheses(st, fig)
    assert "**The released code.** Its variants are significantly ahead of SimCSE (+1.00 on the test avg) and +0.70" in hyp
    assert "The released code." not in study_report.hypotheses(st, study_report.claims(st, None, None, parts(False))[1])


def test_report_without_cells(tmp_path):
    md = tmp_path / "RESULTS.md"
    study_report.write_report(tmp_path / "none", None, md, tmp_path)
    assert "No cell has finished yet." in md.read_text()
    matrix = study.load_matrix(REPO / study.DEFAULT_MATRIX)
    study_report.write_report(tmp_path / "none", matrix, md, tmp_path)
    assert "Missing: simcse-s42, esimcse-s42" in md.read_text()


# ------------------------------------------------------------------------------ the paired comparisons
def _fake_scores(task_pairs, noise: float, seed: int):
    """Per-pair scores as a model with this much noise on the gold scores would give (lengths in words)."""
    import numpy as np

    from esimcse_cli.core import sts
    from esimcse_cli.core.evaluate import TaskScores

    rng = np.random.default_rng(seed)
    out = {}
    for name, pairs in task_pairs.items():
        gold = np.array([p.score for p in pairs])
        ts = TaskScores(cos=gold / 5.0 + rng.normal(0, noise, len(pairs)), gold=gold,
                        diff=np.array([abs(len(p.a.split()) - len(p.b.split())) for p in pairs]))
        if name in sts.STS_SUBSETS:
            order = {}
            ts.subset_ids = np.array([order.setdefault(p.subset, len(order)) for p in pairs])
            ts.subsets = tuple(order)
        out[name] = ts
    return out


def test_report_comparisons_are_esimcse_compare_runs(tmp_path):
    """The compare section is `esimcse compare --group` over the cells' scores files: its JSON holds the numbers
    the report quotes, equal to the core compare over the same files; unchanged inputs are not compared again."""
    from sts_fixtures import make_senteval

    from esimcse_cli.core import compare, evaluate, scores_file

    data = make_senteval(tmp_path / "data", n_per_subset=24)
    task_pairs = evaluate.load_tasks(str(data), None, "test")
    res = tmp_path / "results"
    cells = _fake_study(res)
    (res / "scores").mkdir()
    for i, c in enumerate(cells):  # ESimCSE's seeds: less noise than SimCSE's
        noise = 0.15 if c["label"] == "ESimCSE" else 0.3
        scores_file.save_scores(res / c["scores"]["path"], _fake_scores(task_pairs, noise, i), {"model": c["cell"]},
                                pairs=task_pairs, length_unit="words")
    matrix = study.load_matrix(REPO / study.DEFAULT_MATRIX)
    matrix.data_dir = str(data)
    matrix.eval["bootstrap"] = 200
    md = tmp_path / "RESULTS.md"
    written = study_report.write_report(res, matrix, md, tmp_path)
    text = md.read_text()
    core_path = res / "compare" / "core.json"
    assert core_path in written and (res / "compare" / "parts.json") in written and (res / "compare" / "do_no_harm.json") in written
    core = json.loads(core_path.read_text())
    assert core["baseline"] == "SimCSE" and [m["label"] for m in core["models"]] == ["SimCSE", "ESimCSE"]
    assert [len(m["members"]) for m in core["models"]] == [3, 3] and core["bootstrap"]["n"] == 200
    files = {lab: ",".join(str(res / "scores" / f"{n}-s{s}.npz") for s in (42, 43, 44))
             for lab, n in (("SimCSE", "simcse"), ("ESimCSE", "esimcse"))}
    direct = compare.compare([("group", f"SimCSE={files['SimCSE']}"), ("group", f"ESimCSE={files['ESimCSE']}")], None,
                             str(data), None, None, bucket_by_length=True, buckets="0-3,4-", bootstrap=200, seed=42)
    assert core["tasks"] == direct["tasks"] and core["avg"] == direct["avg"]
    cell = core["avg"]["models"]["ESimCSE"]
    assert cell["diff"] > 0 and cell["p"] is not None and len(cell["diff_ci"]) == 2
    assert f"Δ {cell['diff']:+.2f} [{cell['diff_ci'][0]:+.2f}, {cell['diff_ci'][1]:+.2f}]" in text
    assert "of the paper's +2.02" in text and core["study"]["command"].startswith("esimcse compare ")
    assert f"`{core['study']['command']}`" in text
    parts = json.loads((res / "compare" / "parts.json").read_text())  # queue-only has another budget: left out
    assert [m["label"] for m in parts["models"]] == ["SimCSE", "repetition only", "ESimCSE (official variants)"]
    dnh = json.loads((res / "compare" / "do_no_harm.json").read_text())
    assert [m["label"] for m in dnh["models"]] == ["untrained start (avg)", "SimCSE (pooler auto)"]
    # unchanged inputs: reused as they are; a changed scores file: compared again
    stamp = core_path.stat().st_mtime_ns
    study_report.write_report(res, matrix, md, tmp_path)
    assert core_path.stat().st_mtime_ns == stamp
    scores_file.save_scores(res / "scores" / "esimcse-s43.npz", _fake_scores(task_pairs, 0.2, 99), {"model": "x"},
                            pairs=task_pairs, length_unit="words")
    study_report.write_report(res, matrix, md, tmp_path)
    assert json.loads(core_path.read_text())["avg"] != core["avg"]


def test_reproduce_reruns_the_recorded_command_and_checks_the_seed_spread(tmp_path, monkeypatch):
    import study_reproduce

    res = tmp_path / "results"
    _fake_study(res)  # SimCSE seeds: test avg 73.0, 73.2, 73.4
    seen = {}

    def fake_run(cmd, check=False):  # stands in for the re-run: writes the cell with a shifted score
        seen["cmd"] = cmd
        out = Path(cmd[cmd.index("--results-dir") + 1])
        out.mkdir(parents=True)
        doc = json.loads((res / "simcse-s43.json").read_text())
        doc["eval"]["avg"] += seen.get("shift", 0.05)
        (out / "simcse-s43.json").write_text(json.dumps(doc))
        return type("P", (), {"returncode": 0})()

    monkeypatch.setattr(study_reproduce.subprocess, "run", fake_run)
    doc = json.loads((res / "simcse-s43.json").read_text())
    doc["command"] = "python benchmarks/study.py --cells simcse-s43 --force"
    (res / "simcse-s43.json").write_text(json.dumps(doc))
    assert study_reproduce.main(["simcse-s43", "--results-dir", str(res)]) == 0
    assert seen["cmd"][1:5] == ["benchmarks/study.py", "--cells", "simcse-s43", "--force"] and "--no-report" in seen["cmd"]
    rep = json.loads((res / "reproduce" / "simcse-s43.json").read_text())
    assert rep["within_spread"] and rep["diff_avg"] == 0.05 and rep["seed_spread"]["min"] == 73.0 and rep["same_code"]
    assert json.loads((res / "simcse-s43.json").read_text())["eval"]["avg"] == doc["eval"]["avg"]  # the study's JSON untouched
    md = tmp_path / "R.md"
    study_report.write_report(res, None, md, tmp_path)
    assert "| simcse-s43 | `python benchmarks/study.py --cells simcse-s43 --force` | 73.20 | 73.25 | +0.05 | 3 seeds, 73.00–73.40" in md.read_text()
    seen["shift"] = 0.5  # 73.7: outside 73.0–73.4
    assert study_reproduce.main(["simcse-s43", "--results-dir", str(res)]) == 1
    assert not json.loads((res / "reproduce" / "simcse-s43.json").read_text())["within_spread"]
    assert study_reproduce.main(["no-such-cell", "--results-dir", str(res)]) == 2
