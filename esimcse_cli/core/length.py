"""The paper's length-difference study, as a report (``esimcse length-analysis``).

    length_analysis (the command's one call): check_length_args -> length_report (the tasks, the probe's
      sentences, each model scored, the intervals) -> --json, --plot -> (report, the paths written)

The files are written before the report is returned: the caller renders the tables from it, and a stdout
that fails (a full disk behind ``> file``) must not lose them. For each model the report holds:

1. STS Spearman within length-difference buckets, per task (``evaluate`` with ``buckets``);
2. the gap between the first and the last bucket (the paper's measure of length bias:
   a model that leans on length does better on pairs of similar length);
3. a direct probe of the bias: a sample of sentences and their word-repeated copies (the training-style
   positive pairs ESimCSE builds with ``augment.augment_ids(..., "repetition", ...)`` at the model
   tokenizer's sub-word level). We report the mean cosine similarity of these pairs and the least-squares slope of cosine
   against the number of inserted tokens (with the mean per count). A model without length bias keeps
   the cosine flat as more tokens are repeated; a negative slope means that length alone pushes the
   "same meaning" pair apart.

The original side of each probe pair is the detokenised original tokens, so that the two texts differ
only by the repeated tokens (and not, say, by lower-casing). A per-count mean of fewer than
:data:`MIN_PROBE_POINT` sentences is marked ``"sparse"`` (hollow and unconnected in the plot): one long
sentence alone would otherwise make the curve jump.

Every score, bucket and gap gets a paired bootstrap interval (``stats``, over the cached cosines: one
resample of each task's pairs per replicate, shared by all models), and each model after the first gets
its gap's difference from the first model's, with that difference's interval and p-value.
The plot needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import os
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from esimcse_cli.core import augment, evaluate, stats, sts
from esimcse_cli.core.defaults import DEFAULT_PROBE_SENTENCES, DEFAULT_SEED
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.evaluate import ProgressFactory, TaskScores
from esimcse_cli.core.models import DEFAULT_MODEL
from esimcse_cli.core.sts import Pair

MIN_PROBE_POINT = 10  # a per-count mean of fewer probe sentences is "sparse": marked, not joined into the curve
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_length_args(
    split: str,
    length_unit: str,
    batch_size: int,
    *,
    probe_sentences: int = DEFAULT_PROBE_SENTENCES,
    variant: str = "paper",
    dup_rate: float = augment.DEFAULT_DUP_RATE,
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    buckets: Optional[str] = None,
    json_path: Optional[str] = None,
    plot: Optional[str] = None,
    models: Sequence[str] = (),
) -> Tuple[int, float, str]:
    """``length-analysis``'s checks, before any data is read or any model loaded: ``(replicates, level, bucket spec)``.

    Every model (the bundled one when none is given) is checked here, so that a bad second model is refused
    before the first one has run.
    """
    from esimcse_cli.core.atomic import check_output_path
    from esimcse_cli.core.models import check_model

    evaluate.check_eval_args(split, "all", length_unit, batch_size)
    if probe_sentences < 0:
        raise ConfigError(f"--probe-sentences {probe_sentences}: must be 0 or more")
    augment.check_options(variant=variant, dup_rate=dup_rate)
    n, level = stats.check_options(bootstrap, ci)
    spec = buckets or evaluate.DEFAULT_BUCKETS
    evaluate.parse_buckets(spec)
    for path in (json_path, plot):
        if path:
            check_output_path(path)
    if plot:
        plot_format(plot)
    for model in list(models) or [DEFAULT_MODEL]:
        check_model(model)
    return n, level, spec


# ------------------------------------------------------------------------------------------------
# The repetition probe
# ------------------------------------------------------------------------------------------------
def sample_sentences(sentences: Sequence[str], n: int, seed: int = DEFAULT_SEED) -> List[str]:
    """``n`` distinct non-empty sentences, sampled without replacement with a seeded generator."""
    if n < 0:
        raise ConfigError(f"--probe-sentences {n}: must be 0 or more")
    pool = list(dict.fromkeys(s for s in sentences if s.strip()))
    if n >= len(pool):
        return pool
    return random.Random(seed).sample(pool, n)


def read_probe_corpus(path: Union[str, os.PathLike]) -> List[str]:
    """Non-blank lines of a UTF-8 text file (one sentence per line)."""
    from esimcse_cli.core.corpus import iter_lines

    lines = [ln.strip() for _, ln in iter_lines(str(path))]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"{path}: no sentences (the file is empty or blank)")
    return lines


def make_repetition_pairs(tokenizer, sentences: Sequence[str], dup_rate: float = augment.DEFAULT_DUP_RATE, variant: str = "paper", seed: int = DEFAULT_SEED):
    """(originals, copies, inserted counts): sub-word repetition, detokenised with the tokenizer."""
    augment.check_options(variant=variant, dup_rate=dup_rate)
    rng = random.Random(seed)
    originals, copies, inserted = [], [], []
    for s in sentences:
        tokens = tokenizer.tokenize(s)
        if not tokens:
            continue
        new, _ = augment.augment_ids(tokens, "repetition", dup_rate, variant, rng)
        originals.append(tokenizer.convert_tokens_to_string(tokens))
        copies.append(tokenizer.convert_tokens_to_string(new))
        inserted.append(len(new) - len(tokens))
    return originals, copies, np.asarray(inserted, dtype=np.int64)


def fit_slope(x: np.ndarray, y: np.ndarray):
    """Least-squares line ``y = intercept + slope * x``; ``(None, None)`` when ``x`` is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]):
        return None, None
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return slope, float(ym - slope * xm)


def repetition_probe(
    encoder,
    sentences: Sequence[str],
    dup_rate: float = augment.DEFAULT_DUP_RATE,
    variant: str = "paper",
    seed: int = DEFAULT_SEED,
    batch_size: int = 64,
    progress: Optional[Callable[[int], None]] = None,
) -> dict:
    """Mean cosine of (sentence, word-repeated copy) pairs and its slope against inserted tokens."""
    originals, copies, inserted = make_repetition_pairs(encoder.tokenizer, sentences, dup_rate, variant, seed)
    out = {"sentences": len(originals), "dup_rate": dup_rate, "variant": variant, "seed": seed}
    if not originals:
        out.update({"mean_cosine": None, "mean_inserted": None, "slope": None, "intercept": None, "per_count": [],
                    "note": "no sentences to probe"})
        return out
    emb = np.asarray(encoder.encode(list(originals) + list(copies), batch_size=batch_size, normalize=False, progress=progress))
    n = len(originals)
    cos = evaluate.cosine_rows(emb, np.arange(n), np.arange(n, 2 * n))
    slope, intercept = fit_slope(inserted, cos)
    per_count = []
    for k in np.unique(inserted):
        m = inserted == k
        point = {"inserted": int(k), "pairs": int(m.sum()), "mean_cosine": round(float(cos[m].mean()), 6)}
        if point["pairs"] < MIN_PROBE_POINT:
            point["sparse"] = True
        per_count.append(point)
    out.update({
        "mean_cosine": round(float(cos.mean()), 6),
        "mean_inserted": round(float(inserted.mean()), 4),
        "slope": None if slope is None else round(slope, 6),
        "intercept": None if intercept is None else round(intercept, 6),
        "per_count": per_count,
    })
    if slope is None:
        out["note"] = "slope undefined: every copy has the same number of inserted tokens"
    return out


# ------------------------------------------------------------------------------------------------
# Per model and the report
# ------------------------------------------------------------------------------------------------
def bucket_gaps(result: dict) -> Dict[str, Optional[float]]:
    """First bucket's Spearman minus the last bucket's, per task (None where either is undefined)."""
    gaps = {}
    for task, entry in result["tasks"].items():
        bs = entry.get("buckets") or []
        if len(bs) < 2 or bs[0]["spearman"] is None or bs[-1]["spearman"] is None:
            gaps[task] = None
        else:
            gaps[task] = round(bs[0]["spearman"] - bs[-1]["spearman"], 4)
    return gaps


def score_model(
    encoder,
    task_pairs: Dict[str, Sequence[Pair]],
    probe_texts: Sequence[str] = (),
    split: str = "test",
    buckets: Optional[str] = None,
    length_unit: str = "words",
    batch_size: int = 64,
    dup_rate: float = augment.DEFAULT_DUP_RATE,
    variant: str = "paper",
    seed: int = DEFAULT_SEED,
    label: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Tuple[dict, Dict[str, TaskScores]]:
    """Bucketed STS results, bucket gaps and the repetition probe for one model, and the scored tasks
    (the cached cosines :func:`add_intervals` resamples)."""
    bucket_list = evaluate.parse_buckets(buckets if buckets else evaluate.DEFAULT_BUCKETS)
    scores, info = evaluate.score_tasks(encoder, task_pairs, length_unit, batch_size, progress)
    res = {"tasks": evaluate.summarise(scores, split, "all", bucket_list)}
    scored = [e["spearman"] for e in res["tasks"].values() if e["spearman"] is not None]
    gaps = bucket_gaps(res)
    known = [g for g in gaps.values() if g is not None]
    name = getattr(encoder, "name", "") or ""
    entry = {
        "model": label if label is not None else name,
        "name": name,
        "pooling": getattr(encoder, "pooling", None),
        "max_length": getattr(encoder, "max_length", None),
        "tasks": res["tasks"],
        "avg": round(sum(scored) / len(scored), 4) if scored else None,
        "gap": gaps,
        "avg_gap": round(sum(known) / len(known), 4) if known else None,
        "sentences": {"total": info["total"], "distinct": info["distinct"]},
    }
    if probe_texts:
        entry["probe"] = repetition_probe(encoder, probe_texts, dup_rate, variant, seed, batch_size, progress=progress)
    return entry, scores


def analyze_model(*args, **kwargs) -> dict:
    """:func:`score_model` without the scored tasks (same arguments)."""
    return score_model(*args, **kwargs)[0]


def add_intervals(report: dict, scores: Sequence[Dict[str, TaskScores]], n: int = stats.DEFAULT_REPLICATES,
                  level: float = stats.DEFAULT_LEVEL, seed: int = DEFAULT_SEED) -> dict:
    """Paired bootstrap intervals for every model of ``report`` (``scores`` in the same order).

    Adds ``ci`` to each task and bucket, ``avg_ci``, ``gap_ci`` (per task) and ``avg_gap_ci``; for each model
    after the first, ``gap_diff`` (per task) and ``avg_gap_diff``: ``{"diff", "diff_ci", "p", "significant"}``
    of its gap minus the first model's, on the same resamples. And the ``bootstrap`` block.
    """
    stats.check_options(n, level)
    bucket_list = [evaluate.Bucket(b["name"], b["min"], b["max"]) for b in report["buckets"]]
    res = stats.bootstrap([stats.Entry(str(m["model"]), [sc]) for m, sc in zip(report["models"], scores)],
                          "all", bucket_list, n, seed)
    gaps = []
    for st in res:
        if len(bucket_list) < 2:  # no gap with one bucket
            g = {t: stats.Estimate(None, np.full(n, np.nan)) for t in st.buckets}
        else:
            g = {t: stats.minus(b[0], b[-1]) for t, b in st.buckets.items()}
        gaps.append((g, stats.mean_estimate(list(g.values()), n)))
    for i, (m, st) in enumerate(zip(report["models"], res)):
        for t, e in m["tasks"].items():
            e["ci"] = stats.interval(st.tasks[t], level) if e["spearman"] is not None else None
            for b, est in zip(e["buckets"], st.buckets[t]):
                b["ci"] = stats.interval(est, level) if b["spearman"] is not None else None
        m["avg_ci"] = stats.interval(st.avg, level) if m["avg"] is not None else None
        g, avg_g = gaps[i]
        m["gap_ci"] = {t: stats.interval(est, level) if m["gap"].get(t) is not None else None for t, est in g.items()}
        m["avg_gap_ci"] = stats.interval(avg_g, level) if m["avg_gap"] is not None else None
        if i:
            g0, avg_g0 = gaps[0]
            m["gap_diff"] = {t: stats.paired(est, g0[t], level) for t, est in g.items()}
            m["avg_gap_diff"] = stats.paired(avg_g, avg_g0, level)
    report["bootstrap"] = stats.setup(n, level, seed)
    return report


def probe_work(task_pairs, probe_texts) -> int:
    """Sentences each model encodes (for a progress total): distinct STS sentences + 2 per probe text."""
    return len(evaluate.unique_sentences(task_pairs)) + 2 * len(probe_texts)


def build_report(models: List[dict], split: str, buckets: Optional[str], length_unit: str, probe: Optional[dict]) -> dict:
    spec = buckets if buckets else evaluate.DEFAULT_BUCKETS
    return {
        "schema": evaluate.SCHEMA_VERSION,
        "split": split,
        "length_unit": length_unit,
        "buckets": [b.as_dict() for b in evaluate.parse_buckets(spec)],
        "probe": probe,
        "models": models,
    }


def length_analysis(
    data: Optional[str] = None,
    data_dir: Optional[str] = None,
    tasks: Optional[str] = None,
    split: str = "test",
    *,
    models: Sequence[str] = (),
    buckets: Optional[str] = None,
    length_unit: str = "words",
    batch_size: int = 64,
    probe_sentences: int = DEFAULT_PROBE_SENTENCES,
    probe_corpus: Optional[str] = None,
    dup_rate: float = augment.DEFAULT_DUP_RATE,
    variant: str = "paper",
    seed: int = DEFAULT_SEED,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device: str = "auto",
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    json_path: Optional[str] = None,
    plot: Optional[str] = None,
    trust_remote_code: bool = False,
    progress: Optional[ProgressFactory] = None,
) -> Tuple[dict, List[str]]:
    """The whole ``esimcse length-analysis``: the checks, the report, ``--json`` and ``--plot`` written:
    ``(report, the paths written, in order)``.

    ``data`` / ``data_dir``: ``DATA_DIR`` and ``--data-dir`` (neither: the data folder is looked for).
    ``models``: the ``--model`` specs, in order (none: the bundled model). ``bootstrap`` / ``ci``: as given
    (None: the defaults). ``progress(label, total)`` gives each model's bar.
    """
    n, level, spec = check_length_args(
        split, length_unit, batch_size, probe_sentences=probe_sentences, variant=variant, dup_rate=dup_rate, bootstrap=bootstrap,
        ci=ci, buckets=buckets, json_path=json_path, plot=plot, models=models)
    report = length_report(
        list(models), sts.given_data_dir(data, data_dir), tasks, split=split, buckets=spec, length_unit=length_unit,
        batch_size=batch_size, probe_sentences=probe_sentences, probe_corpus=probe_corpus, dup_rate=dup_rate, variant=variant,
        seed=seed, pooling=pooling, max_length=max_length, device=device, bootstrap=n, level=level,
        trust_remote_code=trust_remote_code, progress=progress)
    written = []
    if json_path:
        evaluate.write_json(json_path, report)
        written.append(str(json_path))
    if plot:
        plot_report(report, plot)
        written.append(str(plot))
    return report, written


def length_report(
    model_specs: Sequence[Optional[str]],
    data_dir,
    tasks=None,
    split: str = "test",
    buckets: Optional[str] = None,
    length_unit: str = "words",
    batch_size: int = 64,
    probe_sentences: int = DEFAULT_PROBE_SENTENCES,
    probe_corpus=None,
    dup_rate: float = augment.DEFAULT_DUP_RATE,
    variant: str = "paper",
    seed: int = DEFAULT_SEED,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device: str = "auto",
    bootstrap: int = stats.DEFAULT_REPLICATES,
    level: float = stats.DEFAULT_LEVEL,
    trust_remote_code: bool = False,
    progress: Optional[ProgressFactory] = None,
) -> dict:
    """The ``length-analysis`` report: load the tasks, choose the probe, score each model, add the intervals.

    ``data_dir`` ``None``: looked for (:func:`~esimcse_cli.core.sts.find_data_dir`). ``bootstrap`` replicates
    (seeded by ``seed``) give the intervals and the paired gap differences. ``progress(label, total)`` gives
    each model's bar.
    """
    import contextlib

    from esimcse_cli.core.models import load_encoder

    evaluate.parse_buckets(buckets)  # fail early on a bad spec
    stats.check_options(bootstrap, level)
    task_pairs = evaluate.load_tasks(data_dir, tasks, split)
    probe_texts, probe_meta = choose_probe_texts(task_pairs, probe_sentences, probe_corpus, seed)
    models, scores = [], []
    for spec in (list(model_specs) or [None]):
        label = spec or DEFAULT_MODEL
        enc = load_encoder(spec, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
        bar = progress(label, probe_work(task_pairs, probe_texts)) if progress is not None else contextlib.nullcontext(None)
        with bar as advance:
            entry, sc = score_model(enc, task_pairs, probe_texts, split, buckets, length_unit, batch_size,
                                    dup_rate, variant, seed, label=label, progress=advance)
        models.append(entry)
        scores.append(sc)
        del enc
    if probe_meta is not None:
        probe_meta.update({"dup_rate": dup_rate, "variant": variant, "level": "subword"})
    return add_intervals(build_report(models, split, buckets, length_unit, probe_meta), scores, bootstrap, level, seed)


def choose_probe_texts(task_pairs, n: int, corpus=None, seed: int = DEFAULT_SEED):
    """The probe's sentences and a description of where they came from (``(texts, None)`` when off)."""
    if n <= 0:
        if n < 0:
            raise ConfigError(f"--probe-sentences {n}: must be 0 or more")
        return [], None
    if corpus is not None:
        pool, source = read_probe_corpus(corpus), str(corpus)
    else:
        pool, source = evaluate.unique_sentences(task_pairs), "sts"
    texts = sample_sentences(pool, n, seed)
    return texts, {"source": source, "sentences": len(texts), "seed": seed}


# ------------------------------------------------------------------------------------------------
# Plot
# ------------------------------------------------------------------------------------------------
def plot_format(path: Union[str, os.PathLike]) -> str:
    """The image format of ``--plot`` (by its suffix; none: png), once matplotlib is known to be there."""
    from pathlib import Path

    ext = Path(path).suffix.lower().lstrip(".") or "png"
    if ext not in PLOT_FORMATS:
        raise ConfigError(f"--plot {path}: use a .png, .pdf, .svg or .jpg file name")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'esimcse-cli[plot]'") from None
    return ext


def plot_report(report: dict, path: Union[str, os.PathLike]) -> None:
    """Grouped bar chart of Spearman per bucket, per model (one panel per task), plus the probe curve."""
    from esimcse_cli.core.atomic import atomic_path, check_output_path

    check_output_path(path)
    ext = plot_format(path)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models = report["models"]
    tasks = list(models[0]["tasks"]) if models else []
    has_probe = any(m.get("probe") and m["probe"].get("per_count") for m in models)
    panels = len(tasks) + (1 if has_probe else 0)
    cols = min(4, max(1, panels))
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    names = [b["name"] for b in report["buckets"]]
    width = 0.8 / max(1, len(models))
    level = (report.get("bootstrap") or {}).get("level")
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for j, m in enumerate(models):
            bs = m["tasks"][task].get("buckets", [])
            vals = np.array([b["spearman"] if b["spearman"] is not None else np.nan for b in bs], dtype=float)
            xs = np.arange(len(vals)) + (j - (len(models) - 1) / 2) * width
            bars = ax.bar(xs, vals, width=width, label=str(m["model"]))
            with_ci = [(x, v, b["ci"]) for x, v, b in zip(xs, vals, bs) if b.get("ci") and np.isfinite(v)]
            if with_ci:  # the bootstrap interval as an error bar (none where the bucket has no score)
                ax.errorbar([x for x, _, _ in with_ci], [v for _, v, _ in with_ci],
                            yerr=[[v - c[0] for _, v, c in with_ci], [c[1] - v for _, v, c in with_ci]],
                            fmt="none", ecolor="black", elinewidth=1, capsize=3)
            for x, b in zip(xs, bs):  # each bucket's pair count, under its bar
                ax.annotate(f"{b['pairs']}", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, -3), textcoords="offset points",
                            ha="center", va="top", fontsize=7, color=bars.patches[0].get_facecolor() if bars.patches else None)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names)
        ax.set_xlim(-0.5, len(names) - 0.5)  # every bucket, scored or not
        ax.tick_params(axis="x", pad=12)
        ax.set_title(task)
        ax.set_xlabel(f"|len(a) - len(b)| ({report['length_unit']})")
        ax.set_ylabel("Spearman x100")
    if has_probe:
        ax = axes[len(tasks) // cols][len(tasks) % cols]
        for m in models:
            pc = (m.get("probe") or {}).get("per_count") or []
            dense = [p for p in pc if p["pairs"] >= MIN_PROBE_POINT]
            sparse = [p for p in pc if p["pairs"] < MIN_PROBE_POINT]
            (line,) = ax.plot([p["inserted"] for p in dense], [p["mean_cosine"] for p in dense], marker="o", label=str(m["model"]))
            if sparse:  # hollow, unconnected: too few sentences to trust the mean
                ax.plot([p["inserted"] for p in sparse], [p["mean_cosine"] for p in sparse], linestyle="none", marker="o",
                        markerfacecolor="none", color=line.get_color())
        ax.set_title("repetition probe")
        ax.set_xlabel(f"inserted sub-word tokens (hollow: < {MIN_PROBE_POINT} sent.)")
        ax.set_ylabel("mean cosine")
    for k in range(panels, rows * cols):
        axes[k // cols][k % cols].axis("off")
    if models:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(models), 4), frameon=False)
    note = "numbers under the bars: pairs in the bucket" + (f"; error bars: {level:.0%} bootstrap intervals" if level else "")
    fig.text(0.01, 0.01, note, fontsize=8, color="dimgray")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    try:
        with atomic_path(path, suffix="." + ext) as tmp:
            fig.savefig(tmp, format="jpeg" if ext == "jpg" else ext, dpi=120)
    finally:
        plt.close(fig)
