"""Saved per-pair scores: what one model scored on each task, kept so that ``compare`` need not re-encode it.

A scores file is a ``.npz`` (``np.savez_compressed``, written atomically) holding:

- ``header``: a one-element unicode array, the JSON text ``{"format": "esimcse-scores", "schema": 1,
  "meta": {...}, "length_unit": ..., "tasks": [{"name", "pairs", "sha256", "subsets", "arrays"}, ...]}``;
- per task ``k`` (the header's order): ``t{k}.cos`` (float64), ``t{k}.gold`` (float64), and where present
  ``t{k}.subset_ids`` (int64, the STS12-16 strata) and ``t{k}.diff`` (int64, ``|len(a) - len(b)|`` in
  ``length_unit``).

``cos`` stays float64, as :func:`~esimcse_cli.core.evaluate.cosine_rows` computes it: Spearman and the bootstrap
rank the cosines, and float32 would merge or swap near-equal ones, so a compare from the file would no longer
give exactly the numbers of a compare from the model (8 bytes a pair is small beside that).

``sha256`` fingerprints a task's pairs (:func:`fingerprint`: sentence1, sentence2 and gold, in order), so a
reader can tell whether the file scored the very pairs it has loaded (:func:`check_pairs`). Nothing is pickled:
the file is read with ``np.load(allow_pickle=False)``, and any file that is missing, not a zip, truncated,
of another schema or inconsistent is refused in one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from esimcse_cli.core.errors import InputError, first_line
from esimcse_cli.core.evaluate import TaskScores
from esimcse_cli.core.sts import Pair

FORMAT = "esimcse-scores"
SCHEMA = 1
SUFFIX = ".npz"
_ARRAYS = ("cos", "gold", "subset_ids", "diff")
_DTYPES = {"cos": np.float64, "gold": np.float64, "subset_ids": np.int64, "diff": np.int64}

PathLike = Union[str, os.PathLike]


def is_scores_path(spec: PathLike) -> bool:
    """Whether a ``--model`` value names a scores file (it ends in ``.npz``) rather than a model."""
    return os.fspath(spec).lower().endswith(SUFFIX)


def check_scores_path(path: PathLike, option: str = "--save-scores") -> Path:
    """Refuse a scores-file output path before any work: it must end in ``.npz`` and lie in an existing folder."""
    from esimcse_cli.core.atomic import check_output_path

    if not is_scores_path(path):
        raise InputError(f"{option} {os.fspath(path)}: a scores file must end in {SUFFIX}")
    return check_output_path(path)


def fingerprint(pairs: Sequence[Pair]) -> str:
    """sha256 of the pairs' (sentence1, sentence2, gold), in order: one JSON line a pair, UTF-8."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.a, p.b, float(p.score)], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class ScoresFile:
    """A read scores file: the scores per task, the saved meta and, per task, the pair count and fingerprint."""

    path: str
    scores: Dict[str, TaskScores]
    meta: dict
    pairs: Dict[str, int] = field(default_factory=dict)
    sha256: Dict[str, Optional[str]] = field(default_factory=dict)
    length_unit: Optional[str] = None


def save_scores(
    path: PathLike,
    scores: Mapping[str, TaskScores],
    meta: dict,
    *,
    pairs: Optional[Mapping[str, Sequence[Pair]]] = None,
    length_unit: Optional[str] = None,
) -> None:
    """Write ``scores`` (task -> :class:`TaskScores`) and ``meta`` (JSON-serialisable) to ``path``, atomically.

    ``pairs``: the pairs each task scored, for its fingerprint (without them the file records none, and
    ``compare`` refuses it). ``length_unit``: the unit of ``diff`` (else ``meta["length_unit"]``).
    """
    from esimcse_cli.core.atomic import atomic_path

    path = Path(path)
    if not is_scores_path(path):
        raise InputError(f"{path}: a scores file must end in {SUFFIX}")
    try:
        meta_text = json.dumps(meta, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: meta is not JSON ({first_line(exc, type(exc).__name__)})") from None
    arrays: Dict[str, np.ndarray] = {}
    tasks: List[dict] = []
    for k, (name, ts) in enumerate(scores.items()):
        n = len(ts.cos)
        present = {"cos": ts.cos, "gold": ts.gold, "subset_ids": ts.subset_ids, "diff": ts.diff}
        for key, value in present.items():
            if value is None:
                continue
            a = np.asarray(value)
            if a.shape != (n,):
                raise InputError(f"{path}: task {name}: {key} has shape {a.shape}, expected ({n},)")
            arrays[f"t{k}.{key}"] = a.astype(_DTYPES[key], copy=False)
        task_pairs = pairs.get(name) if pairs is not None else None
        if task_pairs is not None and len(task_pairs) != n:
            raise InputError(f"{path}: task {name}: {len(task_pairs)} pairs but {n} scores")
        tasks.append({"name": str(name), "pairs": n, "sha256": fingerprint(task_pairs) if task_pairs is not None else None,
                      "subsets": list(ts.subsets), "arrays": [a for a in _ARRAYS if present[a] is not None]})
    header = {"format": FORMAT, "schema": SCHEMA, "meta": json.loads(meta_text),
              "length_unit": length_unit if length_unit is not None else meta.get("length_unit"), "tasks": tasks}
    arrays["header"] = np.array([json.dumps(header, ensure_ascii=False)])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: savez does not append its own .npz to the temporary name
            np.savez_compressed(f, **arrays)


def read_scores(path: PathLike) -> ScoresFile:
    """Read and check a scores file (one-line :class:`InputError` naming it when it cannot be used)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such scores file" if not path.exists() else f"{path}: not a file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy renamed: one bare array
            raise InputError(f"{path}: not an esimcse scores file (a single array, not an .npz)")
        with z:
            if "header" not in z.files:
                raise InputError(f"{path}: not an esimcse scores file (no header)")
            header = _header(path, z["header"])
            arrays = {name: z[name] for name in z.files if name != "header"}
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable scores file ({first_line(exc, type(exc).__name__)})") from None
    out = ScoresFile(str(path), {}, header["meta"], length_unit=header.get("length_unit"))
    for k, t in enumerate(header["tasks"]):
        name = t["name"]
        got = {}
        for key in t["arrays"]:
            a = arrays.get(f"t{k}.{key}")
            if a is None or a.shape != (t["pairs"],):
                raise InputError(f"{path}: corrupt scores file (task {name}: {key} missing or of the wrong length)")
            got[key] = a.astype(_DTYPES[key], copy=False)
        if "cos" not in got or "gold" not in got:
            raise InputError(f"{path}: corrupt scores file (task {name}: no cos or gold)")
        subsets = tuple(t["subsets"])
        ids = got.get("subset_ids")
        if ids is not None and len(ids) and (ids.min() < 0 or ids.max() >= len(subsets)):
            raise InputError(f"{path}: corrupt scores file (task {name}: subset ids out of range)")
        out.scores[name] = TaskScores(cos=got["cos"], gold=got["gold"], subsets=subsets, subset_ids=ids, diff=got.get("diff"))
        out.pairs[name] = t["pairs"]
        out.sha256[name] = t["sha256"]
    return out


def _header(path: Path, raw: np.ndarray) -> dict:
    if raw.dtype.kind != "U" or raw.shape != (1,):
        raise InputError(f"{path}: not an esimcse scores file (bad header)")
    try:
        header = json.loads(str(raw[0]))
    except ValueError:
        raise InputError(f"{path}: not an esimcse scores file (header is not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"{path}: not an esimcse scores file (format {header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("schema") != SCHEMA:
        raise InputError(f"{path}: scores file schema {header.get('schema')!r}; this version reads schema {SCHEMA}")
    tasks = header.get("tasks")
    ok = isinstance(header.get("meta"), dict) and isinstance(tasks, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("pairs"), int) and t["pairs"] >= 0
        and isinstance(t.get("subsets"), list) and isinstance(t.get("arrays"), list)
        and all(a in _ARRAYS for a in t["arrays"]) and (t.get("sha256") is None or isinstance(t["sha256"], str))
        for t in tasks)
    if not ok or len({t["name"] for t in tasks}) != len(tasks):
        raise InputError(f"{path}: corrupt scores file (bad header)")
    return header


def load_scores(path: PathLike) -> Tuple[Dict[str, TaskScores], dict]:
    """``(task -> TaskScores, meta)`` of a scores file written by :func:`save_scores`."""
    sf = read_scores(path)
    return sf.scores, sf.meta


def check_pairs(sf: ScoresFile, task_pairs: Mapping[str, Sequence[Pair]]) -> Dict[str, TaskScores]:
    """The file's scores of exactly the loaded tasks, in their order; one line if one is missing or scored other pairs."""
    out: Dict[str, TaskScores] = {}
    for name, pairs in task_pairs.items():
        if name not in sf.scores:
            have = ", ".join(sf.scores) or "none"
            raise InputError(f"{sf.path}: has no scores for task {name} (it has {have})")
        if sf.sha256.get(name) is None:
            raise InputError(f"{sf.path}: task {name} was saved without its pairs' fingerprint; cannot check it")
        if sf.pairs[name] != len(pairs) or sf.sha256[name] != fingerprint(pairs):
            raise InputError(f"{sf.path}: task {name} was scored on other pairs ({sf.pairs[name]} saved, {len(pairs)} loaded, "
                             "fingerprints differ); save the scores again on these pairs")
        out[name] = sf.scores[name]
    return out
