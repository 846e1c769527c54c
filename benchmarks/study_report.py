"""The study section of docs/RESULTS.md and its PNG plots, generated from ``docs/results/*.json`` only.

Every number in the section comes from a cell JSON written by ``benchmarks/study.py``, except the paper's
reference values in :data:`PAPER`, which are quoted from issue 6 (the paper's BERT-base figures) and shown
as such. Only the JSON files directly in the results folder are read (``archive/`` holds superseded studies).
Nothing here is hand-edited: rerun ``python benchmarks/study.py --report-only``. A matrix cut short gives a
report of the cells that finished, naming the ones that did not.

The paired comparisons (ESimCSE against SimCSE over the seeds, the parts against SimCSE, do no harm) are
``esimcse compare --group`` runs over the cells' ``docs/results/scores/*.npz``, made by :mod:`study_compare`; their
JSON files (``docs/results/compare/``) hold every interval and p-value the report quotes.
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
}
# the matrix's groups (benchmarks/study.yaml), in run order
CORE, DO_NO_HARM, ABLATIONS, OFFICIAL, STARTS = "core", "do_no_harm", "ablations", "official", "starting_points"
GROUP_TITLES = {CORE: "core ([CLS], 3 seeds)", DO_NO_HARM: "do no harm (pooler auto)", ABLATIONS: "ablations ([CLS])",
                OFFICIAL: "the released code's variants ([CLS])", STARTS: "starting points (untrained)"}
ABLATION_LABELS = ("repetition only", "momentum queue only")
GOAL = 1.0  # issue 6's quality goal: ESimCSE's mean 7-task average beats SimCSE's by >= 1.0
MIN_STEPS = 560  # issue 16: a cell of the one-epoch study has at least this many steps


# ============================================================================== loading and statistics
def load_results(results_dir: str | os.PathLike) -> List[Dict[str, Any]]:
    """The cell JSON files directly in ``results_dir`` (subfolders such as ``archive/`` are not read)."""
    out = []
    for p in sorted(Path(results_dir).glob("*.json")):
        if not p.is_file():
            continue
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


def fmt_signed(x: Optional[float], nd: int = 2) -> str:
    return "—" if x is None else f"{x:+.{nd}f}"


def fmt_ms(values: Sequence[Optional[float]], nd: int = 2) -> str:
    m, s, n = mean_std(values)
    if m is None:
        return "—"
    return f"{m:.{nd}f} ± {s:.{nd}f}" if s is not None else f"{m:.{nd}f}"


def fmt_ci(v: Optional[float], ci: Optional[Sequence[Optional[float]]], nd: int = 2) -> str:
    """``v [lo, hi]`` (the bootstrap interval), or ``v`` where the cell has none."""
    if v is None:
        return "—"
    if ci and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        return f"{v:.{nd}f} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"
    return f"{v:.{nd}f}"


def task_entry(doc: Dict[str, Any], task: str) -> Dict[str, Any]:
    return doc["eval"].get("tasks", {}).get(task) or {}


def test_score(doc: Dict[str, Any], task: str) -> Optional[float]:
    return task_entry(doc, task).get("spearman")


def bucket(doc: Dict[str, Any], task: str, i: int) -> Optional[float]:
    bs = task_entry(doc, task).get("buckets") or []
    return bs[i]["spearman"] if len(bs) > i else None


def gap(doc: Dict[str, Any], task: str = "STSBenchmark") -> Optional[float]:
    g = (doc["eval"].get("gap") or {}).get(task)
    if g is not None:
        return g
    lo, hi = bucket(doc, task, 0), bucket(doc, task, -1)
    return None if lo is None or hi is None else lo - hi


def bucket_names(docs: Sequence[Dict[str, Any]]) -> List[str]:
    for d in docs:
        bs = task_entry(d, "STSBenchmark").get("buckets")
        if bs:
            return [b["name"] for b in bs]
    return ["<=3", ">3"]


def dev_best(doc: Dict[str, Any]) -> Optional[float]:
    if doc.get("kind") == "untrained":
        return doc["eval"].get("stsb_dev")
    return (doc.get("train") or {}).get("best_dev")


def avg(doc: Dict[str, Any]) -> Optional[float]:
    return doc["eval"].get("avg")


def budget_of(doc: Dict[str, Any]) -> Optional[int]:
    """The optimizer steps a trained cell was run for (its ``total_steps``; older files: ``max_steps``)."""
    t = doc.get("train") or {}
    if t.get("total_steps") is not None:
        return int(t["total_steps"])
    return ((doc.get("settings") or {}).get("train") or {}).get("max_steps")


def package_of(doc: Dict[str, Any]) -> Optional[str]:
    return (doc.get("code") or {}).get("package_sha256")


class Study:
    """The finished cells in matrix order, restricted to one equal step budget (the commonest)."""

    def __init__(self, docs: List[Dict[str, Any]], matrix=None):
        self.matrix = matrix
        order = {c.name: i for i, c in enumerate(matrix.cells())} if matrix is not None else {}
        docs = sorted(docs, key=lambda d: (order.get(d["cell"], 10**6), d["cell"]))
        if matrix is not None:  # a JSON of a cell the matrix no longer has (renamed, dropped) is not this study's
            self.unknown = [d for d in docs if d["cell"] not in order]
            docs = [d for d in docs if d["cell"] in order]
        else:
            self.unknown = []
        budgets = [budget_of(d) for d in docs if d.get("kind") == "train" and budget_of(d) is not None]
        self.budget = max(set(budgets), key=lambda b: (budgets.count(b), b)) if budgets else None
        self.excluded = [d for d in docs if d.get("kind") == "train" and budget_of(d) != self.budget]
        self.docs = [d for d in docs if d not in self.excluded]
        self.labels: Dict[str, List[Dict[str, Any]]] = {}
        for d in self.docs:
            self.labels.setdefault(d["label"], []).append(d)
        self.by_name = {d["cell"]: d for d in self.docs}

    def get(self, label: str) -> List[Dict[str, Any]]:
        return self.labels.get(label, [])

    def group(self, name: str) -> List[Dict[str, Any]]:
        return [d for d in self.docs if d.get("group") == name]

    def group_labels(self, name: str) -> List[str]:
        return [lab for lab, docs in self.labels.items() if docs[0].get("group") == name]

    def trained(self) -> List[Dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == "train"]

    def untrained(self) -> List[Dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == "untrained"]

    def start(self, pooling: str) -> Optional[Dict[str, Any]]:
        for d in self.untrained():
            if (d.get("settings") or {}).get("pooling") == pooling:
                return d
        return None

    def missing(self) -> Optional[List[Tuple[str, str]]]:
        """``(group, cell)`` of every matrix cell without a JSON here (None: no matrix to compare with)."""
        if self.matrix is None:
            return None
        have = {d["cell"] for d in self.docs}
        return [(c.group, c.name) for c in self.matrix.cells() if c.name not in have and not c.unsupported]


# ============================================================================== tables
def _seeds(docs: Sequence[Dict[str, Any]]) -> str:
    return ", ".join(str(d.get("seed")) for d in docs)


def _label_rows(st: Study) -> List[Tuple[str, List[Dict[str, Any]]]]:
    return list(st.labels.items())


def table_test(st: Study) -> str:
    """Per model (label): mean ± std over seeds; one run: its 95% bootstrap interval."""
    head = "| model | group | seeds | " + " | ".join(SHORT[t] for t in TASKS) + " | avg |"
    rows = [head, "|" + " --- |" * (len(TASKS) + 4)]
    for label, docs in _label_rows(st):
        seeds = "—" if docs[0].get("kind") == "untrained" else f"{len(docs)} ({_seeds(docs)})"
        if len(docs) == 1:
            d = docs[0]
            cells = [fmt_ci(test_score(d, t), task_entry(d, t).get("ci")) for t in TASKS]
            a = fmt_ci(avg(d), d["eval"].get("avg_ci"))
        else:
            cells = [fmt_ms([test_score(d, t) for d in docs]) for t in TASKS]
            a = fmt_ms([avg(d) for d in docs])
        rows.append(f"| {label} | {docs[0].get('group')} | {seeds} | " + " | ".join(cells) + f" | **{a}** |")
    for name, v in PAPER["avg"].items():
        rows.append(f"| paper, {name} (BERT-base, Table 5) | — | — | " + " | ".join("—" for _ in TASKS) + f" | {v:.2f} |")
    return "\n".join(rows) + ("\n\nSeveral seeds: mean ± sample std over seeds. One run: the score [95% paired-bootstrap "
                              "interval over the test pairs]" + _bootstrap_note(st) + ".")


def _bootstrap_note(st: Study) -> str:
    for d in st.docs:
        bs = d["eval"].get("bootstrap")
        if bs:
            return f" ({bs.get('n')} replicates, seed {bs.get('seed')}" + (f"; {bs['strata']}" if bs.get("strata") else "") + ")"
    return ""


def table_test_cells(st: Study) -> str:
    """Every cell on its own, with the bootstrap interval of each task and of the average."""
    rows = ["| cell | " + " | ".join(SHORT[t] for t in TASKS) + " | avg |", "|" + " --- |" * (len(TASKS) + 2)]
    for d in st.docs:
        rows.append(f"| {d['cell']} | " + " | ".join(fmt_ci(test_score(d, t), task_entry(d, t).get("ci"), 1) for t in TASKS)
                    + f" | {fmt_ci(avg(d), d['eval'].get('avg_ci'))} |")
    return "\n".join(rows)


def table_dev(st: Study) -> str:
    rows = ["| model | seeds | start (step 0) | best STS-B dev | at step(s) | dev at the last step | paper (BERT-base) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, docs in _label_rows(st):
        if docs[0].get("kind") == "untrained":
            rows.append(f"| {label} | — | {fmt_ms([dev_best(d) for d in docs])} | — | — | — | — |")
            continue
        tr = [d["train"] for d in docs]
        last = [t["dev_curve"][-1][1] if t.get("dev_curve") else None for t in tr]
        paper = PAPER["dev"].get(label)
        rows.append(f"| {label} | {len(docs)} | {fmt_ms([t.get('start_dev') for t in tr])} | **{fmt_ms([t.get('best_dev') for t in tr])}** | "
                    f"{', '.join(str(t.get('best_step')) for t in tr)} | {fmt_ms(last)} | {fmt(paper)} |")
    return "\n".join(rows)


def dev_curves(docs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, Optional[float]]]:
    return {d["cell"]: {int(s): v for s, v in (d.get("train") or {}).get("dev_curve") or []} for d in docs}


def table_dev_curves(st: Study) -> str:
    """STS-B dev at every evaluation step, per core seed, with the per-method means and their difference."""
    docs = [d for d in st.group(CORE) if (d.get("train") or {}).get("dev_curve")]
    if not docs:
        return "No core cell has finished yet."
    curves = dev_curves(docs)
    steps = sorted({s for c in curves.values() for s in c})
    methods = {lab: [d["cell"] for d in docs if d["label"] == lab] for lab in ("SimCSE", "ESimCSE")}
    head = ["step"] + [d["cell"] for d in docs] + [f"{lab} mean" for lab, cells in methods.items() if cells]
    both = all(methods.values())
    if both:
        head.append("ESimCSE − SimCSE")
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in steps:
        vals = [fmt(curves[d["cell"]].get(s)) for d in docs]
        means = {lab: mean_std([curves[c].get(s) for c in cells])[0] for lab, cells in methods.items() if cells}
        vals += [fmt(m) for m in means.values()]
        if both:
            a, b = means.get("ESimCSE"), means.get("SimCSE")
            vals.append(fmt_signed(None if a is None or b is None else a - b))
        rows.append(f"| {s} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def table_length(st: Study) -> str:
    """Per cell: STS-B test by length-difference bucket, the gap with its interval, the 7-task mean gap, the probe."""
    names = bucket_names(st.docs)
    rows = [f"| cell | group | STS-B test {names[0]} | STS-B test {names[-1]} | STS-B gap [95% CI] | mean gap over 7 tasks [95% CI] | "
            "probe: mean cosine | probe: slope per repeated token |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in st.docs:
        e = d["eval"]
        probe = e.get("probe") or {}
        rows.append(f"| {d['cell']} | {d.get('group')} | {fmt_ci(bucket(d, 'STSBenchmark', 0), (task_entry(d, 'STSBenchmark').get('buckets') or [{}])[0].get('ci'))} | "
                    f"{fmt_ci(bucket(d, 'STSBenchmark', -1), (task_entry(d, 'STSBenchmark').get('buckets') or [{}])[-1].get('ci'))} | "
                    f"{fmt_ci(gap(d), (e.get('gap_ci') or {}).get('STSBenchmark'))} | {fmt_ci(e.get('avg_gap'), e.get('avg_gap_ci'))} | "
                    f"{fmt(probe.get('mean_cosine'), 4)} | {fmt(probe.get('slope'), 5)} |")
    group_rows = ["| model | cells | STS-B gap | mean gap over 7 tasks |", "| --- | --- | --- | --- |"]
    for label, docs in _label_rows(st):
        group_rows.append(f"| {label} | {len(docs)} | {fmt_ms([gap(d) for d in docs])} | {fmt_ms([d['eval'].get('avg_gap') for d in docs])} |")
    for name, (a, b) in PAPER["stsb_buckets"].items():
        group_rows.append(f"| paper, {name} (BERT-base, Table 1) | — | {a - b:.2f} ({a:.2f} vs {b:.2f}) | — |")
    pairs = []
    for d in st.docs:
        bs = task_entry(d, "STSBenchmark").get("buckets") or []
        if bs:
            pairs = [f"{b['name']}: {b['pairs']} pairs" for b in bs]
            break
    unit = next((d["eval"].get("length_unit") for d in st.docs if d["eval"].get("length_unit")), "words")
    probe = next((d["eval"].get("probe") for d in st.docs if d["eval"].get("probe")), None)
    note = (f"Buckets by |len(a) − len(b)| in {unit} of the SentEval text ({'; '.join(pairs)}). "
            "Gap = first bucket − last bucket (positive: pairs of similar length score better); the interval is the "
            "95% paired bootstrap over the test pairs.")
    if probe:
        note += (f" Probe: {probe.get('sentences')} STS sentences and their word-repeated copies "
                 f"(dup rate {probe.get('dup_rate')}, {probe.get('variant')} formula, seed {probe.get('seed')}); "
                 "a negative slope means the cosine of a sentence and its own repeated copy falls as more tokens are repeated.")
    return "\n".join(rows) + "\n\nPer model (mean ± std over seeds):\n\n" + "\n".join(group_rows) + "\n\n" + note


def table_do_no_harm(st: Study) -> str:
    """The default --pooler auto cells against the untrained model with its own (mean) pooling."""
    start = st.start("avg")
    docs = st.group(DO_NO_HARM)
    if not docs:
        return "Not measured yet (the do_no_harm cells are not finished)."
    a0 = avg(start) if start else None
    rows = ["| cell | pooler (trained → exported) | start dev (step 0) | best dev (step) | test avg [95% CI] | Δ test avg vs untrained avg | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    if start:
        rows.append(f"| {start['cell']} | {(start.get('settings') or {}).get('pooling')} | {fmt(dev_best(start))} | — | "
                    f"{fmt_ci(a0, start['eval'].get('avg_ci'))} | — | the start |")
    for d in docs:
        t = d.get("train") or {}
        pool = t.get("pooler") or {}
        pooled = f"{pool.get('train', (d.get('config') or {}).get('pooler'))} → {pool.get('exported', d['eval'].get('pooling'))}"
        delta = None if a0 is None or avg(d) is None else avg(d) - a0
        if t.get("best_step") == 0:
            verdict = "kept the starting model (no step beat it on dev)"
        elif delta is None:
            verdict = "—"
        elif delta >= 0:
            verdict = "no harm on the test average"
        else:
            verdict = "**below the start** on the test average"
        rows.append(f"| {d['cell']} | {pooled} | {fmt(t.get('start_dev'))} | {fmt(t.get('best_dev'))} ({t.get('best_step')}) | "
                    f"{fmt_ci(avg(d), d['eval'].get('avg_ci'))} | {fmt_signed(delta)} | {verdict} |")
    return "\n".join(rows) + ("\n\nΔ is a difference of two point estimates; whether it is beyond noise is the paired "
                              "test of the comparison section (per-pair scores in `docs/results/scores/`).")


def table_cost(st: Study) -> str:
    rows = ["| cell | steps | s/step (training only) | sentences/s (training only) | train wall s (incl. dev evals) | "
            "test eval + probe s | bootstrap s | cell wall s | device |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in st.docs:
        t = d.get("train") or {}
        rows.append(f"| {d['cell']} | {t.get('steps', '—')} | {fmt(t.get('step_seconds_mean'))} | {fmt(t.get('sentences_per_s'), 1)} | "
                    f"{fmt(t.get('wall_s'), 0)} | {fmt(d['eval'].get('seconds'), 0)} | {fmt(d['eval'].get('bootstrap_seconds'), 1)} | "
                    f"{fmt(d.get('wall_s'), 0)} | {t.get('device', '—')} |")
    tot = sum(float(d.get("wall_s") or 0) for d in st.docs)
    resumed = [d["cell"] for d in st.trained() if (d.get("train") or {}).get("resumed_from_step")]
    note = f"\n\nTotal wall time of these cells: {tot / 3600:.2f} h."
    if resumed:
        note += (f" Resumed from a saved state (their step time and wall time cover the last part only): {', '.join(resumed)}.")
    fastest = {}
    for label in ("SimCSE", "ESimCSE"):
        secs = [(d["train"].get("step_seconds_mean"), d["cell"]) for d in st.get(label) if (d.get("train") or {}).get("step_seconds_mean")]
        if secs:
            fastest[label] = min(secs)
            slow = max(secs)
            if slow[0] > 1.15 * fastest[label][0]:
                note += (f" {label}'s cells differ in step time by {slow[0] / fastest[label][0]:.2f}× ({slow[1]} against "
                         f"{fastest[label][1]}): the 2-core machine was shared with other work while the slower one ran, "
                         "so its time is not the method's.")
    if len(fastest) == 2:
        note += (f" ESimCSE's step costs {fastest['ESimCSE'][0] / fastest['SimCSE'][0]:.2f}× SimCSE's (the fastest cell of "
                 "each, as the least disturbed): the momentum encoder's forward pass and the longer repeated view.")
    machines = sorted({d.get("machine") for d in st.docs if d.get("machine")})
    if machines:
        note += " Machine: " + "; ".join(machines) + "."
    return "\n".join(rows) + note


def code_check(st: Study) -> Tuple[bool, str]:
    """Whether every cell ran one package version (``code.package_sha256``), and the text that says so."""
    if not st.docs:
        return True, "No cell yet."
    by: Dict[Optional[str], List[str]] = {}
    for d in st.docs:
        by.setdefault(package_of(d), []).append(d["cell"])
    known = {k: v for k, v in by.items() if k is not None}
    main = max(known, key=lambda k: len(known[k])) if known else None
    heads = sorted({(d.get("code") or {}).get("git_head", "")[:10] for d in st.docs if (d.get("code") or {}).get("git_head")})
    dirty = [d["cell"] for d in st.docs if (d.get("code") or {}).get("uncommitted")]
    if len(by) == 1 and main is not None:
        text = (f"**All {len(st.docs)} cells ran one package version**: `package_sha256` {main[:16]} (sha256 over the "
                f"`esimcse_cli` sources the study imported), git HEAD at their start {', '.join(f'`{h}`' for h in heads)}.")
        ok = True
    else:
        ref = next((d for d in st.docs if package_of(d) == main), None)
        ref_files = (ref.get("code") or {}).get("package_files") or {} if ref else {}
        odd = []
        for d in st.docs:
            p = package_of(d)
            if p == main:
                continue
            if p is None:
                odd.append(f"`{d['cell']}` (no code version recorded)")
                continue
            files = (d.get("code") or {}).get("package_files") or {}
            diff = sorted(f for f in set(files) | set(ref_files) if files.get(f) != ref_files.get(f))
            odd.append(f"`{d['cell']}` ({p[:16]}" + (f"; differs in {', '.join(diff[:6])}" + (" ..." if len(diff) > 6 else "") if diff else "") + ")")
        text = (f"**The cells did not all run one package version.** Most ({len(known.get(main, []))} of {len(st.docs)}) ran "
                f"`package_sha256` {main[:16] if main else '—'}; the odd ones out: {'; '.join(odd)}. Re-run them on one version "
                "(`python benchmarks/study.py --redo-other-code`, or `--cells ... --force`).")
        ok = False
    if dirty:
        text += f" Ran with uncommitted changes in the imported package files: {', '.join(dirty)}."
    return ok, text


# ============================================================================== claims and hypotheses
def _mean(values) -> Optional[float]:
    return mean_std(values)[0]


def _avg_entry(rep: Optional[Dict[str, Any]], label: str) -> Dict[str, Any]:
    """``label``'s 7-task-average entry of an ``esimcse compare`` JSON (empty when absent)."""
    return ((rep or {}).get("avg") or {}).get("models", {}).get(label) or {}


def _paired_verdict(rep: Optional[Dict[str, Any]], label: str, ref: str = "the start") -> str:
    """One entry of an ``esimcse compare`` JSON against its baseline, on the 7-task average, with the tasks on
    which it is significantly worse (do no harm)."""
    import study_compare

    cell = _avg_entry(rep, label)
    if cell.get("diff") is None or not cell.get("diff_ci"):
        return ""
    if cell["diff_ci"][0] == cell["diff_ci"][1] == cell["diff"] == 0:
        word = f"**the same model as {ref}** (identical scores)"
    elif cell.get("significant"):
        word = f"**significantly better than {ref}**" if cell["diff"] > 0 else f"**significantly worse than {ref}**"
    else:
        word = "**no measurable change**"
    worse = []
    for t in TASKS:
        c = ((rep.get("tasks") or {}).get(t) or {}).get("models", {}).get(label) or {}
        if c.get("significant") and (c.get("diff") or 0) < 0:
            worse.append(f"{SHORT.get(t, t)} {c['diff']:+.2f}")
    out = (f"paired Δ {study_compare.ci_text(cell, 'diff', 'diff_ci', signed=True)}, "
           f"p {study_compare.p_text(cell.get('p'))}, {word}")
    if worse:
        out += f", though significantly worse on {', '.join(worse)}"
    return out


def claims(st: Study, core: Optional[Dict[str, Any]] = None, do_no_harm: Optional[Dict[str, Any]] = None,
           parts_report: Optional[Dict[str, Any]] = None) -> Tuple[str, Dict[str, Any]]:
    """The plain-language verdicts, computed from the numbers; also returns the figures used. ``core``: the
    ``esimcse compare`` JSON of SimCSE's seeds against ESimCSE's (its paired test decides claim 1 when given);
    ``do_no_harm``: the one of the ``--pooler auto`` cells against the untrained mean-pooled start (claim 5);
    ``parts_report``: the one of the ablations and the released code's variants against SimCSE's seeds (claims 2, 3)."""
    S, E = st.get("SimCSE"), st.get("ESimCSE")
    lines: List[str] = []
    fig: Dict[str, Any] = {}
    paper_d = PAPER["avg"]["ESimCSE"] - PAPER["avg"]["SimCSE"]
    paper_dd = PAPER["dev"]["ESimCSE"] - PAPER["dev"]["SimCSE"]
    # ---- claim 1
    if S and E:
        ms, ss, ns = mean_std([avg(d) for d in S])
        me, se_, ne = mean_std([avg(d) for d in E])
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
        head = (f"1. *ESimCSE beats SimCSE on the 7-task average* (paper: {PAPER['avg']['ESimCSE']:.2f} vs "
                f"{PAPER['avg']['SimCSE']:.2f}, +{paper_d:.2f}): here {me:.2f} vs {ms:.2f} over {ne} and {ns} seeds")
        if core is not None:  # the paired test over pairs and seeds decides (esimcse compare)
            import study_compare

            lines.append(f"{head}; seed std {fmt(ss)} (SimCSE) and {fmt(se_)} (ESimCSE). {study_compare.verdict(core)}")
        else:
            lines.append(f"{head}, a difference of {d:+.2f}, {beyond}{t}. {verdict}.")
        ds = _mean([dev_best(x) for x in S])
        de = _mean([dev_best(x) for x in E])
        sd = max([x for x in (mean_std([dev_best(x) for x in S])[1], mean_std([dev_best(x) for x in E])[1]) if x is not None], default=None)
        if ds is not None and de is not None:
            fig["d_dev"] = de - ds
            lines.append(f"   On STS-B dev (best checkpoint): {de:.2f} vs {ds:.2f}, {de - ds:+.2f} (paper: +{paper_dd:.2f})"
                         + (f"; seed std up to {sd:.2f}." if sd is not None else "."))
    else:
        lines.append("1. *ESimCSE beats SimCSE*: not measured yet (the SimCSE and ESimCSE core cells are not finished).")
    # ---- claim 2
    ref = [dev_best(x) for x in S]
    ms, ss, _ = mean_std(ref)
    parts = []
    for label in ABLATION_LABELS:
        docs = st.get(label)
        if not docs or ms is None:
            parts.append(f"{label}: not measured yet")
            continue
        v = _mean([dev_best(x) for x in docs])
        d = v - ms
        tv = _mean([avg(x) for x in docs])
        tS = _mean([avg(x) for x in S])
        helps = d > (ss or 0) if ss is not None else d > 0
        parts.append(f"{label} {v:.2f} on dev ({d:+.2f} against SimCSE's {ms:.2f}"
                     + (f" ± {ss:.2f}" if ss is not None else "") + f"; paper {PAPER['dev'][label]:.2f} vs {PAPER['dev']['SimCSE']:.2f}), "
                     f"test avg {tv:.2f} ({tv - tS:+.2f}): " + ("helps beyond SimCSE's seed spread" if helps and ss is not None else
                                                             "helps, single seed" if helps else
                                                             "ahead, but within SimCSE's seed spread" if d > 0 else "does not help here"))
        paired = _paired_verdict(parts_report, label, "SimCSE")
        if paired:
            parts[-1] += f"; on the test avg, {paired}"
        fig[f"d_dev_{label}"] = d
    lines.append("2. *Each part helps on its own* (STS-B dev, best checkpoint): " + "; ".join(parts) + ".")
    # ---- claim 3: the released code's variants
    off = st.group(OFFICIAL)
    if off and E:
        o = off[0]
        me, se_, _ = mean_std([avg(x) for x in E])
        do = avg(o) - me if avg(o) is not None and me is not None else None
        fig["d_official"] = do
        lines.append(f"3. *The released code's formulas* (`repetition_variant` and `momentum_variant` official; max_grad_norm 1.0): "
                     f"`{o['cell']}` test avg {fmt_ci(avg(o), o['eval'].get('avg_ci'))}, {fmt_signed(do)} against the paper-formula "
                     f"ESimCSE mean {fmt(me)}" + (f" (seed std {se_:.2f})" if se_ is not None else "") + f"; best dev {fmt(dev_best(o))}"
                     + (f"; against SimCSE's seeds, {pv}." if (pv := _paired_verdict(parts_report, o["label"], "SimCSE")) else "."))
        fig["official_vs_simcse"] = _avg_entry(parts_report, o["label"])
    else:
        lines.append("3. *The released code's formulas*: not measured yet.")
    # ---- claim 4: length bias
    if S:
        lo = _mean([bucket(d, "STSBenchmark", 0) for d in S])
        hi = _mean([bucket(d, "STSBenchmark", -1) for d in S])
        pa, pb = PAPER["stsb_buckets"]["SimCSE"]
        if lo is not None and hi is not None:
            g = lo - hi
            fig["simcse_gap"] = g
            txt = (f"4. *SimCSE is biased by length* (paper, STS-B: {pa:.2f} for length difference ≤ 3 vs {pb:.2f} for > 3, gap {pa - pb:.2f}): "
                   f"here SimCSE scores {lo:.2f} vs {hi:.2f}, gap {g:+.2f}: "
                   + ("**the direction reproduces** (similar-length pairs score higher)" if g > 0 else "**does not reproduce** (no advantage for similar-length pairs)"))
            if E:
                le = _mean([bucket(d, "STSBenchmark", 0) for d in E])
                he = _mean([bucket(d, "STSBenchmark", -1) for d in E])
                if le is not None and he is not None:
                    fig["esimcse_gap"] = le - he
                    txt += (f"; ESimCSE's gap is {le - he:+.2f} ({'smaller' if le - he < g else 'not smaller'} than SimCSE's, "
                            f"by {abs(g - (le - he)):.2f}; paper's claim: repetition reduces this bias)")
                    paired = (((core or {}).get("gaps") or {}).get("tasks", {}).get("STSBenchmark", {})
                              .get("models", {}).get("ESimCSE") or {})
                    if paired.get("diff") is not None and paired.get("diff_ci"):
                        import study_compare

                        if paired.get("significant"):
                            judged = "**a significant narrowing**" if paired["diff"] < 0 else "**a significant widening**"
                        else:
                            judged = "**within noise**: repetition does not measurably narrow the gap"
                        txt += ("; paired over the pairs and the seeds the change in the gap is "
                                f"{study_compare.ci_text(paired, 'diff', 'diff_ci', signed=True)}, "
                                f"p {study_compare.p_text(paired.get('p'))}: {judged}")
            ps = _mean([(d["eval"].get("probe") or {}).get("slope") for d in S])
            pe = _mean([(d["eval"].get("probe") or {}).get("slope") for d in E]) if E else None
            if ps is not None:
                txt += f". Repetition probe slope: SimCSE {ps:+.5f}" + (f", ESimCSE {pe:+.5f}" if pe is not None else "") + " per repeated token"
            lines.append(txt + ".")
    else:
        lines.append("4. *SimCSE is biased by length*: not measured yet.")
    # ---- claim 5: do no harm
    start = st.start("avg")
    dnh = st.group(DO_NO_HARM)
    if start and dnh and avg(start) is not None:
        parts = []
        for d in dnh:
            delta = None if avg(d) is None else avg(d) - avg(start)
            fig[f"dnh_{d['cell']}"] = delta
            text = f"{d['label']} {fmt(avg(d))} ({fmt_signed(delta)}, best dev at step {(d.get('train') or {}).get('best_step')})"
            paired = _paired_verdict(do_no_harm, d["label"])
            parts.append(text + (f": {paired}" if paired else ""))
        lines.append(f"5. *Training with the default pooler does no harm* to the untrained mean-pooling start (test avg "
                     f"{avg(start):.2f}): " + "; ".join(parts) + ".")
    else:
        lines.append("5. *Training with the default pooler does no harm*: not measured yet.")
    return "\n".join(lines), fig


def dev_gap_trend(steps: Sequence[int], diffs: Sequence[float], tol: float = 0.05) -> str:
    """How the mean ESimCSE − SimCSE dev difference moves over the evaluated steps (after step 0)."""
    if diffs[-1] - diffs[0] <= tol:
        return "falling or flat: ESimCSE does not gain on SimCSE as training goes on"
    settled = next(i for i in range(len(diffs)) if all(abs(x - diffs[-1]) <= tol for x in diffs[i:]))
    if len(diffs) - settled >= 3:  # level over the last three evaluations or more
        return (f"it opens by step {steps[settled]} and then stays flat: ESimCSE's lead does not keep "
                "growing over the rest of the epoch")
    return "rising: ESimCSE gains on SimCSE as training goes on"


def hypotheses(st: Study, fig: Dict[str, Any]) -> str:
    """What the numbers point to next, as hypotheses (once ESimCSE and SimCSE can be compared)."""
    if "d_test" not in fig:
        return ""
    out = []
    tr = [d for d in st.trained() if d.get("group") in (CORE, ABLATIONS)]
    if not tr:
        return ""
    steps = st.budget or 0
    at_end = [d for d in tr if d["train"].get("best_step") == d["train"].get("total_steps")]
    early = [d for d in tr if (d["train"].get("best_step") or 0) <= steps / 2]
    gain = _mean([(d["train"].get("best_dev") or 0) - (d["train"].get("start_dev") or 0) for d in tr if d["train"].get("start_dev") is not None])
    if len(at_end) * 2 >= len(tr):
        out.append(f"- **Budget.** In {len(at_end)} of {len(tr)} [CLS] runs the best STS-B dev score came at the last step ({steps}): "
                   f"dev was still rising when the epoch ended (mean gain over the start: {fmt(gain)}). More than one epoch "
                   "(a larger corpus) is the first thing to try.")
    else:
        out.append(f"- **Budget.** Only {len(at_end)} of {len(tr)} [CLS] runs peaked at the last step ({steps}); "
                   f"the mean gain over the start is {fmt(gain)}. More steps alone are unlikely to open the gap.")
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
        trend = dev_gap_trend(common, diffs)
        out.append(f"- **The gap over training.** Mean ESimCSE − SimCSE dev at steps {', '.join(map(str, common))}: "
                   f"{', '.join(f'{x:+.2f}' for x in diffs)} ({trend}).")
    if len(early) * 2 > len(tr):
        out.append(f"- **Learning rate.** {len(early)} of {len(tr)} runs peaked in the first half of the epoch and then fell back: "
                   "a lower learning rate (or a shorter schedule) should keep the early gain.")
    m = (tr[0].get("config") or {}).get("momentum")
    if m is not None and steps:
        txt = (f"- **Momentum.** With momentum {m} and {steps} steps the momentum encoder's weights keep "
               f"{100 * float(m) ** steps:.0f}% of the starting model's ({m}^{steps})")
        q = fig.get("d_dev_momentum queue only")
        if q is not None:
            txt += f"; the queue alone changed dev by {q:+.2f} against SimCSE"
        if fig.get("d_official") is not None:
            txt += f"; the released code's variants changed the test avg by {fig['d_official']:+.2f} against paper-formula ESimCSE"
        out.append(txt + ".")
    ov = fig.get("official_vs_simcse") or {}
    if ov.get("significant") and (ov.get("diff") or 0) > 0 and fig.get("d_official") is not None:
        out.append(f"- **The released code.** Its variants are significantly ahead of SimCSE ({ov['diff']:+.2f} on the "
                   f"test avg) and {fig['d_official']:+.2f} ahead of the paper-formula ESimCSE, from one seed. They change "
                   "several things at once: the repetition length (L = N + 2, an inner [UNK] may repeat), the momentum "
                   "output through the online MLP with the EMA before each update, a momentum encoder that starts from "
                   "random weights, and gradient clipping at 1.0. More seeds of this cell, then one ablation per "
                   "difference, would show whether the lead holds and which change carries it.")
    fell, rose = [], []
    for d in st.group(DO_NO_HARM):
        curve = [v for s_, v in (d.get("train") or {}).get("dev_curve") or [] if v is not None]
        if len(curve) >= 3:
            (fell if all(v < curve[0] for v in curve[1:]) else rose).append((d, curve))
    if fell:
        txt = "- **Mean pooling.** " + "; ".join(
            f"{d['label']}'s STS-B dev fell below its start ({c[0]:.2f}) at every evaluation (lowest {min(c[1:]):.2f}, "
            f"last {c[-1]:.2f}), so the best-dev selection kept the starting model" for d, c in fell)
        if rose:
            txt += "; " + "; ".join(f"{d['label']}'s rose to {max(c):.2f}" for d, c in rose)
        txt += (". On a model already fine-tuned with mean pooling, the repeated tokens (which mean pooling counts "
                "twice) or the dropout-free momentum targets may pull the embeddings away from what it learned; "
                "the two ablations run with `--pooler auto` would tell which.")
        out.append(txt)
    cls0, avg0 = st.start("cls_before_pooler"), st.start("avg")
    if cls0 and avg0:
        best_core = max((_mean([avg(x) for x in st.get(label)]) or -1e9) for label in ("SimCSE", "ESimCSE") if st.get(label)) \
            if any(st.get(lab) for lab in ("SimCSE", "ESimCSE")) else None
        a0, c0 = avg(avg0), avg(cls0)
        txt = (f"- **Pooling.** The untrained model scores {fmt(c0)} (test avg) with [CLS] and {fmt(a0)} with mean pooling, the pooling it "
               "was fine-tuned with")
        if best_core is not None and a0 is not None:
            txt += f"; the best trained [CLS] method reaches {best_core:.2f}" + (" — below the untrained mean-pooling start" if best_core < a0 else "")
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


def plot_dev_curves(st: Study, path: Path) -> Optional[Path]:
    tr = [d for d in st.group(CORE) if d.get("train", {}).get("dev_curve")]
    if not tr:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors: Dict[str, str] = {}
    for d in tr:
        lab = d["label"]
        if lab not in colors:
            colors[lab] = f"C{len(colors) % 10}"
        xs = [s for s, v in d["train"]["dev_curve"] if v is not None]
        ys = [v for s, v in d["train"]["dev_curve"] if v is not None]
        ax.plot(xs, ys, color=colors[lab], alpha=0.75, marker=".", label=lab)
    handles, labels = ax.get_legend_handles_labels()
    seen: Dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=8)
    ax.set_xlabel("optimizer step (batch 64)")
    ax.set_ylabel("STS-B dev Spearman x100")
    ax.set_title("STS-B dev during training, core cells (one line per seed)")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_test(st: Study, path: Path) -> Optional[Path]:
    import numpy as np

    labels = list(st.labels)
    if not labels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 4.8))
    cols = list(TASKS) + ["avg"]
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        docs = st.get(lab)
        ms, ss = [], []
        for t in cols:
            m, s, _ = mean_std([avg(d) if t == "avg" else test_score(d, t) for d in docs])
            ms.append(np.nan if m is None else m)
            ss.append(0.0 if s is None else s)
        xs = np.arange(len(cols)) + (j - (len(labels) - 1) / 2) * width
        ax.bar(xs, ms, width=width, yerr=ss, capsize=2, label=lab)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_xticklabels([SHORT.get(t, t) for t in cols])
    ax.set_ylabel("test Spearman x100 (mean ± std over seeds)")
    lo = np.nanmin([test_score(d, t) or np.nan for lab in labels for d in st.get(lab) for t in TASKS] or [0])
    ax.set_ylim(max(0, (lo if np.isfinite(lo) else 5) - 5), None)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("STS test sets")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def plot_length(st: Study, path: Path) -> Optional[Path]:
    import numpy as np

    labels = [lab for lab, docs in st.labels.items() if docs[0].get("kind") == "train"]
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
    c = tr[0].get("config") or {}
    t = tr[0].get("train") or {}
    corpus = tr[0].get("corpus") or {}
    n = corpus.get("sentences") or (t.get("corpus") or {}).get("sentences")
    sents = (st.budget or 0) * c.get("batch_size", 0) * c.get("grad_accum", 1)
    files = ", ".join(f"`{Path(x['path']).name}`" + (" (last line dropped)" if x.get("drop_last_line") else "")
                      + (f" (column {x['column']})" if x.get("column") else "")
                      for x in ((tr[0].get("settings") or {}).get("corpus") or {}).get("files", []))
    frac = f" = {sents / n:.2f} passes over the {n:,} sentences" if n else ""
    dedupe = " de-duplicated (blank lines and lines already seen skipped)" if corpus.get("dedupe") else ""
    evs = sorted({(d.get("config") or {}).get("eval_steps") for d in tr if (d.get("config") or {}).get("eval_steps")})
    dev_steps = [s for s, _ in t.get("dev_curve") or []]
    bs = next((d["eval"].get("bootstrap") for d in st.docs if d["eval"].get("bootstrap")), None)
    model = c.get("model")
    shell = corpus.get("shell_reproduces")
    return (f"Model `{model}`" + (" (the bundled all-MiniLM-L6-v2: sentence-fine-tuned, 6 layers, 384 dims — not the paper's "
                                  "raw BERT-base)" if model == "default" else "") + ". "
            f"Batch {c.get('batch_size')}, max length {c.get('max_length')}, lr {c.get('lr')} ({c.get('scheduler')} decay), "
            f"temperature {c.get('temperature')}, dup_rate {c.get('dup_rate')}, queue {c.get('queue_ratio')}× batch, "
            f"momentum {c.get('momentum')}, bf16 {c.get('bf16')}; the [CLS] groups train [CLS] + MLP and test raw [CLS], "
            "the do-no-harm group uses `--pooler auto`.\n\n"
            f"Corpus: {files}{dedupe}: **{f'{n:,}' if n else '?'} sentences**" + (f" (sha256 {corpus['sha256'][:12]})" if corpus.get("sha256") else "")
            + (". The recorded `esimcse train` line rebuilds the same file with a shell pipeline (checked byte for byte)" if shell else "")
            + ".\n\n"
            f"**Equal step budget: {st.budget} optimizer steps per trained cell** ({sents:,} sentences{frac}); STS-B dev every "
            f"{'/'.join(map(str, evs))} steps plus step 0 and the last step (steps {', '.join(map(str, dev_steps))}); "
            "the best dev checkpoint is tested. Test: SentEval's 7 tasks (STS12-16 `all` setting, STS-B and SICK-R test), "
            "Spearman x100 of cosine"
            + (f", with {bs.get('level', 0.95):.0%} paired-bootstrap intervals ({bs.get('n')} replicates, seed {bs.get('seed')})" if bs else "")
            + ". mean ± std is over seeds (sample std).")


def status_text(st: Study) -> str:
    lines = []
    missing = st.missing()
    if missing is None:
        lines.append(f"{len(st.docs)} cell(s) (no matrix given: missing cells not known).")
    elif not missing:
        lines.append(f"**All {len(st.docs)} cells of the matrix have finished.**")
    else:
        by: Dict[str, List[str]] = {}
        for g, n in missing:
            by.setdefault(g, []).append(n)
        lines.append(f"**{len(st.docs)} of {len(st.docs) + len(missing)} cells have finished; missing**: "
                     + "; ".join(f"{GROUP_TITLES.get(g, g)}: {', '.join(ns)}" for g, ns in by.items()) + ".")
    short = [d["cell"] for d in st.trained() if (budget_of(d) or 0) < MIN_STEPS]
    if short:
        lines.append(f"Trained cells with fewer than {MIN_STEPS} steps (not the one-epoch study): {', '.join(short)}.")
    for d in st.excluded:
        lines.append(f"`{d['cell']}` left out: its step budget ({budget_of(d)}) differs from the study's ({st.budget}).")
    if st.unknown:
        lines.append(f"Not in the matrix, left out: {', '.join(d['cell'] for d in st.unknown)}.")
    if st.matrix is not None:
        for g in st.matrix.groups:
            if g.unsupported:
                lines.append(f"Group `{g.name}` ({', '.join(c.name for c in g.cells)}): not run — {g.unsupported}.")
    lines.append(code_check(st)[1])
    return "\n\n".join(lines)


def load_reproductions(results_dir) -> List[Dict[str, Any]]:
    """The re-run checks of ``benchmarks/study_reproduce.py`` (``<results>/reproduce/*.json``)."""
    out = []
    for p in sorted((Path(results_dir) / "reproduce").glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and d.get("cell") and d.get("rerun"):
            out.append(d)
    return out


def section_reproduce(repro: Sequence[Dict[str, Any]], st: Optional[Study] = None) -> str:
    if not repro:
        return ("Not checked yet: `python benchmarks/study_reproduce.py CELL` re-runs a cell from its recorded command "
                "and writes `docs/results/reproduce/CELL.json`.")
    rows = ["| cell | recorded command | recorded test avg | re-run test avg | Δ | seeds of its method (test avg) | within the spread "
            "| same code | dev curve | s/step recorded → re-run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in repro:
        sp = d.get("seed_spread") or {}
        seeds = (f"{len(sp.get('avg') or [])} seeds, {fmt(sp.get('min'))}–{fmt(sp.get('max'))}"
                 + (f" (std {fmt(sp.get('std'))})" if sp.get("std") is not None else "")) if sp.get("avg") else "—"
        rc, rr = d["recorded"].get("dev_curve"), d["rerun"].get("dev_curve")
        curve = "—" if not rc or not rr else "identical" if rc == rr else (
            f"max |Δ| {max(abs(a[1] - b[1]) for a, b in zip(rc, rr)):.2f}" if len(rc) == len(rr) else "different steps")
        before = (((st.by_name if st is not None else {}).get(d["cell"]) or {}).get("train") or {}).get("step_seconds_mean")
        cost = f"{fmt(before)} → {fmt(d['rerun'].get('step_seconds_mean'))}"
        rows.append(f"| {d['cell']} | `{d.get('command')}` | {fmt(d['recorded'].get('avg'))} | {fmt(d['rerun'].get('avg'))} | "
                    f"{fmt_signed(d.get('diff_avg'))} | {seeds} | {'**yes**' if d.get('within_spread') else '**no**'} | "
                    f"{'yes' if d.get('same_code') else 'no'} | {curve} | {cost} |")
    return "\n".join(rows) + ("\n\nMade by `python benchmarks/study_reproduce.py CELL`: the recorded command run again "
                              "with its output in a temporary folder (the study's JSON is untouched). The re-run's step "
                              "time is the cell's cost measured again; where it differs from the recorded one, the "
                              "machine was shared during one of the two.")


def build_markdown(st: Study, md_path: Path, plots: Dict[str, Optional[Path]],
                   reports: Optional[Dict[str, Dict[str, Any]]] = None,
                   repro: Sequence[Dict[str, Any]] = ()) -> str:
    """The section's markdown; ``reports``: the ``esimcse compare`` JSONs of :func:`study_compare.run_all`;
    ``repro``: the re-run checks (:func:`load_reproductions`)."""
    import study_compare

    reports = reports or {}
    parts = ["## Results study (ESimCSE vs SimCSE)", ""]
    if not st.docs:
        parts.append("No cell has finished yet.")
        missing = st.missing()
        if missing:
            parts += ["", f"Missing: {', '.join(n for _, n in missing)}."]
        for d in st.excluded:
            parts += ["", f"`{d['cell']}` left out: its step budget ({budget_of(d)}) differs from the study's ({st.budget})."]
        return "\n".join(parts)
    parts += [setup_text(st), "", "### Cells and code version", "", status_text(st), ""]
    c_text, fig = claims(st, reports.get("core"), reports.get("do_no_harm"), reports.get("parts"))
    parts += ["### Which claims reproduce at this scale", "", c_text, ""]
    hyp = hypotheses(st, fig)
    if hyp:
        lead = (f"ESimCSE does not beat SimCSE by ≥ {GOAL:.1f} here." if fig["d_test"] < GOAL
                else f"ESimCSE beats SimCSE by ≥ {GOAL:.1f} here.")
        parts += ["### Hypotheses", "", f"{lead} What the numbers point to next (hypotheses to test, not conclusions):", "",
                  hyp, ""]
    parts += ["### ESimCSE vs SimCSE, paired (`esimcse compare --group`)", "", study_compare.section(st, reports), ""]
    parts += ["### Test Spearman (7 tasks)", "", table_test(st), ""]
    if plots.get("test"):
        parts += [f"![test]({_rel(plots['test'], md_path)})", ""]
    parts += ["Per cell, with 95% bootstrap intervals:", "", table_test_cells(st), ""]
    parts += ["### STS-B dev (model selection)", "", table_dev(st), "", "Dev curves of the core cells:", "", table_dev_curves(st), ""]
    if plots.get("dev"):
        parts += [f"![dev curves]({_rel(plots['dev'], md_path)})", ""]
    parts += ["### Do no harm (`--pooler auto`) against the untrained start", "", table_do_no_harm(st), ""]
    parts += ["### Length bias (STS-B test buckets) and the repetition probe", ""]
    by_group = study_compare.section_length(reports)
    if by_group:
        parts += ["Per model, paired (groups of seeds: the interval includes the seed spread). Gap = the ≤ 3 bucket − "
                  "the > 3 bucket; a smaller gap is less length bias.", "", by_group, "", "Per cell:", ""]
    parts += [table_length(st), ""]
    if plots.get("length"):
        parts += [f"![length]({_rel(plots['length'], md_path)})", ""]
    parts += ["### Training cost", "", table_cost(st), ""]
    parts += ["### Re-running a cell from its recorded command", "", section_reproduce(repro, st), ""]
    parts += ["Each cell's JSON in `docs/results/` holds its full configuration, the corpus (files, count, sha256), the command "
              "that reproduces it (`command`, plus the equivalent `esimcse train` / `esimcse length-analysis` lines in "
              "`cli_commands`), the dev curve, per-subset and per-bucket scores with intervals, the probe, timings, package "
              "versions and the code version; `docs/results/scores/<cell>.npz` holds its per-pair test cosines. To check a "
              "cell, run its `command` (it rewrites that JSON) and compare with `git diff docs/results/<cell>.json`. "
              "`docs/results/archive/` holds the superseded 32-step study."]
    return "\n".join(parts)


def write_report(results_dir, matrix, md_path: Path, plots_dir: Path, section: str = "study",
                 command: Optional[str] = None) -> List[Path]:
    """Run (or reuse) the comparisons, regenerate the plots and the section; returns the plot and comparison files."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import update_section

    import study_compare

    st = Study(load_results(results_dir), matrix)
    reports = study_compare.run_all(st, matrix, results_dir)
    prefix = "study" if section == "study" else section
    plots = {
        "test": plot_test(st, plots_dir / f"{prefix}_test.png"),
        "dev": plot_dev_curves(st, plots_dir / f"{prefix}_dev_curves.png"),
        "length": plot_length(st, plots_dir / f"{prefix}_length.png"),
    }
    md = build_markdown(st, md_path, plots, reports, load_reproductions(results_dir))
    if section != "study":
        md = md.replace("## Results study (ESimCSE vs SimCSE)", f"## Results study: {section}", 1)
    update_section(section, md, command, path=md_path)
    return [p for p in plots.values() if p is not None] + study_compare.files_of(results_dir, reports)
