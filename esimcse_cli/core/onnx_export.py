"""ONNX files of a model: export with ``torch.onnx``, int8 with ONNX Runtime, and where the files live.

    a loaded Backbone -> onnx_files(backbone, quantize) -> the folder's onnx/ (writable, local) or the cache
      -> export_model (fp32, once) -> quantize_int8 (once) -> the path the session loads

The layout is sentence-transformers' (its ONNX backend, v3.2+): ``onnx/model.onnx``, and dynamic int8 models
named as its ``export_dynamic_quantized_onnx_model`` names them, ``onnx/model_<weight type>_<target>.onnx``, with
the input names ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model has them) and the
output ``last_hidden_state`` (plus ``pooler_output`` where the model has a pooler, for ``--pooling cls``).
So ``SentenceTransformer(DIR, backend="onnx")`` loads what :func:`export_model` writes, and the reverse.

Two int8 models, both dynamic (activations quantized per batch, as uint8) and per channel:

* ``onnx/model_qint8_avx2.onnx``: what ``--quantize int8`` runs. int8 weights in the reduced 7-bit range, and only
  the MatMuls with a constant weight (the attention's two products of activations and the embedding lookups stay
  fp32). On AVX2 without VNNI, ONNX Runtime's uint8 x int8 kernel is the fast one, and the reduced range keeps
  its 16-bit pair sums from saturating, as ONNX Runtime's quantization guide advises for such CPUs. Accuracy and
  speed (against sentence-transformers' own int8 file): docs/RESULTS.md.
* ``onnx/model_quint8_avx2.onnx``: sentence-transformers' own ``avx2`` configuration (optimum's
  ``AutoQuantizationConfig.avx2(is_static=False)``: uint8 weights, symmetric, full range, every operator ONNX
  Runtime can quantize dynamically), under the name sentence-transformers gives it; ``export-onnx --quantize int8``
  writes it for users of ``SentenceTransformer(DIR, backend="onnx", model_kwargs={"file_name": ...})``.

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
INT8_FILE = "model_qint8_avx2.onnx"  # what --quantize int8 runs (sentence-transformers' naming: weight type, target)
ST_INT8_FILE = "model_quint8_avx2.onnx"  # sentence-transformers' avx2 dynamic int8 export, its scheme and name
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


def require_runtime(modules: tuple[str, ...] = ("onnxruntime",)) -> None:
    """One line naming the extra where onnxruntime (running) or onnx (exporting, quantizing) is missing."""
    for module in modules:
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
    """sha256 (16 hex digits) of the config and every weight, in name order: the cache's key.

    The config's private entries (``_name_or_path``: where it was loaded from; the attention implementation) are
    left out, so that a copied or moved folder keeps its key and its export."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
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


def locate(backbone, quantize: str = "none") -> OnnxFiles:
    """Where ``backbone``'s ONNX files are, or are to be written (see the module's docstring).

    A folder that cannot be written is used only where the file ``quantize`` needs is there, from these weights
    (or from another tool); anything still to be written goes to the cache."""
    key = model_key(backbone.model)
    if backbone.kind == "folder":
        from esimcse_cli.core.models import read_model_record

        record = read_model_record(backbone.path)
        weights = Path(record.transformer_dir or backbone.path)
        here = OnnxFiles(weights / ONNX_DIR, "model folder", key)
        if _writable(weights if not here.folder.exists() else here.folder):
            return here
        if here.fp32.is_file() and here.path(quantize).is_file() and _recorded(here) in (None, key):
            return here
    return OnnxFiles(cache_root() / key / ONNX_DIR, "cache", key)


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def onnx_file(backbone, quantize: str = "none") -> tuple[Path, list[str]]:
    """The ONNX file for ``backbone`` at ``quantize``, exported (and quantized) first where it is missing or stale.

    Returns ``(path, what was written)``: a line each for the files this call wrote, for the caller to show.
    """
    files = locate(backbone, quantize)
    done: list[str] = []
    if not _current(files):
        require_runtime(("onnxruntime", "onnx"))
        for name in (INT8_FILE, ST_INT8_FILE):  # made from other weights, or from a deleted fp32 file
            (files.folder / name).unlink(missing_ok=True)
        export_model(backbone.model, files.fp32)
        _write_record(files)
        done.append("exported to ONNX")
    if quantize == "int8" and not files.int8.is_file():
        require_runtime(("onnxruntime", "onnx"))
        quantize_int8(files.fp32, files.int8)
        done.append("quantized to int8")
    made = [f"{backbone.name}: {' and '.join(done)}: {files.path(quantize)} ({files.where})"] if done else []
    return files.path(quantize), made


def _current(files: OnnxFiles) -> bool:
    """The fp32 file is there and was exported from these weights (or by another tool, which records nothing)."""
    if not files.fp32.is_file():
        return False
    key = _recorded(files)
    if key is None or key == files.key:
        return True
    log.warning("%s was exported from other weights; exporting again", files.fp32)
    return False


def _recorded(files: OnnxFiles) -> str | None:
    """The key this tool's record holds beside the files (``None``: no record, files of another tool; ``""``: unreadable)."""
    record = files.folder / RECORD_FILE
    if not record.is_file():
        return None
    try:
        key = json.loads(record.read_text(encoding="utf-8")).get("key")
    except (ValueError, OSError, AttributeError):
        return ""
    return str(key) if key else ""


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

    vocab = int(getattr(model.config, "vocab_size", 0) or 2)
    example = torch.arange(1, 13, dtype=torch.long).reshape(2, 6) % max(vocab - 1, 1) + 1  # ids the vocabulary has
    mask = torch.ones_like(example)
    mask[1, 3:] = 0  # a padded row, so the traced graph takes the mask
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
                                  dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, **_legacy_exporter())
            except (InputError, OSError):
                raise
            except Exception as exc:
                raise ModelLoadError(f"{type(model).__name__}: cannot export to ONNX: {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        _set_attention(model, attention)
        model.train(was_training)
    return target


def _legacy_exporter() -> dict:
    """``dynamo=False`` where ``torch.onnx.export`` has the choice (torch >= 2.5; from 2.9 its default is dynamo,
    which needs onnxscript): the TorchScript exporter, the one every supported torch has."""
    import inspect

    import torch

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


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


def quantize_int8(source: Path, target: Path, scheme: str = INT8_FILE) -> Path:
    """Dynamic int8 of ``source`` into ``target``, renamed into place; ``scheme`` is the file name whose scheme
    to follow (:data:`INT8_FILE`, esimcse's, or :data:`ST_INT8_FILE`, sentence-transformers'; see the module's docstring)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from esimcse_cli.core.atomic import atomic_path

    root = logging.getLogger()  # the quantizer logs every node it skips on the root logger
    level = root.level
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(max(level, logging.ERROR))
        try:
            if scheme == ST_INT8_FILE:  # optimum's avx2(is_static=False), as sentence-transformers calls it
                quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QUInt8, per_channel=True, reduce_range=False,
                                 extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            else:
                quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                                 op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
        except (InputError, OSError):
            raise
        except Exception as exc:
            raise ModelLoadError(f"{source}: cannot quantize to int8: {type(exc).__name__}: {first_line(exc)}") from None
        finally:
            root.setLevel(level)
    return target


def export_onnx(model: str | os.PathLike | None, output: str | os.PathLike | None = None, quantize: str | None = None,
                trust_remote_code: bool = False) -> tuple[Path, list[Path]]:
    """``esimcse export-onnx MODEL [-o DIR] [--quantize int8]``: ``(the onnx/ folder, the model files written)``
    (none where MODEL's own folder already holds current ones).

    ``--quantize int8`` writes both int8 models: esimcse's and sentence-transformers' (the module's docstring).

    Without ``-o``, the files go into ``MODEL``'s own folder (a local folder that can be written). With ``-o DIR``
    (a new or empty folder), ``DIR`` becomes a whole model folder, loadable by ``esimcse --model DIR``, by
    ``transformers`` and by ``SentenceTransformer(DIR, backend="onnx")``: the model files of
    :mod:`~esimcse_cli.core.export` plus ``onnx/``. It is built beside ``DIR`` and renamed into place.
    """
    from esimcse_cli.core.models import load_backbone, resolve_model_path

    quantize = check_backend_args("onnx", quantize)
    require_runtime(("onnxruntime", "onnx"))
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
        before = {p: _stamp(p) for p in _written(files.folder, quantize)}
        onnx_file(backbone, quantize)
        if quantize == "int8" and not (files.folder / ST_INT8_FILE).is_file():
            quantize_int8(files.fp32, files.folder / ST_INT8_FILE, ST_INT8_FILE)
        return files.folder, [p for p, stamp in before.items() if _stamp(p) != stamp]
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
            quantize_int8(files.fp32, files.folder / ST_INT8_FILE, ST_INT8_FILE)
    return target / ONNX_DIR, _written(target / ONNX_DIR, quantize)


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _written(folder: Path, quantize: str) -> list[Path]:
    return [folder / name for name in (FP32_FILE, *((INT8_FILE, ST_INT8_FILE) if quantize == "int8" else ()))]
