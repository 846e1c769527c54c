"""ONNX files of a model: export with ``torch.onnx``, int8 with ONNX Runtime, and where the files live.

    a loaded Backbone -> onnx_files(backbone, quantize) -> the folder's onnx/ (writable, local) or the cache
      -> export_model (fp32, once) -> quantize_int8 (once) -> the path the session loads

The layout is sentence-transformers' (its ONNX backend, v3.2+): ``onnx/model.onnx``, and the dynamic int8
model as its ``export_dynamic_quantized_onnx_model(model, "avx2", ...)`` names it, ``onnx/model_quint8_avx2.onnx``,
with the input names ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model has them) and the
output ``last_hidden_state`` (plus ``pooler_output`` where the model has a pooler, for ``--pooling cls``).
So ``SentenceTransformer(DIR, backend="onnx")`` loads what :func:`export_model` writes, and the reverse.

The int8 model follows sentence-transformers' ``avx2`` configuration (optimum's
``AutoQuantizationConfig.avx2(is_static=False)``): dynamic, uint8 weights, symmetric, per channel, full
range. One difference: only the MatMuls with a constant weight are quantized; the attention's two products
of activations and the embedding lookups stay fp32, which costs little time and keeps the rows closer to
fp32 (docs/RESULTS.md).

Where the files are: a local model folder that can be written gets them in its own ``onnx/`` (beside its
``config.json``); otherwise (the bundled model in site-packages, a hub model, a read-only folder) they go to
``$XDG_CACHE_HOME/esimcse/onnx/<hash>/`` keyed by a hash of the weights and config, so a retrained model never
meets a stale export. ``onnx/esimcse-onnx.json`` records that hash beside files this tool wrote; an export
found with another hash is written again. ONNX files without that record (exported by another tool) are used
as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from esimcse_cli.core.errors import InputError, ModelLoadError, first_line

log = logging.getLogger("esimcse")

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_quint8_avx2.onnx"  # sentence-transformers' name for its avx2 dynamic int8 export
RECORD_FILE = "esimcse-onnx.json"
QUANTIZE = ("none", "int8")
BACKENDS = ("torch", "onnx")
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_EXTRA = "pip install 'esimcse-cli[onnx]' (onnxruntime and onnx)"


def check_backend_args(backend: str, quantize: str | None, pooling: str | None = None) -> str:
    """Refuse an unknown ``--backend`` / ``--quantize``, or int8 on torch; returns the quantize name."""
    quantize = quantize or "none"
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if quantize not in QUANTIZE:
        raise InputError(f"--quantize must be one of {', '.join(QUANTIZE)}, got '{quantize}'")
    if backend == "torch" and quantize != "none":
        raise InputError(f"--quantize {quantize} needs --backend onnx (the torch backend runs float32)")
    if backend == "onnx":
        require_runtime()
        if pooling in ("avg_first_last", "avg_top2"):
            raise InputError(f"--backend onnx: pooling '{pooling}' needs every layer's states and the ONNX export gives the "
                             "last layer's; use --backend torch")
    return quantize


def require_runtime() -> None:
    """One line naming the extra where onnxruntime (or onnx, which export and quantization need) is missing."""
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError:
            raise InputError(f"--backend onnx needs the {module} package: {ONNX_EXTRA}") from None


@dataclass
class OnnxFiles:
    folder: Path  # the onnx/ folder
    where: str  # "model folder" | "cache"
    key: str

    @property
    def fp32(self) -> Path:
        return self.folder / FP32_FILE

    @property
    def int8(self) -> Path:
        return self.folder / INT8_FILE

    def path(self, quantize: str) -> Path:
        return self.int8 if quantize == "int8" else self.fp32


def model_key(model) -> str:
    """sha256 (16 hex digits) of the config and every weight, in name order: the cache's key."""
    import torch

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/esimcse/onnx`` (``~/.cache`` by default; ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows)."""
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Caches"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        value = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(value) if os.path.isabs(value) else home / ".cache"
    return base / "esimcse" / ONNX_DIR


def locate(backbone) -> OnnxFiles:
    """Where ``backbone``'s ONNX files are, or are to be written (see the module's docstring)."""
    key = model_key(backbone.model)
    if backbone.kind == "folder":
        from esimcse_cli.core.models import read_model_record

        record = read_model_record(backbone.path)
        weights = Path(record.transformer_dir or backbone.path)
        folder = weights / ONNX_DIR
        if (folder / FP32_FILE).is_file() or _writable(weights if not folder.exists() else folder):
            return OnnxFiles(folder, "model folder", key)
    return OnnxFiles(cache_root() / key / ONNX_DIR, "cache", key)


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def onnx_file(backbone, quantize: str = "none") -> tuple[Path, list[str]]:
    """The ONNX file for ``backbone`` at ``quantize``, exported (and quantized) first where it is missing or stale.

    Returns ``(path, what was written)``: a line each for the files this call wrote, for the caller to show.
    """
    files = locate(backbone)
    made: list[str] = []
    if not _current(files):
        export_model(backbone.model, files.fp32)
        _write_record(files)
        made.append(f"exported {backbone.name} to ONNX: {files.fp32} ({files.where})")
    if quantize == "int8" and not files.int8.is_file():
        quantize_int8(files.fp32, files.int8)
        made.append(f"quantized to int8: {files.int8} ({files.where})")
    return files.path(quantize), made


def _current(files: OnnxFiles) -> bool:
    """The fp32 file is there and was exported from these weights (or by another tool, which records nothing)."""
    if not files.fp32.is_file():
        return False
    record = files.folder / RECORD_FILE
    if not record.is_file():
        return True
    try:
        key = json.loads(record.read_text(encoding="utf-8")).get("key")
    except (ValueError, OSError, AttributeError):
        key = None
    if key == files.key:
        return True
    log.warning("%s was exported from other weights; exporting again", files.fp32)
    files.int8.unlink(missing_ok=True)
    return False


def _write_record(files: OnnxFiles) -> None:
    from esimcse_cli.core.atomic import atomic_write_text

    atomic_write_text(files.folder / RECORD_FILE, json.dumps({"key": files.key, "opset": OPSET, "format": 1}, indent=2) + "\n")


def _output_names(model) -> list[str]:
    return ["last_hidden_state"] + (["pooler_output"] if getattr(model, "pooler", None) is not None else [])


def _input_names(model) -> list[str]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = [n for n in INPUTS if n in accepted]
    if "token_type_ids" in names and not getattr(model.config, "type_vocab_size", 0):
        names.remove("token_type_ids")
    return names


def export_model(model, target: Path) -> Path:
    """Export ``model`` (a transformers encoder) to ``target`` as fp32 ONNX with dynamic batch and length axes.

    The attention runs in its eager form for the export (the traced graph of SDPA varies between transformers
    versions); the model is given back as it was. The file is written beside ``target`` and renamed into place.
    """
    import torch

    from esimcse_cli.core.atomic import atomic_path

    inputs, outputs = _input_names(model), _output_names(model)
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise ModelLoadError(f"{type(model).__name__}: cannot export to ONNX: its forward takes no input_ids/attention_mask")

    class Graph(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(inputs, args)), return_dict=True)
            return tuple(getattr(out, name) for name in outputs)

    example = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]], dtype=torch.long)
    mask = (example != 0).long()
    args = tuple({"input_ids": example, "attention_mask": mask, "token_type_ids": torch.zeros_like(example)}[n] for n in inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs + ["last_hidden_state"]}
    if "pooler_output" in outputs:
        axes["pooler_output"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    was_training, attention = model.training, _attention(model)
    model.eval()
    _set_attention(model, "eager")
    try:
        with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(Graph(model.to("cpu")), args, str(tmp), input_names=inputs, output_names=outputs,
                                  dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
            except (InputError, OSError):
                raise
            except Exception as exc:
                raise ModelLoadError(f"{type(model).__name__}: cannot export to ONNX: {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        _set_attention(model, attention)
        model.train(was_training)
    return target


def _attention(model) -> str | None:
    return getattr(model.config, "_attn_implementation", None)


def _set_attention(model, name: str | None) -> None:
    if name is None:
        return
    setter = getattr(model, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter(name)
        else:
            model.config._attn_implementation = name
    except Exception:  # a model that has only one attention: export what it has
        pass


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 as sentence-transformers' ``avx2`` configuration (see the module's docstring), renamed into place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from esimcse_cli.core.atomic import atomic_path

    root = logging.getLogger()  # the quantizer logs every node it skips on the root logger
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QUInt8, per_channel=True, reduce_range=False,
                             op_types_to_quantize=["MatMul"],
                             extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True})
        except (InputError, OSError):
            raise
        except Exception as exc:
            raise ModelLoadError(f"{source}: cannot quantize to int8: {type(exc).__name__}: {first_line(exc)}") from None
        finally:
            root.setLevel(level)
    return target


def export_onnx(model: str | os.PathLike | None, output: str | os.PathLike | None = None, quantize: str | None = None,
                trust_remote_code: bool = False) -> tuple[Path, list[Path]]:
    """``esimcse export-onnx MODEL [-o DIR] [--quantize int8]``: ``(the onnx/ folder, the files written)``.

    Without ``-o``, the files go into ``MODEL``'s own folder (a local folder that can be written). With ``-o DIR``
    (a new or empty folder), ``DIR`` becomes a whole model folder, loadable by ``esimcse --model DIR``, by
    ``transformers`` and by ``SentenceTransformer(DIR, backend="onnx")``: the model files of
    :mod:`~esimcse_cli.core.export` plus ``onnx/``. It is built beside ``DIR`` and renamed into place.
    """
    from esimcse_cli.core.models import load_backbone, resolve_model_path

    quantize = check_backend_args("onnx", quantize)
    where, kind = resolve_model_path(model)
    target = Path(output) if output is not None else None
    if target is not None and target.exists() and kind == "folder" and target.resolve() == Path(where).resolve():
        target = None  # -o MODEL: into its own folder
    if target is None and kind != "folder":
        what = "the bundled model's folder is inside the installed package" if kind == "default" else "a hub model has no folder of yours"
        raise InputError(f"export-onnx {model or 'default'}: {what}; give -o DIR for a new model folder with onnx/ in it")
    if target is not None:
        if target.is_file() or (target.is_dir() and any(target.iterdir())):
            raise InputError(f"{target}: exists and is not empty; give a new or empty folder (nothing there is replaced)")
        if not (target.parent if str(target.parent) else Path(".")).is_dir():
            raise InputError(f"{target}: output folder {target.parent} does not exist")
    backbone = load_backbone(model, device="cpu", trust_remote_code=trust_remote_code)
    if target is None:
        files = locate(backbone)
        if files.where != "model folder":
            raise InputError(f"{where}: cannot write into the model folder; give -o DIR for a new model folder with onnx/ in it")
        onnx_file(backbone, quantize)
        written = [files.fp32] + ([files.int8] if quantize == "int8" else [])
        return files.folder, written
    return _export_new_folder(backbone, target, quantize)


def _export_new_folder(backbone, target: Path, quantize: str) -> tuple[Path, list[Path]]:
    from esimcse_cli.core.atomic import atomic_dir
    from esimcse_cli.core.export import write_model_files

    key = model_key(backbone.model)
    with atomic_dir(target) as tmp:
        write_model_files(tmp, backbone.model, backbone.tokenizer, backbone.pooling, backbone.max_length)
        files = OnnxFiles(tmp / ONNX_DIR, "output", key)
        export_model(backbone.model, files.fp32)
        _write_record(files)
        if quantize == "int8":
            quantize_int8(files.fp32, files.int8)
    folder = target / ONNX_DIR
    return folder, [folder / FP32_FILE] + ([folder / INT8_FILE] if quantize == "int8" else [])
