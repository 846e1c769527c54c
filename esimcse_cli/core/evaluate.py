"""STS scoring: cosine similarity -> Spearman x100, as SentEval computes it and SimCSE reports it.

Data flow: pairs (``load_tasks``: ``sts`` for SentEval's layout, ``pairs_file`` for ``--pairs``) -> every
distinct sentence of all tasks, encoded once -> a :class:`PairScorer` per task reads its rows (cosines) ->
:class:`TaskScores` -> ``summarise`` (Spearman per task, subset and bucket) -> the result dict.

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
- The trainer selects on STS-B dev with the same :class:`PairScorer`, so what training selects on is
  exactly what ``eval-sts --split dev`` reports.

The result is a plain dict in the documented JSON schema (see README, "eval-sts JSON").
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from esimcse_cli.core import sts
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.sts import Pair

log = logging.getLogger("esimcse")

Progress = Callable[[int], None]
# progress(label, total) -> a context manager yielding advance(n): one bar per encoded model
ProgressFactory = Callable[[str, int], ContextManager[Progress]]

AGGREGATES = ("all", "mean", "wmean")
LENGTH_UNITS = ("words", "tokens", "chars")
DEFAULT_BUCKETS = "0-3,4-"
MIN_BUCKET_PAIRS = 10
SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------------------
# Option checks (one-line ConfigError naming the option, before any data or model is read)
# ------------------------------------------------------------------------------------------------
def check_split(split: str) -> None:
    if split not in sts.SPLITS:
        raise ConfigError(f"--split {split!r}: choose from {', '.join(sts.SPLITS)}")


def check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ConfigError(f"--aggregate {aggregate!r}: choose from {', '.join(AGGREGATES)}")


def check_length_unit(unit: str) -> None:
    if unit not in LENGTH_UNITS:
        raise ConfigError(f"--length-unit {unit!r}: choose from {', '.join(LENGTH_UNITS)}")


def check_eval_args(split: str, aggregate: str, length_unit: str, batch_size: int) -> None:
    """The checks ``eval-sts``, ``compare`` and ``length-analysis`` share."""
    check_split(split)
    check_aggregate(aggregate)
    check_length_unit(length_unit)
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")


def bucket_spec(bucket_by_length: bool, buckets: Optional[str]) -> Optional[str]:
    """``--bucket-by-length`` / ``--buckets`` -> the checked spec; ``--buckets`` implies bucketing (``None``: none)."""
    if not (bucket_by_length or buckets):
        return None
    spec = buckets or DEFAULT_BUCKETS
    parse_buckets(spec)
    return spec


def check_sts_args(
    split: str,
    aggregate: str,
    length_unit: str,
    batch_size: int,
    *,
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    bucket_by_length: bool = False,
    buckets: Optional[str] = None,
    outputs: Sequence[Optional[str]] = (),
) -> Tuple[Optional[int], Optional[str]]:
    """``eval-sts``'s option checks: ``(bootstrap replicates or None, bucket spec or None)``.

    ``--ci`` alone implies the default number of replicates; each of ``outputs`` (``--json``, ``--csv``)
    must be a file path in an existing folder.
    """
    from esimcse_cli.core import stats
    from esimcse_cli.core.atomic import check_output_path

    check_eval_args(split, aggregate, length_unit, batch_size)
    bootstrap, _ = stats.check_optional(bootstrap, ci)
    spec = bucket_spec(bucket_by_length, buckets)
    for path in outputs:
        if path:
            check_output_path(path)
    return bootstrap, spec


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
    for (_, hi1), (lo2, _) in zip(ranges, ranges[1:]):
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
    """Lengths in whitespace words of the stored text, in characters other than whitespace (``chars``: for text
    without spaces, such as Chinese), or in tokenizer sub-words without special tokens.

    Token lengths are untruncated (the length of the text, not of what the model saw). Word counts of text that
    has no spaces are meaningless (a whole Chinese sentence is one "word"): that gets a warning naming ``chars``.
    """
    check_length_unit(unit)
    if unit == "words":
        unspaced = sum(1 for t in texts if len(t.strip()) >= 4 and not any(c.isspace() for c in t.strip()))
        if texts and unspaced * 2 > len(texts):
            log.warning("%d of %d sentences have no spaces: word counts of unsegmented text (e.g. Chinese) are "
                        "meaningless; use --length-unit chars (or tokens)", unspaced, len(texts))
        return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    if unit == "chars":
        return np.fromiter((sum(1 for c in t if not c.isspace()) for t in texts), dtype=np.int64, count=len(texts))
    if tokenizer is None:
        raise ConfigError("--length-unit tokens needs the model's tokenizer")
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, padding=False,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))


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
# Scoring pairs
# ------------------------------------------------------------------------------------------------
def unique_sentences(task_pairs: Mapping[str, Sequence[Pair]]) -> List[str]:
    """Every distinct sentence of all tasks, in first-seen order."""
    seen: Dict[str, None] = {}
    for pairs in task_pairs.values():
        for p in pairs:
            seen.setdefault(p.a)
            seen.setdefault(p.b)
    return list(seen)


def cosine_rows(emb: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Cosine of rows ``ia[k]`` and ``ib[k]`` of ``emb``, in float64; 0 where either row is a zero vector."""
    e = emb.astype(np.float64, copy=False)
    norms = np.linalg.norm(e, axis=1)
    dots = np.einsum("ij,ij->i", e[ia], e[ib])
    denom = norms[ia] * norms[ib]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
    return np.nan_to_num(cos)


class PairScorer:
    """Scored pairs as rows of their sentences' embeddings: the indices are built once, then scored again and again.

    ``PairScorer(pairs)`` owns its distinct sentences: ``scorer(encoder)`` is Spearman x100 over all pairs
    at the cost of one ``encode`` of them (the trainer scores STS-B dev so at every evaluation). With
    ``index`` (sentence -> row), the scorers of several tasks read one shared embedding matrix
    (:meth:`cosines_of`): that is how :func:`score_tasks` encodes each distinct sentence once.
    """

    def __init__(self, pairs: Sequence[Pair], index: Optional[Mapping[str, int]] = None):
        self.pairs = list(pairs)
        if index is None:
            if not self.pairs:
                raise ValueError("PairScorer needs at least one pair")
            index = {s: i for i, s in enumerate(unique_sentences({"_": self.pairs}))}
        self.index = index
        n = len(self.pairs)
        self.ia = np.fromiter((index[p.a] for p in self.pairs), dtype=np.int64, count=n)
        self.ib = np.fromiter((index[p.b] for p in self.pairs), dtype=np.int64, count=n)
        self.gold = np.fromiter((p.score for p in self.pairs), dtype=np.float64, count=n)

    @property
    def sentences(self) -> List[str]:
        """The sentences of the index, in row order: what :meth:`cosines` encodes."""
        return list(self.index)

    def cosines_of(self, emb: np.ndarray) -> np.ndarray:
        """Each pair's cosine from ``emb``, one row per sentence of the index."""
        return cosine_rows(np.asarray(emb), self.ia, self.ib)

    def cosines(self, encoder, batch_size: int = 64, progress: Optional[Progress] = None) -> np.ndarray:
        return self.cosines_of(encoder.encode(self.sentences, batch_size=batch_size, normalize=False, progress=progress))

    def __call__(self, encoder, batch_size: int = 64, progress: Optional[Progress] = None) -> float:
        rho = spearman100(self.cosines(encoder, batch_size, progress), self.gold)
        return float("nan") if rho is None else rho


# ------------------------------------------------------------------------------------------------
# Loading and scoring tasks
# ------------------------------------------------------------------------------------------------
def load_tasks(
    data_dir: Optional[Union[str, os.PathLike]],
    tasks: Optional[Union[str, Sequence[str]]] = None,
    split: str = "test",
    pairs_files: Sequence[Union[str, os.PathLike]] = (),
    pairs_columns: Tuple = (None, None, None),
    pairs_format: str = "auto",
) -> Dict[str, List[Pair]]:
    """Load the requested tasks (JSON key -> pairs), plus user pair files keyed by file stem, read as
    ``pairs_format`` (:data:`~esimcse_cli.core.pairs_file.PAIRS_FORMATS`).

    ``data_dir`` ``None``: the data folder is looked for (:func:`~esimcse_cli.core.sts.find_data_dir`).
    With ``pairs_files`` and no ``tasks``, only the pair files are loaded (no data folder is needed).
    With neither, every standard task whose folder exists is loaded, and the missing ones are named
    in a warning; a task asked for by name must exist.
    """
    import logging
    from pathlib import Path

    from esimcse_cli.core.pairs_file import read_pairs_file

    check_split(split)
    out: Dict[str, List[Pair]] = {}
    if tasks is not None or not pairs_files:
        root = sts.find_data_dir(data_dir)
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
        out[key] = read_pairs_file(f, *pairs_columns, fmt=pairs_format)
    return out


def load_given_tasks(
    data: Optional[str],
    data_dir: Optional[str],
    tasks: Optional[str] = None,
    split: str = "test",
    pairs: Optional[Sequence[str]] = None,
    pairs_columns: Optional[str] = None,
    pairs_format: Optional[str] = "auto",
) -> Dict[str, List[Pair]]:
    """:func:`load_tasks` as ``eval-sts`` and ``compare`` name it: ``DATA_DIR`` or ``--data-dir``, ``--tasks``,
    ``--split``, ``--pairs``, the ``--pairs-columns`` spec and ``--pairs-format`` (checked even without ``--pairs``)."""
    from esimcse_cli.core.pairs_file import check_pairs_format, parse_columns

    columns, fmt = parse_columns(pairs_columns), check_pairs_format(pairs_format)
    return load_tasks(sts.given_data_dir(data, data_dir), tasks, split, pairs or (), columns, fmt)


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


def score_task(name: str, scorer: PairScorer, emb: np.ndarray, lengths: Optional[np.ndarray] = None) -> TaskScores:
    """One task's :class:`TaskScores` from the shared embeddings (and sentence lengths, for buckets)."""
    ts = TaskScores(cos=scorer.cosines_of(emb), gold=scorer.gold)
    if name in sts.STS_SUBSETS:
        order: Dict[str, int] = {}
        ts.subset_ids = np.fromiter((order.setdefault(p.subset, len(order)) for p in scorer.pairs), dtype=np.int64,
                                    count=len(scorer.pairs))
        ts.subsets = tuple(order)
    if lengths is not None:
        ts.diff = np.abs(lengths[scorer.ia] - lengths[scorer.ib])
    return ts


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
    if length_unit is not None:
        check_length_unit(length_unit)
    t0 = time.perf_counter()
    sentences = unique_sentences(task_pairs)
    emb = np.asarray(encoder.encode(sentences, batch_size=batch_size, normalize=False, progress=progress))
    t_enc = time.perf_counter() - t0
    index = {s: i for i, s in enumerate(sentences)}
    lengths = sentence_lengths(sentences, length_unit, getattr(encoder, "tokenizer", None)) if length_unit else None
    scores = {name: score_task(name, PairScorer(pairs, index), emb, lengths) for name, pairs in task_pairs.items()}
    total = sum(2 * len(p) for p in task_pairs.values())
    return scores, {"total": total, "distinct": len(sentences), "encode_s": t_enc}


def summarise_task(name: str, ts: TaskScores, split: str = "test", aggregate: str = "all",
                   bucket_list: Optional[Sequence[Bucket]] = None) -> dict:
    """One task's entry of the JSON schema (``tasks.<name>``): its Spearman, subsets and buckets."""
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
    return entry


def summarise(scores: Mapping[str, TaskScores], split: str = "test", aggregate: str = "all",
              bucket_list: Optional[Sequence[Bucket]] = None) -> Dict[str, dict]:
    """Point estimates per task (the ``tasks`` part of the JSON schema) from scored tasks."""
    return {name: summarise_task(name, ts, split, aggregate, bucket_list) for name, ts in scores.items()}


def as_buckets(buckets: Optional[Union[str, Sequence[Bucket]]]) -> Optional[List[Bucket]]:
    """A bucket spec or list -> the buckets (``None``: no buckets)."""
    if buckets is None:
        return None
    if isinstance(buckets, str):
        return parse_buckets(buckets)
    return list(buckets) or None


def result_dict(encoder, tasks_out: Dict[str, dict], info: dict, split: str, aggregate: str,
                bucket_list: Optional[Sequence[Bucket]] = None, length_unit: str = "words") -> dict:
    """The eval-sts result around the per-task entries: model, average, sentence counts and timing.

    ``seconds.total`` is 0 here; :func:`evaluate_loaded` fills it in once the bootstrap (if any) is done.
    """
    scored = [e["spearman"] for e in tasks_out.values() if e["spearman"] is not None]
    result = {
        "schema": SCHEMA_VERSION,
        "model": getattr(encoder, "name", "") or "",
        "pooling": getattr(encoder, "pooling", None),
        "backend": getattr(encoder, "backend", "torch"),
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
    return result


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
    """Score loaded tasks (:func:`load_tasks`) with one encoder: the ``eval-sts`` result, a dict in the JSON schema
    (:func:`evaluate_keeping_scores` without the scores)."""
    return evaluate_keeping_scores(encoder, task_pairs, split, aggregate, buckets, length_unit, batch_size, progress,
                                   bootstrap, level, seed)[0]


def evaluate_keeping_scores(
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
    record_lengths: bool = False,
) -> Tuple[dict, Dict[str, TaskScores]]:
    """The ``eval-sts`` result and the per-task :class:`TaskScores` behind it.

    ``buckets``: ``None`` for no length buckets, a spec string such as ``"0-3,4-"`` (the default split is
    :data:`DEFAULT_BUCKETS`) or a list of :class:`Bucket`. ``bootstrap``: resample each task's scored pairs
    this many times and add percentile intervals (``ci``) at ``level`` (default 0.95), seeded by ``seed``
    (see :mod:`esimcse_cli.core.stats`). ``record_lengths``: keep each pair's length difference in ``length_unit``
    even without buckets (a saved scores file can then be compared by length later); the result is the same.
    """
    from esimcse_cli.core import stats

    check_aggregate(aggregate)
    check_length_unit(length_unit)
    bucket_list = as_buckets(buckets)
    if bootstrap is not None:
        stats.check_options(bootstrap, level)
    t0 = time.perf_counter()
    scores, info = score_tasks(encoder, task_pairs, length_unit if bucket_list or record_lengths else None, batch_size, progress)
    result = result_dict(encoder, summarise(scores, split, aggregate, bucket_list), info, split, aggregate, bucket_list, length_unit)
    if bootstrap is not None:
        t_b = time.perf_counter()
        stats.add_intervals(result, scores, aggregate, bucket_list, bootstrap, level, seed)
        result["seconds"]["bootstrap"] = round(time.perf_counter() - t_b, 3)
    result["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return result, scores


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
