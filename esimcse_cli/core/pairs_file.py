"""User pair files (``--pairs``): a file of scored pairs in -> :class:`~esimcse_cli.core.sts.Pair` list out.

- ``.tsv`` / ``.txt`` are split on tabs as SentEval splits its own files (no quoting), with or without a
  header line; ``.csv``, ``.jsonl`` / ``.json`` and ``.parquet`` are read through pandas.
- The two layouts Chinese STS repos share are text files too, told apart by the shape of the first line
  (``--pairs-format auto``, the default): bojone's ATEC / BQ / LCQMC / PAWSX ``text1<TAB>text2<TAB>label``
  (0/1 labels, no header) is the tab layout and reads as it; a first line without a tab but with ``||``
  is the CNSD STS-B layout ``sent1||sent2||score``. ``--pairs-format`` names the layout instead.
- Columns are found by their usual names (``sentence1`` / ``sentence_A`` / ``text1`` ..., ``score`` /
  ``label`` ...), or given by name or 0-based index (``--pairs-columns``).
- Sentences are whitespace-normalised and scores parsed exactly as the SentEval readers do
  (:func:`~esimcse_cli.core.sts.normalize`, :func:`~esimcse_cli.core.sts.parse_score`), so a pair file
  scores the same as the same pairs in SentEval's layout.

Any problem raises :class:`~esimcse_cli.core.errors.InputError` with a one-line ``file:line`` (or
``file: row N``) message.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from esimcse_cli.core.errors import ConfigError, InputError, first_line
from esimcse_cli.core.sts import Pair, normalize, parse_score, read_lines

__all__ = ["Column", "PAIRS_FORMATS", "check_pairs_format", "parse_columns", "read_pairs_file"]

_S1_NAMES = ("sentence1", "sentence_1", "sentence_a", "sent1", "text1", "text_a", "s1", "a")
_S2_NAMES = ("sentence2", "sentence_2", "sentence_b", "sent2", "text2", "text_b", "s2", "b")
_SCORE_NAMES = ("score", "label", "similarity", "relatedness_score", "gold", "gold_score")

Column = Union[str, int, None]

# auto: the suffix names the table formats; a text file's first line tells tsv from cnsd.
PAIRS_FORMATS = ("auto", "tsv", "cnsd", "csv", "jsonl", "parquet")
CNSD_SEP = "||"


def check_pairs_format(fmt: Optional[str]) -> str:
    """``--pairs-format`` as a known name (``None``: ``auto``), or a one-line :class:`ConfigError`."""
    value = "auto" if fmt is None else str(fmt).strip().lower()
    if value not in PAIRS_FORMATS:
        raise ConfigError(f"--pairs-format must be one of {', '.join(PAIRS_FORMATS)}; got {fmt!r}")
    return value


def parse_columns(spec: Optional[str]) -> Tuple[Column, Column, Column]:
    """``--pairs-columns "sentence1,sentence2,score"`` -> three columns (an empty one: found by its usual names)."""
    if not spec:
        return (None, None, None)
    parts = [p.strip() or None for p in spec.split(",")]
    if len(parts) != 3:
        raise ConfigError(f"--pairs-columns {spec!r}: give three columns, sentence1,sentence2,score (names or 0-based indices)")
    return tuple(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pick_column(header: Sequence[str], wanted: Column, defaults: Tuple[str, ...], fallback: int, what: str, path: Path) -> int:
    """Index of a column given by name, by 0-based index (int or digit string), or by the usual names."""
    lowered = [str(h).strip().lower() for h in header]
    if wanted is not None:
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.strip().isdigit()):
            idx = int(wanted)
            if idx >= len(header):
                raise InputError(f"{path}: {what} column index {idx} is out of range ({len(header)} columns)")
            return idx
        name = str(wanted).strip().lower()
        if name in lowered:
            return lowered.index(name)
        raise InputError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(map(str, header))})")
    for name in defaults:
        if name in lowered:
            return lowered.index(name)
    if fallback < len(header):
        return fallback
    raise InputError(f"{path}: cannot find the {what} column (columns: {', '.join(map(str, header))}); name it with a column option")


def _read_tsv_pairs(path: Path, s1: Column, s2: Column, score: Column, subset: str, stats: Dict[str, int]) -> List[Pair]:
    lines = read_lines(path)
    start = 0
    idx = (0, 1, 2)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise InputError(f"{path}: file is empty")
    head = lines[first].split("\t")
    named = any(isinstance(c, str) and not c.strip().isdigit() for c in (s1, s2, score))
    guess_idx = int(score) if score is not None and str(score).strip().isdigit() else 2
    score_guess = head[guess_idx] if guess_idx < len(head) else ""
    has_header = named or (score_guess.strip() != "" and not _is_number(score_guess))
    if has_header:
        idx = (
            _pick_column(head, s1, _S1_NAMES, 0, "sentence1", path),
            _pick_column(head, s2, _S2_NAMES, 1, "sentence2", path),
            _pick_column(head, score, _SCORE_NAMES, 2, "score", path),
        )
        start = first + 1
    else:
        idx = tuple(int(c) if c is not None else d for c, d in zip((s1, s2, score), (0, 1, 2)))
    need = max(idx) + 1
    pairs = []
    for n in range(start, len(lines)):
        line = lines[n]
        if line.strip() == "":
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise InputError(f"{path}:{n + 1}: expected at least {need} tab-separated fields (sentence1, sentence2, score), found {len(cols)}")
        raw = cols[idx[2]]
        if raw.strip() == "":
            stats["unscored"] += 1
            continue
        pairs.append(Pair(normalize(cols[idx[0]]), normalize(cols[idx[1]]), parse_score(raw, f"{path}:{n + 1}"), subset))
    return pairs


def _text_layout(path: Path) -> str:
    """``cnsd`` when the first non-blank line has no tab but has ``||``, else ``tsv`` (whose reader names a bad line)."""
    first = next((ln for ln in read_lines(path) if ln.strip()), "")
    return "cnsd" if "\t" not in first and CNSD_SEP in first else "tsv"


def _read_cnsd_pairs(path: Path, columns: Tuple[Column, Column, Column], subset: str, stats: Dict[str, int]) -> List[Pair]:
    """CNSD STS-B lines, ``sent1||sent2||score``: no header, and exactly three fields (a fourth would be ambiguous)."""
    if any(c is not None for c in columns):
        raise ConfigError(f"{path}: --pairs-columns does not apply to the cnsd layout (sent1||sent2||score)")
    pairs = []
    lines = read_lines(path)
    if not any(ln.strip() for ln in lines):
        raise InputError(f"{path}: file is empty")
    for n, line in enumerate(lines, start=1):
        if line.strip() == "":
            continue
        cols = line.split(CNSD_SEP)
        if len(cols) != 3:
            raise InputError(f"{path}:{n}: expected sent1||sent2||score (the cnsd layout), found {len(cols)} '||'-separated field(s)")
        if cols[2].strip() == "":
            stats["unscored"] += 1
            continue
        pairs.append(Pair(normalize(cols[0]), normalize(cols[1]), parse_score(cols[2], f"{path}:{n}"), subset))
    return pairs


def _read_table_pairs(path: Path, fmt: str, s1: Column, s2: Column, score: Column, subset: str, stats: Dict[str, int]) -> List[Pair]:
    import pandas as pd

    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        else:
            try:
                df = pd.read_parquet(path)
            except ImportError:
                raise InputError(f"{path}: reading Parquet needs pyarrow (pip install 'esimcse-cli[parquet]')") from None
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot read as {fmt.upper()} ({first_line(exc, type(exc).__name__)})") from None
    except Exception as exc:  # pandas/pyarrow parser errors have many types
        raise InputError(f"{path}: cannot read as {fmt.upper()} ({type(exc).__name__}: {first_line(exc)})") from None
    header = [str(c) for c in df.columns]
    if not header:
        raise InputError(f"{path}: no columns found")
    idx = (
        _pick_column(header, s1, _S1_NAMES, 0, "sentence1", path),
        _pick_column(header, s2, _S2_NAMES, 1, "sentence2", path),
        _pick_column(header, score, _SCORE_NAMES, 2, "score", path),
    )
    cols = [df.iloc[:, i].tolist() for i in idx]
    pairs = []
    for row, (a, b, sc) in enumerate(zip(*cols), start=1):
        where = f"{path}: row {row}"
        if sc is None or (isinstance(sc, float) and math.isnan(sc)) or (isinstance(sc, str) and sc.strip() == ""):
            stats["unscored"] += 1
            continue
        if isinstance(sc, bool) or not isinstance(sc, (int, float, str)):
            raise InputError(f"{where}: score {sc!r} is not a number")
        value = parse_score(sc, where) if isinstance(sc, str) else float(sc)
        if not math.isfinite(value):
            raise InputError(f"{where}: score {sc!r} is not a finite number")
        for name, s in (("sentence1", a), ("sentence2", b)):
            if not isinstance(s, str):
                if s is None or (isinstance(s, float) and math.isnan(s)):
                    raise InputError(f"{where}: {name} is missing")
        pairs.append(Pair(normalize(str(a)), normalize(str(b)), value, subset))
    return pairs


def read_pairs_file(
    path: Union[str, os.PathLike],
    sentence1_col: Column = None,
    sentence2_col: Column = None,
    score_col: Column = None,
    fmt: Optional[str] = None,
) -> List[Pair]:
    """Read a user's scored pairs (``--pairs``).

    - ``.tsv`` / ``.txt`` (default): ``sentence1<TAB>sentence2<TAB>score``, split on tabs (no quoting),
      with or without a header line (a header is recognised by a non-numeric score field);
    - ``.csv``, ``.jsonl`` / ``.json``, ``.parquet``: read through pandas;
    - a text file whose first line has ``||`` and no tab: CNSD's ``sent1||sent2||score``.

    ``fmt`` (``--pairs-format``, :data:`PAIRS_FORMATS`): ``None`` or ``auto`` decides as above, by the suffix
    and then by the first line; a name reads the file in that format whatever its suffix.

    Columns are found by name (``sentence1``/``sentence_A``/``text1``..., ``score``/``label``...) or given
    by the ``*_col`` options as a name or a 0-based index. Rows with an empty score are dropped (as
    SentEval drops unscored pairs) and logged. The pairs' ``subset`` is the file's stem.
    """
    import logging

    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a pairs file")
    fmt = check_pairs_format(fmt)
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "")
        fmt = fmt or _text_layout(path)
    stats = {"unscored": 0}
    subset = path.stem
    if fmt == "tsv":
        pairs = _read_tsv_pairs(path, sentence1_col, sentence2_col, score_col, subset, stats)
    elif fmt == "cnsd":
        pairs = _read_cnsd_pairs(path, (sentence1_col, sentence2_col, score_col), subset, stats)
    else:
        pairs = _read_table_pairs(path, fmt, sentence1_col, sentence2_col, score_col, subset, stats)
    if stats["unscored"]:
        logging.getLogger("esimcse").warning("%s: skipped %d pair(s) with an empty score", path, stats["unscored"])
    if not pairs:
        raise InputError(f"{path}: no scored pairs found")
    return pairs
