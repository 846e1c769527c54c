"""The GPU study (issue 15's GPU part): benchmarks/study_gpu.yaml, study.py's sharing of cells between worker
processes (--claim-dir, --stop-after) and benchmarks/gpu_study.sh's CPU rehearsal (DEVICE=cpu: every step short of
CUDA, on the tiny random BERT and sample_data/, with the workers, the claims and the bundle that comes back).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import study  # noqa: E402
from test_study import write_matrix  # noqa: E402

GPU_MATRIX = REPO / "benchmarks" / "study_gpu.yaml"
SAMPLE = REPO / "sample_data"


# ------------------------------------------------------------------------------ the GPU matrix
def test_gpu_matrix_is_the_cpu_matrix_plus_seeds_and_an_lr_sweep():
    cpu, gpu = study.load_matrix(REPO / study.DEFAULT_MATRIX), study.load_matrix(GPU_MATRIX)
    opts = study.Options()
    # every CPU cell is in the GPU matrix with the same settings (same fingerprint): the same one-epoch matrix
    cpu_cells = {c.name: c for c in cpu.cells()}
    gpu_cells = {c.name: c for c in gpu.cells()}
    assert set(cpu_cells) <= set(gpu_cells)
    for name, c in cpu_cells.items():
        assert study.fingerprint(study.cell_settings(gpu, gpu_cells[name], opts, "x")) == \
            study.fingerprint(study.cell_settings(cpu, c, opts, "x")), name
    assert gpu.corpus == cpu.corpus and gpu.corpus_sentences == 36368 and gpu.eval == cpu.eval
    # 5 + 5 core seeds, run first
    core = [c.name for c in gpu.group("core").cells]
    assert core == [f"{m}-s{s}" for s in range(42, 47) for m in ("simcse", "esimcse")]
    assert [c.name for c in gpu.cells()][:10] == core
    # the sweep: both methods at 1e-5 and 1e-4, 3 seeds each; 3e-5 is the core
    sweep = gpu.group("lr_sweep")
    assert sweep.sweep == "lr" and sweep.reference == "core"
    got = {}
    for c in sweep.cells:
        t = study.cell_settings(gpu, c, opts, "x")["train"]
        got.setdefault((t["method"], t["lr"]), []).append(c.seed)
        assert t["epochs"] == 1 and t["max_steps"] is None and t["pooler"] == "cls"
    assert got == {(m, lr): [42, 43, 44] for m in ("simcse", "esimcse") for lr in (1e-5, 1e-4)}
    assert {study.cell_settings(gpu, c, opts, "x")["train"]["lr"] for c in gpu.group("core").cells} == {3e-5}
    assert len(gpu.cells()) == 10 + 12 + 2 + 2 + 1 + 2


# ------------------------------------------------------------------------------ sharing cells between processes
def test_claim_is_taken_once(tmp_path):
    assert study.claim(tmp_path / "claims", "simcse-s1") is True
    assert study.claim(tmp_path / "claims", "simcse-s1") is False
    assert study.claim(tmp_path / "claims", "esimcse-s1") is True


def test_workers_sharing_a_claim_dir_run_each_cell_once(tmp_path, tiny_model_dir, monkeypatch):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    base = ["--matrix", str(mpath), "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--device", "cpu", "--no-report", "--only", "core", "--claim-dir", str(tmp_path / "claims")]
    calls = []
    monkeypatch.setattr(study, "run_cell", lambda c, *a, **k: calls.append(c.name) or (_ for _ in ()).throw(RuntimeError("x")))
    study.claim(tmp_path / "claims", "esimcse-s1")  # another worker has it
    assert study.main(base) == 1  # the fake run_cell fails every cell it is given
    assert calls == ["simcse-s1", "simcse-s2", "esimcse-s2"]
    calls.clear()
    assert study.main(base) == 0 and calls == []  # all claimed: a second worker runs nothing


def test_stop_after_starts_no_cell_once_passed(tmp_path, tiny_model_dir, monkeypatch, capsys):
    mpath = write_matrix(tmp_path, tiny_model_dir)
    calls = []
    monkeypatch.setattr(study, "run_cell", lambda c, *a, **k: calls.append(c.name))
    assert study.main(["--matrix", str(mpath), "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                       "--device", "cpu", "--no-report", "--only", "core", "--stop-after", "0"]) == 0
    assert calls == []
    assert "--stop-after 0s reached: 4 cell(s) not started" in capsys.readouterr().out


# ------------------------------------------------------------------------------ gpu_study.sh, rehearsed on the CPU
def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({k: str(v) for k, v in kw.items()})
    return env


@pytest.mark.parametrize("knobs, message", [
    ({"WORKERS": "two"}, "WORKERS must be a whole number above 0"),
    ({"BF16": "1", "DEVICE": "cpu"}, "BF16=1 is for CUDA only"),
    ({"DEVICE": "tpu"}, "DEVICE must be cuda"),
    ({"PACK": "/nonexistent-pack"}, "not found: run 'bash benchmarks/device_pack.sh'"),
])
def test_gpu_study_bad_knobs_fail_in_one_line(tmp_path, knobs, message):
    proc = subprocess.run(["bash", "benchmarks/gpu_study.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=_env(PYTHON=sys.executable, LOG=tmp_path / "log.log", RUNS=tmp_path / "runs",
                                   RESULTS=tmp_path / "results", OUT=tmp_path / "out", **knobs))
    assert proc.returncode == 2
    err = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("gpu_study:")]
    assert len(err) == 1 and message in err[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_gpu_study_rehearsal_on_cpu(tmp_path, tiny_model_dir):
    """Two workers share core, sweep and start cells; every cell runs once; the results come back in one tarball."""
    data = tmp_path / "data"
    (data / "corpus").mkdir(parents=True)
    (data / "senteval").symlink_to(SAMPLE / "senteval")
    lines = (SAMPLE / "corpus.txt").read_text(encoding="utf-8").splitlines()
    (data / "corpus" / "a.txt").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    (data / "corpus" / "b.txt").write_text("\n".join(lines[150:300]) + "\n", encoding="utf-8")  # overlaps a.txt
    cells = ["simcse-s42", "esimcse-s42", "simcse-lr1e-4-s42", "esimcse-lr1e-4-s42", "untrained-cls"]
    out, res, log = tmp_path / "out", tmp_path / "results", tmp_path / "logs" / "gpu_study.log"
    log.parent.mkdir()
    proc = subprocess.run(["bash", "benchmarks/gpu_study.sh"], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=_env(DEVICE="cpu", PYTHON=sys.executable, OUT=out, MODEL=tiny_model_dir, DATA=data,
                                   CORPUS=f"{data}/corpus/a.txt,{data}/corpus/b.txt", STEPS=2, EVAL_STEPS=1, WORKERS=2,
                                   RESULTS=res, RUNS=tmp_path / "runs", LOG=log, CELLS=",".join(cells)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(p.stem for p in res.glob("*.json")) == sorted(cells)
    # each cell ran in exactly one worker
    done = []
    for k in (1, 2):
        done += re.findall(r"cell (\S+) done in", (log.parent / f"gpu_study.w{k}.log").read_text())
    assert sorted(done) == sorted(cells)
    for name in cells[:4]:
        d = json.loads((res / f"{name}.json").read_text())
        assert d["train"]["steps"] == 2 and d["corpus"]["sentences"] == 300  # de-duplicated across the two files
        assert d["settings"]["train"]["lr"] == (1e-4 if "lr1e-4" in name else 3e-5)
        assert d["group"] == ("lr_sweep" if "lr1e-4" in name else "core")
        assert "--matrix benchmarks/study_gpu.yaml" in d["command"] and "--bf16" not in d["command"]
    # one tarball comes back, with the JSONs, the per-pair scores and the logs
    assert [p.name for p in out.iterdir()] == ["gpu_study.tar.gz"]
    with tarfile.open(out / "gpu_study.tar.gz") as tar:
        names = tar.getnames()
    for name in cells:
        assert any(n.endswith(f"results/{name}.json") for n in names), name
        assert any(n.endswith(f"results/scores/{name}.npz") for n in names), name
    assert any(n.endswith("gpu_study.w1.log") for n in names) and any(n.endswith("gpu_study.w2.log") for n in names)
    # the closing list shows every selected cell finished
    assert sorted(re.findall(r"^\S+\s+(\S+)\s+done  code", proc.stdout, flags=re.M)) == sorted(cells)


def test_gpu_study_fits_one_device_command():
    """The header's run(...) line: its timeout covers the hard stop, the grace after SIGTERM and the bundle, and is
    one device command (at most 10 minutes); no cell starts after STOP_AFTER."""
    text = (REPO / "benchmarks" / "gpu_study.sh").read_text()
    m = re.search(r'run\(command="OUT=\$OUT bash benchmarks/gpu_study\.sh", carry=\["device_pack"\], timeout_s=(\d+)\)', text)
    assert m, "no run(...) command in gpu_study.sh's header"
    timeout = int(m.group(1))
    stop, hard = (int(re.search(rf"^{k}=\$\{{{k}:-(\d+)\}}", text, re.M).group(1)) for k in ("STOP_AFTER", "HARD_STOP"))
    grace = int(re.search(r"timeout --signal=TERM --kill-after=(\d+)", text).group(1))
    assert stop < hard and hard + grace + 60 <= timeout <= 600
