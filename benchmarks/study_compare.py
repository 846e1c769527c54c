"""The study's paired comparisons: ``esimcse compare`` over the cells' saved per-pair test cosines.

Each comparison is one ``esimcse compare`` run (a subprocess of this Python, ``-m esimcse_cli compare``) over
``docs/results/scores/<cell>.npz``, with the study's own data, length buckets, bootstrap size, level and seed;
compare writes its JSON to ``docs/results/compare/<name>.json`` (every interval and p-value is there), and this
module adds what reproduces it (``study.command``, ``study.inputs``: each scores file's sha256). A comparison whose
command and inputs are unchanged is not run again. Every entry is a ``--group`` (one seed or several), so that it
carries the method's label; a group of one seed is that cell's own bootstrap, a group of several resamples the
seeds too, so its interval includes the seed spread.

    core        SimCSE's seeds (the baseline) against ESimCSE's (the paper's question)
    parts       SimCSE's seeds against each ablation and the released-code cell
    do_no_harm  the untrained mean-pooled start against the --pooler auto cells
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from _results import file_sha256

COMPARE_DIR = "compare"  # under the results folder (not read as cells: only the folder's own *.json are)
NAMES = ("core", "parts", "do_no_harm")


def _scores(doc: Dict[str, Any], results_dir: Path) -> Optional[Path]:
    rel = (doc.get("scores") or {}).get("path")
    p = results_dir / rel if rel else None
    return p if p is not None and p.is_file() else None


def plan(st, results_dir: Path) -> Dict[str, List[Tuple[str, List[Path]]]]:
    """``{name: [(label, scores files), ...]}`` of the comparisons whose cells have finished (baseline first).

    ``st`` is a :class:`study_report.Study`. A comparison needs its baseline and at least one other entry; an
    entry whose cells lack a scores file is left out.
    """
    def entry(label: str, docs) -> Optional[Tuple[str, List[Path]]]:
        files = [_scores(d, results_dir) for d in docs]
        files = [f for f in files if f is not None]
        return (label, files) if files else None

    out: Dict[str, List[Tuple[str, List[Path]]]] = {}
    simcse = entry("SimCSE", st.get("SimCSE"))
    core = [simcse, entry("ESimCSE", st.get("ESimCSE"))]
    parts = [simcse] + [entry(d["label"], [d]) for g in ("ablations", "official") for d in st.group(g)]
    start = st.start("avg")
    dnh = [entry(start["label"], [start]) if start else None] + [entry(d["label"], [d]) for d in st.group("do_no_harm")]
    for name, entries in (("core", core), ("parts", parts), ("do_no_harm", dnh)):
        if entries[0] is None:
            continue
        rest = [e for e in entries[1:] if e is not None]
        if rest:
            out[name] = [entries[0]] + rest
    return out


def command(entries: Sequence[Tuple[str, Sequence[Path]]], matrix, json_path: Path) -> List[str]:
    """The ``esimcse compare`` arguments (after ``esimcse``) of one comparison, paths relative to the repository."""
    ev = matrix.eval
    args = ["compare", str(matrix.data_dir)]
    for label, files in entries:
        args += ["--group", f"{label}=" + ",".join(_rel(f) for f in files)]
    args += ["--bucket-by-length", "--buckets", str(ev["buckets"]), "--length-unit", str(ev["length_unit"]),
             "--bootstrap", str(ev["bootstrap"]), "--ci", str(ev["ci"]), "--seed", str(ev["probe_seed"]),
             "--json", _rel(json_path)]
    return args


def _rel(p: Path) -> str:
    try:
        return Path(os.path.relpath(Path(p).resolve(), Path.cwd())).as_posix()
    except ValueError:
        return Path(p).as_posix()


def shell_line(args: Sequence[str]) -> str:
    return "esimcse " + " ".join(shlex.quote(a) for a in args)


def run_all(st, matrix, results_dir, echo=print) -> Dict[str, Dict[str, Any]]:
    """Run (or reuse) every comparison :func:`plan` finds; returns ``{name: compare JSON}``. A comparison that
    fails is reported by ``echo`` and left out (the report says it is missing), the others go on."""
    results_dir = Path(results_dir)
    out_dir = results_dir / COMPARE_DIR
    done: Dict[str, Dict[str, Any]] = {}
    for name, entries in plan(st, results_dir).items():
        path = out_dir / f"{name}.json"
        args = command(entries, matrix, path)
        inputs = {_rel(f): file_sha256(f) for _, files in entries for f in files}
        old = read(path)
        if old and (old.get("study") or {}).get("command") == shell_line(args) and old["study"].get("inputs") == inputs:
            done[name] = old
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "esimcse_cli", *args], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"})
        rep = read(path) if proc.returncode == 0 else None
        if rep is None:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            echo(f"compare {name} failed (exit {proc.returncode}): {err[-1] if err else '?'}")
            path.unlink(missing_ok=True)  # an older comparison of other inputs must not pass for this one
            continue
        rep["study"] = {"command": shell_line(args), "inputs": inputs}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        done[name] = rep
    return done


def read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("command") == "compare" else None


def files_of(results_dir, reports: Dict[str, Dict[str, Any]]) -> List[Path]:
    """The JSON files of ``reports`` (what :func:`run_all` returned), to commit with the report."""
    d = Path(results_dir) / COMPARE_DIR
    return [d / f"{n}.json" for n in NAMES if n in reports]


# ============================================================================== the report's text
def _paper_gain() -> float:
    """The paper's ESimCSE - SimCSE on the 7-task average (``study_report.PAPER``: 78.27 - 76.25, BERT-base)."""
    from study_report import PAPER

    return round(PAPER["avg"]["ESimCSE"] - PAPER["avg"]["SimCSE"], 2)


def _f(x: Optional[float], nd: int = 2, signed: bool = False) -> str:
    from study_report import fmt, fmt_signed

    return fmt_signed(x, nd) if signed else fmt(x, nd)


def _short(task: str) -> str:
    from study_report import SHORT

    return SHORT.get(task, task)


def ci_text(cell: Dict[str, Any], key: str = "spearman", ci: str = "ci", signed: bool = False) -> str:
    """``cell[key] [lo, hi]`` with ``cell[ci]`` as the interval (signed: with + on positives)."""
    v, c = cell.get(key), cell.get(ci)
    if v is None:
        return "—"
    if c and c[0] is not None and c[1] is not None:
        return f"{_f(v, signed=signed)} [{_f(c[0], signed=signed)}, {_f(c[1], signed=signed)}]"
    return _f(v, signed=signed)


def p_text(p: Optional[float]) -> str:
    """A p-value as the report prints it: ``< 0.001`` or three decimals (``—`` when missing)."""
    return "—" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p(cell: Dict[str, Any]) -> str:
    p = cell.get("p")
    return p_text(p) + (" *" if p is not None and cell.get("significant") else "")


def _heads(rep: Dict[str, Any]) -> List[Tuple[str, str]]:
    """``(label, heading)`` of each entry: the label and its seed count."""
    out = []
    for m in rep["models"]:
        k = len(m.get("members") or [m])
        out.append((m["label"], f"{m['label']} ({k} seed{'s' if k > 1 else ''})"))
    return out


def table_scores(rep: Dict[str, Any]) -> str:
    """Per task and the average: each entry's score [interval], each later entry's Δ [interval] and p."""
    heads = _heads(rep)
    rest = heads[1:]
    cols = ["task", "pairs", *[h for _, h in heads]] + [x for lab, _ in rest for x in (f"Δ {lab} [95% CI]", "p")]
    rows = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    items = [(_short(t), str(e["pairs"]), e["models"]) for t, e in rep["tasks"].items()]
    items.append(("**avg**", str(sum(e["pairs"] for e in rep["tasks"].values())), rep["avg"]["models"]))
    for task, pairs, cells in items:
        vals = [ci_text(cells[lab]) for lab, _ in heads]
        for lab, _ in rest:
            vals += [ci_text(cells[lab], "diff", "diff_ci", signed=True), _p(cells[lab])]
        rows.append(f"| {task} | {pairs} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def table_gaps(rep: Dict[str, Any], task: str = "STSBenchmark") -> str:
    """Each entry's ``task`` score per length bucket, its gap (first − last bucket) and the mean gap over the tasks,
    each with its interval, and each later entry's gap minus the baseline's."""
    gaps = rep.get("gaps")
    te = rep["tasks"].get(task)
    if not gaps or not te or not te.get("buckets"):
        return ""
    b0, b1 = te["buckets"][0], te["buckets"][-1]
    short = _short(task)
    cols = ["model", f"{short} {b0['name']} (pairs)", f"{short} {b1['name']} (pairs)", f"{short} gap [95% CI]",
            f"Δ {short} gap vs {rep['baseline']}, p", "mean gap over the tasks [95% CI]", f"Δ mean gap vs {rep['baseline']}, p"]
    rows = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for lab, head in _heads(rep):
        g = gaps["tasks"][task]["models"][lab]
        a = gaps["avg"]["models"][lab]
        dg = "—" if lab == rep["baseline"] or g.get("diff") is None else f"{ci_text(g, 'diff', 'diff_ci', signed=True)}, p {_p(g)}"
        da = "—" if lab == rep["baseline"] or a.get("diff") is None else f"{ci_text(a, 'diff', 'diff_ci', signed=True)}, p {_p(a)}"
        rows.append(f"| {head} | {ci_text(b0['models'][lab])} ({b0['models'][lab]['pairs']}) | {ci_text(b1['models'][lab])} "
                    f"({b1['models'][lab]['pairs']}) | {ci_text(g, 'gap', signed=True)} | {dg} | {ci_text(a, 'gap', signed=True)} | {da} |")
    return "\n".join(rows)


def verdict(rep: Dict[str, Any]) -> str:
    """One sentence: does ESimCSE's gain over SimCSE reproduce, and at what size against the paper's +2.02."""
    heads = dict(_heads(rep))
    cell = rep["avg"]["models"].get("ESimCSE") or {}
    d, ci = cell.get("diff"), cell.get("diff_ci")
    if d is None:
        return "The 7-task average difference is undefined."
    paper = _paper_gain()
    size = f"{d / paper:.0%} of the paper's +{paper:.2f}"
    inside = ci is not None and ci[0] <= paper <= ci[1]
    where = (f"an interval that {'contains' if inside else 'excludes'} the paper's +{paper:.2f}" if ci else "no interval")
    what = f"{heads.get('ESimCSE')} against {heads.get('SimCSE')}: Δ {d:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}], p {_p(cell)}" if ci \
        else f"Δ {d:+.2f}"
    if cell.get("significant") and d > 0:
        head = "**ESimCSE's gain reproduces in direction**"
    elif cell.get("significant"):
        head = "**It does not reproduce: ESimCSE is significantly below SimCSE**"
    else:
        head = "**ESimCSE's gain does not reproduce at this scale** (not significant)"
    return (f"{head}: on the 7-task average, {what} (paired bootstrap over the test pairs and the seeds), "
            f"{size}, with {where}.")


def length_sentence(rep: Dict[str, Any], task: str = "STSBenchmark") -> str:
    """Does repetition narrow the gap? (ESimCSE's gap minus SimCSE's, on ``task`` and the mean over the tasks)."""
    gaps = rep.get("gaps")
    if not gaps or "ESimCSE" not in gaps["avg"]["models"]:
        return ""
    g = gaps["tasks"][task]["models"]["ESimCSE"]
    a = gaps["avg"]["models"]["ESimCSE"]
    s0 = gaps["tasks"][task]["models"]["SimCSE"].get("gap")
    parts = []
    for name, c in ((_short(task), g), ("the mean over the 7 tasks", a)):
        if c.get("diff") is None:
            continue
        if c.get("significant"):
            word = "narrows" if c["diff"] < 0 else "widens"
            parts.append(f"on {name} repetition **{word}** the gap (Δ gap {ci_text(c, 'diff', 'diff_ci', signed=True)}, p {_p(c)})")
        else:
            parts.append(f"on {name} the change in the gap is within noise (Δ gap {ci_text(c, 'diff', 'diff_ci', signed=True)}, p {_p(c)})")
    if not parts:
        return ""
    lead = f"SimCSE's own {_short(task)} gap is {_f(s0, signed=True)}; " if s0 is not None else ""
    text = lead + "; ".join(parts)
    return f"**Does repetition narrow the gap?** {text[0].upper()}{text[1:]}."


def section(st, reports: Dict[str, Dict[str, Any]]) -> str:
    """The report's paired-comparison section (``reports`` from :func:`run_all`)."""
    out: List[str] = []
    n_bs = next((r["bootstrap"] for r in reports.values()), None)
    if n_bs:
        out.append(f"Every figure here is from `esimcse compare` over the cells' saved per-pair test cosines "
                   f"(`docs/results/scores/`), paired bootstrap with {n_bs['n']} replicates (seed {n_bs['seed']}, "
                   f"{n_bs['strata']}); an entry of several seeds also resamples its seeds, so its interval includes the "
                   f"seed spread. Δ is each entry minus the first; p is two-sided; * marks p < {1 - n_bs['level']:.2g}. "
                   f"The JSON of each comparison, with every interval and p-value, is `docs/results/{COMPARE_DIR}/<name>.json`.")
    core = reports.get("core")
    if core:
        out += ["", "**ESimCSE against SimCSE (core, [CLS])**", "", verdict(core), "", table_scores(core), "",
                f"Command: `{core['study']['command']}`"]
    else:
        out += ["", "**ESimCSE against SimCSE**: not compared yet (the core cells are not finished)."]
    for name, title in (("parts", "Each part, and the released code's formulas, against SimCSE's seeds"),
                        ("do_no_harm", "Do no harm: the `--pooler auto` cells against the untrained mean-pooled start")):
        rep = reports.get(name)
        if rep:
            out += ["", f"**{title}**", "", table_scores(rep), "", f"Command: `{rep['study']['command']}`"]
    return "\n".join(out)


def section_length(reports: Dict[str, Dict[str, Any]]) -> str:
    """The length claim from the comparisons: per entry the STS-B buckets, the gap and the mean gap, with intervals."""
    out = []
    for name in NAMES:
        rep = reports.get(name)
        t = table_gaps(rep) if rep else ""
        if not t:
            continue
        out += [f"From `compare/{name}.json`:", "", t, ""]
        if name == "core":
            s = length_sentence(rep)
            if s:
                out += [s, ""]
    return "\n".join(out).rstrip()
