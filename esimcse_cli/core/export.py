"""Write a model folder that loads everywhere users expect it to.

The folder holds:

* ``config.json`` + ``model.safetensors``: loads with ``transformers.AutoModel``;
* the tokenizer files;
* ``esimcse.json``: the pooling used at test time and the max length (read by ``esimcse --model``);
* ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``: loads with
  ``sentence_transformers.SentenceTransformer`` with the same pooling.

No conversion step is needed afterwards. Only encoder weights are written: no training heads,
momentum encoder or queue.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("esimcse")

# our pooling -> sentence-transformers Pooling mode (None: no exact sentence-transformers equivalent)
ST_MODES = {"cls_before_pooler": "pooling_mode_cls_token", "avg": "pooling_mode_mean_tokens"}


def write_model_files(folder: str | os.PathLike, model, tokenizer, pooling: str, max_seq_length: int, extra: dict[str, Any] | None = None) -> None:
    """Write the model files into an existing folder (:func:`esimcse_cli.core.checkpoint.export_model` moves them into place atomically)."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    record = {"pooling": pooling, "max_seq_length": int(max_seq_length), "format": 1}
    record.update(extra or {})
    (folder / "esimcse.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    mode = ST_MODES.get(pooling)
    if mode is None:
        log.warning("pooling '%s' has no sentence-transformers equivalent; SentenceTransformer would not reproduce it", pooling)
        return
    dim = int(model.config.hidden_size)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    flags = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    flags[mode] = True
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags, indent=2) + "\n", encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": int(max_seq_length), "do_lower_case": lower}, indent=2) + "\n", encoding="utf-8"
    )
