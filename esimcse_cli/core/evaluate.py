"""STS scoring: cosine similarity -> Spearman x100, as SentEval computes it and SimCSE reports it.

- STS12-16 use SentEval's ``all`` setting: one Spearman over all scored subsets concatenated. The
  per-subset values, their mean and their pair-weighted mean are kept too (``aggregate``).
- STSBenchmark and SICKRelatedness use one split (``test`` by default).
- Every distinct sentence is encoded once across all requested tasks, in a single
  ``encoder.encode`` call (the encoder sorts by token length, so batches carry almost no padding).
- Cosine is computed in float64 from the raw (unnormalised) vectors; a zero vector gives cosine 0,
  as SentEval's ``nan_to_num`` does.
- ``buckets``: Spearman within groups of pairs by length difference ``|len(a) - len(b)|``.
- ``score_tasks`` keeps each task's cosines (``TaskScores``); ``stats`` resamples them for intervals and
  paired tests (``bootstrap=N``), so a bootstrap never re-encodes.

The result is a plain dict in the documented JSON schema (see README, "eval-sts JSON").
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from esimcse_cli.core import sts
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.sts import Pair

Progress = Callable[[int], None]

AGGREGATES = ("all", "mean", "wmean")
LENGTH_UNITS = ("words", "tokens")
DEFAULT_BUCKETS = "0-3,4-"
MIN_BUCKET_PAIRS = 10
SCHEMA_VERSION = 1


def check_eval_args(split: str, aggregate: str, length_unit: str, batch_size: int) -> None:
    """The option checks ``eval-sts`` and ``compare`` share: one-line :class:`ConfigError` naming the option."""
    if split not in ("test", "dev", "train"):
        raise ConfigError(f"--split {split!r}: choose from test, dev, train")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")
    if length_unit not in LENGTH_UNITS:
        raise ConfigError(f"--length-unit {length_unit!r}: choose from {', '.join(LENGTH_UNITS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")


# ------------------------------------------------------------------------------------------------
# Spearman
# ------------------------------------------------------------------------------------------------
def spearman100(pred: Sequence[float], gold: Sequence[float]) -> Optional[float]:
    """Spearman's rho x100 (scipy, average ranks for ties); ``None`` where it is undefined."""
    from scipy.stats import spearmanr

    pred = np.asarray(pred, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if len(pred) < 2 or np.all(pred == pred[0]) or np.all(gold == gold[0]):
        return None
    rho = spearmanr(pred, gold).statistic
    if rho is None or not math.isfinite(float(rho)):
        return None
    return float(rho) * 100.0


def _undefined_note(n: int, gold: np.ndarray, pred: np.ndarray) -> str:
    if n < 2:
        return f"undefined: {n} pair(s)"
    if np.all(gold == gold[0]):
        return "undefined: all gold scores are equal"
    return "undefined: all predicted similarities are equal"


def _r(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(float(x), 4)


# ------------------------------------------------------------------------------------------------
# Length buckets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    """Pairs with ``min <= |len(a) - len(b)| <= max`` (``max=None``: no upper end)."""

    name: str
    min: int
    max: Optional[int]

    def mask(self, diff: np.ndarray) -> np.ndarray:
        m = diff >= self.min
        if self.max is not None:
            m &= diff <= self.max
        return m

    def as_dict(self) -> dict:
        return {"name": self.name, "min": self.min, "max": self.max}


_RANGE = re.compile(r"^\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?$")


def parse_buckets(spec: Optional[str] = None) -> List[Bucket]:
    """Parse ``"0-3,4-7,8-"`` into buckets.

    Ranges are inclusive, ``N-`` is open-ended and ``N`` alone is a single value. They must start
    at 0, follow each other without gaps or overlaps, and end open, so every pair lands in
    exactly one bucket. Names: a two-bucket split at ``k`` (the default ``0-3,4-``) is named
    ``"<=3"`` and ``">3"`` as in the paper; otherwise closed ranges are ``"0-3"`` (``"5"`` for a
    single value) and the open one is ``">=8"``.
    """
    spec = DEFAULT_BUCKETS if spec is None or not str(spec).strip() else str(spec)
    ranges: List[Tuple[int, Optional[int]]] = []
    for part in spec.split(","):
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(f"--buckets {spec!r}: cannot read {part.strip()!r} (use ranges like 0-3,4-7,8-)")
        lo = int(m.group(1))
        if m.group(2) is None:
            hi: Optional[int] = lo
        else:
            hi = int(m.group(3)) if m.group(3) else None
        if hi is not None and hi < lo:
            raise ConfigError(f"--buckets {spec!r}: range {part.strip()!r} ends before it starts")
        ranges.append((lo, hi))
    if ranges[0][0] != 0:
        raise ConfigError(f"--buckets {spec!r}: the first range must start at 0")
    for (lo1, hi1), (lo2, _) in zip(ranges, ranges[1:]):
        if hi1 is None:
            raise ConfigError(f"--buckets {spec!r}: only the last range may be open-ended")
        if lo2 != hi1 + 1:
            raise ConfigError(f"--buckets {spec!r}: range starting at {lo2} should start at {hi1 + 1} (no gaps or overlaps)")
    if ranges[-1][1] is not None:
        raise ConfigError(f"--buckets {spec!r}: the last range must be open-ended (e.g. '{ranges[-1][1] + 1}-')")
    if len(ranges) == 1:
        return [Bucket("all", 0, None)]
    if len(ranges) == 2:
        k = ranges[0][1]
        return [Bucket(f"<={k}", 0, k), Bucket(f">{k}", k + 1, None)]
    out = []
    for lo, hi in ranges:
        if hi is None:
            name = f">={lo}"
        elif hi == lo:
            name = str(lo)
        else:
            name = f"{lo}-{hi}"
        out.append(Bucket(name, lo, hi))
    return out


def sentence_lengths(texts: Sequence[str], unit: str = "words", tokenizer=None) -> np.ndarray:
    """Lengths in whitespace words of the stored text, or in tokenizer sub-words without special tokens.

    Token lengths are untruncated (the length of the text, not of what the model saw).
    """
    if unit == "words":
        return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    if unit == "tokens":
        if tokenizer is None:
            raise ConfigError("--length-unit tokens needs the model's tokenizer")
        if not texts:
            return np.zeros(0, dtype=np.int64)
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, padding=False,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))
    raise ConfigError(f"--length-unit {unit!r}: choose from {', '.join(LENGTH_UNITS)}")


def bucket_results(cos: np.ndarray, gold: np.ndarray, diff: np.ndarray, buckets: Sequence[Bucket]) -> List[dict]:
    """Per-bucket ``{"name", "min", "max", "pairs", "spearman"[, "note"]}``."""
    rows = []
    for b in buckets:
        m = b.mask(diff)
        n = int(m.sum())
        row = {**b.as_dict(), "pairs": n, "spearman": None}
        if n < MIN_BUCKET_PAIRS:
            row["note"] = f"fewer than {MIN_BUCKET_PAIRS} pairs"
        else:
            rho = spearman100(cos[m], gold[m])
            if rho is None:
                row["note"] = _undefined_note(n, gold[m], cos[m])
            row["spearman"] = _r(rho)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# Encoding and cosine
# ------------------------------------------------------------------------------------------------
def unique_sentences(task_pairs: Mapping[str, Sequence[Pair]]) -> List[str]:
    """Every distinct sentence of all tasks, in first-seen order."""
    seen: Dict[str, None] = {}
    for pairs in task_pairs.values():
        for p in pairs:
            seen.setdefault(p.a)
            seen.setdefault(p.b)
    return list(seen)


def _cosine_rows(emb: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    e = emb.astype(np.float64, copy=False)
    norms = np.linalg.norm(e, axis=1)
    dots = np.einsum("ij,ij->i", e[ia], e[ib])
    denom = norms[ia] * norms[ib]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
    return np.nan_to_num(cos)


class PairScorer:
    """Pre-loaded pairs, scored again and again (e.g. STS-B dev during training).

    ``scorer(encoder)`` -> Spearman x100 over all pairs. Distinct sentences and index arrays are
    computed once here, so each call costs one ``encode`` of the distinct sentences.
    """

    def __init__(self, pairs: Sequence[Pair]):
        if not pairs:
            raise ValueError("PairScorer needs at least one pair")
        self.pairs = list(pairs)
        self.sentences = unique_sentences({"_": self.pairs})
        index = {s: i for i, s in enumerate(self.sentences)}
        self.ia = np.fromiter((index[p.a] for p in self.pairs), dtype=np.int64, count=len(self.pairs))
        self.ib = np.fromiter((index[p.b] for p in self.pairs), dtype=np.int64, count=len(self.pairs))
        self.gold = np.fromiter((p.score for p in self.pairs), dtype=np.float64, count=len(self.pairs))

    def cosines(self, encoder, batch_size: int = 64, progress: Optional[Progress] = None) -> np.ndarray:
        emb = encoder.encode(self.sentences, batch_size=batch_size, normalize=False, progress=progress)
        return _cosine_rows(np.asarray(emb), self.ia, self.ib)

    def __call__(self, encoder, batch_size: int = 64, progress: Optional[Progress] = None) -> float:
        rho = spearman100(self.cosines(encoder, batch_size, progress), self.gold)
        return float("nan") if rho is None else rho


def score_pairs(encoder, pairs: Sequence[Pair], batch_size: int = 64, progress: Optional[Progress] = None) -> float:
    """Spearman x100 of cosine similarity against gold over ``pairs`` (NaN where undefined)."""
    return PairScorer(pairs)(encoder, batch_size=batch_size, progress=progress)


def stsb_dev_spearman(encoder, data_dir: Union[str, os.PathLike], batch_size: int = 64) -> float:
    """STS-B dev Spearman x100: the trainer's model-selection metric, on exactly eval-sts's protocol.

    For repeated evaluation, load once: ``scorer = PairScorer(sts.load_task(d, "STSBenchmark", "dev"))``
    and call ``scorer(encoder)``.
    """
    return score_pairs(encoder, sts.load_task(data_dir, "STSBenchmark", split="dev"), batch_size=batch_size)


# ------------------------------------------------------------------------------------------------
# Full evaluation
# ------------------------------------------------------------------------------------------------
def load_tasks(
    data_dir: Optional[Union[str, os.PathLike]],
    tasks: Optional[Union[str, Sequence[str]]] = None,
    split: str = "test",
    pairs_files: Sequence[Union[str, os.PathLike]] = (),
    pairs_columns: Tuple = (None, None, None),
) -> Dict[str, List[Pair]]:
    """Load the requested tasks (JSON key -> pairs), plus user pair files keyed by file stem.

    With ``pairs_files`` and no ``tasks``, only the pair files are loaded (``data_dir`` may be None).
    With neither, every standard task whose folder exists is loaded, and the missing ones are named
    in a warning; a task asked for by name must exist.
    """
    import logging
    from pathlib import Path

    out: Dict[str, List[Pair]] = {}
    if tasks is not None or not pairs_files:
        if data_dir is None:
            raise ConfigError("--data-dir is needed for the STS tasks (SentEval's data/downstream folder or its parent)")
        root = sts.find_senteval_dir(data_dir)
        if tasks is None:
            names = sts.available_tasks(root)
            missing = [t for t in sts.TASKS if t not in names]
            if not names:
                raise InputError(f"{root}: none of the STS tasks were found ({', '.join(sts.TASKS)})")
            if missing:
                logging.getLogger("esimcse").warning(
                    "%s not found under %s; evaluating %s (name tasks with --tasks to require them)",
                    ", ".join(missing), root, ", ".join(names))
        else:
            names = sts.resolve_tasks(tasks)
        for name in names:
            out[name] = sts.load_task(root, name, split)
    for f in pairs_files:
        key = Path(f).stem
        base, k = key, 2
        while key in out:
            key, k = f"{base}-{k}", k + 1
        out[key] = sts.read_pairs_file(f, *pairs_columns)
    return out


@dataclass
class TaskScores:
    """One task as one model scored it. The statistics (``stats``) resample these cached cosines; nothing is re-encoded.

    ``subsets``: the STS12-16 subsets in first-seen order (``()`` for a task scored as one set), and
    ``subset_ids`` each pair's index into them (the bootstrap's strata). ``diff``: ``|len(a) - len(b)|``
    per pair, when lengths were asked for.
    """

    cos: np.ndarray
    gold: np.ndarray
    subsets: Tuple[str, ...] = ()
    subset_ids: Optional[np.ndarray] = None
    diff: Optional[np.ndarray] = None


def score_tasks(
    encoder,
    task_pairs: Mapping[str, Sequence[Pair]],
    length_unit: Optional[str] = None,
    batch_size: int = 64,
    progress: Optional[Progress] = None,
) -> Tuple[Dict[str, TaskScores], dict]:
    """Encode every distinct sentence once and score each task's pairs: ``({task: TaskScores}, info)``.

    ``length_unit`` (``words`` | ``tokens``) also records each pair's length difference. ``info`` has
    ``total`` and ``distinct`` sentences and ``encode_s`` seconds.
    """
    if length_unit is not None and length_unit not in LENGTH_UNITS:
        raise ConfigError(f"--length-unit {length_unit!r}: choose from {', '.join(LENGTH_UNITS)}")
    t0 = time.perf_counter()
    sentences = unique_sentences(task_pairs)
    index = {s: i for i, s in enumerate(sentences)}
    total = sum(2 * len(p) for p in task_pairs.values())
    emb = np.asarray(encoder.encode(sentences, batch_size=batch_size, normalize=False, progress=progress))
    t_enc = time.perf_counter() - t0
    lengths = sentence_lengths(sentences, length_unit, getattr(encoder, "tokenizer", None)) if length_unit else None
    out: Dict[str, TaskScores] = {}
    for name, pairs in task_pairs.items():
        ia = np.fromiter((index[p.a] for p in pairs), dtype=np.int64, count=len(pairs))
        ib = np.fromiter((index[p.b] for p in pairs), dtype=np.int64, count=len(pairs))
        gold = np.fromiter((p.score for p in pairs), dtype=np.float64, count=len(pairs))
        ts = TaskScores(cos=_cosine_rows(emb, ia, ib), gold=gold)
        if name in sts.STS_SUBSETS:
            order: Dict[str, int] = {}
            ts.subset_ids = np.fromiter((order.setdefault(p.subset, len(order)) for p in pairs), dtype=np.int64, count=len(pairs))
            ts.subsets = tuple(order)
        if lengths is not None:
            ts.diff = np.abs(lengths[ia] - lengths[ib])
        out[name] = ts
    return out, {"total": total, "distinct": len(sentences), "encode_s": t_enc}


def summarise(scores: Mapping[str, TaskScores], split: str = "test", aggregate: str = "all",
              bucket_list: Optional[Sequence[Bucket]] = None) -> Dict[str, dict]:
    """Point estimates per task (the ``tasks`` part of the JSON schema) from scored tasks."""
    tasks_out: Dict[str, dict] = {}
    for name, ts in scores.items():
        cos, gold = ts.cos, ts.gold
        entry: dict = {"pairs": len(gold), "spearman": None}
        rho_all = spearman100(cos, gold)
        if name in sts.STS_SUBSETS:
            subs = {}
            for k, sub in enumerate(ts.subsets):
                m = ts.subset_ids == k
                subs[sub] = {"pairs": int(m.sum()), "spearman": _r(spearman100(cos[m], gold[m]))}
            vals = [(v["spearman"], v["pairs"]) for v in subs.values() if v["spearman"] is not None]
            mean = sum(v for v, _ in vals) / len(vals) if vals else None
            wmean = sum(v * n for v, n in vals) / sum(n for _, n in vals) if vals else None
            agg = {"all": _r(rho_all), "mean": _r(mean), "wmean": _r(wmean)}
            entry["spearman"] = agg[aggregate]
            entry["aggregate"] = agg
            entry["subsets"] = subs
        else:
            entry["spearman"] = _r(rho_all)
            entry["subsets"] = {}
        entry["split"] = split if name in ("STSBenchmark", "SICKRelatedness") else ("test" if name in sts.STS_SUBSETS else "file")
        if entry["spearman"] is None:
            entry["note"] = _undefined_note(len(gold), gold, cos)
        if bucket_list:
            entry["buckets"] = bucket_results(cos, gold, ts.diff, bucket_list)
        tasks_out[name] = entry
    return tasks_out


def _bucket_list(buckets: Optional[Union[str, Sequence[Bucket]]]) -> Optional[List[Bucket]]:
    if buckets is None:
        return None
    if isinstance(buckets, str):
        return parse_buckets(buckets)
    return list(buckets) or None


def evaluate_loaded(
    encoder,
    task_pairs: Mapping[str, Sequence[Pair]],
    split: str = "test",
    aggregate: str = "all",
    buckets: Optional[Union[str, Sequence[Bucket]]] = None,
    length_unit: str = "words",
    batch_size: int = 64,
    progress: Optional[Progress] = None,
    bootstrap: Optional[int] = None,
    level: Optional[float] = None,
    seed: Optional[int] = None,
) -> dict:
    """Score already loaded tasks with one encoder; returns the JSON-schema dict.

    ``bootstrap``: resample each task's scored pairs this many times and add percentile intervals
    (``ci``) at ``level`` (default 0.95), seeded by ``seed`` (see :mod:`esimcse_cli.core.stats`).
    """
    if aggregate not in AGGREGATES:
        raise ConfigError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")
    if length_unit not in LENGTH_UNITS:
        raise ConfigError(f"--length-unit {length_unit!r}: choose from {', '.join(LENGTH_UNITS)}")
    bucket_list = _bucket_list(buckets)
    if bootstrap is not None:
        from esimcse_cli.core import stats

        stats.check_options(bootstrap, level)
    t0 = time.perf_counter()
    scores, info = score_tasks(encoder, task_pairs, length_unit if bucket_list else None, batch_size, progress)
    tasks_out = summarise(scores, split, aggregate, bucket_list)
    scored = [e["spearman"] for e in tasks_out.values() if e["spearman"] is not None]
    result = {
        "schema": SCHEMA_VERSION,
        "model": getattr(encoder, "name", "") or "",
        "pooling": getattr(encoder, "pooling", None),
        "max_length": getattr(encoder, "max_length", None),
        "split": split,
        "aggregate": aggregate,
        "tasks": tasks_out,
        "avg": _r(sum(scored) / len(scored)) if scored else None,
        "sentences": {"total": info["total"], "distinct": info["distinct"]},
        "seconds": {"encode": round(info["encode_s"], 3), "total": 0.0},
    }
    if bucket_list:
        result["length_unit"] = length_unit
        result["buckets"] = [b.as_dict() for b in bucket_list]
    if bootstrap is not None:
        t_b = time.perf_counter()
        stats.add_intervals(result, scores, aggregate, bucket_list, bootstrap, level, seed)
        result["seconds"]["bootstrap"] = round(time.perf_counter() - t_b, 3)
    result["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return result


def evaluate_sts(
    encoder,
    data_dir: Optional[Union[str, os.PathLike]],
    tasks: Optional[Union[str, Sequence[str]]] = None,
    split: str = "test",
    aggregate: str = "all",
    buckets: Optional[Union[str, Sequence[Bucket]]] = None,
    length_unit: str = "words",
    batch_size: int = 64,
    progress: Optional[Progress] = None,
    pairs_files: Sequence[Union[str, os.PathLike]] = (),
    pairs_columns: Tuple = (None, None, None),
    bootstrap: Optional[int] = None,
    level: Optional[float] = None,
    seed: Optional[int] = None,
) -> dict:
    """Load the tasks and score them with ``encoder``. See :func:`evaluate_loaded` for the result.

    ``buckets``: ``None`` for no length buckets, a spec string such as ``"0-3,4-"`` (the default
    split is :data:`DEFAULT_BUCKETS`) or a list of :class:`Bucket`.
    """
    if split not in sts.SPLITS:
        raise ConfigError(f"--split {split!r}: choose from {', '.join(sts.SPLITS)}")
    task_pairs = load_tasks(data_dir, tasks, split, pairs_files, pairs_columns)
    return evaluate_loaded(encoder, task_pairs, split, aggregate, buckets, length_unit, batch_size, progress,
                           bootstrap, level, seed)


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("model", "task", "subset", "bucket", "pairs", "spearman")
CI_COLUMNS = ("ci_lo", "ci_hi")  # appended with --bootstrap


def _ci_cells(ci) -> dict:
    return {"ci_lo": ci[0], "ci_hi": ci[1]} if ci else {}


def result_rows(result: dict) -> List[dict]:
    """Long-format rows for CSV: task totals, subsets, buckets, then the average (with ``ci_lo``/``ci_hi`` after a bootstrap)."""
    model = result.get("model", "")
    rows = []
    for task, e in result["tasks"].items():
        rows.append({"model": model, "task": task, "subset": "", "bucket": "", "pairs": e["pairs"], "spearman": e["spearman"],
                     **_ci_cells(e.get("ci"))})
        for sub, v in e.get("subsets", {}).items():
            rows.append({"model": model, "task": task, "subset": sub, "bucket": "", "pairs": v["pairs"], "spearman": v["spearman"]})
        for b in e.get("buckets", []) or []:
            rows.append({"model": model, "task": task, "subset": "", "bucket": b["name"], "pairs": b["pairs"], "spearman": b["spearman"],
                         **_ci_cells(b.get("ci"))})
    total = sum(e["pairs"] for e in result["tasks"].values())
    rows.append({"model": model, "task": "avg", "subset": "", "bucket": "", "pairs": total, "spearman": result.get("avg"),
                 **_ci_cells(result.get("avg_ci"))})
    return rows


def result_columns(result: dict) -> Tuple[str, ...]:
    """The CSV columns of ``result``: :data:`CSV_COLUMNS`, plus :data:`CI_COLUMNS` after a bootstrap."""
    return CSV_COLUMNS + (CI_COLUMNS if "bootstrap" in result else ())


def write_csv(path: Union[str, os.PathLike], rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Write rows atomically as UTF-8 CSV (empty cell for ``None``)."""
    import csv
    import io

    from esimcse_cli.core.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def write_json(path: Union[str, os.PathLike], result: dict) -> None:
    import json

    from esimcse_cli.core.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
