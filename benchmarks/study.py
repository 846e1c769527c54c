"""The results study: does ESimCSE beat SimCSE here? (issue 6; re-run at one epoch for issue 16)

Runs a matrix of ``esimcse train`` cells through the core API (the same ``trainer.train`` the CLI calls), then,
on the model each run selected on STS-B dev, the 7 STS test tasks with length-difference buckets, paired
bootstrap intervals and the ``length-analysis`` repetition probe (``length.score_model`` + ``add_intervals``,
i.e. ``esimcse length-analysis --bootstrap N``). Each finished cell writes ``docs/results/<cell>.json`` and its
per-pair test cosines ``docs/results/scores/<cell>.npz`` (``scores_file``; for ``esimcse compare`` later: the
model folders are not kept). A re-run skips finished cells, and a cell stopped mid-training (Ctrl-C, SIGTERM, a
session that ends) resumes from its last saved state (``save_steps``) in ``--runs-dir``, so the study can be
stopped and resumed by running the same command again. ``docs/RESULTS.md``'s ``study`` section and
``docs/study_*.png`` are regenerated from the JSON files (``benchmarks/study_report.py``); ``docs/results/archive/``
(earlier studies) is never read.

    python benchmarks/study.py --commit                   # the whole matrix, in order (resumable)
    python benchmarks/study.py --only core                # one group
    python benchmarks/study.py --cells simcse-s42 --force # redo one cell (its JSON records this command)
    python benchmarks/study.py --list                     # cells in run order, and which are finished
    python benchmarks/study.py --report-only              # regenerate the report from the JSON files
    python benchmarks/study.py --write-corpus corpus.txt  # the exact training file the cells use
    python benchmarks/study.py --cells simcse-s42 --steps 2 --eval-steps 1 --results-dir /tmp/smoke/results \\
        --runs-dir /tmp/smoke/runs --no-report            # smoke test

The matrix is ``benchmarks/study.yaml``. Paths are relative to the repository root (the script chdirs there).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

from _results import file_sha256  # noqa: E402

DEFAULT_MATRIX = "benchmarks/study.yaml"
DEFAULT_RESULTS = "docs/results"
DEFAULT_RUNS = "runs/study"
SCORES_DIR = "scores"  # per-pair test cosines, under the results folder
SCHEMA = 2
# TrainConfig keys that change how a run is carried out, not what it computes (left out of the fingerprint)
RUN_ONLY_KEYS = ("output_dir", "overwrite", "resume", "device", "log_steps", "save_steps", "eval_batch_size",
                 "keep_state", "corpus", "dev_data", "trust_remote_code", "encoding_errors")

log = logging.getLogger("esimcse.study")


class StudyError(Exception):
    """A problem with the matrix or the options (printed as one line, exit 2)."""


# ============================================================================== the matrix
@dataclass
class Cell:
    name: str
    group: str
    label: str
    kind: str = "train"  # "train" | "untrained"
    seed: int = 42
    train: Dict[str, Any] = field(default_factory=dict)
    pooling: Optional[str] = None  # untrained cells: the test pooling
    sweep: Optional[str] = None  # the swept key of a sweep group
    unsupported: Optional[str] = None  # why the cell cannot run (listed as "not run" in the report)


@dataclass
class Group:
    name: str
    cells: List[Cell]
    reference: Optional[str] = None
    sweep: Optional[str] = None
    unsupported: Optional[str] = None


@dataclass
class Matrix:
    data_dir: str
    corpus: List[Dict[str, Any]]
    defaults: Dict[str, Any]
    eval: Dict[str, Any]
    groups: List[Group]
    path: str = DEFAULT_MATRIX
    yaml_corpus: Optional[List[Dict[str, Any]]] = None  # the corpus as the YAML gives it (before --corpus)
    data_dir_override: Optional[str] = None  # --data-dir, when given
    corpus_dedupe: bool = False  # skip blank lines and lines already seen, across the files
    corpus_sentences: Optional[int] = None  # the sentence count the corpus must give (checked; None: not checked)

    def cells(self) -> List[Cell]:
        return [c for g in self.groups for c in g.cells]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise StudyError(f"{self.path}: no group {name!r} (groups: {', '.join(g.name for g in self.groups)})")


EVAL_DEFAULTS = {"buckets": "0-3,4-", "length_unit": "words", "batch_size": 128, "probe_sentences": 1000,
                 "probe_dup_rate": 0.32, "probe_variant": "paper", "probe_seed": 42, "bootstrap": 1000, "ci": 0.95}
CORPUS_ENTRY_KEYS = {"path", "drop_last_line", "column"}


def _corpus_entry(c: Any, where: str) -> Dict[str, Any]:
    if isinstance(c, str):
        c = {"path": c}
    if not isinstance(c, dict) or "path" not in c or set(c) - CORPUS_ENTRY_KEYS:
        raise StudyError(f"{where}: corpus entries take path, drop_last_line and column, got {c}")
    col = c.get("column")
    if col is not None and (isinstance(col, bool) or not isinstance(col, int) or col < 1):
        raise StudyError(f"{where}: corpus entry {c['path']}: column is the tab-separated field to take, "
                         f"1-based as in `cut -f1` (got {col!r})")
    return {"path": str(c["path"]), "drop_last_line": bool(c.get("drop_last_line", False)), "column": col}


def parse_corpus(raw: Any, where: str) -> Tuple[List[Dict[str, Any]], bool, Optional[int]]:
    """The matrix's ``corpus``: a list of files, or ``{files: [...], dedupe: bool, sentences: N}``."""
    dedupe, expect = False, None
    if isinstance(raw, dict) and "files" in raw:
        extra = set(raw) - {"files", "dedupe", "sentences"}
        if extra:
            raise StudyError(f"{where}: corpus: unknown key(s) {', '.join(sorted(extra))} (files, dedupe, sentences)")
        dedupe = bool(raw.get("dedupe", False))
        expect = raw.get("sentences")
        if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int) or expect < 1):
            raise StudyError(f"{where}: corpus: sentences must be a positive count, got {expect!r}")
        raw = raw.get("files")
    files = raw or []
    if isinstance(files, (str, dict)):
        files = [files]
    return [_corpus_entry(c, where) for c in files], dedupe, expect


def load_matrix(path: str | os.PathLike = DEFAULT_MATRIX) -> Matrix:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{p}: matrix file not found")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise StudyError(f"{p}: expected a mapping")
    unknown = set(data) - {"data_dir", "corpus", "defaults", "eval", "groups"}
    if unknown:
        raise StudyError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    corpus, dedupe, expect = parse_corpus(data.get("corpus"), str(p))
    ev = dict(EVAL_DEFAULTS)
    extra = set(data.get("eval") or {}) - set(EVAL_DEFAULTS)
    if extra:
        raise StudyError(f"{p}: eval: unknown key(s) {', '.join(sorted(extra))}")
    ev.update(data.get("eval") or {})
    defaults = dict(data.get("defaults") or {})
    from esimcse_cli.core.config import check_values
    from esimcse_cli.core.errors import EsimcseError

    try:
        check_values(defaults, f"{p}: defaults")
    except EsimcseError as exc:
        raise StudyError(str(exc)) from None
    groups = []
    seen = set()
    for gname, gval in (data.get("groups") or {}).items():
        if isinstance(gval, list):
            gval = {"cells": gval}
        if not isinstance(gval, dict):
            raise StudyError(f"{p}: group {gname}: expected a list of cells or a mapping with cells")
        g = Group(gname, [], gval.get("reference"), gval.get("sweep"), gval.get("unsupported"))
        for entry in gval.get("cells") or []:
            for c in _expand(entry, g, p):
                if c.name in seen:
                    raise StudyError(f"{p}: cell name {c.name!r} appears twice")
                seen.add(c.name)
                g.cells.append(c)
        g.cells = _interleave(g.cells)
        groups.append(g)
    return Matrix(str(data.get("data_dir", "../shared/data")), corpus, defaults, ev, groups, str(path), list(corpus),
                  corpus_dedupe=dedupe, corpus_sentences=expect)


def _expand(entry: Dict[str, Any], g: Group, path: Path) -> List[Cell]:
    if not isinstance(entry, dict) or "name" not in entry:
        raise StudyError(f"{path}: group {g.name}: each cell needs a name")
    extra = set(entry) - {"name", "label", "kind", "seeds", "seed", "train", "pooling"}
    if extra:
        raise StudyError(f"{path}: cell {entry['name']}: unknown key(s) {', '.join(sorted(extra))}")
    kind = entry.get("kind", "train")
    if kind not in ("train", "untrained"):
        raise StudyError(f"{path}: cell {entry['name']}: kind must be train or untrained")
    train = dict(entry.get("train") or {})
    if "seed" in train:
        raise StudyError(f"{path}: cell {entry['name']}: give seeds with seeds: [...], not in train")
    label = str(entry.get("label") or entry["name"])
    if kind == "untrained":
        return [Cell(str(entry["name"]), g.name, label, "untrained", int(entry.get("seed", 42)), {}, entry.get("pooling"),
                     g.sweep, g.unsupported)]
    seeds = entry.get("seeds")
    if seeds is None:
        return [Cell(str(entry["name"]), g.name, label, "train", int(entry.get("seed", 42)), train, None, g.sweep, g.unsupported)]
    out = []
    for s in seeds:
        out.append(Cell(f"{entry['name']}-s{int(s)}", g.name, label, "train", int(s), train, None, g.sweep, g.unsupported))
    return out


def _interleave(cells: List[Cell]) -> List[Cell]:
    """Run order within a group: the first seed of every entry, then the second seeds, ..."""
    rank: Dict[str, int] = {}
    count: Dict[str, int] = {}
    keyed = []
    for i, c in enumerate(cells):
        base = c.name.rsplit("-s", 1)[0] if c.kind == "train" else c.name
        k = count.get(base, 0)
        count[base] = k + 1
        rank.setdefault(base, len(rank))
        keyed.append((k, rank[base], i, c))
    # untrained starts (evaluation only) after the trained cells: the comparisons that matter finish first
    return [c for *_, c in sorted(keyed, key=lambda t: (t[3].kind == "untrained",) + t[:3])]


def select_cells(matrix: Matrix, only: Optional[str] = None, names: Optional[str] = None,
                 max_cells: Optional[int] = None) -> List[Cell]:
    """Cells to run, in matrix order: ``--cells`` names, or ``--only`` groups (default: all runnable groups)."""
    cells = matrix.cells()
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        by_name = {c.name: c for c in cells}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise StudyError(f"--cells: unknown cell(s) {', '.join(missing)} (see --list)")
        chosen = [c for c in cells if c.name in wanted]
    elif only:
        gnames = [n.strip() for n in only.split(",") if n.strip()]
        for n in gnames:
            matrix.group(n)
        chosen = [c for n in gnames for c in matrix.group(n).cells]
    else:
        chosen = cells
    if max_cells is not None:
        chosen = chosen[: max(0, max_cells)]
    return chosen


# ============================================================================== settings and fingerprints
@dataclass
class Options:
    steps: Optional[int] = None
    eval_steps: Optional[int] = None
    model: Optional[str] = None
    bf16: bool = False
    device: str = "auto"
    results_dir: str = DEFAULT_RESULTS
    runs_dir: str = DEFAULT_RUNS
    keep_runs: bool = False
    force: bool = False
    commit: bool = False


def default_eval_steps(steps: int) -> int:
    """About 6 dev evaluations per run (plus step 0 and the last step)."""
    return max(1, round(steps / 6))


def train_values(matrix: Matrix, cell: Cell, opts: Options) -> Dict[str, Any]:
    """TrainConfig values of a trained cell, without the paths (corpus, output, dev data)."""
    v = dict(matrix.defaults)
    v.update(cell.train)
    v["seed"] = cell.seed
    if opts.steps is not None:
        v["max_steps"] = int(opts.steps)
        v["eval_steps"] = int(opts.eval_steps) if opts.eval_steps is not None else default_eval_steps(int(opts.steps))
    elif opts.eval_steps is not None:
        v["eval_steps"] = int(opts.eval_steps)
    if opts.model is not None:
        v["model"] = opts.model
    if opts.bf16:
        v["bf16"] = True
    return v


def corpus_spec_list(corpus: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{"path": c["path"], "drop_last_line": bool(c.get("drop_last_line", False)), "column": c.get("column")}
            for c in corpus]


def corpus_spec(matrix: Matrix) -> Dict[str, Any]:
    return {"files": corpus_spec_list(matrix.corpus), "dedupe": bool(matrix.corpus_dedupe)}


def cell_settings(matrix: Matrix, cell: Cell, opts: Options, corpus_sha: Optional[str] = None) -> Dict[str, Any]:
    """Everything that determines a cell's numbers; its hash is the cell's fingerprint."""
    if cell.kind == "untrained":
        return {"kind": "untrained", "model": opts.model or matrix.defaults.get("model", "default"), "pooling": cell.pooling,
                "data_dir": matrix.data_dir, "eval": dict(matrix.eval)}
    from esimcse_cli.core.config import TrainConfig, check_values

    values = check_values(train_values(matrix, cell, opts), "matrix")
    cfg = TrainConfig(**values).resolved()
    d = {k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY_KEYS}
    return {"kind": "train", "train": d, "corpus": corpus_spec(matrix), "corpus_sha256": corpus_sha,
            "data_dir": matrix.data_dir, "eval": dict(matrix.eval)}


def fingerprint(settings: Dict[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


# ============================================================================== corpus
def read_corpus_entry(entry: Dict[str, Any]) -> List[str]:
    """The lines of one corpus file, as ``benchmarks/device_pack.sh`` reads them.

    UTF-8, split on ``\\n`` (a final newline ends the last line; it does not start an empty one), a trailing
    ``\\r`` dropped. ``drop_last_line``: the last line is dropped (``head -n -1``: the file is cut at a byte
    count, so its last line is truncated). ``column`` N: the N-th tab-separated field (``cut -fN``: a line
    without a tab is taken whole).
    """
    p = Path(entry["path"])
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{p}: not valid UTF-8 at byte {exc.start}") from None
    except OSError as exc:
        raise StudyError(f"{p}: cannot read ({exc.strerror or exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if entry.get("drop_last_line") and lines:
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    col = entry.get("column")
    if col is not None:
        out = []
        for ln in lines:
            if "\t" not in ln:
                out.append(ln)
            else:
                fields = ln.split("\t")
                out.append(fields[col - 1] if col <= len(fields) else "")
        lines = out
    return lines


def build_corpus_lines(spec: Dict[str, Any]) -> Tuple[List[str], List[Dict[str, Any]]]:
    """The training sentences of ``spec`` (``corpus_spec``), in order, and per-file counts.

    With ``dedupe``: blank lines (nothing but whitespace) and lines already seen, in this file or an earlier
    one, are skipped (the first occurrence is kept). Without: every line is kept (the trainer skips blank ones).
    """
    seen: set = set()
    out: List[str] = []
    stats = []
    for entry in spec["files"]:
        lines = read_corpus_entry(entry)
        kept = blank = dup = 0
        for ln in lines:
            if not ln.strip():
                blank += 1
                if spec["dedupe"]:
                    continue
            elif spec["dedupe"]:
                if ln in seen:
                    dup += 1
                    continue
                seen.add(ln)
            out.append(ln)
            kept += ln.strip() != ""
        stats.append({"path": entry["path"], "lines": len(lines), "kept": kept, "blank": blank, "duplicates": dup,
                      "sha256": file_sha256(Path(entry["path"]))})
    return out, stats


CR_STRIP = "awk '{sub(/\\r$/, \"\")} 1'"


class CorpusFile:
    """The training corpus as one file: the single listed file as it is, or the lines of the listed files
    (cut, one column, de-duplicated: :func:`build_corpus_lines`) spooled to a temp file outside the repo."""

    def __init__(self, matrix: Matrix):
        self.spec = corpus_spec(matrix)
        if not self.spec["files"]:
            raise StudyError(f"{matrix.path}: no corpus given")
        for c in self.spec["files"]:
            if not Path(c["path"]).is_file():
                raise StudyError(f"{c['path']}: corpus file not found")
        self._tmp: Optional[str] = None
        self._shell_ok: Optional[bool] = None
        lines, self.file_stats = build_corpus_lines(self.spec)
        self.sentences = sum(1 for ln in lines if ln.strip())
        one = self.spec["files"][0]
        if len(self.spec["files"]) == 1 and not (one["drop_last_line"] or one["column"] or self.spec["dedupe"]):
            self.path = one["path"]
        else:
            fd, self._tmp = tempfile.mkstemp(prefix="esimcse-study-corpus-", suffix=".txt")
            with os.fdopen(fd, "wb") as out:
                for ln in lines:
                    out.write(ln.encode("utf-8") + b"\n")
            self.path = self._tmp
        del lines
        self.sha256 = file_sha256(Path(self.path))
        if matrix.corpus_sentences is not None and self.sentences != matrix.corpus_sentences:
            raise StudyError(f"{matrix.path}: the corpus gives {self.sentences:,} sentences, not the "
                             f"{matrix.corpus_sentences:,} the matrix states (corpus: sentences)")

    def pipeline(self) -> Optional[str]:
        """A shell pipeline that writes the training file's bytes to stdout (None: the file is used as it is)."""
        if self._tmp is None:
            return None
        parts = []
        for c in self.spec["files"]:
            q = shlex.quote(c["path"])
            src = f"head -n -1 {q}" if c["drop_last_line"] else None
            if b"\r" in Path(c["path"]).read_bytes():  # a trailing \r dropped, as read_corpus_entry does
                src = f"{src} | {CR_STRIP}" if src else f"{CR_STRIP} {q}"
            if c["column"]:
                src = f"{src} | cut -f{c['column']}" if src else f"cut -f{c['column']} {q}"
            parts.append(src or f"awk 1 {q}")  # awk 1: each line, a missing final newline added
        cmd = "{ " + "; ".join(parts) + "; }"
        if self.spec["dedupe"]:
            cmd += " | LC_ALL=C awk 'NF && !seen[$0]++'"
        return cmd

    def shell(self) -> str:
        """How the CLI gets the same bytes: a path, or a pipeline feeding stdin (``... | esimcse train -``)."""
        p = self.pipeline()
        return shlex.quote(self.path) if p is None else p + " |"

    def shell_reproduces(self) -> Optional[bool]:
        """Whether :meth:`pipeline`, run by bash here, writes exactly the training file (None: not checked)."""
        if self._shell_ok is None and self.pipeline() is None:
            self._shell_ok = True
        if self._shell_ok is None:
            bash = shutil.which("bash")
            if bash is None:
                return None
            try:
                r = subprocess.run([bash, "-o", "pipefail", "-c", self.pipeline()], capture_output=True, timeout=300)
            except (OSError, subprocess.SubprocessError):
                return None
            self._shell_ok = r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == self.sha256
        return self._shell_ok

    def info(self) -> Dict[str, Any]:
        """What every trained cell's JSON records about its corpus."""
        return {"files": self.file_stats, "dedupe": self.spec["dedupe"], "sentences": self.sentences, "sha256": self.sha256,
                "shell": self.pipeline(), "shell_reproduces": self.shell_reproduces()}

    def close(self) -> None:
        if self._tmp:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None



# ============================================================================== commands recorded per cell
def parse_corpus_option(spec: str) -> List[Dict[str, Any]]:
    """``--corpus``: comma-separated files, each optionally suffixed ``:drop-last`` and/or ``:col=N``."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        drop, col = False, None
        while True:
            if part.endswith(":drop-last"):
                drop, part = True, part[: -len(":drop-last")]
                continue
            head, sep, tail = part.rpartition(":col=")
            if sep and tail.isdigit() and int(tail) >= 1:
                col, part = int(tail), head
                continue
            break
        out.append({"path": part, "drop_last_line": drop, "column": col})
    if not out:
        raise StudyError("--corpus: no file given")
    return out


def corpus_option(corpus: List[Dict[str, Any]]) -> str:
    return ",".join(c["path"] + (":drop-last" if c.get("drop_last_line") else "")
                    + (f":col={c['column']}" if c.get("column") else "") for c in corpus)


def _common_flags(opts: Options, matrix_path: str, corpus, matrix_corpus, data_dir) -> List[str]:
    parts = []
    if matrix_path != DEFAULT_MATRIX:
        parts += ["--matrix", matrix_path]
    if corpus is not None and corpus_spec_list(corpus) != corpus_spec_list(matrix_corpus or []):
        parts += ["--corpus", corpus_option(corpus)]
    if data_dir is not None:
        parts += ["--data-dir", data_dir]
    return parts


def study_command(cell: Cell, opts: Options, matrix_path: str, corpus: Optional[List[Dict[str, Any]]] = None,
                  matrix_corpus: Optional[List[Dict[str, Any]]] = None, data_dir: Optional[str] = None) -> str:
    parts = ["python", "benchmarks/study.py", "--cells", cell.name]
    parts += _common_flags(opts, matrix_path, corpus, matrix_corpus, None)
    if opts.steps is not None:
        parts += ["--steps", str(opts.steps)]
    if opts.eval_steps is not None:
        parts += ["--eval-steps", str(opts.eval_steps)]
    if opts.model is not None:
        parts += ["--model", opts.model]
    if opts.bf16:
        parts.append("--bf16")
    if data_dir is not None:
        parts += ["--data-dir", data_dir]
    if opts.results_dir != DEFAULT_RESULTS:
        parts += ["--results-dir", opts.results_dir]
    parts.append("--force")
    return " ".join(shlex.quote(p) for p in parts)


def write_corpus_command(matrix: Matrix, target: str = "corpus.txt") -> str:
    parts = ["python", "benchmarks/study.py", "--write-corpus", target]
    parts += _common_flags(Options(), matrix.path, matrix.corpus, matrix.yaml_corpus, None)
    return " ".join(shlex.quote(p) for p in parts)


_BOOL_FLAGS = {"repetition": "repetition", "momentum_queue": "momentum-queue", "mlp": "mlp", "bf16": "bf16",
               "dedupe": "dedupe", "keep_state": "keep-state", "split_by_length": "split-by-length"}


def train_cli(cfg, corpus: CorpusFile, out_dir: str, data_dir: str) -> str:
    """The ``esimcse train`` command line equivalent to ``cfg`` (options that differ from the defaults), fed the
    cell's training file: the file itself, or the pipeline that rebuilds it on stdin."""
    from esimcse_cli.core.config import TrainConfig

    base = TrainConfig().resolved()
    base.method = cfg.method
    base = dataclasses.replace(base, repetition=None, momentum_queue=None, mlp=None).resolved()
    skip = {"corpus", "output_dir", "dev_data", "overwrite", "resume", "preset", "device"}
    flags = []
    for f in dataclasses.fields(cfg):
        k, v = f.name, getattr(cfg, f.name)
        if k in skip or k == "method":
            continue
        if v == getattr(base, k):
            continue
        if k in _BOOL_FLAGS:
            if v is None:
                continue
            flags.append(f"--{_BOOL_FLAGS[k]}" if v else f"--no-{_BOOL_FLAGS[k]}")
        elif v is not None:
            flags.append(f"--{k.replace('_', '-')} {shlex.quote(str(v))}")
    src = corpus.shell()
    head = f"{src} esimcse train -" if src.endswith("|") else f"esimcse train {src}"
    return (f"{head} -o {shlex.quote(out_dir)} --method {cfg.method} " + " ".join(flags)
            + f" --dev-data {shlex.quote(data_dir)} --overwrite").strip()


def eval_cli(model: str, pooling: Optional[str], data_dir: str, ev: Dict[str, Any], json_path: str) -> str:
    parts = ["esimcse", "length-analysis", "-m", model]
    if pooling:
        parts += ["--pooling", pooling]
    parts += ["--data-dir", data_dir, "--buckets", str(ev["buckets"]), "--length-unit", str(ev["length_unit"]),
              "--batch-size", str(ev["batch_size"]), "--probe-sentences", str(ev["probe_sentences"]),
              "--dup-rate", str(ev["probe_dup_rate"]), "--variant", str(ev["probe_variant"]), "--seed", str(ev["probe_seed"]),
              "--bootstrap", str(ev["bootstrap"]), "--ci", str(ev["ci"]), "--json", json_path]
    return " ".join(shlex.quote(p) for p in parts)


# ============================================================================== running a cell
def cell_json_path(results_dir: str | os.PathLike, name: str) -> Path:
    """A cell's JSON: directly in the results folder (``archive/`` and other subfolders are never read)."""
    return Path(results_dir) / f"{name}.json"


def scores_rel_path(name: str) -> str:
    return f"{SCORES_DIR}/{name}.npz"


def read_cell(results_dir: str | os.PathLike, name: str) -> Optional[Dict[str, Any]]:
    p = cell_json_path(results_dir, name)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def cell_status(cell: Cell, settings: Dict[str, Any], results_dir: str | os.PathLike) -> str:
    """``done`` (finished with these settings), ``stale`` (finished with other settings), ``pending`` or ``unsupported``."""
    if cell.unsupported:
        return "unsupported"
    data = read_cell(results_dir, cell.name)
    if data is None:
        return "pending"
    return "done" if data.get("fingerprint") == fingerprint(settings) else "stale"


def _eval_model(encoder, matrix: Matrix, label: str, data: "EvalData", dev_scorer) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The cell's test report (``length-analysis --bootstrap N`` for one model) and its per-task scores."""
    from esimcse_cli.core import length

    ev = matrix.eval
    t0 = time.time()
    entry, scores = length.score_model(encoder, data.task_pairs, data.probe_texts, "test", str(ev["buckets"]),
                                       str(ev["length_unit"]), int(ev["batch_size"]), float(ev["probe_dup_rate"]),
                                       str(ev["probe_variant"]), int(ev["probe_seed"]), label=label)
    seconds = time.time() - t0
    t1 = time.time()
    probe = dict(data.probe_meta or {}, dup_rate=float(ev["probe_dup_rate"]), variant=str(ev["probe_variant"]), level="subword") \
        if data.probe_meta is not None else None
    report = length.build_report([entry], "test", str(ev["buckets"]), str(ev["length_unit"]), probe)
    # the CLI's --seed seeds both the probe and the bootstrap
    length.add_intervals(report, [scores], int(ev["bootstrap"]), float(ev["ci"]), int(ev["probe_seed"]))
    res = dict(report["models"][0])
    res.update({"length_unit": report["length_unit"], "buckets_spec": report["buckets"], "bootstrap": report["bootstrap"],
                "probe_setup": report["probe"], "seconds": round(seconds, 2), "bootstrap_seconds": round(time.time() - t1, 2)})
    if dev_scorer is not None:
        t2 = time.time()
        res["stsb_dev"] = round(float(dev_scorer(encoder, batch_size=int(ev["batch_size"]))), 4)
        res["dev_seconds"] = round(time.time() - t2, 2)
    return res, scores


class EvalData:
    """The 7 test tasks, the probe sentences and STS-B dev, loaded once per study."""

    def __init__(self, matrix: Matrix):
        from esimcse_cli.core import evaluate, length, sts

        self.task_pairs = evaluate.load_tasks(matrix.data_dir, None, "test")
        ev = matrix.eval
        self.probe_texts, self.probe_meta = length.choose_probe_texts(self.task_pairs, int(ev["probe_sentences"]), None,
                                                                      int(ev["probe_seed"]))
        self.dev = evaluate.PairScorer(sts.load_task(matrix.data_dir, "STSBenchmark", split="dev"))


def run_untrained(cell: Cell, matrix: Matrix, opts: Options, settings: Dict[str, Any], data: EvalData):
    from esimcse_cli.core.models import load_encoder

    model = settings["model"]
    versions = _versions()
    t0 = time.time()
    enc = load_encoder(model, pooling=cell.pooling, device=opts.device)
    res, scores = _eval_model(enc, matrix, cell.name, data, data.dev)
    return {"eval": res, "wall_s": round(time.time() - t0, 2), "versions": versions,
            "cli_commands": [eval_cli(model, cell.pooling, matrix.data_dir, matrix.eval, f"{cell.name}.json")]}, scores


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def _finished_run(out: Path, cfg) -> bool:
    """The run folder holds a finished training of exactly this config (only the evaluation is missing)."""
    from esimcse_cli.core import checkpoint as ckpt
    from esimcse_cli.core.config import read_yaml

    man = out / "manifest.json"
    if not man.is_file() or ckpt.has_state(out) or not (out / "esimcse.json").is_file():
        return False
    try:
        m = json.loads(man.read_text(encoding="utf-8"))
        saved = read_yaml(out / "train_config.yaml")
    except Exception:
        return False
    if not m.get("finished") or m.get("stopped") or m.get("steps") != m.get("total_steps"):
        return False
    from esimcse_cli.core.trainer import settle_pooler

    now = settle_pooler(cfg)[0].to_dict()  # the saved config holds the pooler that --pooler auto chose
    return all(saved.get(k) == now.get(k) for k in now if k not in RUN_ONLY_KEYS)


def run_trained(cell: Cell, matrix: Matrix, opts: Options, corpus: CorpusFile, data: EvalData, echo=print):
    from esimcse_cli.core import checkpoint as ckpt
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import ConfigError, InputError
    from esimcse_cli.core.models import load_encoder
    from esimcse_cli.core.trainer import settle_pooler, train

    out = Path(opts.runs_dir) / cell.name
    out.parent.mkdir(parents=True, exist_ok=True)
    values = train_values(matrix, cell, opts)
    values.update({"corpus": corpus.path, "output_dir": str(out), "dev_data": matrix.data_dir, "device": opts.device})
    cfg = build_config(values).resolved()
    t_cell = time.time()
    step_seconds: List[float] = []
    reused = False

    def on_step(row: Dict[str, Any]) -> None:
        if row.get("step", 0) > 0 and row.get("sentences_per_s"):
            step_seconds.append(cfg.batch_size * cfg.grad_accum / row["sentences_per_s"])
        if "dev_spearman" in row:
            d = row["dev_spearman"]
            echo(f"  {cell.name} step {row['step']}/{row['total_steps']}: STS-B dev {d if d is None else round(d, 2)}"
                 f" (best {row.get('best_dev') and round(row['best_dev'], 2)})"
                 + (f", loss {row['loss']:.4f}" if row.get("loss") is not None else ""))

    command = shlex.split(study_command(cell, opts, matrix.path, matrix.corpus, matrix.yaml_corpus, matrix.data_dir_override))
    if _finished_run(out, cfg):
        echo(f"  {cell.name}: training already finished in {out}; evaluating")
        reused = True
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        result = None
    else:
        resumed = False
        if ckpt.has_state(out):
            try:
                echo(f"  {cell.name}: resuming from the state saved in {out}")
                # the saved config holds the pooler that --pooler auto chose: resume with that one
                result = train(dataclasses.replace(settle_pooler(cfg)[0], resume=True), on_step=on_step, command=command)
                resumed = True
            except (ConfigError, InputError) as exc:  # another config, another corpus, a state of another model
                echo(f"  {cell.name}: saved state does not match ({exc}); starting over")
        if not resumed:
            result = train(dataclasses.replace(cfg, overwrite=True), on_step=on_step, command=command)
        if result.stopped:
            raise KeyboardInterrupt
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    metrics = _read_jsonl(out / "metrics.jsonl")
    dev_curve = [[r["step"], r["dev_spearman"]] for r in metrics if "dev_spearman" in r]
    loss_curve = [[r["step"], round(r["loss"], 6)] for r in metrics if r.get("loss") is not None]
    train_info = {
        "steps": manifest.get("steps"),
        "total_steps": manifest.get("total_steps"),
        "epochs": cfg.epochs if not cfg.max_steps else None,
        "best_dev": manifest.get("best_dev"),
        "best_step": manifest.get("best_step"),
        "start_dev": dev_curve[0][1] if dev_curve and dev_curve[0][0] == 0 else None,
        "dev_curve": dev_curve,
        "loss_curve": loss_curve,
        "wall_s": round(float(manifest.get("wall_s") or 0.0), 2),
        "sentences_per_s_incl_dev_eval": manifest.get("sentences_per_s"),
        "step_seconds_mean": round(sum(step_seconds) / len(step_seconds), 4) if step_seconds else None,
        "timed_steps": len(step_seconds),
        "sentences_per_s": round(cfg.batch_size * cfg.grad_accum * len(step_seconds) / sum(step_seconds), 3) if step_seconds else None,
        "corpus": manifest.get("corpus"),
        "queue_size": cfg.effective_queue_size(),
        "pooler": manifest.get("pooler"),
        "resumed_from_step": manifest.get("resumed_from_step"),
        "reused_finished_run": reused,
        "device": manifest.get("device"),
    }
    echo(f"  {cell.name}: trained, best STS-B dev {train_info['best_dev']} at step {train_info['best_step']}; evaluating")
    enc = load_encoder(str(out), device=opts.device)
    res, scores = _eval_model(enc, matrix, cell.name, data, None)
    return {
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "corpus", "overwrite", "resume")},
        "corpus": corpus.info() | {"write_command": write_corpus_command(matrix)},
        "train": train_info,
        "eval": res,
        "versions": manifest.get("versions"),
        "wall_s": round(time.time() - t_cell + (0.0 if not reused else train_info["wall_s"]), 2),
        "cli_commands": [train_cli(cfg, corpus, str(out), matrix.data_dir),
                         eval_cli(str(out), None, matrix.data_dir, matrix.eval, f"{cell.name}.json")],
    }, scores


def _versions() -> Dict[str, str]:
    from esimcse_cli.core.trainer import package_versions

    return package_versions()


def _machine() -> str:
    try:
        from _results import machine

        return machine()
    except Exception:  # pragma: no cover
        return platform.platform()


def write_cell_json(path: Path, data: Dict[str, Any]) -> None:
    from esimcse_cli.core.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def save_cell_scores(results_dir: str | os.PathLike, cell: Cell, body: Dict[str, Any], scores, data: "EvalData",
                     length_unit: str) -> Dict[str, Any]:
    """Write the cell's per-pair test cosines (``scores_file.save_scores``, with the pairs' fingerprints that
    ``compare`` checks); returns what the JSON records."""
    from esimcse_cli.core import scores_file

    rel = scores_rel_path(cell.name)
    path = Path(results_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cell": cell.name, "model": cell.name, "label": cell.label, "pooling": body["eval"].get("pooling"),
            "split": "test", "aggregate": "all", "length_unit": length_unit}
    scores_file.save_scores(path, scores, meta, pairs=data.task_pairs, length_unit=length_unit)
    return {"path": rel, "relative_to": "the results folder", "sha256": file_sha256(path), "tasks": sorted(scores),
            "pairs": int(sum(len(ts.cos) for ts in scores.values()))}


def run_cell(cell: Cell, matrix: Matrix, opts: Options, corpus: Optional[CorpusFile], data: EvalData, echo=print) -> Path:
    settings = cell_settings(matrix, cell, opts, corpus.sha256 if corpus is not None else None)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if cell.kind == "untrained":
        body, scores = run_untrained(cell, matrix, opts, settings, data)
    else:
        body, scores = run_trained(cell, matrix, opts, corpus, data, echo)
    # before the JSON: a JSON means the cell is done
    saved = save_cell_scores(opts.results_dir, cell, body, scores, data, str(matrix.eval["length_unit"]))
    doc = {
        "schema": SCHEMA,
        "cell": cell.name,
        "group": cell.group,
        "label": cell.label,
        "kind": cell.kind,
        "seed": cell.seed,
        "sweep": cell.sweep,
        "fingerprint": fingerprint(settings),
        "settings": settings,
        "command": study_command(cell, opts, matrix.path, matrix.corpus, matrix.yaml_corpus, matrix.data_dir_override),
        **body,
        "scores": saved,
        "code": dict(CODE) or code_version(),
        "machine": _machine(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = cell_json_path(opts.results_dir, cell.name)
    write_cell_json(path, doc)
    if cell.kind == "train" and not opts.keep_runs:
        shutil.rmtree(Path(opts.runs_dir) / cell.name, ignore_errors=True)
    return path


# ============================================================================== git
def git_commit(paths: Sequence[str | os.PathLike], message: str, echo=print) -> bool:
    """``git add`` + ``git commit -- paths`` (only these paths), retrying while another writer holds the index."""
    paths = [str(p) for p in paths]
    for attempt in range(20):
        add = subprocess.run(["git", "add", "--", *paths], cwd=REPO, capture_output=True, text=True)
        if add.returncode == 0:
            com = subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=REPO, capture_output=True, text=True)
            if com.returncode == 0:
                return True
            if "nothing to commit" in (com.stdout + com.stderr) or "no changes added" in (com.stdout + com.stderr):
                return True
            err = com.stderr
        else:
            err = add.stderr
        if "index.lock" not in err:
            echo(f"  git commit failed: {err.strip().splitlines()[-1] if err.strip() else '?'}")
            return False
        time.sleep(1 + attempt)
    echo("  git commit failed: index.lock held too long")
    return False


def results_md_only_section_changed(path: Path, section: str) -> bool:
    """True when the working-tree file differs from HEAD only inside ``section`` (so committing it is safe)."""
    import re

    rel = os.path.relpath(path, REPO)
    head = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        return False
    now = path.read_text(encoding="utf-8")
    pat = re.compile(rf"<!-- {re.escape(section)}:begin -->.*?<!-- {re.escape(section)}:end -->", re.S)
    m = pat.search(now)
    if not m:
        return False
    if pat.search(head.stdout):
        merged = pat.sub(lambda _: m.group(0), head.stdout)
    else:
        merged = head.stdout.rstrip() + "\n\n" + m.group(0) + "\n"
    return merged == now


# ============================================================================== code version
CODE: Dict[str, Any] = {}
PACKAGE = "esimcse_cli"


def imported_package_files() -> List[Path]:
    """The source files of every ``esimcse_cli`` module this process has imported."""
    files = set()
    for name, mod in list(sys.modules.items()):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            f = getattr(mod, "__file__", None)
            if f and f.endswith(".py"):
                files.add(Path(f).resolve())
    return sorted(files)


def _rel(p: Path) -> str:
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return p.as_posix()


def code_version(files: Optional[Sequence[Path]] = None) -> Dict[str, Any]:
    """The version of the code a cell ran, stable across sessions and across commits of results.

    ``package_sha256``: sha256 over the path and content of each ``esimcse_cli`` source file the study process
    imported (``package_files``: each file's own sha256, first 16 hex digits), so two cells ran the same package
    code exactly when the hashes agree, whatever git HEAD was (committing a cell moves HEAD). ``git_head``: HEAD
    when the study started; ``uncommitted``: those of the files that differed from HEAD then (modified, staged or
    untracked). ``study_sha256``: ``benchmarks/study.py`` itself (the evaluation recipe).
    """
    files = imported_package_files() if files is None else [Path(f).resolve() for f in files]
    h = hashlib.sha256()
    per: Dict[str, str] = {}
    for f in sorted(files, key=_rel):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        rel = _rel(f)
        h.update(f"{rel}\0{digest}\n".encode("utf-8"))
        per[rel] = digest[:16]
    out: Dict[str, Any] = {"package_sha256": h.hexdigest(), "package_files": per}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            out["git_head"] = head.stdout.strip()
            inside = [r for r in per if not r.startswith("/")]
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *inside], cwd=REPO,
                                capture_output=True, text=True, timeout=30) if inside else None
            out["uncommitted"] = sorted(ln[3:] for ln in st.stdout.splitlines() if ln.strip()) if st and st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    study = Path(__file__).resolve()
    out["study_sha256"] = hashlib.sha256(study.read_bytes()).hexdigest()
    return out


PRELOAD = ("atomic", "augment", "checkpoint", "config", "contrastive", "corpus", "distributed", "encoder", "errors",
           "evaluate", "export", "length", "loss", "models", "momentum", "pooling", "run_folder", "run_log", "scores_file",
           "stats", "sts", "trainer", "views")


def preload() -> Dict[str, Any]:
    """Import every module a cell needs now, then record the code version (:data:`CODE`): other people may edit
    the working tree during a long study, and a module first imported hours later (after a cell's evaluation,
    say) could then fail half-way, or differ from what the hash says."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(f"{PACKAGE}.core.{name}")
    import matplotlib  # noqa: F401  (report plots)
    import study_report  # noqa: F401

    CODE.clear()
    CODE.update(code_version())
    return CODE


# ============================================================================== main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default=DEFAULT_MATRIX, help="the matrix YAML (default %(default)s)")
    ap.add_argument("--only", help="comma-separated groups to run (e.g. core or core,do_no_harm)")
    ap.add_argument("--cells", help="comma-separated cell names to run (see --list)")
    ap.add_argument("--max-cells", type=int, help="run at most this many cells that are not finished yet")
    ap.add_argument("--claim-dir", help="share the cells with other processes running the same command: each takes "
                                        "the next cell nobody has claimed (an empty file DIR/<cell>.claim, created "
                                        "atomically); empty DIR before a new run, or its claimed cells are skipped")
    ap.add_argument("--stop-after", type=float, metavar="SECONDS",
                    help="start no new cell once this many seconds have passed since the process started")
    ap.add_argument("--steps", type=int, help="override max_steps of every cell (eval_steps becomes about steps/6)")
    ap.add_argument("--eval-steps", type=int, help="override eval_steps")
    ap.add_argument("--model", help="override the model of every cell (e.g. a float32 copy on a GPU box)")
    ap.add_argument("--corpus", help="override the matrix's corpus files: comma-separated, each optionally suffixed "
                                     "':drop-last' (its last line is truncated and dropped) and/or ':col=N' (the N-th "
                                     "tab-separated field); the matrix's dedupe still applies, its sentence count is not checked")
    ap.add_argument("--write-corpus", metavar="PATH", help="write the training file the cells use to PATH, then stop")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in training (CUDA only; never on CPU)")
    ap.add_argument("--data-dir", help="override the matrix's data_dir (SentEval data: STS-B dev and the test sets)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results-dir", default=DEFAULT_RESULTS, help="where cell JSON files go (default %(default)s)")
    ap.add_argument("--runs-dir", default=DEFAULT_RUNS, help="training output folders (git-ignored; default %(default)s)")
    ap.add_argument("--keep-runs", action="store_true", help="keep each cell's model folder after its JSON is written")
    ap.add_argument("--force", action="store_true", help="redo selected cells even when finished")
    ap.add_argument("--redo-other-code", action="store_true",
                    help="also redo finished cells whose package_sha256 differs from the code this process imported")
    ap.add_argument("--commit", action="store_true", help="git-commit each cell JSON (and its scores) and the regenerated report")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    ap.add_argument("--report-only", action="store_true", help="only regenerate the report from the JSON files")
    ap.add_argument("--results-md", default="docs/RESULTS.md", help="the results file whose section is rewritten")
    ap.add_argument("--section", default="study", help="section name in the results file (default %(default)s)")
    ap.add_argument("--plots-dir", default="docs", help="where the PNG plots go (default %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the cells in run order and their status, then stop")
    return ap.parse_args(argv)


def regenerate_report(args: argparse.Namespace, matrix: Matrix, echo=print) -> List[Path]:
    import study_report

    written = study_report.write_report(args.results_dir, matrix, Path(args.results_md), Path(args.plots_dir),
                                        section=args.section, command=report_command(args))
    echo(f"report: {args.results_md} section '{args.section}', plots {', '.join(str(p) for p in written)}")
    return written


def report_command(args: argparse.Namespace) -> str:
    parts = ["python", "benchmarks/study.py", "--report-only"]
    for flag, default in (("matrix", DEFAULT_MATRIX), ("results_dir", DEFAULT_RESULTS), ("section", "study"),
                          ("results_md", "docs/RESULTS.md"), ("plots_dir", "docs")):
        v = getattr(args, flag)
        if v != default:
            parts += ["--" + flag.replace("_", "-"), v]
    return " ".join(shlex.quote(p) for p in parts)


def _status_line(c: Cell, status: str, results_dir: str) -> str:
    extra = ""
    if status in ("done", "stale"):
        d = read_cell(results_dir, c.name) or {}
        code = (d.get("code") or {}).get("package_sha256")
        steps = (d.get("train") or {}).get("steps")
        sc = (d.get("scores") or {}).get("path")
        extra = (f"  code {code[:12] if code else 'not recorded'}" + (f", {steps} steps" if steps is not None else "")
                 + ("" if sc and (Path(results_dir) / sc).is_file() else ", no scores file"))
    return f"{c.group:16s} {c.name:20s} {status}{extra}"


def claim(claim_dir: str | os.PathLike, name: str) -> bool:
    """Take cell ``name`` for this process: True if no process sharing ``claim_dir`` has taken it (atomic)."""
    d = Path(claim_dir)
    d.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(d / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.time()  # --stop-after counts from here
    args = parse_args(argv)
    os.chdir(REPO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def echo(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    running = not (args.list or args.report_only or args.write_corpus)
    if running:
        try:
            preload()  # first: the code version covers every module a cell runs, imported before anyone edits it
        except ImportError as exc:
            print(f"study: error: cannot import what a cell needs: {exc}", file=sys.stderr)
            return 2
    corpus = None
    try:
        matrix = load_matrix(args.matrix)
        if args.corpus:
            matrix.corpus = parse_corpus_option(args.corpus)
            matrix.corpus_sentences = None
        if args.data_dir:
            matrix.data_dir = matrix.data_dir_override = args.data_dir
        if args.bf16 and args.device == "cpu":
            raise StudyError("--bf16 is for CUDA only: bf16 matrix products are far slower than float32 on this CPU")
        opts = Options(args.steps, args.eval_steps, args.model, args.bf16, args.device, args.results_dir, args.runs_dir,
                       args.keep_runs, args.force, args.commit)
        if args.report_only:
            regenerate_report(args, matrix, echo)
            return 0
        cells = select_cells(matrix, args.only, args.cells)
        corpus = CorpusFile(matrix)
        if args.write_corpus:
            shutil.copyfile(corpus.path, args.write_corpus)
            print(f"{args.write_corpus}: {corpus.sentences} sentences, sha256 {corpus.sha256}")
            return 0
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        if corpus is not None:
            corpus.close()
        return 2
    from esimcse_cli.core.trainer import TrainInterrupted

    try:
        plan = []
        for c in cells:
            status = cell_status(c, cell_settings(matrix, c, opts, corpus.sha256), opts.results_dir)
            plan.append((c, status))
        if args.list:
            print(f"corpus: {corpus.sentences:,} sentences, sha256 {corpus.sha256[:12]}; results in {opts.results_dir} "
                  f"(subfolders such as archive/ are not read)")
            for c, status in plan:
                print(_status_line(c, status, opts.results_dir))
            return 0

        def other_code(c: Cell) -> bool:
            d = read_cell(opts.results_dir, c.name) or {}
            return (d.get("code") or {}).get("package_sha256") != CODE.get("package_sha256")

        todo = [c for c, s in plan if s == "pending" or (args.force and s in ("done", "stale"))
                or (args.redo_other_code and s == "done" and other_code(c))]
        for c, s in plan:
            if s == "stale" and not args.force:
                echo(f"{c.name}: {cell_json_path(opts.results_dir, c.name)} was made with other settings; "
                     "skipped (pass --force to redo it, or use another --results-dir)")
            elif s == "unsupported":
                echo(f"{c.name}: not run: {c.unsupported}")
        done_before = sum(1 for _, s in plan if s == "done")
        if args.max_cells is not None:
            todo = todo[: max(0, args.max_cells)]
        shell_ok = corpus.shell_reproduces()
        echo(f"{len(todo)} cell(s) to run, {done_before} already finished; corpus {corpus.path}: {corpus.sentences:,} "
             f"sentences, sha256 {corpus.sha256[:12]}" + ("" if shell_ok is not False else
                                                          " (WARNING: the recorded shell pipeline does not rebuild it here)")
             + f"; code {CODE.get('package_sha256', '?')[:12]}"
             + (f" (uncommitted: {', '.join(CODE['uncommitted'])})" if CODE.get("uncommitted") else ""))
        data = EvalData(matrix) if todo else None
        failed = []
        for i, c in enumerate(todo, 1):
            if args.stop_after is not None and time.time() - started > args.stop_after:
                echo(f"--stop-after {args.stop_after:g}s reached: {len(todo) - i + 1} cell(s) not started "
                     "(run the same command again to go on)")
                break
            if args.claim_dir and not claim(args.claim_dir, c.name):
                continue
            t0 = time.time()
            echo(f"cell {i}/{len(todo)}: {c.name} ({c.group}, {c.label})")
            try:
                path = run_cell(c, matrix, opts, corpus, data, echo)
            except (KeyboardInterrupt, TrainInterrupted):
                raise
            except Exception as exc:  # one broken cell must not stop an unattended study
                import traceback

                from esimcse_cli.core.errors import first_line

                traceback.print_exc()
                echo(f"cell {c.name} FAILED ({type(exc).__name__}: {first_line(exc)}); "
                     "it stays pending, going on with the next cell")
                failed.append(c.name)
                continue
            doc = json.loads(path.read_text(encoding="utf-8"))
            echo(f"cell {c.name} done in {time.time() - t0:.0f}s: test avg {doc['eval']['avg']}; wrote {path}")
            if args.commit:
                git_commit([path, Path(opts.results_dir) / doc["scores"]["path"]],
                           f"study: cell {c.name} (test avg {doc['eval']['avg']})", echo)
            if not args.no_report:
                written = regenerate_report(args, matrix, echo)
                if args.commit:
                    md = Path(args.results_md)
                    paths = [p for p in written]
                    if results_md_only_section_changed(md, args.section):
                        paths.append(md)
                    else:
                        echo(f"  {md} has changes outside the '{args.section}' section; not committing it")
                    git_commit(paths, f"study: report after {c.name}", echo)
        if failed:
            echo(f"{len(failed)} cell(s) failed: {', '.join(failed)}")
            return 1
        return 0
    except KeyboardInterrupt:
        echo("interrupted: the training state was saved where possible; run the same command again to resume")
        return 130
    except TrainInterrupted as exc:
        echo(f"interrupted: {exc}; run the same command again to resume")
        return exc.exit_code
    finally:
        corpus.close()


if __name__ == "__main__":
    sys.exit(main())
