"""The training loop on the tiny random BERT: outputs, ablations, momentum variants, resume, faults, torchrun."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clirunner import run_group
from conftest import WORDS
from esimcse_cli.core import trainer as trainer_mod
from esimcse_cli.core.config import build_config
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.momentum import MomentumEncoder
from esimcse_cli.core.run_folder import config_for_resume
from esimcse_cli.core.trainer import NonFiniteLoss, train
from esimcse_cli.core.views import Batcher

REPO = Path(__file__).resolve().parents[1]


def sentences(n: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [" ".join(r.choice(WORDS) for _ in range(r.randint(3, 12))) for _ in range(n)]


@pytest.fixture()
def corpus(tmp_path) -> Path:
    lines = sentences(120)
    lines[5] = ""  # blank lines are skipped and counted
    lines[9] = "   "
    lines[20] = lines[21]  # a duplicate for --dedupe
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.fixture()
def dev_dir(tmp_path) -> Path:
    """A SentEval-layout STS-B dev file made of random pairs with random scores."""
    folder = tmp_path / "senteval" / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    r = random.Random(1)
    a, b = sentences(40, 2), sentences(40, 3)
    rows = [f"g\tf\t2012\t{i:04d}\t{r.uniform(0, 5):.3f}\t{x}\t{y}" for i, (x, y) in enumerate(zip(a, b))]
    (folder / "sts-dev.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "senteval"


def cfg_for(tiny_model_dir, corpus, out, **kw):
    values = {"corpus": str(corpus), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 8,
              "max_steps": 4, "save_steps": 0, "log_steps": 1, "eval_steps": 2, "max_length": 16}
    values.update(kw)
    return build_config(values)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_end_to_end_output_folder_loads_everywhere(tiny_model_dir, corpus, dev_dir, tmp_path):
    out = tmp_path / "out"
    seen = []
    res = train(cfg_for(tiny_model_dir, corpus, out, dev_data=str(dev_dir), dedupe=True), on_step=seen.append)
    assert res.step == 4 and res.best_step in (0, 2, 4) and res.best_dev is not None  # step 0 is a candidate too
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "esimcse.json", "modules.json", "train_config.yaml", "metrics.jsonl", "manifest.json"} <= names
    assert "state" not in names  # no momentum / queue / optimizer tensors left in the finished folder
    keys = weights(out).keys()
    assert not any(k.startswith(("mlp", "momentum", "queue", "backbone")) for k in keys)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"]["blank"] == 2 and manifest["corpus"]["duplicates"] == 1 and manifest["corpus"]["sentences"] == 117
    assert len(manifest["corpus"]["sha256"]) == 64 and manifest["seed"] == 42 and "torch" in manifest["versions"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 0, "dev_spearman": res.start_dev, "best_dev": res.start_dev, "best_step": 0}
    assert [r["step"] for r in rows if "dev_spearman" in r] == [0, 2, 4]
    assert all({"loss", "lr", "sentences_per_s"} <= r.keys() for r in rows if "loss" in r)
    assert any("dev_spearman" in r for r in seen) and seen[-1]["step"] == 4
    record = json.loads((out / "esimcse.json").read_text())
    assert record["pooling"] == "cls_before_pooler" and record["step"] == res.best_step

    # transformers and sentence-transformers load it, with [CLS] pooling at test time
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from esimcse_cli.core.models import load_encoder

    AutoModel.from_pretrained(out)
    st = SentenceTransformer(str(out), device="cpu")
    ours = load_encoder(str(out), device="cpu")
    assert ours.pooling == "cls_before_pooler"
    texts = ["the dog runs in the park", "a man plays the guitar"]
    torch.testing.assert_close(torch.tensor(st.encode(texts, normalize_embeddings=True)), torch.tensor(ours.encode(texts)), atol=1e-5, rtol=1e-4)


def test_metrics_lines_by_kind_and_the_loss_window(tiny_model_dir, corpus, dev_dir, tmp_path):
    """Log lines average since the log line before; an evaluation between them is its own short line, no reset."""
    seen = []
    train(cfg_for(tiny_model_dir, corpus, tmp_path / "out", dev_data=str(dev_dir), max_steps=6, log_steps=2, eval_steps=3),
          on_step=seen.append)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    log_keys = {"step", "epoch", "loss", "lr", "sentences_per_s", "elapsed_s"}
    eval_keys = {"step", "dev_spearman", "best_dev", "best_step"}
    assert [(r["step"], set(r)) for r in rows] == [(0, eval_keys), (2, log_keys), (3, eval_keys), (4, log_keys),
                                                   (6, log_keys | eval_keys)]
    loss = {r["step"]: r["loss"] for r in seen if r["step"] > 0}
    for r in rows:
        if "loss" in r:  # steps 3-4: the evaluation at step 3 does not start a new window
            assert r["loss"] == pytest.approx((loss[r["step"] - 1] + loss[r["step"]]) / 2)
            assert r["sentences_per_s"] > 0
    assert [r["dev_spearman"] for r in rows if "dev_spearman" in r] == [r["dev_spearman"] for r in seen if "dev_spearman" in r]


def test_output_folder_needs_overwrite_and_bf16_needs_cuda(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "out"
    train(cfg_for(tiny_model_dir, corpus, out, max_steps=1, eval_steps=0))
    with pytest.raises(InputError, match="--overwrite"):
        train(cfg_for(tiny_model_dir, corpus, out, max_steps=1))
    train(cfg_for(tiny_model_dir, corpus, out, max_steps=1, overwrite=True))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="bf16"):
            train(cfg_for(tiny_model_dir, corpus, tmp_path / "o2", bf16=True))


def test_repetition_view_keeps_specials_and_grows(tiny_model_dir):
    from esimcse_cli.core.models import load_backbone

    tok = load_backbone(str(tiny_model_dir)).tokenizer
    b = Batcher(tok, build_config({"max_length": 8, "dup_rate": 1.0}))
    ids = b.tokenize(sentences(30))
    rep = b.second_view(ids, 0)
    assert all(len(x) <= 8 for x in ids)
    assert any(len(r) > 8 for r in rep)  # may grow beyond max_length: not re-truncated
    for x, r in zip(ids, rep):
        assert r[0] == x[0] == tok.cls_token_id and r[-1] == x[-1] == tok.sep_token_id
        assert r.count(tok.cls_token_id) == 1 and r.count(tok.sep_token_id) == 1
        assert len(r) >= len(x)
    assert rep == b.second_view(ids, 0) and rep != b.second_view(ids, 1)  # seeded per batch


@pytest.mark.slow
def test_each_ablation_switch_changes_what_is_computed(tiny_model_dir, corpus, tmp_path, monkeypatch):
    calls = {}

    def spy(name):
        real = getattr(trainer_mod, name)

        def wrapped(*a, **k):
            calls.setdefault(name, []).append(a)
            return real(*a, **k)

        return wrapped

    results = {}
    for rep in (False, True):
        for mq in (False, True):
            calls.clear()
            monkeypatch.setattr(trainer_mod, "contrastive_loss", spy("contrastive_loss"))
            repeats = []
            monkeypatch.setattr(Batcher, "second_view", lambda self, *a, _r=Batcher.second_view: repeats.append(1) or _r(self, *a))
            out = tmp_path / f"o{rep}{mq}"
            train(cfg_for(tiny_model_dir, corpus, out, method="simcse", repetition=rep, momentum_queue=mq, max_steps=3, eval_steps=0))
            queues = [a[2] for a in calls["contrastive_loss"]]
            if mq:
                assert queues[0] is None and queues[1].shape[0] == 8 and queues[2].shape[0] == 16
            else:
                assert all(q is None for q in queues)
            assert bool(repeats) == rep
            results[(rep, mq)] = weights(out)
            monkeypatch.undo()
    keys = list(results)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            a, b = results[keys[i]], results[keys[j]]
            assert any(not torch.equal(a[k], b[k]) for k in a), (keys[i], keys[j])


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_momentum_variant_timing(tiny_model_dir, corpus, tmp_path, monkeypatch, variant):
    """paper: one EMA per optimizer step, after it; official: one per micro-batch, before the update."""
    log = []
    real = MomentumEncoder.update

    def spy(self, online):
        first = next(online.backbone.parameters()).detach().clone()
        log.append(first)
        return real(self, online)

    monkeypatch.setattr(MomentumEncoder, "update", spy)
    from esimcse_cli.core.models import load_backbone

    initial = next(load_backbone(str(tiny_model_dir)).model.parameters()).detach()
    train(cfg_for(tiny_model_dir, corpus, tmp_path / "o", momentum_variant=variant, grad_accum=2, max_steps=2, eval_steps=0))
    if variant == "paper":
        assert len(log) == 2  # per optimizer step, not per micro-batch
        assert not torch.equal(log[0], initial)  # ran after the first optimizer step
    else:
        assert len(log) == 4  # inside every training forward
        assert torch.equal(log[0], initial) and torch.equal(log[1], initial)  # before step 1's update
        assert not torch.equal(log[2], initial)


def test_resume_gives_the_same_weights(tiny_model_dir, corpus, tmp_path):
    kw = dict(max_steps=6, eval_steps=0, grad_accum=1, batch_size=8)
    full = train(cfg_for(tiny_model_dir, corpus, tmp_path / "full", **kw))
    part = tmp_path / "part"
    res = train(cfg_for(tiny_model_dir, corpus, part, **kw), should_stop=lambda step: step == 3)
    assert res.stopped == "callback" and res.step == 3 and (part / "state" / "state.safetensors").is_file()
    state = load_file(str(part / "state" / "state.safetensors"))
    assert any(k.startswith("momentum.") for k in state) and "queue" in state and any(k.startswith("optim.") for k in state)
    with pytest.raises(ConfigError, match="batch-size"):
        config_for_resume(str(part), {"batch_size": 4})
    rest = train(config_for_resume(str(part)))
    assert rest.step == 6 and full.step == 6
    a, b = weights(tmp_path / "full"), weights(part)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert not (part / "state").exists()
    steps = [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_the_last_good_state(tiny_model_dir, corpus, tmp_path, monkeypatch):
    real = trainer_mod.contrastive_loss
    count = {"n": 0}

    def flaky(*a, **k):
        count["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if count["n"] == 3 else loss

    monkeypatch.setattr(trainer_mod, "contrastive_loss", flaky)
    out = tmp_path / "o"
    with pytest.raises(NonFiniteLoss, match="step 3: loss is nan"):
        train(cfg_for(tiny_model_dir, corpus, out, max_steps=5, save_steps=2, eval_steps=0))
    meta = json.loads((out / "state" / "state.json").read_text())
    assert meta["step"] == 2


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tiny_model_dir, corpus, tmp_path):
    """torchrun with 2 CPU processes == 1 process on the same global batch (dropout off)."""
    common = ["--model", str(tiny_model_dir), "--batch-size", "8", "--max-steps", "3", "--max-length", "16",
              "--dropout", "0", "--eval-steps", "0", "--save-steps", "0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    one = tmp_path / "one"
    two = tmp_path / "two"
    r1 = run_group([sys.executable, "-m", "esimcse_cli", "train", str(corpus), "-o", str(one), *common], 120, env=env, cwd=REPO)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "esimcse_cli", "train", str(corpus), "-o", str(two), *common], 180, env=env, cwd=REPO)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = weights(one), weights(two)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["world_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_saves_state_and_resume_continues(tiny_model_dir, corpus, tmp_path, sig, code):
    import signal
    import time

    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "esimcse_cli", "train", str(corpus), "-o", str(out), "--model", str(tiny_model_dir),
           "--batch-size", "8", "--max-steps", "100000", "--max-length", "16", "--eval-steps", "0", "--save-steps", "0", "--log-steps", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
            time.sleep(0.2)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    meta = json.loads((out / "state" / "state.json").read_text())
    assert meta["step"] >= 2
    assert not list(out.glob(".*tmp"))  # no temporary leftovers
    if sig != "SIGINT":
        return  # the resume half runs once
    r = subprocess.run([sys.executable, "-m", "esimcse_cli", "train", "--resume", "-o", str(out), "--max-steps", str(meta["step"] + 2)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["steps"] == meta["step"] + 2
    assert not (out / "state").exists()


@pytest.mark.parametrize("aug", ["insertion", "deletion"])
def test_insertion_and_deletion_baselines_build_the_second_view(tiny_model_dir, aug):
    from esimcse_cli.core.models import load_backbone

    tok = load_backbone(str(tiny_model_dir)).tokenizer
    b = Batcher(tok, build_config({"max_length": 16, "dup_rate": 0.5, "augmentation": aug}))
    ids = b.tokenize(sentences(20))
    out = b.second_view(ids, 3)
    grow = [len(o) - len(x) for x, o in zip(ids, out)]
    assert all(g >= 0 for g in grow) if aug == "insertion" else all(g <= 0 for g in grow)
    assert any(g != 0 for g in grow)
    assert all(o[0] == tok.cls_token_id and o[-1] == tok.sep_token_id for o in out)


# ----------------------------------------------------------------------------- a second signal during the save
def _no_leftovers(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_second_sigint_during_the_save_stops_at_once_and_keeps_the_previous_state(tiny_model_dir, corpus, tmp_path, monkeypatch):
    """First SIGINT: finish the step and save. A second one while the tensors are being written: stop now;
    the half-written new state is dropped, the previous complete state (step 1) stays, and --resume works."""
    import signal

    from esimcse_cli.core import checkpoint as ckpt

    real_save = ckpt.save_file
    saves = []

    def save_then_signal(tensors, path, *a, **k):
        real_save(tensors, path, *a, **k)
        saves.append(path)
        if len(saves) == 2:  # the save that the first SIGINT asked for (step 2)
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the second SIGINT did not stop the save")

    def first_signal(row):
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ckpt, "save_file", save_then_signal)
    out = tmp_path / "out"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tiny_model_dir, corpus, out, max_steps=6, save_steps=1, eval_steps=0), on_step=first_signal)
    assert signal.getsignal(signal.SIGINT) is handler  # handlers restored
    assert len(saves) == 2
    assert json.loads((out / "state" / "state.json").read_text())["step"] == 1
    _no_leftovers(out)
    monkeypatch.setattr(ckpt, "save_file", real_save)
    res = train(config_for_resume(str(out), {"max_steps": 3}))
    assert res.step == 3 and not (out / "state").exists()


def test_second_sigterm_between_the_renames_still_leaves_a_whole_state(tiny_model_dir, corpus, tmp_path, monkeypatch):
    """Through the CLI: a second SIGTERM in the instant between moving the old state aside and renaming the
    new one in is held until the swap is done, then stops the run: exit 143, the complete new state (step 3)."""
    import signal

    from clirunner import run_main

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM is handled by the test runner")  # the CLI would not install its own handler
    real_replace, real_lr = os.replace, trainer_mod.lr_factor
    sent = []

    def lr_then_first_signal(step, *a, **k):
        if step == 2 and not sent:  # the 3rd step starts: the first SIGTERM, the trainer saves after it
            sent.append("first")
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr(step, *a, **k)

    def replace_with_signal(src, dst, *a, **k):
        if str(dst).endswith(os.sep + "x") and sent == ["first"]:  # the old state is being moved aside
            sent.append("second")
            os.kill(os.getpid(), signal.SIGTERM)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(trainer_mod, "lr_factor", lr_then_first_signal)
    monkeypatch.setattr(os, "replace", replace_with_signal)
    out = tmp_path / "out"
    r = run_main("train", str(corpus), "-o", str(out), "-m", str(tiny_model_dir), "-b", "8", "--max-steps", "6", "--save-steps", "2",
                 "--eval-steps", "0", "--max-length", "16")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sent == ["first", "second"]
    assert r.code == 143, r.stderr
    assert "Traceback" not in r.stderr and r.lines[-1] == "esimcse: error: interrupted (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    meta = json.loads((out / "state" / "state.json").read_text())
    assert meta["step"] == 3
    _no_leftovers(out)
    from esimcse_cli.core.checkpoint import load_state

    tensors, _ = load_state(out)
    assert "online.backbone.embeddings.word_embeddings.weight" in tensors


def test_a_save_killed_between_the_renames_is_recovered(tiny_model_dir, corpus, tmp_path):
    """SIGKILL cannot be held: if it lands between the renames, the previous state is put back on --resume."""
    out = tmp_path / "out"
    res = train(cfg_for(tiny_model_dir, corpus, out, max_steps=4, save_steps=0), should_stop=lambda s: s == 2)
    assert res.stopped == "callback"
    # what the kill leaves: no OUT/state, the previous state under .state.XXX.old/x, a new one half-written
    aside = out / ".state.abc123.old"
    aside.mkdir()
    os.replace(out / "state", aside / "x")
    (out / ".state.def456.tmp").mkdir()
    (out / ".state.def456.tmp" / "state.safetensors").write_bytes(b"half")
    res = train(config_for_resume(str(out), {"max_steps": 4}))
    assert res.step == 4 and res.stopped is None
    _no_leftovers(out)


def test_a_signal_while_the_corpus_is_read_stops_the_spool_and_writes_nothing(tiny_model_dir, corpus, tmp_path, monkeypatch):
    """A long corpus is not read to the end after Ctrl-C, and no output folder is left behind."""
    import signal

    from esimcse_cli.core import corpus as corpus_mod

    real = corpus_mod.iter_texts
    served = []

    def endless(*a, **k):
        first = next(iter(real(*a, **k)))
        for i in range(1, 10**7):
            served.append(i)
            if i == 10:
                os.kill(os.getpid(), signal.SIGINT)
            yield i, first[1]

    monkeypatch.setattr(corpus_mod, "iter_texts", endless)
    out = tmp_path / "out"
    with pytest.raises(trainer_mod.TrainInterrupted, match="SIGINT while reading the corpus") as info:
        train(cfg_for(tiny_model_dir, corpus, out))
    assert info.value.exit_code == 130
    assert len(served) <= 2 * 65536  # polled every 64k lines, not read to the end
    assert not out.exists()
