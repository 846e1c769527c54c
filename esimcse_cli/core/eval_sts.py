"""``esimcse eval-sts`` as one call: one model's STS result, and the files that keep it.

    check_sts_args -> card_folder (--update-card) -> load_given_tasks -> load_encoder
      -> evaluate_loaded (a bar) -> --json, --csv, --save-scores, the card's evaluation section

``--save-scores PATH.npz`` keeps every pair's cosine (:mod:`~esimcse_cli.core.scores_file`), with each pair's length
difference in ``--length-unit``, so that ``compare`` can take the file in place of the model.

Every check that needs no data comes first, so a bad option or a ``--update-card`` without a model folder is
refused before the data is read and the model loaded. The files are written before anything is shown: the
caller renders the table from the result, and a stdout that fails (a full disk behind ``> file``) must not
lose them.
"""

from __future__ import annotations

import contextlib
from typing import List, Optional, Sequence, Tuple

from esimcse_cli.core import card, evaluate, scores_file
from esimcse_cli.core.evaluate import ProgressFactory


def eval_sts(
    data: Optional[str] = None,
    data_dir: Optional[str] = None,
    tasks: Optional[str] = None,
    split: str = "test",
    aggregate: str = "all",
    *,
    pairs: Optional[Sequence[str]] = None,
    pairs_columns: Optional[str] = None,
    pairs_format: Optional[str] = "auto",
    model: Optional[str] = None,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    batch_size: int = 64,
    device: str = "auto",
    bucket_by_length: bool = False,
    buckets: Optional[str] = None,
    length_unit: str = "words",
    bootstrap: Optional[int] = None,
    ci: Optional[float] = None,
    seed: Optional[int] = None,
    json_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    scores_path: Optional[str] = None,
    update_card: bool = False,
    trust_remote_code: bool = False,
    backend: str = "torch",
    quantize: Optional[str] = None,
    on_export=None,
    progress: Optional[ProgressFactory] = None,
) -> Tuple[dict, List[str]]:
    """Score ``model`` on the tasks and write what was asked for: ``(result, the paths written, in order)``.

    ``data`` / ``data_dir``: ``DATA_DIR`` and ``--data-dir`` (neither: the data folder is looked for).
    ``progress(model, total)`` gives the encoding's bar; ``total`` is the number of distinct sentences.
    The result is :func:`~esimcse_cli.core.evaluate.evaluate_loaded`'s, which names the model, its pooling
    and max length, and counts the sentences; ``backend`` says what ran the forward (``torch``, ``onnx``,
    ``onnx int8``: ``--backend onnx --quantize int8`` measures what quantization costs). ``scores_path``: where
    the per-pair scores go (``--save-scores``); the result is the same with or without it.
    """
    from esimcse_cli.core import onnx_export
    from esimcse_cli.core.models import DEFAULT_MODEL, load_encoder

    bootstrap, spec = evaluate.check_sts_args(split, aggregate, length_unit, batch_size, bootstrap=bootstrap, ci=ci,
                                              bucket_by_length=bucket_by_length, buckets=buckets, outputs=(json_path, csv_path))
    if scores_path:
        scores_file.check_scores_path(scores_path)
    onnx_export.check_backend_args(backend, quantize, pooling)
    card_dir = card.card_folder(model) if update_card else None  # the default or a hub model: refused before any work
    task_pairs = evaluate.load_given_tasks(data, data_dir, tasks, split, pairs, pairs_columns, pairs_format)
    enc = load_encoder(model, pooling=pooling, max_length=max_length, device=device, trust_remote_code=trust_remote_code,
                       backend=backend, quantize=quantize, on_export=on_export)
    n_distinct = len(evaluate.unique_sentences(task_pairs))
    bar = progress(model or DEFAULT_MODEL, n_distinct) if progress is not None else contextlib.nullcontext(None)
    with bar as advance:
        result, scores = evaluate.evaluate_keeping_scores(enc, task_pairs, split, aggregate, spec, length_unit, batch_size,
                                                          advance, bootstrap, ci, seed, record_lengths=bool(scores_path))
    written = []
    if scores_path:
        meta = {"model": model or DEFAULT_MODEL, **{k: result.get(k) for k in ("pooling", "max_length", "backend", "split")},
                "name": getattr(enc, "name", "") or "", "length_unit": length_unit,
                "encode_seconds": result["seconds"]["encode"]}
        scores_file.save_scores(scores_path, scores, meta, pairs=task_pairs, length_unit=length_unit)
        written.append(scores_path)
    if json_path:
        evaluate.write_json(json_path, result)
        written.append(json_path)
    if csv_path:
        evaluate.write_csv(csv_path, evaluate.result_rows(result), evaluate.result_columns(result))
        written.append(csv_path)
    if card_dir is not None:
        written.append(str(card.update_eval_section(card_dir, result)))
    return result, written

