"""The model card: ``README.md`` (and ``dev_curve.png``) in a trained model's folder, as sentence-transformers writes one.

    train_config.yaml + metrics.jsonl + manifest.json (+ esimcse.json) -> README.md: YAML front matter the hub
    reads, the method and its paper, the hyperparameters (non-defaults first), the STS-B dev curve (a table, and
    dev_curve.png where matplotlib is present), the selection result, how to load it (sentence-transformers,
    transformers with the pooling spelled out), the command that reproduces it, hardware, time and versions.

``write_card(out_dir)`` is called by ``train`` on rank 0 right after the final ``manifest.json`` (also for a run
stopped by a signal or a callback, whose card says it is unfinished; a resume rewrites it). It never fails the
run: a problem is one warning, and a plot that cannot be drawn only leaves the PNG out.

``update_eval_section(folder, result)`` is ``eval-sts --update-card``: it adds or replaces the evaluation section
between :data:`EVAL_BEGIN` and :data:`EVAL_END` (a folder without README.md gets that section alone).
Every file goes through :mod:`esimcse_cli.core.atomic`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from esimcse_cli.core.atomic import atomic_path, atomic_write_text
from esimcse_cli.core.config import TrainConfig
from esimcse_cli.core.errors import InputError, first_line

log = logging.getLogger("esimcse")

CARD_NAME = "README.md"
PLOT_NAME = "dev_curve.png"
EVAL_BEGIN = "<!-- esimcse-eval:begin -->"
EVAL_END = "<!-- esimcse-eval:end -->"
DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the bundled default model is
ESIMCSE_PAPER = "https://arxiv.org/abs/2109.04380"
SIMCSE_PAPER = "https://arxiv.org/abs/2104.08821"
# options that are about this run's bookkeeping, not the model: left out of the hyperparameter table
_NOT_HYPERPARAMETERS = ("output_dir", "resume", "overwrite")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# =============================================================================== train: the card
def write_card(out_dir: str | os.PathLike) -> Optional[Path]:
    """Write ``OUT/README.md`` from the run's files; returns its path, or None (with a warning) when it cannot."""
    out = Path(out_dir)
    try:
        run = _read_run(out)
        plot = _write_plot(out, dev_curve(run["metrics"]))
        atomic_write_text(out / CARD_NAME, render_card(run, plot))
        return out / CARD_NAME
    except Exception as exc:  # the card is a courtesy: the trained model is already written
        log.warning("%s: could not write the model card (%s)", out / CARD_NAME, first_line(exc, type(exc).__name__))
        return None


def _read_run(out: Path) -> Dict[str, Any]:
    config = yaml.safe_load((out / "train_config.yaml").read_text(encoding="utf-8")) or {}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    metrics: List[Dict[str, Any]] = []
    if (out / "metrics.jsonl").is_file():
        for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                metrics.append(row)
    record: Dict[str, Any] = {}
    if (out / "esimcse.json").is_file():  # absent when a run stopped before any model was written
        try:
            record = json.loads((out / "esimcse.json").read_text(encoding="utf-8"))
        except ValueError:
            record = {}
    return {"config": config, "manifest": manifest, "metrics": metrics, "record": record if isinstance(record, dict) else {}}


def dev_curve(metrics: List[Dict[str, Any]]) -> List[tuple]:
    """``[(step, STS-B dev or None), ...]``: the evaluation rows of metrics.jsonl, in order."""
    return [(int(r["step"]), r["dev_spearman"]) for r in metrics if "dev_spearman" in r]


def base_model_id(config: Dict[str, Any], manifest: Dict[str, Any]) -> Optional[str]:
    """The hub id of the base model, or None (a local folder whose own esimcse.json names no hub model)."""
    from esimcse_cli.core.models import DEFAULT_MODEL, DEFAULT_MODEL_LABEL

    def hub_id(name: Any) -> Optional[str]:
        if name in (None, DEFAULT_MODEL, DEFAULT_MODEL_LABEL):
            return DEFAULT_HUB_ID
        text = str(name)
        if os.path.lexists(text) or not _HUB_ID.match(text):
            return None
        return text

    model = config.get("model", DEFAULT_MODEL)
    folder = Path(str(model)) if model not in (None, DEFAULT_MODEL) else None
    if folder is not None and folder.is_dir():  # a local folder: what it says it was trained from
        try:
            own = json.loads((folder / "esimcse.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return hub_id(own.get("base_model")) if isinstance(own, dict) and own.get("base_model") else None
    return hub_id(model)


def method_text(cfg: Dict[str, Any]) -> str:
    """The method and the parts that were on, with the papers linked."""
    rep, mq = bool(cfg.get("repetition")), bool(cfg.get("momentum_queue"))
    aug = cfg.get("augmentation", "repetition")
    level = cfg.get("repetition_level", "subword")
    if rep and level != "subword":
        unit = "whole words" + (f" ({cfg.get('segmenter')} segmentation)" if level == "word" else "") if level == "word" else "characters"
        positive = (f"{aug} of {unit} (rate {cfg.get('dup_rate')}, {cfg.get('repetition_variant')} variant)" if aug == "repetition"
                    else f"{aug} of {unit} (the paper's baseline; rate {cfg.get('dup_rate')})")
    elif rep and aug != "repetition":
        positive = f"word {aug} (the paper's baseline; rate {cfg.get('dup_rate')})"
    elif rep:
        positive = f"word repetition (dup rate {cfg.get('dup_rate')}, {cfg.get('repetition_variant')} variant)"
    else:
        positive = "the same sentence with a second dropout mask"
    negatives = "the other sentences of the batch"
    if mq:
        size = TrainConfig(**_known(cfg)).effective_queue_size()
        negatives += (f" and a queue of {size} momentum-encoder embeddings (momentum {cfg.get('momentum')}, "
                      f"{cfg.get('momentum_variant')} variant)")
    name = "ESimCSE" if rep and mq else "SimCSE" if not (rep or mq) else "SimCSE + " + ("word repetition" if rep else "momentum contrast")
    papers = f"[ESimCSE]({ESIMCSE_PAPER}) (Wu et al., 2021), building on [SimCSE]({SIMCSE_PAPER}) (Gao et al., 2021)"
    if not (rep or mq):
        papers = f"[SimCSE]({SIMCSE_PAPER}) (Gao et al., 2021), the baseline of [ESimCSE]({ESIMCSE_PAPER})"
    return (f"**{name}** (`--method {cfg.get('method')}`, repetition {'on' if rep else 'off'}, momentum queue "
            f"{'on' if mq else 'off'}): unsupervised contrastive learning, {papers}.\n\n"
            f"- positive of a sentence: {positive}\n- negatives: {negatives}\n"
            f"- InfoNCE loss at temperature {cfg.get('temperature')}; training pooler `{cfg.get('pooler')}`"
            f"{' + an MLP used in training only' if cfg.get('mlp') else ''}")


def _known(cfg: Dict[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in cfg.items() if k in names}


def hyperparameter_rows(cfg: Dict[str, Any]) -> List[tuple]:
    """``[(option, value, default), ...]``: the options that differ from ``TrainConfig()`` first, then the rest.

    A default that depends on the method (``repetition``, ``momentum_queue``, ``mlp``, ``max_grad_norm``) is the
    one this run's method, pooler and variant give.
    """
    plain = TrainConfig()
    given = _known(cfg)
    implied = dataclasses.replace(plain, method=given.get("method", plain.method), pooler=given.get("pooler", plain.pooler),
                                  momentum_variant=given.get("momentum_variant", plain.momentum_variant)).resolved()
    changed, same = [], []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_HYPERPARAMETERS or f.name not in given:
            continue
        default = getattr(plain, f.name)
        if default is None and getattr(implied, f.name) is not None:
            default = getattr(implied, f.name)
        row = (f.name, given[f.name], default)
        (same if given[f.name] == default else changed).append(row)
    return changed + same


def selection_text(config: Dict[str, Any], manifest: Dict[str, Any]) -> str:
    """One line: the selected step and score, the starting model kept, or no selection (no dev data)."""
    steps, total = manifest.get("steps"), manifest.get("total_steps")
    best_step, best_dev, start_dev = manifest.get("best_step"), manifest.get("best_dev"), manifest.get("start_dev")
    unfinished = manifest.get("stopped") is not None
    if not config.get("dev_data"):
        if unfinished:
            return "No model selection (no dev data); the run stopped before its last step, so no model is written yet."
        return f"No model selection (no dev data): the last step ({steps}) is the model."
    if best_step == 0 or manifest.get("kept_starting_model"):
        return (f"No step beat the starting model on STS-B dev ({_num(start_dev)}): the starting model was kept "
                f"(the folder holds the base model's weights).")
    if best_step is None:
        return f"Nothing was scored on STS-B dev in this run: the model is the last step ({steps})."
    what = "best so far" if unfinished else "selected"
    return (f"Model selection on STS-B dev Spearman ({what}): step {best_step} of {total}, **{_num(best_dev)}** "
            f"(the starting model: {_num(start_dev)}).")


def render_card(run: Dict[str, Any], plot: Optional[str] = None) -> str:
    """The card's text (see the module docstring); ``plot``: the PNG's file name when one was written."""
    cfg, man, record = run["config"], run["manifest"], run["record"]
    curve = dev_curve(run["metrics"])
    corpus = man.get("corpus") or {}
    unfinished = man.get("stopped") is not None
    pooling = record.get("pooling") or (man.get("pooler") or {}).get("exported") or "avg"
    max_len = record.get("max_seq_length")
    where = cfg.get("output_dir") or "path/to/this-model"
    front: Dict[str, Any] = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", cfg.get("method") or "esimcse"],
    }
    base = base_model_id(cfg, man)
    if base:
        front["base_model"] = base
    front["esimcse"] = {
        "method": cfg.get("method"), "repetition": bool(cfg.get("repetition")), "momentum_queue": bool(cfg.get("momentum_queue")),
        "corpus": Path(str(corpus.get("source") or cfg.get("corpus") or "")).name, "sentences": corpus.get("sentences"),
        "corpus_sha256": corpus.get("sha256"), "steps": man.get("steps"), "total_steps": man.get("total_steps"),
        "finished": not unfinished, "best_step": man.get("best_step"), "stsb_dev_spearman": man.get("best_dev"),
        "pooling": pooling,
    }
    title = Path(str(where)).name or "model"
    parts = ["---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n", f"# {title}\n"]
    if unfinished:
        how = "a signal (Ctrl-C / SIGTERM)" if man.get("stopped") == "signal" else "a callback"
        parts.append(f"> **Unfinished run:** stopped by {how} at step {man.get('steps')} of {man.get('total_steps')}. "
                     f"The state is saved in `state/`; continue with `{shlex.join(['esimcse', 'train', '--resume', '-o', str(where)])}`.\n")
    base_text = f"[`{base}`](https://huggingface.co/{base})" if base else f"`{man.get('model') or cfg.get('model')}`"
    parts.append(f"A sentence-embedding model trained with `esimcse train` from {base_text} on `{front['esimcse']['corpus']}` "
                 f"({corpus.get('sentences')} sentences; sha256 `{str(corpus.get('sha256', ''))[:12]}…`). It maps a sentence to a "
                 f"vector for semantic similarity, search and clustering.\n")
    parts.append("## Method\n\n" + method_text(cfg) + "\n")

    rows = hyperparameter_rows(cfg)
    n_changed = sum(1 for _, v, d in rows if v != d)
    table = ["| option | value | default |", "|---|---|---|"]
    table += [f"| `{k}` | {_cell(v)} | {_cell(d)} |" for k, v, d in rows]
    parts.append(f"## Hyperparameters\n\nThe {n_changed} options that differ from the defaults come first.\n\n" + "\n".join(table) + "\n")

    sel = selection_text(cfg, man)
    dev = ["## STS-B dev curve\n"]
    if curve:
        dev.append("| step | STS-B dev |\n|---:|---:|\n" + "\n".join(f"| {s} | {_num(v)} |" for s, v in curve) + "\n")
        if plot:
            dev.append(f"![STS-B dev Spearman by step]({plot})\n")
    else:
        dev.append("Not scored (no dev data).\n")
    dev.append(f"**Selection:** {sel}\n")
    parts.append("\n".join(dev))

    parts.append(usage_text(str(where), pooling, max_len))
    parts.append("## Reproduce\n\n```bash\n" + shlex.join([str(x) for x in man.get("equivalent_command") or []]) + "\n```\n")
    wall = man.get("wall_s")
    resumed = man.get("resumed_from_step")
    hw = [f"- device: `{man.get('device')}`, processes (world size): {man.get('world_size')}",
          f"- training time: {_duration(wall)} for steps {resumed or 0}–{man.get('steps')}"
          + (f" (this part; resumed from step {resumed})" if resumed else "")
          + (f", {man.get('sentences_per_s'):.1f} sentences/s" if isinstance(man.get("sentences_per_s"), (int, float)) else ""),
          f"- started {man.get('started')}, finished {man.get('finished')}"]
    parts.append("## Hardware and time\n\n" + "\n".join(hw) + "\n")
    versions = man.get("versions") or {}
    parts.append("## Versions\n\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()) + "\n")
    return "\n".join(parts)


def usage_text(where: str, pooling: str, max_len: Optional[int]) -> str:
    """How to load the model, in sentence-transformers and in transformers, with the pooling spelled out."""
    from esimcse_cli.core.export import ST_MODES

    spelled = {
        "avg": "the mean of the last layer's token states over the real tokens (attention mask)",
        "cls_before_pooler": "the last layer's [CLS] state, `last_hidden_state[:, 0]` (no pooler layer)",
        "cls": "the model's pooler output (dense + tanh over [CLS])",
        "avg_first_last": "the mean over real tokens of (first layer + last layer) / 2",
        "avg_top2": "the mean over real tokens of (last layer + second-to-last layer) / 2",
    }.get(pooling, pooling)
    pool = {
        "avg": ["mask = batch[\"attention_mask\"].unsqueeze(-1).float()",
                "emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)"],
        "cls_before_pooler": ["emb = out.last_hidden_state[:, 0]"],
        "cls": ["emb = out.pooler_output"],
        "avg_first_last": ["mask = batch[\"attention_mask\"].unsqueeze(-1).float()",
                           "states = (out.hidden_states[1] + out.hidden_states[-1]) / 2",
                           "emb = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)"],
        "avg_top2": ["mask = batch[\"attention_mask\"].unsqueeze(-1).float()",
                     "states = (out.hidden_states[-1] + out.hidden_states[-2]) / 2",
                     "emb = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)"],
    }.get(pooling, ["emb = out.last_hidden_state[:, 0]"])
    hidden = ", output_hidden_states=True" if pooling in ("avg_first_last", "avg_top2") else ""
    length = f", max_length={max_len}" if max_len else ""
    text = [f"## Usage\n\nPooling: `{pooling}`, {spelled}; vectors are L2-normalised and compared by cosine"
            + (f"; at most {max_len} tokens." if max_len else ".") + "\n"]
    if pooling in ST_MODES:
        text.append("With sentence-transformers:\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\n"
                    f"model = SentenceTransformer({where!r})\n"
                    "emb = model.encode([\"A man is playing a guitar.\", \"Someone plays the guitar.\"], normalize_embeddings=True)\n"
                    "print(emb @ emb.T)\n```\n")
    else:
        text.append(f"sentence-transformers has no `{pooling}` pooling: use transformers as below, or `esimcse encode --model {where}`.\n")
    text.append("With transformers (the same pooling, by hand):\n\n```python\nimport torch\n"
                "from transformers import AutoModel, AutoTokenizer\n\n"
                f"tok = AutoTokenizer.from_pretrained({where!r})\nmodel = AutoModel.from_pretrained({where!r}).eval()\n"
                "sentences = [\"A man is playing a guitar.\", \"Someone plays the guitar.\"]\n"
                f"batch = tok(sentences, padding=True, truncation=True{length}, return_tensors=\"pt\")\n"
                f"with torch.no_grad():\n    out = model(**batch{hidden})\n" + "\n".join(pool) + "\n"
                "emb = torch.nn.functional.normalize(emb, dim=-1)\nprint(emb @ emb.T)\n```\n")
    text.append(f"With this tool: `esimcse encode sentences.txt --model {where} -o vectors.npy`.\n")
    return "\n".join(text)


def _write_plot(out: Path, curve: List[tuple]) -> Optional[str]:
    """``dev_curve.png`` (atomically) where matplotlib is present and there is a curve; its name, or None."""
    points = [(s, v) for s, v in curve if isinstance(v, (int, float)) and math.isfinite(v)]
    target = out / PLOT_NAME
    if not points:
        target.unlink(missing_ok=True)  # never link a stale picture
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        target.unlink(missing_ok=True)
        log.debug("matplotlib is not installed: the model card has no dev-curve picture")
        return None
    try:
        fig, ax = plt.subplots(figsize=(4.5, 2.8))
        try:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o")
            ax.set_xlabel("step")
            ax.set_ylabel("STS-B dev Spearman x100")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            with atomic_path(target, suffix=".png") as tmp:
                fig.savefig(tmp, format="png", dpi=100)
        finally:
            plt.close(fig)
    except Exception as exc:  # the picture is optional
        target.unlink(missing_ok=True)
        log.warning("%s: could not draw the dev curve (%s); the card has the table only", target, exc)
        return None
    return PLOT_NAME


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "–"


def _cell(v: Any) -> str:
    text = "null" if v is None else ("true" if v is True else "false" if v is False else str(v))
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _duration(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


# =============================================================================== eval-sts --update-card
def card_folder(model: Optional[str]) -> Path:
    """The local model folder whose card ``--update-card`` edits; the default or a hub model is refused."""
    from esimcse_cli.core.models import resolve_model_path

    path, kind = resolve_model_path(model)
    if kind != "folder":
        raise InputError(f"--update-card: --model {model or 'default'} is not a local model folder; give --model FOLDER "
                         "(the card is its README.md)")
    return Path(path)


def eval_section(result: Dict[str, Any]) -> str:
    """The evaluation section (between the markers) for an eval-sts result dict."""
    bs = result.get("bootstrap")
    head = "| task | split | pairs | Spearman x100 |" + (f" {bs['level']:.0%} interval |" if bs else "")
    rows = [head, "|---|---|---:|---:|" + ("---|" if bs else "")]

    def line(name: str, split: str, pairs: Any, value: Any, ci: Any) -> str:
        cells = f"| {name} | {split} | {pairs} | {_num(value)} |"
        if bs:
            cells += f" [{_num(ci[0])}, {_num(ci[1])}] |" if ci else " – |"
        return cells

    for task, e in result.get("tasks", {}).items():
        rows.append(line(task, e.get("split", ""), e.get("pairs"), e.get("spearman"), e.get("ci")))
    total = sum(int(e.get("pairs") or 0) for e in result.get("tasks", {}).values())
    rows.append(line("**avg**", "", total, result.get("avg"), result.get("avg_ci")))
    note = (f"`esimcse eval-sts` (SentEval protocol: cosine, then Spearman x100; STS12-16 `{result.get('aggregate')}`), "
            f"pooling `{result.get('pooling')}`, max length {result.get('max_length')}.")
    if bs:
        note += f" Intervals: {bs['n']} bootstrap replicates ({bs.get('interval', 'percentile')}), seed {bs.get('seed')}."
    return f"{EVAL_BEGIN}\n## Evaluation\n\n{note}\n\n" + "\n".join(rows) + f"\n{EVAL_END}\n"


def update_eval_section(folder: str | os.PathLike, result: Dict[str, Any]) -> Path:
    """Add or replace the evaluation section of ``FOLDER/README.md`` (created with the section alone if missing)."""
    card = Path(folder) / CARD_NAME
    section = eval_section(result)
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    begin, end = text.find(EVAL_BEGIN), text.find(EVAL_END)
    if begin != -1 and end > begin:
        after = text[end + len(EVAL_END):]
        text = text[:begin] + section + (after[1:] if after.startswith("\n") else after)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    atomic_write_text(card, text)
    return card
