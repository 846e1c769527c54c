"""Bootstrap confidence intervals and the paired bootstrap test, over the cached cosine scores.

Data flow: ``evaluate.score_tasks`` (one encode per model) -> ``TaskScores`` (cosines, gold, subsets,
length differences) -> :func:`bootstrap` (N replicates of every statistic) -> percentile intervals,
paired differences and p-values -> the ``ci`` / ``diff`` fields of the JSON. Nothing is re-encoded.

How a replicate is drawn
- Each task draws from its own random streams, seeded by (``--seed``, task name, subset): a task's
  interval does not depend on which other tasks run with it. STS12-16 resample within each subset, so
  each subset keeps its size, and concatenate; every other task resamples all its pairs.
- A replicate is a row of counts (how often each pair was drawn). The same row serves every model (the
  paired test: each difference is measured on the same resample), every statistic of the task (the
  score, its subsets, buckets and gap) and the average (replicate r of every task).
- Each statistic is recomputed on the replicate as its point estimate is: Spearman over all pairs
  (``all``), or the mean / pair-weighted mean of the subsets' Spearman (``--aggregate``); a bucket's
  Spearman over the replicate's pairs in that bucket. The average averages that replicate's task scores.
- A group (several seeds of one method) also resamples its seeds, per replicate, from its own stream:
  its score is the mean over the drawn seeds, so its interval includes the seed spread.

Why it is fast: Spearman is Pearson over average ranks, and a resample only repeats values of the
original pairs. Sorting each set of pairs once, the average rank of a value in a replicate is a running
sum of counts, (copies below it) + (its copies + 1) / 2, exactly what ``scipy.stats.rankdata`` gives
(``method="average"``) on the resampled vector. A block of replicates is then a few array passes over a
(replicates, pairs) matrix with no sort per replicate, and the sums are exact in float64 (the ranks are
half-integers).

Intervals are percentile intervals at ``level``. The p-value of a difference is Koehn's (2004) paired
bootstrap test as sacrebleu implements it: the share of replicates on the other side of 0, times 2,
capped at 1 (a difference of exactly 0 gives 1).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from esimcse_cli.core import evaluate, sts
from esimcse_cli.core.defaults import DEFAULT_SEED
from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.evaluate import Bucket, TaskScores

DEFAULT_REPLICATES = 1000
MIN_REPLICATES = 100
DEFAULT_LEVEL = 0.95
BLOCK_CELLS = 1 << 21  # replicates x pairs per block: each float64 matrix of a block stays near 16 MiB


def check_options(n=None, level: Optional[float] = None) -> Tuple[int, float]:
    """Refuse fewer than :data:`MIN_REPLICATES` replicates and a level outside (0, 1), with one line.

    Returns ``(n, level)`` with the defaults in place of ``None``.
    """
    n = DEFAULT_REPLICATES if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"--bootstrap {n!r}: give a whole number of replicates (default {DEFAULT_REPLICATES})")
    if n < MIN_REPLICATES:
        raise ConfigError(f"--bootstrap {n}: use at least {MIN_REPLICATES} replicates (default {DEFAULT_REPLICATES})")
    if level is not None and not 0.0 < float(level) < 1.0:
        raise ConfigError(f"--ci {level:g}: the level must be between 0 and 1, e.g. 0.95")
    return n, DEFAULT_LEVEL if level is None else float(level)


def check_optional(n=None, level: Optional[float] = None) -> Tuple[Optional[int], Optional[float]]:
    """A bootstrap that is off unless asked for (``eval-sts``): ``(None, None)`` when neither is given.

    ``--ci`` alone implies :data:`DEFAULT_REPLICATES`. The level stays ``None`` when not given, so that
    the default is filled in where the intervals are computed.
    """
    if n is None and level is None:
        return None, None
    n, _ = check_options(n, level)  # n None: the default
    return n, level


# ------------------------------------------------------------------------------------------------
# Spearman of resamples given as counts
# ------------------------------------------------------------------------------------------------
def counts_from_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """(replicates, draws) indices into ``n`` items -> (replicates, n) float64 counts of each item."""
    idx = np.asarray(idx, dtype=np.int64)
    b = idx.shape[0]
    flat = (idx + n * np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _new_values(sorted_values: np.ndarray) -> np.ndarray:
    new = np.ones(len(sorted_values), dtype=bool)
    new[1:] = sorted_values[1:] != sorted_values[:-1]
    return new


def _average_ranks(w: np.ndarray) -> np.ndarray:
    """(replicates, distinct values in order) copies drawn -> the average rank of each value's copies."""
    r = np.cumsum(w, axis=1)
    r -= (w - 1.0) / 2.0
    return r


class _Domain:
    """A fixed set of pairs (a task, a subset, a bucket) whose Spearman is taken on every replicate.

    Counts come as a (pairs, replicates) matrix. The pairs are sorted once by cosine and once by gold
    score; ``key`` names the set for the gold side, which is the same for every model, so a block
    computes the gold ranks of a set once and shares them between models (``cache``).
    """

    def __init__(self, index: np.ndarray, x: np.ndarray, y: np.ndarray, key):
        self.index = np.asarray(index, dtype=np.int64)
        self.key = key
        if len(self.index) < 2:
            return
        xv, yv = x[self.index], y[self.index]
        ox = np.argsort(xv, kind="stable")
        oy = np.argsort(yv, kind="stable")
        newx, newy = _new_values(xv[ox]), _new_values(yv[oy])
        self.x_rows = self.index[ox]
        self.x_starts = None if newx.all() else np.flatnonzero(newx)  # None: no ties among the cosines
        self.x_group = np.cumsum(newx) - 1
        self.y_rows = self.index[oy]
        self.y_starts = np.flatnonzero(newy)
        gy = np.empty(len(oy), dtype=np.int64)
        gy[oy] = np.cumsum(newy) - 1
        self.y_group_in_x_order = gy[ox]

    def _gold(self, counts: np.ndarray):
        w = np.add.reduceat(counts[self.y_rows], self.y_starts, axis=0).T  # (b, distinct gold values)
        tot = w.sum(axis=1)
        ry = _average_ranks(w)
        mid2 = tot * ((tot + 1.0) / 2.0) ** 2  # ranks average (n + 1) / 2: sum c (r - mid)^2 = sum c r^2 - n mid^2
        syy = np.einsum("ij,ij->i", w, ry * ry) - mid2
        return ry, mid2, syy

    def rho(self, counts: np.ndarray, cache: Optional[dict] = None) -> np.ndarray:
        if len(self.index) < 2:
            return np.full(counts.shape[1], np.nan)
        got = None if cache is None else cache.get(self.key)
        if got is None:
            got = self._gold(counts)
            if cache is not None:
                cache[self.key] = got
        ry, mid2, syy = got
        # rows gathered from the (pairs, b) counts, then (b, pairs in cosine order): numpy's running sum is fast along rows
        if self.x_starts is None:
            c = np.ascontiguousarray(counts[self.x_rows].T)
            rx = _average_ranks(c)
        else:
            c = counts[self.x_rows]
            rx = _average_ranks(np.ascontiguousarray(np.add.reduceat(c, self.x_starts, axis=0).T))[:, self.x_group]
            c = np.ascontiguousarray(c.T)
        cr = c * rx
        sxx = np.einsum("ij,ij->i", cr, rx) - mid2
        sxy = np.einsum("ij,ij->i", cr, ry[:, self.y_group_in_x_order]) - mid2
        ok = (sxx > 0) & (syy > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(ok, sxy / np.sqrt(np.where(ok, sxx, 1.0)) / np.sqrt(np.where(ok, syy, 1.0)), np.nan)
        return np.clip(rho, -1.0, 1.0) * 100.0


def resample_spearman(counts: np.ndarray, x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Spearman x100 of each replicate, a row of ``counts`` over the pairs ``(x[j], y[j])``; NaN where undefined.

    Row ``r`` equals ``scipy.stats.spearmanr(x[idx], y[idx])`` x100 for the indices ``idx`` it counts, ties included.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    return _Domain(np.arange(len(x)), x, y, "all").rho(np.ascontiguousarray(counts.T))


def _draw(rng: np.random.Generator, m: int, b: int) -> np.ndarray:
    """``b`` resamples of ``m`` items with replacement, as (m, b) counts."""
    return counts_from_indices(rng.integers(0, m, size=(b, m)), m).T


def _count_blocks(name: str, ts: TaskScores, n: int, seed: int):
    """Yield ``(first replicate, (pairs, replicates) counts)`` blocks of a task's ``n`` replicates.

    Each stratum draws from its own stream, row after row, so the replicates do not depend on the block size.
    """
    npairs = len(ts.gold)
    strata = _strata(name, ts)
    streams = [_seed_stream(seed, name, k) for k in range(len(strata))]
    block = max(1, BLOCK_CELLS // max(1, npairs))
    for start in range(0, n, block):
        b = min(block, n - start)
        counts = np.empty((npairs, b))
        for idx, rng in zip(strata, streams):
            counts[idx] = _draw(rng, len(idx), b)
        yield start, counts


def replicate_counts(name: str, ts: TaskScores, n: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The ``(n, pairs)`` counts of the resamples :func:`bootstrap` draws for task ``name`` (for inspection and tests)."""
    return np.concatenate([c.T for _, c in _count_blocks(name, ts, n, seed)], axis=0)


# ------------------------------------------------------------------------------------------------
# One task of one model
# ------------------------------------------------------------------------------------------------
def _strata(name: str, ts: TaskScores) -> List[np.ndarray]:
    """The index sets resampled separately: STS12-16's subsets (each keeps its size), else all pairs."""
    if name in sts.STS_SUBSETS and ts.subsets and ts.subset_ids is not None:
        return [np.flatnonzero(ts.subset_ids == k) for k in range(len(ts.subsets))]
    return [np.arange(len(ts.gold))]


def _mean_defined(values: Sequence[Optional[float]], weights: Optional[Sequence[float]] = None) -> Optional[float]:
    ws = [1.0] * len(values) if weights is None else [float(w) for w in weights]
    pairs = [(v, w) for v, w in zip(values, ws) if v is not None]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None


class _TaskPlan:
    """One model's statistics of one task: the task score (as ``--aggregate`` defines it) and its buckets."""

    def __init__(self, name: str, ts: TaskScores, aggregate: str, buckets: Optional[Sequence[Bucket]]):
        self.ts = ts
        self.aggregate = aggregate
        n = len(ts.gold)
        self.by_subset = name in sts.STS_SUBSETS and bool(ts.subsets) and aggregate != "all"
        if self.by_subset:
            self.subsets = [_Domain(idx, ts.cos, ts.gold, ("subset", k)) for k, idx in enumerate(_strata(name, ts))]
            self.sub_pairs = np.array([len(d.index) for d in self.subsets], dtype=np.float64)
        else:
            self.all = _Domain(np.arange(n), ts.cos, ts.gold, "all")
        self.buckets: List[Optional[_Domain]] = []
        for k, b in enumerate(buckets or []):
            idx = np.flatnonzero(b.mask(ts.diff))
            small = len(idx) < evaluate.MIN_BUCKET_PAIRS
            self.buckets.append(None if small else _Domain(idx, ts.cos, ts.gold, ("bucket", k, zlib.crc32(idx.tobytes()), len(idx))))

    def point(self):
        """(task score, [bucket scores]) unrounded, computed as ``evaluate.summarise`` computes them."""
        ts = self.ts
        if self.by_subset:
            vals = [evaluate.spearman100(ts.cos[d.index], ts.gold[d.index]) for d in self.subsets]
            task = _mean_defined(vals, self.sub_pairs if self.aggregate == "wmean" else None)
        else:
            task = evaluate.spearman100(ts.cos, ts.gold)
        return task, [None if d is None else evaluate.spearman100(ts.cos[d.index], ts.gold[d.index]) for d in self.buckets]

    def block(self, counts: np.ndarray, cache: dict):
        """(task score (b,), [bucket scores (b,) or None]) of a block of replicates."""
        if self.by_subset:
            subs = np.stack([d.rho(counts, cache) for d in self.subsets])  # (subsets, b)
            ok = np.isfinite(subs)
            w = (self.sub_pairs[:, None] if self.aggregate == "wmean" else np.ones((len(self.subsets), 1))) * ok
            with np.errstate(invalid="ignore", divide="ignore"):
                task = (np.where(ok, subs, 0.0) * w).sum(axis=0) / w.sum(axis=0)
        else:
            task = self.all.rho(counts, cache)
        return task, [None if d is None else d.rho(counts, cache) for d in self.buckets]


# ------------------------------------------------------------------------------------------------
# Models, groups and their replicates
# ------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """A statistic's point estimate (``None`` where undefined) and its replicates (NaN where undefined)."""

    point: Optional[float]
    reps: np.ndarray


@dataclass
class Entry:
    """What is compared: one model (one member) or a group of seeds of one method (``group=True``)."""

    label: str
    members: List[Mapping[str, TaskScores]]
    group: bool = False


@dataclass
class EntryStats:
    label: str
    group: bool
    tasks: Dict[str, Estimate]
    buckets: Dict[str, List[Estimate]]
    avg: Estimate
    seeds: Optional[List[Dict[str, Optional[float]]]] = None  # a group's per-seed task scores


def _seed_stream(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed)] + [zlib.crc32(str(k).encode("utf-8")) for k in key]))


def mean_estimate(ests: Sequence[Estimate], n: int) -> Estimate:
    """Mean of the defined estimates; each replicate averages those estimates' replicate values."""
    used = [e for e in ests if e.point is not None]
    if not used:
        return Estimate(None, np.full(n, np.nan))
    reps = np.stack([e.reps for e in used])
    return Estimate(float(np.mean([e.point for e in used])), reps.mean(axis=0))


def bootstrap(
    entries: Sequence[Entry],
    aggregate: str = "all",
    buckets=None,
    n: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> List[EntryStats]:
    """Point estimates and ``n`` paired replicates of every task, bucket and the average, per entry.

    Every member of every entry must hold the same tasks with the same pairs (the same gold scores).
    """
    check_options(n)
    evaluate.check_aggregate(aggregate)
    bucket_list = evaluate.as_buckets(buckets) or []
    models: List[Mapping[str, TaskScores]] = []
    where: Dict[int, int] = {}
    for e in entries:
        if not e.members:
            raise ConfigError(f"{e.label}: no models in the group")
        for m in e.members:
            if id(m) not in where:
                where[id(m)] = len(models)
                models.append(m)
    tasks = list(models[0])
    for m in models[1:]:
        if list(m) != tasks or any(not np.array_equal(m[t].gold, models[0][t].gold) for t in tasks):
            raise ValueError("every model must be scored on the same tasks and pairs")
    plans = [{t: _TaskPlan(t, m[t], aggregate, bucket_list) for t in tasks} for m in models]
    nb = len(bucket_list)
    task_reps = np.full((len(models), len(tasks), n), np.nan)
    bucket_reps = np.full((len(models), len(tasks), nb, n), np.nan)
    for ti, t in enumerate(tasks):
        for start, counts in _count_blocks(t, models[0][t], n, seed):
            b = counts.shape[1]
            cache: dict = {}
            for mi, plan in enumerate(plans):
                tr, brs = plan[t].block(counts, cache)
                task_reps[mi, ti, start:start + b] = tr
                for k, br in enumerate(brs):
                    if br is not None:
                        bucket_reps[mi, ti, k, start:start + b] = br
    points = [{t: plan[t].point() for t in tasks} for plan in plans]

    out = []
    for e in entries:
        idx = [where[id(m)] for m in e.members]
        if e.group:
            s = len(idx)
            sc = counts_from_indices(_seed_stream(seed, "group", e.label).integers(0, s, size=(n, s)), s)  # (n, seeds)

            def combine(member_points, member_reps):  # member_reps: (seeds, n)
                point = None if any(p is None for p in member_points) else float(np.mean(member_points))
                reps = np.where(sc > 0, member_reps.T * sc, 0.0).sum(axis=1) / s
                return Estimate(point, reps)
        else:

            def combine(member_points, member_reps):
                return Estimate(member_points[0], member_reps[0])

        t_est, b_est = {}, {}
        for ti, t in enumerate(tasks):
            t_est[t] = combine([points[i][t][0] for i in idx], task_reps[idx, ti])
            b_est[t] = [combine([points[i][t][1][k] for i in idx], bucket_reps[idx, ti, k]) for k in range(nb)]
        seeds = [{t: points[i][t][0] for t in tasks} for i in idx] if e.group else None
        out.append(EntryStats(e.label, e.group, t_est, b_est, mean_estimate(list(t_est.values()), n), seeds))
    return out


# ------------------------------------------------------------------------------------------------
# Intervals, differences, p-values
# ------------------------------------------------------------------------------------------------
def _r(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def interval(est: Estimate, level: float = DEFAULT_LEVEL) -> Optional[List[float]]:
    """The ``level`` percentile interval of the replicates (rounded as the scores are); None where undefined.

    Replicates where the statistic is undefined (NaN) are left out; with fewer than half defined, there is no interval.
    """
    if est.point is None:
        return None
    fin = est.reps[np.isfinite(est.reps)]
    if len(fin) < max(2, len(est.reps) / 2):
        return None
    lo, hi = np.quantile(fin, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return [_r(lo), _r(hi)]


def minus(b: Estimate, a: Estimate) -> Estimate:
    """``b - a``, point and replicate by replicate (the replicates must be paired)."""
    point = None if a.point is None or b.point is None else b.point - a.point
    return Estimate(point, b.reps - a.reps)


def p_value(diff: Estimate) -> Optional[float]:
    """Two-sided paired bootstrap p-value: 2 x the share of replicates on the other side of 0 (at most 1)."""
    if diff.point is None:
        return None
    fin = diff.reps[np.isfinite(diff.reps)]
    if not len(fin) or diff.point == 0:
        return 1.0
    share = float(np.mean(fin <= 0)) if diff.point > 0 else float(np.mean(fin >= 0))
    return min(1.0, 2.0 * share)


def paired(b: Estimate, a: Estimate, level: float = DEFAULT_LEVEL) -> dict:
    """``{"diff", "diff_ci", "p", "significant"}`` of ``b - a`` (significant: p < 1 - level)."""
    d = minus(b, a)
    p = p_value(d)
    return {"diff": _r(d.point), "diff_ci": interval(d, level), "p": None if p is None else round(p, 6),
            "significant": None if p is None else bool(p < round(1.0 - level, 12))}  # 1 - 0.95 is 0.05000000000000004


def setup(n: int, level: float, seed: int) -> dict:
    """The ``bootstrap`` block of the JSON."""
    return {"n": int(n), "level": float(level), "seed": int(seed), "interval": "percentile",
            "strata": "STS12-16 resampled within each subset"}


# ------------------------------------------------------------------------------------------------
# eval-sts and compare
# ------------------------------------------------------------------------------------------------
def add_intervals(result: dict, scores: Mapping[str, TaskScores], aggregate: str = "all", buckets=None,
                  n: int = DEFAULT_REPLICATES, level: Optional[float] = None, seed: Optional[int] = None) -> dict:
    """Add ``ci`` to each task and bucket of an eval-sts ``result``, ``avg_ci`` and the ``bootstrap`` block."""
    level = DEFAULT_LEVEL if level is None else float(level)
    seed = DEFAULT_SEED if seed is None else int(seed)
    check_options(n, level)
    [st] = bootstrap([Entry(result.get("model") or "model", [scores])], aggregate, buckets, n, seed)
    for t, e in result["tasks"].items():
        e["ci"] = interval(st.tasks[t], level) if e["spearman"] is not None else None
        for b, est in zip(e.get("buckets") or [], st.buckets[t]):
            b["ci"] = interval(est, level) if b["spearman"] is not None else None
    result["avg_ci"] = interval(st.avg, level) if result.get("avg") is not None else None
    result["bootstrap"] = setup(n, level, seed)
    return result


def _cell(est: Estimate, level: float) -> dict:
    return {"spearman": _r(est.point), "ci": interval(est, level)}


def compare(
    entries: Sequence[Entry],
    aggregate: str = "all",
    buckets=None,
    n: int = DEFAULT_REPLICATES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Each entry's scores with intervals, and each later entry's paired difference from the first.

    Returns ``{"tasks", "avg", "bootstrap"}`` of ``esimcse compare``'s JSON (see the README). A cell is
    ``{"spearman", "ci"}``, plus ``{"diff", "diff_ci", "p", "significant"}`` after the first entry, plus
    ``"seeds"`` (each seed's score) for a group; a bucket's cells also carry their ``pairs``.
    """
    if len(entries) < 2:
        raise ConfigError(f"compare needs at least 2 models (--model or --group), got {len(entries)}")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two models have the same label: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))}")
    check_options(n, level)
    bucket_list = evaluate.as_buckets(buckets) or []
    res = bootstrap(entries, aggregate, bucket_list, n, seed)
    base = res[0]

    def cells(pick) -> Dict[str, dict]:
        out = {}
        for st in res:
            cell = _cell(pick(st), level)
            if st is not base:
                cell.update(paired(pick(st), pick(base), level))
            out[st.label] = cell
        return out

    first = entries[0].members[0]
    tasks_out = {}
    for t in first:
        entry = {"pairs": len(first[t].gold), "models": cells(lambda st: st.tasks[t])}
        for st in res:
            if st.seeds is not None:
                entry["models"][st.label]["seeds"] = [_r(s[t]) for s in st.seeds]
        if bucket_list:
            entry["buckets"] = []
            for k, b in enumerate(bucket_list):
                row = {**b.as_dict(), "models": cells(lambda st: st.buckets[t][k])}
                for e, st in zip(entries, res):
                    row["models"][st.label]["pairs"] = int(b.mask(e.members[0][t].diff).sum())
                entry["buckets"].append(row)
        tasks_out[t] = entry
    return {"tasks": tasks_out, "avg": {"models": cells(lambda st: st.avg)}, "bootstrap": setup(n, level, seed)}
