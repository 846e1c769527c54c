"""What the ONNX backend and int8 cost on STS: the 7 tasks with torch, onnx and onnx int8, every task reported.

    python benchmarks/onnx_accuracy.py --write-results        # ../shared/data, the bundled model

Each backend runs `esimcse eval-sts DATA --backend B [--quantize int8]` (SentEval's "all" setting, Spearman x100)
through the core call the CLI makes. The goal: fp32 ONNX equal to torch, int8 within 0.3 of fp32 on the average.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _results import publish

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
RUNS = (("torch", "none"), ("onnx", "none"), ("onnx", "int8"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="default")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()

    from esimcse_cli.core.eval_sts import eval_sts

    results = {}
    for backend, quantize in RUNS:
        result, _ = eval_sts(str(args.data), model=args.model, backend=backend, quantize=quantize, device="cpu")
        results[result["backend"]] = result
        print(f"{result['backend']}: avg {result['avg']:.2f} ({result['seconds']['encode']:.0f} s encoding)", file=sys.stderr)
    names = list(results)
    tasks = list(results[names[0]]["tasks"])
    md = [
        "## ONNX and int8 accuracy on STS\n",
        f"`eval-sts {args.data.name} --model {args.model}` (SentEval \"all\", Spearman x100, test splits) with each backend; "
        f"model {results[names[0]]['model']}, {results[names[0]]['pooling']} pooling.\n",
        "| task | " + " | ".join(names) + " | onnx - torch | int8 - onnx |",
        "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: |",
    ]

    def sp(name, task):
        return results[name]["tasks"][task]["spearman"] if task != "avg" else results[name]["avg"]

    for task in [*tasks, "avg"]:
        cells = [f"{sp(n, task):.2f}" for n in names]
        label = f"**{task}**" if task == "avg" else task
        md.append(f"| {label} | " + " | ".join(cells) + f" | {sp('onnx', task) - sp('torch', task):+.2f} | "
                  f"{sp('onnx int8', task) - sp('onnx', task):+.2f} |")
    gap = sp("onnx int8", "avg") - sp("onnx", "avg")
    md += ["", f"- int8 against fp32 on the 7-task average: **{gap:+.2f}** (goal: within 0.3). Encoding time of the "
           f"{results[names[0]]['sentences']['distinct']} distinct sentences: "
           + ", ".join(f"{n} {results[n]['seconds']['encode']:.0f} s" for n in names) + "."]
    publish("onnx_accuracy", "\n".join(md), args.write_results)
    return 0 if abs(gap) <= 0.3 and abs(sp("onnx", "avg") - sp("torch", "avg")) < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
