"""Reliability and security: huge lines, odd texts, interruptions (SIGINT/SIGTERM), untrusted files.

The train parts (resumable state on a signal, NaN loss, config paths) live with the train tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clirunner import run_main
from conftest import WORDS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "esimcse_cli"


# --------------------------------------------------------------------------------------------- huge and odd texts
@pytest.mark.slow
def test_a_2mb_line_is_truncated_with_a_warning_not_an_error(tiny_model_dir, tmp_path):
    """A line over 1 MB is encoded like any other (truncated to the max length), with one warning; no hang."""
    from esimcse_cli.core.models import load_encoder

    rng = np.random.default_rng(0)
    vocab = [w for w in WORDS if w.isalpha()]
    long_words = [vocab[i] for i in rng.integers(0, len(vocab), 420_000)]
    long_line = " ".join(long_words)
    assert len(long_line.encode("utf-8")) > 2_000_000
    src = tmp_path / "in.txt"
    src.write_text("a dog runs\n" + long_line + "\nthe cat sits\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    t0 = time.monotonic()
    r = run_main("encode", str(src), "-o", str(out), "-m", str(tiny_model_dir), "--max-length", "32")
    elapsed = time.monotonic() - t0
    assert r.code == 0, r.stderr
    assert elapsed < 120, f"took {elapsed:.0f} s"
    warnings = [l for l in r.lines if "over 1 MB" in l]
    assert len(warnings) == 1 and "line 2" in warnings[0] and "truncated to 32 tokens" in warnings[0], r.stderr
    arr = np.load(out)
    assert arr.shape == (3, 32) and np.isfinite(arr).all()
    # the row is exactly the vector of the line cut to its first 30 words (+ [CLS] and [SEP] = 32 tokens)
    enc = load_encoder(str(tiny_model_dir), device="cpu", max_length=32)
    np.testing.assert_allclose(arr[1], enc.encode([" ".join(long_words[:30])])[0], atol=1e-5)
    np.testing.assert_allclose(arr[[0, 2]], enc.encode(["a dog runs", "the cat sits"]), atol=1e-5)


ODD_TEXTS = ["", "   ", "\t", "[CLS] [SEP]", "[PAD] [PAD] [MASK]", "!!!", "...", "\u200b", "\u00a0\u3000", "🙂🙂", "\x00\x01", "—"]


def test_empty_and_special_only_lines_encode_through_the_cli(tiny_model_dir, tmp_path):
    src = tmp_path / "odd.txt"
    src.write_text("\n".join(ODD_TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "odd.npy"
    r = run_main("encode", str(src), "-o", str(out), "-m", str(tiny_model_dir))
    assert r.code == 0, r.stderr
    arr = np.load(out)
    assert arr.shape == (len(ODD_TEXTS), 32)
    assert np.isfinite(arr).all()
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-4)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("pooling", ["cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2"])
def test_odd_texts_are_finite_for_every_pooling(tiny_model_dir, pooling):
    from esimcse_cli.core.models import load_encoder

    enc = load_encoder(str(tiny_model_dir), device="cpu", pooling=pooling)
    vecs = enc.encode(ODD_TEXTS, batch_size=4)
    assert np.isfinite(vecs).all()


# --------------------------------------------------------------------------------------------- interruptions
def _big_corpus(path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    vocab = [w for w in WORDS if w.isalpha()]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            k = int(rng.integers(4, 40))
            f.write(" ".join(vocab[i] for i in rng.integers(0, len(vocab), k)) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_mid_encode_leaves_no_partial_file(tiny_model_dir, tmp_path, sig, code):
    """Interrupt encode while it writes: the old output stays as it was, no temp file remains, exit 128+signal."""
    src = tmp_path / "big.txt"
    _big_corpus(src, 6000)
    out = tmp_path / "out.npy"
    old = b"the previous complete result"
    if sig == "SIGTERM":
        out.write_bytes(old)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "esimcse_cli", "encode", str(src), "-o", str(out), "-m", str(tiny_model_dir), "-b", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        # mid-run = the temporary output beside the target exists (created once counting is done, before encoding)
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.npy.*.tmp")):
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "encoding never started"
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"esimcse: error: interrupted ({sig})"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    if sig == "SIGTERM":
        assert out.read_bytes() == old
    else:
        assert not out.exists()


@pytest.mark.slow
def test_encode_at_a_terminal_without_input_errors_instead_of_waiting(tiny_model_dir, tmp_path):
    """A real terminal on stdin (a pty): no hang, one line, exit 2."""
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "esimcse_cli", "encode", "-o", str(tmp_path / "o.npy"), "-m", str(tiny_model_dir)],
                           stdin=slave, capture_output=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(slave)
        os.close(master)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.strip().splitlines() == ["esimcse: error: no input: give a text file, or pipe text into stdin (e.g. esimcse encode corpus.txt -o out.npy)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_augment_into_a_closed_pipe_exits_quietly(tmp_path):
    """`esimcse augment big.txt | head -1`: exit 0, no traceback, no error line."""
    src = tmp_path / "big.txt"
    _big_corpus(src, 6000)
    proc = subprocess.Popen([sys.executable, "-m", "esimcse_cli", "augment", str(src), "--level", "word"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.strip()
    assert proc.returncode == 0, err
    assert err.strip() == ""


def test_main_restores_signal_handlers(tiny_model_dir, tmp_path):
    """Running the CLI in-process leaves the caller's SIGINT/SIGTERM handlers as they were."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    (tmp_path / "in.txt").write_text("a dog\n", encoding="utf-8")
    assert run_main("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "-m", str(tiny_model_dir)).code == 0
    assert run_main("encode", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o.npy")).code == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_keyboard_interrupt_in_process_is_exit_130_without_output(tiny_model_dir, tmp_path, monkeypatch):
    """The same clean-up path, without a subprocess: Ctrl-C inside the encoder loop."""
    from esimcse_cli.core import encoder as encoder_mod

    calls = {"n": 0}
    real = encoder_mod.SentenceEncoder.embed

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(encoder_mod.SentenceEncoder, "embed", flaky)
    src = tmp_path / "in.txt"
    _big_corpus(src, 50)
    r = run_main("encode", str(src), "-o", str(tmp_path / "out.npy"), "-m", str(tiny_model_dir), "-b", "4")
    assert r.code == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


# --------------------------------------------------------------------------------------------- untrusted files
def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call ``name(...)`` (balanced parentheses, good enough for our own code)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\s*\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end(): i - 1])
    return out


def test_no_unsafe_loaders_in_the_code():
    problems = []
    for path, text in _sources():
        rel = path.relative_to(REPO)
        for args in _calls(text, "torch.load"):
            if not re.search(r"weights_only\s*=\s*True", args):
                problems.append(f"{rel}: torch.load without weights_only=True")
        for args in _calls(text, "yaml.load"):
            problems.append(f"{rel}: yaml.load (use yaml.safe_load)")
        if re.search(r"yaml\.(unsafe_load|full_load|FullLoader|UnsafeLoader|Loader\b)", text):
            problems.append(f"{rel}: an unsafe YAML loader")
        if re.search(r"^\s*import pickle|^\s*from pickle|pickle\.loads?\(", text, re.M):
            problems.append(f"{rel}: pickle")
        if re.search(r"trust_remote_code\s*(:\s*bool\s*)?=\s*True", text):
            problems.append(f"{rel}: trust_remote_code defaults to True")
        if re.search(r"(?<![.\w])(eval|exec)\(", text):
            problems.append(f"{rel}: eval/exec")
    assert problems == []


def test_trust_remote_code_is_off_by_default():
    import inspect

    from esimcse_cli.cli.encode import encode
    from esimcse_cli.cli.evaluate import eval_sts, length_analysis_cmd
    from esimcse_cli.core import models

    for fn in (models.load_encoder, models.load_backbone, models.load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn.__name__
    for fn in (encode, eval_sts, length_analysis_cmd):
        opt = inspect.signature(fn).parameters["trust_remote_code"].default
        assert getattr(opt, "default", opt) is False, fn.__name__


def test_pickled_weights_never_run_code(tiny_model_dir, tmp_path):
    """A pytorch_model.bin whose pickle would run code is refused (torch.load weights_only=True) with one line."""
    import shutil

    import torch

    marker = tmp_path / "PAYLOAD_RAN"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    folder = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    (tmp_path / "in.txt").write_text("a dog\n", encoding="utf-8")
    r = run_main("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "-m", str(folder))
    assert r.code == 2 and len(r.lines) == 1 and "cannot load model" in r.lines[0], r.stderr
    assert not marker.exists()
    assert not (tmp_path / "o.npy").exists()


def test_plain_state_dict_bin_still_loads(tiny_model_dir, tmp_path):
    """weights_only=True still reads an ordinary tensor file."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    from esimcse_cli.core.models import load_encoder

    a = load_encoder(str(folder), device="cpu").encode(["a dog runs"])
    b = load_encoder(str(tiny_model_dir), device="cpu").encode(["a dog runs"])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.mkdir [{marker}]\n",
        "model: !!python/object/apply:os.mkdir [{marker}]\n",
        "lr: !!python/object:builtins.dict {{}}\n",
        "seed: !!python/name:os.system\n",
    ],
)
def test_yaml_config_refuses_python_tags(tmp_path, payload):
    from esimcse_cli.core.config import read_yaml
    from esimcse_cli.core.errors import ConfigError

    marker = tmp_path / "PAYLOAD_RAN"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(payload.format(marker=str(marker)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_yaml(cfg)
    assert "evil.yaml" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
