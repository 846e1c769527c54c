"""Training step cost: this tool's ESimCSE and SimCSE steps against a sentence-transformers MNRL step.

Same model, batch size, max length, batches (the trainer's seeded order) and machine, in one run.
Each variant runs in its own child process (so its peak memory is its own), ``--rounds`` times,
interleaved, and the per-step wall times of all rounds are pooled; the first ``--warmup`` steps of
each child are dropped. Reported: median step time (pooled, and per round), sentences/s, peak RSS
(and peak CUDA memory), the tokens each forward is fed (one padded forward vs the default length
groups), and the two ratios the train issue sets targets for, pooled and per round (a round's
children run back to back, so its ratio is least disturbed by a machine whose speed drifts):

* ESimCSE step / SimCSE step of this tool       (target <= 1.3)
* SimCSE step of this tool / ST MNRL step        (target <= 1.0)

Our steps are timed between consecutive ``on_step`` callbacks of :func:`esimcse_cli.core.trainer.train`,
so they include everything the loop does (reading, tokenising, repetition, forwards, backward, optimizer,
EMA, enqueue). The sentence-transformers step is a minimal loop (tokenise both columns, MNRL forward,
backward, AdamW step), without the ``SentenceTransformerTrainer`` overhead, so the second ratio is,
if anything, pessimistic for this tool.

    python benchmarks/train_speed.py --steps 20 --rounds 2 --json docs/results/train_speed.json
    python benchmarks/train_speed.py --steps 4 --warmup 1 --rounds 8 --unsplit --write-results   # docs/RESULTS.md
    python benchmarks/train_speed.py --steps 3            # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus" / "wiki1m_for_simcse.random10k_seed42.txt"
VARIANTS = ("simcse", "esimcse", "st-mnrl")
UNSPLIT = ("simcse-unsplit", "esimcse-unsplit")  # --unsplit: this tool with --no-split-by-length, for context
NAMES = {"simcse": "esimcse SimCSE step", "esimcse": "esimcse ESimCSE step",
         "st-mnrl": "sentence-transformers MNRL step on (s, s)",
         "simcse-unsplit": "esimcse SimCSE step, --no-split-by-length", "esimcse-unsplit": "esimcse ESimCSE step, --no-split-by-length"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def synthetic_corpus(path: Path, n: int = 4000) -> Path:
    import random

    words = ("the a of to and in is was for on with as by at from that this man woman dog city river music film "
             "book team year day night people water food plays runs reads writes sings quickly slowly").split()
    r = random.Random(0)
    path.write_text("\n".join(" ".join(r.choice(words) for _ in range(r.randint(6, 30))) for _ in range(n)) + "\n")
    return path


def run_ours(args, variant: str) -> dict:
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config({
            "corpus": args.corpus, "output_dir": str(Path(tmp) / "out"), "model": args.model,
            "method": variant.split("-")[0], "split_by_length": not variant.endswith("-unsplit"),
            "batch_size": args.batch_size, "max_length": args.max_length, "max_steps": args.steps + args.warmup,
            "eval_steps": 0, "save_steps": 0, "log_steps": 0, "device": args.device, "bf16": args.bf16, "seed": 42,
        })
        t0 = time.perf_counter()
        train(cfg, on_step=lambda row: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip([t0] + stamps[:-1], stamps)][args.warmup:]
    return {"step_times": times}


def run_st(args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer, losses

    from esimcse_cli.core.models import resolve_device, resolve_model_path
    from esimcse_cli.core.views import epoch_order

    path, _ = resolve_model_path(args.model)
    device = resolve_device(args.device)
    model = SentenceTransformer(path, device=device)
    model.max_seq_length = args.max_length
    model.train()
    loss_fn = losses.MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    texts = [t for t in Path(args.corpus).read_text(encoding="utf-8").splitlines() if t.strip()]
    order = epoch_order(len(texts), 42, 0)
    times = []
    for step in range(args.steps + args.warmup):
        t = time.perf_counter()
        batch = [texts[i] for i in order[step * args.batch_size : (step + 1) * args.batch_size]]
        features = []
        for _ in range(2):  # (s, s) pairs: anchor and positive are the same sentence
            f = model.tokenize(batch)
            features.append({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in f.items()})
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(features, labels=None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"step_times": times[args.warmup :]}


def child(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_st(args) if args.variant == "st-mnrl" else run_ours(args, args.variant)
    result["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available():
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def padded_tokens_per_step(args) -> dict:
    """Tokens fed to the model per step on the timed batches: one padded forward vs the length groups.

    The same batches, truncation and repetition seeds as the trainer (tokenising only, no model).
    """
    import numpy as np

    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.models import load_tokenizer, resolve_device, resolve_model_path
    from esimcse_cli.core.padding import length_groups, overhead_for, padded_tokens
    from esimcse_cli.core.views import SECOND_VIEW_STREAM, Batcher, epoch_order, seed_for

    path, _ = resolve_model_path(args.model)
    tok = load_tokenizer(path)
    cfg = build_config({"max_length": args.max_length, "batch_size": args.batch_size, "seed": 42})
    batcher = Batcher(tok, cfg)
    texts = [t for t in Path(args.corpus).read_text(encoding="utf-8").splitlines() if t.strip()]
    order = epoch_order(len(texts), 42, 0)
    overhead = overhead_for(resolve_device(args.device))
    sums = {k: 0 for k in ("real_simcse", "real_esimcse", "simcse_one", "simcse_groups", "esimcse_one", "esimcse_groups",
                           "momentum_one", "momentum_groups")}
    steps = range(args.warmup, args.warmup + args.steps)
    for micro in steps:
        ids = batcher.tokenize([texts[i] for i in order[micro * args.batch_size : (micro + 1) * args.batch_size]])
        rep = batcher.second_view(ids, seed_for(42, micro, SECOND_VIEW_STREAM))
        for name, rows in (("simcse", ids + ids), ("esimcse", ids + rep), ("momentum", ids)):
            lengths = np.array([len(x) for x in rows])
            sums[f"{name}_one"] += padded_tokens(lengths)
            sums[f"{name}_groups"] += padded_tokens(lengths, length_groups(lengths, overhead))
            if name != "momentum":
                sums[f"real_{name}"] += int(lengths.sum())
    return {k: v / len(steps) for k, v in sums.items()}


def parent(args) -> None:
    corpus_tmp = None
    if args.corpus is None:
        if DEFAULT_CORPUS.is_file():
            args.corpus = str(DEFAULT_CORPUS)
        else:
            corpus_tmp = tempfile.NamedTemporaryFile(suffix=".txt", delete=False)
            args.corpus = str(synthetic_corpus(Path(corpus_tmp.name)))
    variants = VARIANTS + (UNSPLIT if args.unsplit else ())
    pooled = {v: {"step_times": [], "round_medians": [], "peak_rss_mb": 0.0, "peak_cuda_mb": None} for v in variants}
    passthrough = ["--model", args.model, "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--corpus", args.corpus, "--device", args.device,
                   "--threads", str(args.threads)] + (["--bf16"] if args.bf16 else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for r in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--child", "--variant", v] + passthrough
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{v}: child failed (exit {proc.returncode})")
            res = json.loads(lines[-1][len("RESULT "):])
            pooled[v]["step_times"] += res["step_times"]
            pooled[v]["round_medians"].append(statistics.median(res["step_times"]))
            pooled[v]["peak_rss_mb"] = max(pooled[v]["peak_rss_mb"], res["peak_rss_mb"])
            if res.get("peak_cuda_mb") is not None:
                pooled[v]["peak_cuda_mb"] = max(pooled[v]["peak_cuda_mb"] or 0.0, res["peak_cuda_mb"])
            print(f"round {r + 1} {v:16s} median step {pooled[v]['round_medians'][-1]:.3f}s", file=sys.stderr, flush=True)
    summary = {}
    for v, d in pooled.items():
        med = statistics.median(d["step_times"])
        summary[v] = {"median_step_s": med, "sentences_per_s": args.batch_size / med, "steps_timed": len(d["step_times"]),
                      "round_medians_s": d["round_medians"], "peak_rss_mb": d["peak_rss_mb"], "peak_cuda_mb": d["peak_cuda_mb"]}

    def per_round(a: str, b: str) -> list:  # each round's ratio: the two children ran minutes apart at most
        return [x / y for x, y in zip(pooled[a]["round_medians"], pooled[b]["round_medians"])]

    import platform

    import torch

    tokens = padded_tokens_per_step(args)
    report = {
        "model": args.model, "batch_size": args.batch_size, "max_length": args.max_length, "device": args.device,
        "bf16": args.bf16, "steps_per_round": args.steps, "rounds": args.rounds, "corpus": args.corpus,
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "variants": summary,
        "ratio_esimcse_over_simcse": summary["esimcse"]["median_step_s"] / summary["simcse"]["median_step_s"],
        "ratio_simcse_over_st_mnrl": summary["simcse"]["median_step_s"] / summary["st-mnrl"]["median_step_s"],
        "round_ratios_esimcse_over_simcse": per_round("esimcse", "simcse"),
        "round_ratios_simcse_over_st_mnrl": per_round("simcse", "st-mnrl"),
        "tokens_per_step": tokens,
    }
    print(json.dumps(report, indent=2))
    print(f"ESimCSE/SimCSE step: {report['ratio_esimcse_over_simcse']:.3f} (target <= 1.3); "
          f"SimCSE/ST-MNRL step: {report['ratio_simcse_over_st_mnrl']:.3f} (target <= 1.0)", file=sys.stderr)
    if args.json:
        from esimcse_cli.core.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.write_results:
        from _results import update_section

        md = [
            "## Train step cost\n",
            f"Model `{args.model}`, batch {args.batch_size}, max length {args.max_length}, device {args.device}"
            f"{' bf16' if args.bf16 else ''}; each variant in its own process, {args.rounds} interleaved round(s) of "
            f"{args.steps} timed steps after {args.warmup} warm-up step(s); median step time over all rounds.\n",
            "| variant | median step s | per-round medians s | sentences/s | peak RSS MB |",
            "| --- | ---: | --- | ---: | ---: |",
        ]
        for v in variants:
            d = summary[v]
            rounds = ", ".join(f"{x:.2f}" for x in d["round_medians_s"])
            md.append(f"| {NAMES[v]} | {d['median_step_s']:.3f} | {rounds} | {d['sentences_per_s']:.1f} | {d['peak_rss_mb']:.0f} |")
        rr = lambda xs: f"{min(xs):.2f} to {max(xs):.2f}, median {statistics.median(xs):.2f}"  # noqa: E731
        t = tokens
        md += [
            "",
            f"- ESimCSE step / SimCSE step: **{report['ratio_esimcse_over_simcse']:.3f}** (target <= 1.3); "
            f"per round: {rr(report['round_ratios_esimcse_over_simcse'])}",
            f"- SimCSE step / sentence-transformers MNRL step: **{report['ratio_simcse_over_st_mnrl']:.3f}** (target <= 1.0); "
            f"per round: {rr(report['round_ratios_simcse_over_st_mnrl'])}",
            "",
            "Tokens fed to the encoders per step (mean over the timed batches; real = before padding):",
            "",
            "| forward | real | one padded forward | length groups (default) |",
            "| --- | ---: | ---: | ---: |",
            f"| SimCSE online, 2B rows | {t['real_simcse']:.0f} | {t['simcse_one']:.0f} | {t['simcse_groups']:.0f} |",
            f"| ESimCSE online, originals + repeated copies | {t['real_esimcse']:.0f} | {t['esimcse_one']:.0f} | {t['esimcse_groups']:.0f} |",
            f"| ESimCSE momentum encoder, originals (no gradient) | {t['real_simcse'] / 2:.0f} | {t['momentum_one']:.0f} | {t['momentum_groups']:.0f} |",
            "",
            "sentence-transformers pads each column to its longest sentence, as one padded forward does "
            f"({t['simcse_one']:.0f} tokens for the two columns). ESimCSE's cost over SimCSE is the repeated tokens "
            "(the copies are longer) plus one forward of the momentum encoder without gradient, about a sixth of "
            "a forward and backward of the 2B rows; the EMA update and the queue cost milliseconds.",
        ]
        update_section("train_speed", "\n".join(md))
    if corpus_tmp is not None:
        os.unlink(corpus_tmp.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per child")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps per child")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--corpus", default=None, help="default: shared wiki sample, else synthetic sentences")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--write-results", action="store_true", help="also write the 'train_speed' section of docs/RESULTS.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--unsplit", action="store_true", help="also time this tool with --no-split-by-length (context)")
    ap.add_argument("--variant", choices=VARIANTS + UNSPLIT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
