"""The results study: does ESimCSE beat SimCSE here? (issue 6)

Runs a matrix of ``esimcse train`` cells through the core API (the same ``trainer.train`` the CLI calls), then,
on the model each run selected on STS-B dev, the 7 STS test tasks with length-difference buckets and the
``length-analysis`` repetition probe (``length.analyze_model``, i.e. eval-sts + the bias probe). Each finished
cell writes ``docs/results/<cell>.json``; a re-run skips finished cells, so the study can be stopped (Ctrl-C or
SIGTERM: the trainer saves its state) and resumed by running the same command again. ``docs/RESULTS.md``'s
``study`` section and ``docs/study_*.png`` are regenerated from the JSON files (``benchmarks/study_report.py``).

    python benchmarks/study.py --only core                # the core matrix (resumable)
    python benchmarks/study.py --only core,mean_pooling   # then an optional group
    python benchmarks/study.py --cells simcse-s42 --force # redo one cell (its JSON records this command)
    python benchmarks/study.py --list                     # cells, and which are finished
    python benchmarks/study.py --report-only              # regenerate the report from the JSON files
    python benchmarks/study.py --steps 2 --results-dir /tmp/smoke --runs-dir /tmp/smoke-runs --no-report  # smoke test

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
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_MATRIX = "benchmarks/study.yaml"
DEFAULT_RESULTS = "docs/results"
DEFAULT_RUNS = "runs/study"
SCHEMA = 1
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

    def cells(self) -> List[Cell]:
        return [c for g in self.groups for c in g.cells]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise StudyError(f"{self.path}: no group {name!r} (groups: {', '.join(g.name for g in self.groups)})")


EVAL_DEFAULTS = {"buckets": "0-3,4-", "length_unit": "words", "batch_size": 128, "probe_sentences": 1000,
                 "probe_dup_rate": 0.32, "probe_variant": "paper", "probe_seed": 42}


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
    corpus = data.get("corpus") or []
    if isinstance(corpus, (str, dict)):
        corpus = [corpus]
    corpus = [{"path": c} if isinstance(c, str) else dict(c) for c in corpus]
    for c in corpus:
        if "path" not in c or set(c) - {"path", "drop_last_line"}:
            raise StudyError(f"{p}: corpus entries take path and drop_last_line, got {c}")
    ev = dict(EVAL_DEFAULTS)
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
    return Matrix(str(data.get("data_dir", "../shared/data")), corpus, defaults, ev, groups, str(path), list(corpus))


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
    return [{"path": c["path"], "drop_last_line": bool(c.get("drop_last_line", False))} for c in corpus]


def corpus_spec(matrix: Matrix) -> List[Dict[str, Any]]:
    return corpus_spec_list(matrix.corpus)


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
class CorpusFile:
    """The training corpus as one file: the single listed file, or a concatenation spooled outside the repo."""

    def __init__(self, matrix: Matrix):
        self.spec = corpus_spec(matrix)
        if not self.spec:
            raise StudyError(f"{matrix.path}: no corpus given")
        for c in self.spec:
            if not Path(c["path"]).is_file():
                raise StudyError(f"{c['path']}: corpus file not found")
        self._tmp: Optional[str] = None
        if len(self.spec) == 1 and not self.spec[0]["drop_last_line"]:
            self.path = self.spec[0]["path"]
        else:
            fd, self._tmp = tempfile.mkstemp(prefix="esimcse-study-corpus-", suffix=".txt")
            with os.fdopen(fd, "wb") as out:
                for c in self.spec:
                    data = Path(c["path"]).read_bytes()
                    lines = data.splitlines(keepends=True)
                    if c["drop_last_line"] and lines:
                        lines = lines[:-1]
                    for ln in lines:
                        out.write(ln if ln.endswith(b"\n") else ln + b"\n")
            self.path = self._tmp
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        self.sha256 = h.hexdigest()

    def shell(self) -> str:
        """How the CLI gets the same bytes: a path, or a pipeline feeding stdin (``-``)."""
        if self._tmp is None:
            return shlex.quote(self.path)
        parts = [f"<(head -n -1 {shlex.quote(c['path'])})" if c["drop_last_line"] else shlex.quote(c["path"]) for c in self.spec]
        return "cat " + " ".join(parts) + " |"

    def close(self) -> None:
        if self._tmp:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None


# ============================================================================== commands recorded per cell
def parse_corpus_option(spec: str) -> List[Dict[str, Any]]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        drop = part.endswith(":drop-last")
        out.append({"path": part[: -len(":drop-last")] if drop else part, "drop_last_line": drop})
    if not out:
        raise StudyError("--corpus: no file given")
    return out


def corpus_option(corpus: List[Dict[str, Any]]) -> str:
    return ",".join(c["path"] + (":drop-last" if c.get("drop_last_line") else "") for c in corpus)


def study_command(cell: Cell, opts: Options, matrix_path: str, corpus: Optional[List[Dict[str, Any]]] = None,
                  matrix_corpus: Optional[List[Dict[str, Any]]] = None, data_dir: Optional[str] = None) -> str:
    parts = ["python", "benchmarks/study.py", "--cells", cell.name]
    if matrix_path != DEFAULT_MATRIX:
        parts += ["--matrix", matrix_path]
    if corpus is not None and corpus_spec_list(corpus) != corpus_spec_list(matrix_corpus or []):
        parts += ["--corpus", corpus_option(corpus)]
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


_BOOL_FLAGS = {"repetition": "repetition", "momentum_queue": "momentum-queue", "mlp": "mlp", "bf16": "bf16",
               "dedupe": "dedupe", "keep_state": "keep-state"}


def train_cli(cfg, corpus: CorpusFile, out_dir: str, data_dir: str) -> str:
    """The ``esimcse train`` command line equivalent to ``cfg`` (options that differ from the defaults)."""
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
              "--json", json_path]
    return " ".join(shlex.quote(p) for p in parts)


# ============================================================================== running a cell
def cell_json_path(results_dir: str | os.PathLike, name: str) -> Path:
    return Path(results_dir) / f"{name}.json"


def cell_status(cell: Cell, settings: Dict[str, Any], results_dir: str | os.PathLike) -> str:
    """``done`` (finished with these settings), ``stale`` (finished with other settings), ``pending`` or ``unsupported``."""
    if cell.unsupported:
        return "unsupported"
    p = cell_json_path(results_dir, cell.name)
    if not p.is_file():
        return "pending"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return "pending"
    return "done" if data.get("fingerprint") == fingerprint(settings) else "stale"


def _eval_model(encoder, matrix: Matrix, label: str, task_pairs, probe_texts, dev_scorer) -> Dict[str, Any]:
    from esimcse_cli.core import length

    ev = matrix.eval
    t0 = time.time()
    res = length.analyze_model(encoder, task_pairs, probe_texts, "test", str(ev["buckets"]), str(ev["length_unit"]),
                               int(ev["batch_size"]), float(ev["probe_dup_rate"]), str(ev["probe_variant"]),
                               int(ev["probe_seed"]), label=label)
    res["seconds"] = round(time.time() - t0, 2)
    if dev_scorer is not None:
        t1 = time.time()
        res["stsb_dev"] = round(float(dev_scorer(encoder, batch_size=int(ev["batch_size"]))), 4)
        res["dev_seconds"] = round(time.time() - t1, 2)
    return res


class EvalData:
    """The 7 test tasks, the probe sentences and STS-B dev, loaded once per study."""

    def __init__(self, matrix: Matrix):
        from esimcse_cli.core import evaluate, length, sts

        self.task_pairs = evaluate.load_tasks(matrix.data_dir, None, "test")
        ev = matrix.eval
        self.probe_texts, self.probe_meta = length.choose_probe_texts(self.task_pairs, int(ev["probe_sentences"]), None,
                                                                      int(ev["probe_seed"]))
        self.dev = evaluate.PairScorer(sts.load_task(matrix.data_dir, "STSBenchmark", split="dev"))


def run_untrained(cell: Cell, matrix: Matrix, opts: Options, settings: Dict[str, Any], data: EvalData) -> Dict[str, Any]:
    from esimcse_cli.core.models import load_encoder

    model = settings["model"]
    versions = _versions()
    t0 = time.time()
    enc = load_encoder(model, pooling=cell.pooling, device=opts.device)
    res = _eval_model(enc, matrix, cell.name, data.task_pairs, data.probe_texts, data.dev)
    return {"eval": res, "wall_s": round(time.time() - t0, 2), "versions": versions,
            "cli_commands": [eval_cli(model, cell.pooling, matrix.data_dir, matrix.eval, f"{cell.name}.json")]}


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


def run_trained(cell: Cell, matrix: Matrix, opts: Options, corpus: CorpusFile, data: EvalData,
                echo=print) -> Dict[str, Any]:
    from esimcse_cli.core import checkpoint as ckpt
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.errors import ConfigError
    from esimcse_cli.core.models import load_encoder
    from esimcse_cli.core.trainer import train

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
                result = train(dataclasses.replace(cfg, resume=True), on_step=on_step, command=command)
                resumed = True
            except ConfigError as exc:
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
        "best_dev": manifest.get("best_dev"),
        "best_step": manifest.get("best_step"),
        "start_dev": dev_curve[0][1] if dev_curve and dev_curve[0][0] == 0 else None,
        "dev_curve": dev_curve,
        "loss_curve": loss_curve,
        "wall_s": round(float(manifest.get("wall_s") or 0.0), 2),
        "sentences_per_s_incl_dev_eval": manifest.get("sentences_per_s"),
        "step_seconds_mean": round(sum(step_seconds) / len(step_seconds), 4) if step_seconds else None,
        "sentences_per_s": round(cfg.batch_size * cfg.grad_accum * len(step_seconds) / sum(step_seconds), 3) if step_seconds else None,
        "corpus": manifest.get("corpus"),
        "queue_size": cfg.effective_queue_size(),
        "resumed_from_step": manifest.get("resumed_from_step"),
        "reused_finished_run": reused,
        "device": manifest.get("device"),
    }
    echo(f"  {cell.name}: trained, best STS-B dev {train_info['best_dev']} at step {train_info['best_step']}; evaluating")
    enc = load_encoder(str(out), device=opts.device)
    res = _eval_model(enc, matrix, cell.name, data.task_pairs, data.probe_texts, None)
    return {
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "corpus", "overwrite", "resume")},
        "train": train_info,
        "eval": res,
        "versions": manifest.get("versions"),
        "wall_s": round(time.time() - t_cell + (0.0 if not reused else train_info["wall_s"]), 2),
        "cli_commands": [train_cli(cfg, corpus, str(out), matrix.data_dir),
                         eval_cli(str(out), None, matrix.data_dir, matrix.eval, f"{cell.name}.json")],
    }


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


def run_cell(cell: Cell, matrix: Matrix, opts: Options, corpus: Optional[CorpusFile], data: EvalData, echo=print) -> Path:
    settings = cell_settings(matrix, cell, opts, corpus.sha256 if corpus is not None else None)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if cell.kind == "untrained":
        body = run_untrained(cell, matrix, opts, settings, data)
    else:
        body = run_trained(cell, matrix, opts, corpus, data, echo)
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


# ============================================================================== main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", default=DEFAULT_MATRIX, help="the matrix YAML (default %(default)s)")
    ap.add_argument("--only", help="comma-separated groups to run (e.g. core or core,mean_pooling)")
    ap.add_argument("--cells", help="comma-separated cell names to run (see --list)")
    ap.add_argument("--max-cells", type=int, help="run at most this many cells that are not finished yet")
    ap.add_argument("--steps", type=int, help="override max_steps of every cell (eval_steps becomes about steps/6)")
    ap.add_argument("--eval-steps", type=int, help="override eval_steps")
    ap.add_argument("--model", help="override the model of every cell (e.g. a float32 copy on a GPU box)")
    ap.add_argument("--corpus", help="override the matrix's corpus: comma-separated files, each optionally "
                                     "suffixed ':drop-last' (its last line is truncated and dropped)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in training (CUDA only; never on CPU)")
    ap.add_argument("--data-dir", help="override the matrix's data_dir (SentEval data: STS-B dev and the test sets)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results-dir", default=DEFAULT_RESULTS, help="where cell JSON files go (default %(default)s)")
    ap.add_argument("--runs-dir", default=DEFAULT_RUNS, help="training output folders (git-ignored; default %(default)s)")
    ap.add_argument("--keep-runs", action="store_true", help="keep each cell's model folder after its JSON is written")
    ap.add_argument("--force", action="store_true", help="redo selected cells even when finished")
    ap.add_argument("--commit", action="store_true", help="git-commit each cell JSON and the regenerated report")
    ap.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    ap.add_argument("--report-only", action="store_true", help="only regenerate the report from the JSON files")
    ap.add_argument("--results-md", default="docs/RESULTS.md", help="the results file whose section is rewritten")
    ap.add_argument("--section", default="study", help="section name in the results file (default %(default)s)")
    ap.add_argument("--plots-dir", default="docs", help="where the PNG plots go (default %(default)s)")
    ap.add_argument("--list", action="store_true", help="list the cells and their status, then stop")
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


CODE: Dict[str, Any] = {}


def code_version() -> Dict[str, Any]:
    """The commit of the working tree when the study started, and whether the package had local changes then
    (several people share this tree: a cell's numbers belong to the code that was imported)."""
    out: Dict[str, Any] = {}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "esimcse_cli"], cwd=REPO, capture_output=True,
                               text=True, timeout=30)
        if head.returncode == 0:
            out["git_head"] = head.stdout.strip()
            out["package_changed_since_head"] = sorted(ln[3:] for ln in dirty.stdout.splitlines() if ln.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    h = hashlib.sha256()
    for f in sorted((REPO / "esimcse_cli").rglob("*.py")):
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    out["package_sha256"] = h.hexdigest()
    return out


def preload() -> None:
    """Import every module a cell needs now: other people may edit the working tree during a long study, and a
    module first imported hours later (after a cell's evaluation, say) could then fail half-way."""
    import importlib

    for name in ("atomic", "augment", "checkpoint", "config", "contrastive", "corpus", "distributed", "encoder",
                 "errors", "evaluate", "export", "length", "loss", "models", "momentum", "pooling", "sts", "trainer"):
        importlib.import_module(f"esimcse_cli.core.{name}")
    import matplotlib  # noqa: F401  (report plots)
    import study_report  # noqa: F401

    CODE.update(code_version())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def echo(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    try:
        matrix = load_matrix(args.matrix)
        if args.corpus:
            matrix.corpus = parse_corpus_option(args.corpus)
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
    except StudyError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    from esimcse_cli.core.trainer import TrainInterrupted

    try:
        plan = []
        for c in cells:
            status = cell_status(c, cell_settings(matrix, c, opts, corpus.sha256), opts.results_dir)
            plan.append((c, status))
        if args.list:
            for c, status in plan:
                print(f"{c.group:14s} {c.name:22s} {status}")
            return 0
        todo = [c for c, s in plan if s == "pending" or (args.force and s in ("done", "stale"))]
        for c, s in plan:
            if s == "stale" and not args.force:
                echo(f"{c.name}: {cell_json_path(opts.results_dir, c.name)} was made with other settings; "
                     "skipped (pass --force to redo it, or use another --results-dir)")
            elif s == "unsupported":
                echo(f"{c.name}: not run: {c.unsupported}")
        done_before = sum(1 for _, s in plan if s == "done")
        if args.max_cells is not None:
            todo = todo[: max(0, args.max_cells)]
        echo(f"{len(todo)} cell(s) to run, {done_before} already finished; corpus {corpus.path} (sha256 {corpus.sha256[:12]})")
        if todo:
            preload()
        data = EvalData(matrix) if todo else None
        failed = []
        for i, c in enumerate(todo, 1):
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
                git_commit([path], f"study: cell {c.name} (test avg {doc['eval']['avg']})", echo)
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
