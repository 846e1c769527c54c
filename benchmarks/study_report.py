"""The study section of docs/RESULTS.md and its PNG plots, generated from ``docs/results/*.json`` only.

Every number in the section comes from a cell JSON written by ``benchmarks/study.py``, except the paper's
reference values in :data:`PAPER`, which are quoted from issue 6 (the paper's BERT-base figures) and shown
as such. Nothing here is hand-edited: rerun ``python benchmarks/study.py --report-only``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
SHORT = {"STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
         "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}

# The paper's figures (Wu et al. 2021, BERT-base, 1M Wikipedia sentences) as issue 6 quotes them.
# Per-task Table 5 values are not in the issue, so only the averages are shown.
PAPER = {
    "avg": {"SimCSE": 76.25, "ESimCSE": 78.27},
    "dev": {"SimCSE": 82.45, "ESimCSE": 84.85, "repetition only": 84.09, "momentum queue only": 83.98},
    "stsb_buckets": {"SimCSE": (81.48, 69.24)},  # Table 1: Spearman x100 for |len diff| <= 3 and > 3
    "best": {"dup_rate": 0.32, "queue_ratio": 2.5, "augmentation": "repetition"},
}
CORE = ("SimCSE", "ESimCSE", "repetition only", "momentum queue only")
GOAL = 1.0  # issue 6's quality goal: ESimCSE's mean 7-task average beats SimCSE's by >= 1.0


# ============================================================================== loading and statistics
def load_results(results_dir: str | os.PathLike) -> List[Dict[str, Any]]:
    out = []
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("cell") and d.get("eval"):
            out.append(d)
    return out


def mean_std(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, None, len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)), len(v)


def fmt(x: Optional[float], nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def fmt_ms(values: Sequence[Optional[float]], nd: int = 2) -> str:
    m, s, n = mean_std(values)
    if m is None:
        return "—"
    return f"{m:.{nd}f} ± {s:.{nd}f}" if s is not None else f"{m:.{nd}f}"


def test_score(doc: Dict[str, Any], task: str) -> Optional[float]:
    return (doc["eval"].get("tasks", {}).get(task) or {}).get("spearman")


def bucket(doc: Dict[str, Any], task: str, i: int) -> Optional[float]:
    bs = (doc["eval"].get("tasks", {}).get(task) or {}).get("buckets") or []
    return bs[i]["spearman"] if len(bs) > i else None


def bucket_names(docs: Sequence[Dict[str, Any]]) -> List[str]:
    for d in docs:
        bs = (d["eval"].get("tasks", {}).get("STSBenchmark") or {}).get("buckets")
        if bs:
            return [b["name"] for b in bs]
    return ["<=3", ">3"]


def dev_best(doc: Dict[str, Any]) -> Optional[float]:
    if doc.get("kind") == "untrained":
        return doc["eval"].get("stsb_dev")
    return (doc.get("train") or {}).get("best_dev")


def budget_of(doc: Dict[str, Any]) -> Optional[int]:
    return ((doc.get("settings") or {}).get("train") or {}).get("max_steps")


class Study:
    """The finished cells, grouped by label in matrix order, restricted to one equal step budget."""

    def __init__(self, docs: List[Dict[str, Any]], matrix=None):
        self.matrix = matrix
        order = {c.name: i for i, c in enumerate(matrix.cells())} if matrix is not None else {}
        docs = sorted(docs, key=lambda d: (order.get(d["cell"], 10**6), d["cell"]))
        budgets = [budget_of(d) for d in docs if d.get("kind") == "train" and budget_of(d) is not None]
        self.budget = max(set(budgets), key=lambda b: (budgets.count(b), b)) if budgets else None
        self.excluded = [d for d in docs if d.get("kind") == "train" and budget_of(d) != self.budget]
        self.docs = [d for d in docs if d not in self.excluded]
        self.labels: Dict[str, List[Dict[str, Any]]] = {}
        for d in self.docs:
            self.labels.setdefault(d["label"], []).append(d)

    def get(self, label: str) -> List[Dict[str, Any]]:
        return self.labels.get(label, [])

    def trained(self) -> List[Dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == "train"]

    def untrained(self) -> List[Dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == "untrained"]

    def values(self, label: str, fn) -> List[Optional[float]]:
        return [fn(d) for d in self.get(label)]


# ============================================================================== tables
def _seeds(docs: Sequence[Dict[str, Any]]) -> str:
    return ", ".join(str(d.get("seed")) for d in docs)


def table_test(st: Study) -> str:
    head = "| model | seeds | " + " | ".join(SHORT[t] for t in TASKS) + " | avg |"
    rows = [head, "|" + " --- |" * (len(TASKS) + 3)]
    for label, docs in st.labels.items():
        if docs[0].get("group") not in ("core", "mean_pooling") and docs[0].get("kind") != "untrained":
            continue
        seeds = "—" if docs[0].get("kind") == "untrained" else f"{len(docs)} ({_seeds(docs)})"
        cells = [fmt_ms([test_score(d, t) for d in docs]) for t in TASKS]
        rows.append(f"| {label} | {seeds} | " + " | ".join(cells) + f" | **{fmt_ms([d['eval'].get('avg') for d in docs])}** |")
    for name, v in PAPER["avg"].items():
        rows.append(f"| paper, {name} (BERT-base, Table 5) | — | " + " | ".join("—" for _ in TASKS) + f" | {v:.2f} |")
    return "\n".join(rows)


def table_dev(st: Study) -> str:
    rows = ["| model | seeds | start (step 0) | best STS-B dev | at step(s) | dev at the last step | paper (BERT-base) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, docs in st.labels.items():
        if docs[0].get("group") not in ("core", "mean_pooling") and docs[0].get("kind") != "untrained":
            continue
        if docs[0].get("kind") == "untrained":
            rows.append(f"| {label} | — | {fmt_ms([dev_best(d) for d in docs])} | — | — | — | — |")
            continue
        tr = [d["train"] for d in docs]
        last = [t["dev_curve"][-1][1] if t.get("dev_curve") else None for t in tr]
        paper = PAPER["dev"].get(label)
        rows.append(f"| {label} | {len(docs)} | {fmt_ms([t.get('start_dev') for t in tr])} | **{fmt_ms([t.get('best_dev') for t in tr])}** | "
                    f"{', '.join(str(t.get('best_step')) for t in tr)} | {fmt_ms(last)} | {fmt(paper)} |")
    return "\n".join(rows)


def table_length(st: Study) -> str:
    names = bucket_names(st.docs)
    rows = [f"| model | STS-B test {names[0]} | STS-B test {names[-1]} | gap | mean gap over 7 tasks | probe: mean cosine | probe: slope per inserted token |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, docs in st.labels.items():
        if docs[0].get("group") not in ("core",):
            continue
        lo = [bucket(d, "STSBenchmark", 0) for d in docs]
        hi = [bucket(d, "STSBenchmark", -1) for d in docs]
        gap = [None if a is None or b is None else a - b for a, b in zip(lo, hi)]
        probe = [d["eval"].get("probe") or {} for d in docs]
        rows.append(f"| {label} | {fmt_ms(lo)} | {fmt_ms(hi)} | {fmt_ms(gap)} | {fmt_ms([d['eval'].get('avg_gap') for d in docs])} | "
                    f"{fmt_ms([p.get('mean_cosine') for p in probe], 4)} | {fmt_ms([p.get('slope') for p in probe], 5)} |")
    for name, (a, b) in PAPER["stsb_buckets"].items():
        rows.append(f"| paper, {name} (BERT-base, Table 1) | {a:.2f} | {b:.2f} | {a - b:.2f} | — | — | — |")
    pairs = []
    for d in st.docs:
        bs = (d["eval"].get("tasks", {}).get("STSBenchmark") or {}).get("buckets") or []
        if bs:
            pairs = [f"{b['name']}: {b['pairs']} pairs" for b in bs]
            break
    unit = next((d["eval"].get("length_unit") for d in st.docs if d["eval"].get("length_unit")), "words")
    probe = next((d["eval"].get("probe") for d in st.docs if d["eval"].get("probe")), None)
    note = (f"\n\nBuckets by |len(a) − len(b)| in {unit} of the SentEval text ({'; '.join(pairs)}). "
            "Gap = first bucket − last bucket (positive: pairs of similar length score better).")
    if probe:
        note += (f" Probe: {probe.get('sentences')} STS sentences and their word-repeated copies "
                 f"(dup rate {probe.get('dup_rate')}, {probe.get('variant')} formula, seed {probe.get('seed')}); "
                 "a negative slope means the cosine of a sentence and its own repeated copy falls as more tokens are repeated.")
    return "\n".join(rows) + note


def table_sweeps(st: Study) -> str:
    out = []
    if st.matrix is None:
        return ""
    by_name = {d["cell"]: d for d in st.docs}
    for g in st.matrix.groups:
        if not g.sweep or g.unsupported:
            continue
        docs = [by_name[c.name] for c in g.cells if c.name in by_name]
        if not docs:
            continue
        if g.reference and g.reference in by_name:
            docs.append(by_name[g.reference])
        docs.sort(key=lambda d: d["config"].get(g.sweep))
        rows = [f"| {g.sweep} | cell | best STS-B dev (step) | test avg |", "| --- | --- | --- | --- |"]
        for d in docs:
            t = d["train"]
            rows.append(f"| {d['config'].get(g.sweep)} | {d['cell']} | {fmt(t.get('best_dev'))} ({t.get('best_step')}) | {fmt(d['eval'].get('avg'))} |")
        out.append(f"**{g.sweep} sweep** (ESimCSE, seed {docs[0].get('seed')}; the paper's best: {PAPER['best'].get(g.sweep)})\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def table_cost(st: Study) -> str:
    rows = ["| cell | steps | s/step (training only) | sentences/s (training only) | train wall s (incl. dev evals) | "
            "test eval + probe s | cell wall s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for d in st.docs:
        t = d.get("train") or {}
        rows.append(f"| {d['cell']} | {t.get('steps', '—')} | {fmt(t.get('step_seconds_mean'))} | {fmt(t.get('sentences_per_s'), 1)} | "
                    f"{fmt(t.get('wall_s'), 0)} | {fmt(d['eval'].get('seconds'), 0)} | {fmt(d.get('wall_s'), 0)} |")
    tot = sum(float(d.get("wall_s") or 0) for d in st.docs)
    heads: Dict[str, List[str]] = {}
    for d in st.docs:
        head = (d.get("code") or {}).get("git_head")
        heads.setdefault(head[:10] if head else "not recorded", []).append(d["cell"])
    code = "; ".join(f"`{h}`: {', '.join(cells)}" for h, cells in heads.items())
    return "\n".join(rows) + f"\n\nTotal wall time of these cells: {tot / 60:.1f} min. Code (git HEAD when the run started): {code}."


# ============================================================================== claims and proposal
def _mean(values) -> Optional[float]:
    return mean_std(values)[0]


def claims(st: Study) -> Tuple[str, Dict[str, Any]]:
    """The plain-language verdicts, computed from the numbers; also returns the figures used."""
    S, E = st.get("SimCSE"), st.get("ESimCSE")
    lines: List[str] = []
    fig: Dict[str, Any] = {}
    paper_d = PAPER["avg"]["ESimCSE"] - PAPER["avg"]["SimCSE"]
    paper_dd = PAPER["dev"]["ESimCSE"] - PAPER["dev"]["SimCSE"]
    # ---- claim 1
    if S and E:
        ms, ss, ns = mean_std([d["eval"].get("avg") for d in S])
        me, se_, ne = mean_std([d["eval"].get("avg") for d in E])
        d = me - ms
        noise = max([x for x in (ss, se_) if x is not None], default=None)
        se = math.sqrt((ss or 0) ** 2 / ns + (se_ or 0) ** 2 / ne) if (ss is not None or se_ is not None) else None
        fig.update({"d_test": d, "noise": noise, "se": se})
        if noise is None:
            beyond = "no seed spread is available yet (one seed each)"
        elif abs(d) > noise:
            beyond = f"larger than the larger seed std ({noise:.2f})"
        else:
            beyond = f"within the seed std ({noise:.2f})"
        t = f"; difference / its standard error = {d / se:.1f}" if se else ""
        if d >= GOAL and (noise is None or d > noise):
            verdict = "**reproduces in direction and reaches the ≥ 1.0 goal**"
        elif d > 0 and noise is not None and d > noise:
            verdict = f"**reproduces in direction only**: ESimCSE is ahead beyond seed noise, but by less than the 1.0 goal (paper: {paper_d:.2f})"
        elif d > 0:
            verdict = "**does not reproduce at this scale**: ESimCSE is ahead on average, but not beyond seed noise"
        else:
            verdict = "**does not reproduce at this scale**: ESimCSE is not ahead"
        lines.append(f"1. *ESimCSE beats SimCSE on the 7-task average* (paper: {PAPER['avg']['ESimCSE']:.2f} vs "
                     f"{PAPER['avg']['SimCSE']:.2f}, +{paper_d:.2f}): here {me:.2f} vs {ms:.2f} over {ne} and {ns} seeds, "
                     f"a difference of {d:+.2f}, {beyond}{t}. {verdict}.")
        ds = _mean([dev_best(x) for x in S])
        de = _mean([dev_best(x) for x in E])
        sd = max([x for x in (mean_std([dev_best(x) for x in S])[1], mean_std([dev_best(x) for x in E])[1]) if x is not None], default=None)
        if ds is not None and de is not None:
            fig["d_dev"] = de - ds
            lines.append(f"   On STS-B dev (best checkpoint): {de:.2f} vs {ds:.2f}, {de - ds:+.2f} (paper: +{paper_dd:.2f})"
                         + (f"; seed std up to {sd:.2f}." if sd is not None else "."))
    else:
        lines.append("1. *ESimCSE beats SimCSE*: not measured yet (the SimCSE and ESimCSE cells are not finished).")
    # ---- claim 2
    ref = [dev_best(x) for x in S]
    ms, ss, _ = mean_std(ref)
    parts = []
    for label in ("repetition only", "momentum queue only"):
        docs = st.get(label)
        if not docs or ms is None:
            parts.append(f"{label}: not measured yet")
            continue
        v = _mean([dev_best(x) for x in docs])
        d = v - ms
        tv = _mean([x["eval"].get("avg") for x in docs])
        tS = _mean([x["eval"].get("avg") for x in S])
        helps = d > (ss or 0) if ss is not None else d > 0
        parts.append(f"{label} {v:.2f} on dev ({d:+.2f} against SimCSE's {ms:.2f}"
                     + (f" ± {ss:.2f}" if ss is not None else "") + f"; paper {PAPER['dev'][label]:.2f} vs {PAPER['dev']['SimCSE']:.2f}), "
                     f"test avg {tv:.2f} ({tv - tS:+.2f}): " + ("helps beyond SimCSE's seed spread" if helps and ss is not None else
                                                             "helps, single seed" if helps else "does not help here"))
        fig[f"d_dev_{label}"] = d
    lines.append("2. *Each part helps on its own* (STS-B dev, best checkpoint): " + "; ".join(parts) + ".")
    # ---- claim 3
    parts = []
    if st.matrix is not None:
        by_name = {d["cell"]: d for d in st.docs}
        for g in st.matrix.groups:
            if not g.sweep or g.unsupported:
                continue
            docs = [by_name[c.name] for c in g.cells if c.name in by_name]
            if g.reference in by_name:
                docs.append(by_name[g.reference])
            if len(docs) < 2:
                parts.append(f"{g.sweep}: not run yet")
                continue
            best = max(docs, key=lambda x: x["train"].get("best_dev") or -1e9)
            bv = best["config"].get(g.sweep)
            ok = bv == PAPER["best"].get(g.sweep)
            parts.append(f"{g.sweep}: best on dev at {bv} over {sorted(x['config'].get(g.sweep) for x in docs)} "
                         f"(single seed; {'matches' if ok else 'differs from'} the paper's {PAPER['best'].get(g.sweep)})")
    lines.append("3. *dup_rate 0.32 and a 2.5× queue are best*: " + ("; ".join(parts) if parts else "not run") + ".")
    # ---- claim 4
    if S:
        lo = _mean([bucket(d, "STSBenchmark", 0) for d in S])
        hi = _mean([bucket(d, "STSBenchmark", -1) for d in S])
        pa, pb = PAPER["stsb_buckets"]["SimCSE"]
        if lo is not None and hi is not None:
            gap = lo - hi
            fig["simcse_gap"] = gap
            txt = (f"4. *SimCSE is biased by length* (paper, STS-B: {pa:.2f} for length difference ≤ 3 vs {pb:.2f} for > 3, gap {pa - pb:.2f}): "
                   f"here SimCSE scores {lo:.2f} vs {hi:.2f}, gap {gap:+.2f}: "
                   + ("**the direction reproduces** (similar-length pairs score higher)" if gap > 0 else "**does not reproduce** (no advantage for similar-length pairs)"))
            if E:
                le = _mean([bucket(d, "STSBenchmark", 0) for d in E])
                he = _mean([bucket(d, "STSBenchmark", -1) for d in E])
                if le is not None and he is not None:
                    fig["esimcse_gap"] = le - he
                    txt += (f"; ESimCSE's gap is {le - he:+.2f} ({'smaller' if le - he < gap else 'not smaller'} than SimCSE's, "
                            f"by {abs(gap - (le - he)):.2f}; paper's claim: repetition reduces this bias)")
            ps = _mean([(d["eval"].get("probe") or {}).get("slope") for d in S])
            pe = _mean([(d["eval"].get("probe") or {}).get("slope") for d in E]) if E else None
            if ps is not None:
                txt += f". Repetition probe slope: SimCSE {ps:+.5f}" + (f", ESimCSE {pe:+.5f}" if pe is not None else "") + " per repeated token"
            lines.append(txt + ".")
    else:
        lines.append("4. *SimCSE is biased by length*: not measured yet.")
    return "\n".join(lines), fig


def proposal(st: Study, fig: Dict[str, Any]) -> str:
    """What the numbers suggest would change the outcome (only when ESimCSE misses the 1.0 goal)."""
    if "d_test" not in fig or fig["d_test"] >= GOAL:
        return ""
    out = []
    tr = [d for d in st.trained() if d["label"] in CORE]
    if not tr:
        return ""
    steps = st.budget or 0
    at_end = [d for d in tr if d["train"].get("best_step") == d["train"].get("total_steps")]
    early = [d for d in tr if (d["train"].get("best_step") or 0) <= steps / 2]
    gain = _mean([(d["train"].get("best_dev") or 0) - (d["train"].get("start_dev") or 0) for d in tr if d["train"].get("start_dev") is not None])
    # budget
    if len(at_end) * 2 >= len(tr):
        out.append(f"- **Budget.** In {len(at_end)} of {len(tr)} core runs the best STS-B dev score came at the last step ({steps}): "
                   f"dev was still rising when the budget ran out (mean gain over the start: {fmt(gain)}). A larger step budget "
                   "(e.g. the GPU script, `benchmarks/gpu_study.sh`) is the first thing to try.")
    else:
        out.append(f"- **Budget.** Only {len(at_end)} of {len(tr)} core runs peaked at the last step ({steps}); "
                   f"the mean gain over the start is {fmt(gain)}. More steps alone are unlikely to open the gap.")
    # the gap over training
    curves = {}
    for label in ("SimCSE", "ESimCSE"):
        acc: Dict[int, List[float]] = {}
        for d in st.get(label):
            for s, v in d["train"].get("dev_curve") or []:
                if v is not None:
                    acc.setdefault(int(s), []).append(v)
        curves[label] = {s: sum(v) / len(v) for s, v in acc.items()}
    common = sorted(set(curves["SimCSE"]) & set(curves["ESimCSE"]) - {0})
    if len(common) >= 2:
        diffs = [curves["ESimCSE"][s] - curves["SimCSE"][s] for s in common]
        trend = ("rising: ESimCSE gains on SimCSE as training goes on" if diffs[-1] > diffs[0]
                 else "falling or flat: ESimCSE does not gain on SimCSE as training goes on")
        out.append(f"- **The gap over training.** Mean ESimCSE − SimCSE dev at steps {', '.join(map(str, common))}: "
                   f"{', '.join(f'{x:+.2f}' for x in diffs)} ({trend}).")
    # learning rate
    if len(early) * 2 > len(tr):
        out.append(f"- **Learning rate.** {len(early)} of {len(tr)} runs peaked in the first half of the budget and then fell back: "
                   "a lower learning rate (or a shorter schedule) should keep the early gain.")
    elif len(at_end) * 2 >= len(tr):
        lr = (tr[0].get("config") or {}).get("lr")
        out.append(f"- **Learning rate.** Runs were still improving at the end with lr {lr}; at this short budget a higher peak "
                   "learning rate is the cheap alternative to more steps (check it on dev: the model starts sentence-fine-tuned).")
    # momentum
    m = (tr[0].get("config") or {}).get("momentum")
    if m is not None and steps:
        moved = 1 - float(m) ** steps
        q = fig.get("d_dev_momentum queue only")
        txt = (f"- **Momentum variant.** With momentum {m} and {steps} steps, the momentum encoder's weights are still "
               f"{100 * (1 - moved):.0f}% those of the starting model ({m}^{steps}), so the queue's negatives come from an "
               "encoder close to the untrained one")
        if q is not None:
            txt += f"; the queue alone changed dev by {q:+.2f} against SimCSE"
        txt += (". Compare `--momentum-variant official` (the released code's EMA inside the forward, sharing the online MLP) "
                "and a lower momentum at short budgets.")
        out.append(txt)
    # pooling
    cls0 = [d for d in st.untrained() if d["settings"].get("pooling") == "cls_before_pooler"]
    avg0 = [d for d in st.untrained() if d["settings"].get("pooling") == "avg"]
    if cls0 and avg0:
        best_core = max((_mean([x["eval"].get("avg") for x in st.get(label)]) or -1e9) for label in CORE if st.get(label)) if any(st.get(l) for l in CORE) else None
        a0 = avg0[0]["eval"].get("avg")
        c0 = cls0[0]["eval"].get("avg")
        txt = (f"- **Pooling.** The untrained model scores {fmt(c0)} (test avg) with [CLS] and {fmt(a0)} with mean pooling, the pooling it "
               "was fine-tuned with")
        if best_core is not None and a0 is not None:
            txt += f"; the best trained [CLS] setting reaches {best_core:.2f}"
            txt += " — below the untrained mean-pooling start" if best_core < a0 else ""
        mp = [st.get(l) for l in ("SimCSE (avg)", "ESimCSE (avg)")]
        if all(mp):
            s_, e_ = (_mean([x["eval"].get("avg") for x in g]) for g in mp)
            txt += f". With mean pooling in training: SimCSE {s_:.2f}, ESimCSE {e_:.2f} ({e_ - s_:+.2f})"
        else:
            txt += ". The mean-pooling group (`--only mean_pooling`) measures whether either method still moves that start"
        out.append(txt + ".")
    out.append("- **Model.** The default model is a sentence-fine-tuned MiniLM, not the raw BERT-base of the paper; ESimCSE's claims "
               "are about unsupervised training from a raw encoder, which this study does not test.")
    return "\n".join(out)


# ============================================================================== plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: Path) -> Path:
    """Lay out, write the PNG atomically, and close the figure whatever happens."""
    from esimcse_cli.core.atomic import atomic_path

    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        _plt().close(fig)
    return path


def _core_labels(st: Study) -> List[str]:
    return [lab for lab, docs in st.labels.items() if docs[0].get("group") == "core"]


def plot_dev_curves(st: Study, path: Path) -> Optional[Path]:
    tr = [d for d in st.trained() if d.get("train", {}).get("dev_curve")]
    if not tr:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {}
    for d in tr:
        lab = d["label"]
        if lab not in colors:
            colors[lab] = f"C{len(colors) % 10}"
        xs = [s for s, v in d["train"]["dev_curve"] if v is not None]
        ys = [v for s, v in d["train"]["dev_curve"] if v is not None]
        ax.plot(xs, ys, color=colors[lab], alpha=0.75, marker=".", label=lab)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=8)
    ax.set_xlabel("optimizer step (batch 64)")
    ax.set_ylabel("STS-B dev Spearman x100")
    ax.set_title("STS-B dev during training (one line per seed)")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_test(st: Study, path: Path) -> Optional[Path]:
    import numpy as np

    labels = _core_labels(st)
    if not labels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    cols = list(TASKS) + ["avg"]
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        docs = st.get(lab)
        ms, ss = [], []
        for t in cols:
            vals = [d["eval"].get("avg") if t == "avg" else test_score(d, t) for d in docs]
            m, s, _ = mean_std(vals)
            ms.append(np.nan if m is None else m)
            ss.append(0.0 if s is None else s)
        xs = np.arange(len(cols)) + (j - (len(labels) - 1) / 2) * width
        ax.bar(xs, ms, width=width, yerr=ss, capsize=2, label=lab)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_xticklabels([SHORT.get(t, t) for t in cols])
    ax.set_ylabel("test Spearman x100 (mean ± std over seeds)")
    lo = np.nanmin([test_score(d, t) or np.nan for lab in labels for d in st.get(lab) for t in TASKS] or [0])
    ax.set_ylim(max(0, lo - 5), None)
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("STS test sets")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def plot_length(st: Study, path: Path) -> Optional[Path]:
    import numpy as np

    labels = _core_labels(st)
    if not labels:
        return None
    names = bucket_names(st.docs)
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / (len(labels) + 1)
    pa = PAPER["stsb_buckets"]["SimCSE"]
    if len(names) == 2:
        ax.bar(np.arange(2) + (len(labels) / 2) * width, pa, width=width, color="lightgray", hatch="//",
               label="paper SimCSE (BERT-base)")
    for j, lab in enumerate(labels):
        docs = st.get(lab)
        ms, ss = [], []
        for i in range(len(names)):
            m, s, _ = mean_std([bucket(d, "STSBenchmark", i) for d in docs])
            ms.append(np.nan if m is None else m)
            ss.append(0.0 if s is None else s)
        xs = np.arange(len(names)) + (j - len(labels) / 2) * width
        ax.bar(xs, ms, width=width, yerr=ss, capsize=2, label=lab)
        pcs = [(d["eval"].get("probe") or {}).get("per_count") or [] for d in docs]
        if pcs and pcs[0]:
            acc: Dict[int, List[float]] = {}
            for pc in pcs:
                for p in pc:
                    if p.get("pairs", 0) >= 10:  # counts with a handful of pairs are noise
                        acc.setdefault(p["inserted"], []).append(p["mean_cosine"])
            ks = sorted(acc)
            ax2.plot(ks, [sum(acc[k]) / len(acc[k]) for k in ks], marker="o", label=lab)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"Δlen {n}" for n in names])
    ax.set_ylabel("STS-B test Spearman x100")
    ax.set_title("STS-B test by length difference")
    ax.legend(fontsize=7)
    ax2.set_xlabel("repeated sub-word tokens")
    ax2.set_ylabel("mean cosine(sentence, repeated copy)")
    ax2.set_title("repetition probe (counts with >= 10 pairs)")
    ax2.legend(fontsize=7)
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    return _finish(fig, path)


# ============================================================================== the section
def _rel(target: Path, md: Path) -> str:
    return os.path.relpath(target, md.parent).replace(os.sep, "/")


def setup_text(st: Study) -> str:
    tr = st.trained()
    if not tr:
        return "No trained cell is finished yet."
    c = tr[0]["config"]
    t = tr[0]["train"]
    corpus = t.get("corpus") or {}
    n = corpus.get("sentences")
    sents = (st.budget or 0) * c.get("batch_size", 0) * c.get("grad_accum", 1)
    frac = f" ({100 * sents / n:.0f}% of one pass over {n:,} sentences)" if n else ""
    settings = tr[0].get("settings", {})
    files = ", ".join(Path(x["path"]).name + (" (last line dropped)" if x.get("drop_last_line") else "") for x in settings.get("corpus", []))
    evs = sorted({d["config"].get("eval_steps") for d in tr})
    model = c.get("model")
    cost = []
    for label in ("SimCSE", "ESimCSE"):
        sp = _mean([d["train"].get("step_seconds_mean") for d in st.get(label)])
        if sp is not None:
            cost.append(f"{label} {sp:.1f} s/step")
    ev_s = _mean([d["eval"].get("seconds") for d in st.docs])
    cell_s = _mean([d.get("wall_s") for d in tr])
    machine = tr[0].get("machine", "")
    why = ""
    if cost and ev_s is not None and cell_s is not None:
        why = (f" Why this budget: on the machine that ran it ({machine}; shared with other jobs) a training step took "
               f"{', '.join(cost)}, the 7-task test evaluation with the probe {ev_s:.0f} s and a whole trained cell "
               f"{cell_s / 60:.1f} min on average, so the fixed evaluation cost dominates and the budget was set for the "
               "core matrix to finish in a few hours of wall time; `benchmarks/gpu_study.sh` runs the same matrix at a larger one.")
    return (f"Model `{model}`" + (" (the bundled all-MiniLM-L6-v2: sentence-fine-tuned, 6 layers, 384 dims — not the paper's "
                                  "raw BERT-base)" if model == "default" else "") + ". "
            f"Training pooler `{c.get('pooler')}` (MLP in training: {c.get('mlp')}), tested with the exported pooling. "
            f"Batch {c.get('batch_size')}, max length {c.get('max_length')}, lr {c.get('lr')} ({c.get('scheduler')} decay), "
            f"temperature {c.get('temperature')}, dup_rate {c.get('dup_rate')}, queue {c.get('queue_ratio')}× batch, "
            f"momentum {c.get('momentum')} ({c.get('momentum_variant')}), bf16 {c.get('bf16')}. "
            f"Corpus: {files}{frac}.\n\n"
            f"**Equal step budget: {st.budget} optimizer steps per trained cell** = {sents:,} sentences; STS-B dev every "
            f"{'/'.join(map(str, evs))} steps (plus step 0 and the last step); the best dev checkpoint is tested. "
            "Test: SentEval's 7 tasks (STS12-16 `all` setting, STS-B and SICK-R test), Spearman x100 of cosine. "
            "mean ± std is over seeds (sample std); a value without ± is one run." + why)


def build_markdown(st: Study, md_path: Path, plots: Dict[str, Optional[Path]]) -> str:
    parts = ["## Results study (ESimCSE vs SimCSE)", ""]
    if not st.docs:
        parts.append("No cell has finished yet.")
        return "\n".join(parts)
    parts += [setup_text(st), ""]
    c_text, fig = claims(st)
    parts += ["### Which claims reproduce at this scale", "", c_text, ""]
    prop = proposal(st, fig)
    if prop:
        parts += [f"**ESimCSE does not beat SimCSE by ≥ {GOAL:.1f} here.** What the numbers point to:", "", prop, ""]
    parts += ["### Test Spearman (7 tasks)", "", table_test(st), ""]
    if plots.get("test"):
        parts += [f"![test]({_rel(plots['test'], md_path)})", ""]
    parts += ["### STS-B dev (model selection)", "", table_dev(st), ""]
    if plots.get("dev"):
        parts += [f"![dev curves]({_rel(plots['dev'], md_path)})", ""]
    parts += ["### Length bias (STS-B test buckets) and the repetition probe", "", table_length(st), ""]
    if plots.get("length"):
        parts += [f"![length]({_rel(plots['length'], md_path)})", ""]
    sw = table_sweeps(st)
    if sw:
        parts += ["### Sweeps", "", sw, ""]
    parts += ["### Training cost", "", table_cost(st), ""]
    parts += ["### Not run", "", not_run(st), ""]
    parts += ["Each cell's JSON in `docs/results/` holds its full configuration, the command that reproduces it "
              "(`command`, plus the equivalent `esimcse train` / `esimcse length-analysis` lines in `cli_commands`), the dev "
              "curve, per-subset and per-bucket scores, the probe, timings and package versions. To check a cell, run its "
              "`command` (it rewrites that JSON) and compare with `git diff docs/results/<cell>.json`."]
    return "\n".join(parts)


def not_run(st: Study) -> str:
    lines = []
    done = {d["cell"] for d in st.docs}
    if st.matrix is not None:
        for g in st.matrix.groups:
            if g.unsupported:
                lines.append(f"- group `{g.name}` ({', '.join(c.name for c in g.cells)}): not run — {g.unsupported}.")
                continue
            pending = [c.name for c in g.cells if c.name not in done]
            if pending:
                lines.append(f"- group `{g.name}`: {len(pending)} cell(s) not finished: {', '.join(pending)}.")
    for d in st.excluded:
        lines.append(f"- `{d['cell']}` left out: its step budget ({budget_of(d)}) differs from the study's ({st.budget}).")
    return "\n".join(lines) if lines else "Every cell of the matrix has finished."


def write_report(results_dir, matrix, md_path: Path, plots_dir: Path, section: str = "study",
                 command: Optional[str] = None) -> List[Path]:
    """Regenerate the plots and the section; returns the plot files written."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import update_section

    st = Study(load_results(results_dir), matrix)
    prefix = "study" if section == "study" else section
    plots = {
        "test": plot_test(st, plots_dir / f"{prefix}_test.png"),
        "dev": plot_dev_curves(st, plots_dir / f"{prefix}_dev_curves.png"),
        "length": plot_length(st, plots_dir / f"{prefix}_length.png"),
    }
    md = build_markdown(st, md_path, plots)
    if section != "study":
        md = md.replace("## Results study (ESimCSE vs SimCSE)", f"## Results study: {section}", 1)
    update_section(section, md, command, path=md_path)
    return [p for p in plots.values() if p is not None]
