"""``esimcse compare``: several models on the same pairs, each difference with its paired bootstrap test.

    compare (the command's one call): check_compare_args -> build_entries -> check_models -> load_given_tasks
      -> compare_models -> --json

Data flow of compare_models: pairs (``evaluate.load_tasks``) -> every distinct model encoded once, each with its own
pooling (what its folder records, or ``--pooling`` for all) -> ``evaluate.score_tasks`` (cached cosines)
-> ``stats.compare`` (one set of resampled pair indices per replicate, applied to every model; groups
also resample their seeds) -> the report (README, "compare JSON"); with 2 or more length buckets, also each entry's
gap (:func:`gaps_block`: first bucket minus last, on the same replicates).

An entry is a model (``--model``) or a group of seeds of one method (``--group NAME=PATH,PATH,...``);
the first entry is the baseline every later one is compared with. Wherever a model goes, a scores file
(``PATH.npz``, :mod:`~esimcse_cli.core.scores_file`, from ``eval-sts --save-scores``) may go instead: its saved
cosines are used as they are (nothing is encoded), once their pair fingerprints match the loaded tasks.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from esimcse_cli.core import evaluate, scores_file, stats
from esimcse_cli.core.defaults import DEFAULT_SEED
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.evaluate import ProgressFactory
from esimcse_cli.core.sts import Pair


def check_compare_args(
    split: str,
    aggregate: str,
    length_unit: str,
    batch_size: int,
    *,
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    bucket_by_length: bool = False,
    buckets: Optional[str] = None,
    json_path: Optional[str] = None,
) -> Tuple[int, float, Optional[str]]:
    """``compare``'s option checks: ``(replicates, level, bucket spec or None)``, the defaults filled in."""
    from esimcse_cli.core.atomic import check_output_path

    evaluate.check_eval_args(split, aggregate, length_unit, batch_size)
    n, level = stats.check_options(bootstrap, ci)
    spec = evaluate.bucket_spec(bucket_by_length, buckets)
    if json_path:
        check_output_path(json_path)
    return n, level, spec


@dataclass
class EntrySpec:
    """One thing compared: a model (one path) or a group (its seeds' paths)."""

    label: str
    specs: List[str]
    group: bool = False
    meta: List[dict] = field(default_factory=list)


def parse_group(text: str) -> Tuple[str, List[str]]:
    """``NAME=PATH,PATH,...`` -> ``(NAME, [PATH, ...])``."""
    name, sep, rest = str(text).partition("=")
    name = name.strip()
    paths = [p.strip() for p in rest.split(",") if p.strip()]
    if not sep or not name:
        raise ConfigError(f"--group {text!r}: write NAME=PATH,PATH,... (e.g. esimcse=runs/s1,runs/s2,runs/s3)")
    if not paths:
        raise ConfigError(f"--group {text!r}: no model folders after '{name}='")
    return name, paths


def _check_count(entries: Sequence[EntrySpec]) -> None:
    if len(entries) < 2:
        raise ConfigError(f"compare needs at least 2 models (--model or --group NAME=PATH,...), got {len(entries)}")


def build_entries(items: Sequence[Tuple[str, str]], labels: Optional[Sequence[str]] = None) -> List[EntrySpec]:
    """``[("model", spec) | ("group", "NAME=PATH,...")]`` in command-line order -> entries with unique labels.

    A model's label is ``labels[i]`` where given (the CLI passes short path tails), else its spec.
    """
    entries: List[EntrySpec] = []
    for i, (kind, value) in enumerate(items):
        if kind == "group":
            name, paths = parse_group(value)
            entries.append(EntrySpec(name, paths, group=True))
        else:
            entries.append(EntrySpec(labels[i] if labels else str(value), [str(value)]))
    _check_count(entries)
    seen: Dict[str, int] = {}
    for e in entries:  # the same model twice is allowed (it is encoded once): tell the two apart
        k = seen.get(e.label, 0)
        seen[e.label] = k + 1
        if k:
            e.label = f"{e.label} #{k + 1}"
    return entries


def _model_key(spec: str) -> str:
    """Two specs naming the same model folder (or hub name, or scores file) share one encoding (or reading)."""
    from esimcse_cli.core.models import resolve_model_path

    if scores_file.is_scores_path(spec):
        return "scores:" + os.path.realpath(spec)
    where, kind = resolve_model_path(spec)
    return where if kind == "hub" else os.path.realpath(where)


def check_models(entries: Sequence[EntrySpec]) -> None:
    """Cheap checks of every model folder, and of every scores file's header, before the first model is encoded
    (one line on the first bad one)."""
    from esimcse_cli.core.models import check_model

    for e in entries:
        for spec in e.specs:
            if scores_file.is_scores_path(spec):
                scores_file.read_scores(spec)
            else:
                check_model(spec)


_ENTRY_KEYS = ("label", "kind", "members")  # the report's own keys: a file's meta does not overwrite them


def saved_scores(spec: str, task_pairs: Mapping[str, Sequence[Pair]], bucket_list, length_unit: str
                 ) -> Tuple[Dict[str, evaluate.TaskScores], dict]:
    """A scores file as ``compare`` uses it: ``(scores of the loaded tasks, the model's meta from the file)``.

    Refused in one line when a task is missing or was scored on other pairs, and, with length buckets, when
    the file has no length differences or has them in another unit than ``--length-unit``.
    """
    sf = scores_file.read_scores(spec)
    scores = scores_file.check_pairs(sf, task_pairs)
    if bucket_list:
        bare = [t for t, ts in scores.items() if ts.diff is None]
        if bare:
            raise InputError(f"{spec}: no length differences saved for {', '.join(bare)}; --bucket-by-length needs them "
                             "(save the scores with eval-sts --bucket-by-length --save-scores)")
        if sf.length_unit != length_unit:
            raise InputError(f"{spec}: its length differences are in {sf.length_unit or 'an unknown unit'}, "
                             f"not --length-unit {length_unit}")
    meta = {"model": spec, **{k: v for k, v in sf.meta.items() if k not in _ENTRY_KEYS}, "scores_file": spec}
    return scores, meta


def _round(x: float | None) -> float | None:
    """A point as the report rounds it (4 decimals, as ``stats`` does); None where undefined."""
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def gaps_block(stat_entries: Sequence[stats.Entry], aggregate: str, bucket_list, n: int, level: float,
                seed: int) -> dict | None:
    """The ``gaps`` block of the report: each entry's first bucket's Spearman minus its last's (the paper's
    length bias, as ``length.add_intervals`` computes it), per task and averaged over the tasks; None with
    fewer than 2 buckets.

    The replicates are those ``stats.compare`` used (``stats.bootstrap`` is deterministic): a gap's replicates
    are its two buckets' replicates subtracted one by one, so a group's interval includes its seed resampling.
    A cell is ``{"gap", "ci"}``, plus ``{"diff", "diff_ci", "p", "significant"}`` (its gap minus the
    baseline's, paired) after the first entry, plus ``"seeds"`` (each seed's own gap) for a group. Each seed is
    bootstrapped alongside as a model of its own: it is already among the scored models, so this draws
    nothing new and changes no other replicate.
    """
    bucket_list = list(bucket_list or [])
    if len(bucket_list) < 2:
        return None
    seed_entries = [stats.Entry(f"{e.label} seed {i}", [m]) for e in stat_entries if e.group for i, m in enumerate(e.members)]
    res = stats.bootstrap(list(stat_entries) + seed_entries, aggregate, bucket_list, n, seed)

    def gaps_of(st: stats.EntryStats) -> tuple[dict[str, stats.Estimate], stats.Estimate]:
        g = {t: stats.minus(b[0], b[-1]) for t, b in st.buckets.items()}
        return g, stats.mean_estimate(list(g.values()), n)

    main = [gaps_of(st) for st in res[:len(stat_entries)]]
    per_seed = iter(gaps_of(st) for st in res[len(stat_entries):])
    seeds = [[next(per_seed) for _ in e.members] if e.group else None for e in stat_entries]

    def cells(pick) -> dict[str, dict]:
        out = {}
        for i, (e, g, sg) in enumerate(zip(stat_entries, main, seeds)):
            est = pick(g)
            cell = {"gap": _round(est.point), "ci": stats.interval(est, level)}
            if i:
                cell.update(stats.paired(est, pick(main[0]), level))
            if sg is not None:
                cell["seeds"] = [_round(pick(s).point) for s in sg]
            out[e.label] = cell
        return out

    tasks = list(res[0].buckets)
    return {"tasks": {t: {"models": cells(lambda g, t=t: g[0][t])} for t in tasks},
            "avg": {"models": cells(lambda g: g[1])}}


def compare_models(
    entries: Sequence[EntrySpec],
    task_pairs: Mapping[str, Sequence[Pair]],
    *,
    split: str = "test",
    aggregate: str = "all",
    buckets: Optional[str] = None,
    length_unit: str = "words",
    n: int = stats.DEFAULT_REPLICATES,
    level: float = stats.DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device: str = "auto",
    batch_size: int = 64,
    trust_remote_code: bool = False,
    progress: Optional[ProgressFactory] = None,
) -> dict:
    """Encode each distinct model once (read each scores file), score every task, and compare (the ``esimcse compare``
    report). A scores file's entry in ``models`` is its saved meta, with ``scores_file`` naming it."""
    from esimcse_cli.core.models import load_encoder

    _check_count(entries)
    stats.check_options(n, level)
    evaluate.check_aggregate(aggregate)
    bucket_list = evaluate.as_buckets(buckets)
    if bucket_list:
        evaluate.check_length_unit(length_unit)
    check_models(entries)
    n_distinct = len(evaluate.unique_sentences(task_pairs))
    scored: Dict[str, Tuple[dict, dict]] = {}
    specs = [spec for e in entries for spec in e.specs]
    for spec in specs:  # the scores files first: one scored on other pairs is refused before any model is encoded
        key = _model_key(spec)
        if scores_file.is_scores_path(spec) and key not in scored:
            scored[key] = saved_scores(spec, task_pairs, bucket_list, length_unit)
    for spec in specs:
        key = _model_key(spec)
        if key not in scored:
            enc = load_encoder(spec, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code)
            bar = progress(spec, n_distinct) if progress is not None else contextlib.nullcontext(None)
            with bar as advance:
                scores, info = evaluate.score_tasks(enc, task_pairs, length_unit if bucket_list else None, batch_size, advance)
            meta = {"model": spec, "name": enc.name, "pooling": enc.pooling, "max_length": enc.max_length,
                    "encode_seconds": round(info["encode_s"], 3)}
            scored[key] = (scores, meta)
            del enc
    models_meta = []
    stat_entries = []
    for e in entries:
        members = [scored[_model_key(spec)] for spec in e.specs]
        stat_entries.append(stats.Entry(e.label, [m[0] for m in members], group=e.group))
        if e.group:
            models_meta.append({"label": e.label, "kind": "group", "members": [m[1] for m in members]})
        else:
            models_meta.append({"label": e.label, "kind": "model", **members[0][1]})
    body = stats.compare(stat_entries, aggregate, bucket_list, n, level, seed)
    report = {
        "schema": evaluate.SCHEMA_VERSION,
        "command": "compare",
        "split": split,
        "aggregate": aggregate,
        "baseline": entries[0].label,
        "models": models_meta,
        "bootstrap": body["bootstrap"],
        "tasks": body["tasks"],
        "avg": body["avg"],
        "sentences": {"total": sum(2 * len(p) for p in task_pairs.values()), "distinct": n_distinct},
    }
    if bucket_list:
        report["length_unit"] = length_unit
        report["buckets"] = [b.as_dict() for b in bucket_list]
        gaps = gaps_block(stat_entries, aggregate, bucket_list, n, level, seed)
        if gaps is not None:
            report["gaps"] = gaps
    return report


def compare(
    items: Sequence[Tuple[str, str]],
    labels: Optional[Sequence[str]] = None,
    data: Optional[str] = None,
    data_dir: Optional[str] = None,
    tasks: Optional[str] = None,
    *,
    split: str = "test",
    aggregate: str = "all",
    pairs: Optional[Sequence[str]] = None,
    pairs_columns: Optional[str] = None,
    pairs_format: Optional[str] = "auto",
    bucket_by_length: bool = False,
    buckets: Optional[str] = None,
    length_unit: str = "words",
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    seed: Optional[int] = None,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device: str = "auto",
    batch_size: int = 64,
    json_path: Optional[str] = None,
    trust_remote_code: bool = False,
    progress: Optional[ProgressFactory] = None,
) -> dict:
    """The whole ``esimcse compare``: the checks, the entries, the tasks, the report, and ``--json`` written.

    ``items`` and ``labels`` are as :func:`build_entries` takes them; ``data`` / ``data_dir`` are ``DATA_DIR``
    and ``--data-dir``. Every option and every model folder is checked before the data is read, and the file
    is written before the report is returned (a stdout that fails must not lose it).
    """
    n, level, spec = check_compare_args(split, aggregate, length_unit, batch_size, bootstrap=bootstrap, ci=ci,
                                        bucket_by_length=bucket_by_length, buckets=buckets, json_path=json_path)
    entries = build_entries(items, labels)
    check_models(entries)
    task_pairs = evaluate.load_given_tasks(data, data_dir, tasks, split, pairs, pairs_columns, pairs_format)
    report = compare_models(
        entries, task_pairs, split=split, aggregate=aggregate, buckets=spec, length_unit=length_unit, n=n, level=level,
        seed=DEFAULT_SEED if seed is None else seed, pooling=pooling, max_length=max_length, device=device,
        batch_size=batch_size, trust_remote_code=trust_remote_code, progress=progress)
    if json_path:
        evaluate.write_json(json_path, report)
    return report
