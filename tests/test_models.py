"""The shared model loader: default, folders (HF / sentence-transformers / ours), hub names, pooling and max length."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from esimcse_cli.core.checkpoint import export_model
from esimcse_cli.core.errors import ModelLoadError
from esimcse_cli.core.models import load_backbone, load_encoder, read_model_record, resolve_model_path


def test_default_resolves_to_bundled_folder():
    path, kind = resolve_model_path(None)
    assert kind == "default" and (json.loads(open(f"{path}/config.json").read())["model_type"] == "bert")
    assert resolve_model_path("default") == (path, "default")


def test_default_model_settings():
    b = load_backbone("default")
    assert b.pooling == "avg"  # from 1_Pooling/config.json
    assert b.max_length == 256  # sentence-transformers max_seq_length, not the training 32
    assert "not a raw BERT" in b.name


def test_plain_hf_folder_gets_tokenizer_limit_and_avg(tiny_model_dir):
    b = load_backbone(str(tiny_model_dir))
    assert b.kind == "folder" and b.pooling == "avg" and b.max_length == 128


def test_pooling_record_and_override(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "esimcse.json").write_text(json.dumps({"pooling": "cls_before_pooler", "max_seq_length": 40}))
    assert read_model_record(folder).pooling == "cls_before_pooler"
    b = load_backbone(str(folder))
    assert (b.pooling, b.max_length) == ("cls_before_pooler", 40)
    assert load_backbone(str(folder), pooling="avg_top2", max_length=16).pooling == "avg_top2"


def test_sentence_transformers_nested_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "st"
    shutil.copytree(tiny_model_dir, folder / "0_Transformer")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling/config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}))
    (folder / "0_Transformer/sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    b = load_backbone(str(folder))
    assert (b.pooling, b.max_length) == ("cls_before_pooler", 64)


def test_export_loads_in_ours_transformers_and_sentence_transformers(tiny_model_dir, tmp_path):
    src = load_encoder(str(tiny_model_dir), pooling="cls_before_pooler", device="cpu")
    out = export_model(tmp_path / "exported", src.model, src.tokenizer, pooling="cls_before_pooler", max_seq_length=100)
    texts = ["a dog runs in the park", "cat", "the man plays the guitar"]
    again = load_encoder(str(out), device="cpu")
    assert (again.pooling, again.max_length) == ("cls_before_pooler", 100)
    np.testing.assert_allclose(again.encode(texts), src.encode(texts), atol=1e-6)

    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out)).config.hidden_size == 32
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    assert st.max_seq_length == 100
    theirs = st.encode(texts, normalize_embeddings=True)
    assert ((theirs * src.encode(texts)).sum(1) > 0.9999).all()


def test_hub_name_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_backbone("bert-base-uncased-surely-not-cached-xyz")
    assert "hub" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content", ["{not json", ""])
def test_corrupt_config_is_clear(tiny_model_dir, tmp_path, content):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text(content)
    with pytest.raises(ModelLoadError) as err:
        load_backbone(str(folder))
    assert str(folder) in str(err.value)


def test_corrupt_weights_are_clear(tiny_model_dir, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError):
        load_backbone(str(folder))


def test_missing_config_is_clear(tiny_model_dir, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_backbone(str(folder))


def test_dropout_override(tiny_model_dir):
    b = load_backbone(str(tiny_model_dir), dropout=0.25)
    assert b.model.config.hidden_dropout_prob == 0.25


def test_a_half_precision_checkpoint_loads_as_float32(tiny_model_dir, tmp_path):
    """Training needs float32 master weights; transformers keeps a float16 checkpoint's dtype unless told."""
    import shutil

    import torch
    from transformers import AutoModel

    from esimcse_cli.core.models import load_backbone

    half = tmp_path / "half"
    shutil.copytree(tiny_model_dir, half)
    AutoModel.from_pretrained(tiny_model_dir).half().save_pretrained(half, safe_serialization=True)
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:  # the trap this guards against (4.x loads float32 by default)
        assert AutoModel.from_pretrained(half).dtype == torch.float16
    assert load_backbone(str(half), device="cpu").model.dtype == torch.float32
