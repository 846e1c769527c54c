"""Length groups: exact partition, less padding, and the same outputs, gradients and training as one padded forward."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from esimcse_cli.core.padding import forward_by_length, length_groups, pad_ids, padded_tokens


def brute_force_cost(lengths, overhead):
    """The best cost over every way to cut the sorted lengths into contiguous groups."""
    s = sorted(lengths)
    n = len(s)
    best = None
    for k in range(n):
        for cuts in itertools.combinations(range(1, n), k):
            bounds = (0,) + cuts + (n,)
            cost = sum((b - a) * s[b - 1] + overhead for a, b in zip(bounds, bounds[1:]))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overhead", [0, 3, 10, 1000])
def test_length_groups_is_an_exact_optimal_partition(seed, overhead):
    r = random.Random(seed)
    lengths = [r.randint(3, 14) for _ in range(r.randint(1, 9))]
    groups = length_groups(lengths, overhead)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every row exactly once
    got = padded_tokens(lengths, groups) + overhead * len(groups)
    assert got == brute_force_cost(lengths, overhead)
    # groups run shortest first, and never interleave
    maxima = [max(lengths[i] for i in g) for g in groups]
    minima = [min(lengths[i] for i in g) for g in groups]
    assert all(mx <= mn for mx, mn in zip(maxima, minima[1:]))


def test_length_groups_extremes():
    lengths = [5, 9, 5, 12, 9, 5]
    assert len(length_groups(lengths, 10**9)) == 1  # grouping never pays: one padded batch
    exact = length_groups(lengths, 0)
    assert padded_tokens(lengths, exact) == sum(lengths)  # free groups: no padding at all
    assert length_groups([], 4) == []
    # ties keep their input order (a stable sort), so the cut is deterministic
    assert [g.tolist() for g in exact] == [[0, 2, 5], [1, 4], [3]]


def test_pad_ids_masks_only_when_needed():
    x, m = pad_ids([[1, 2, 3], [4, 5]], pad_id=0)
    assert x.tolist() == [[1, 2, 3], [4, 5, 0]] and m.tolist() == [[1, 1, 1], [1, 1, 0]]
    x, m = pad_ids([[1, 2], [3, 4]], pad_id=0)
    assert m is None


def _model_and_ids(tiny_model_dir, n=24):
    from esimcse_cli.core.contrastive import ContrastiveModel
    from esimcse_cli.core.models import load_backbone

    b = load_backbone(str(tiny_model_dir), dropout=0.0)
    model = ContrastiveModel(b.model, "cls", True, seed=0)
    r = random.Random(0)
    vocab = len(b.tokenizer)
    ids = [[b.tokenizer.cls_token_id] + [r.randrange(5, vocab) for _ in range(r.randint(2, 20))] + [b.tokenizer.sep_token_id]
           for _ in range(n)]
    return model, ids, b.tokenizer.pad_token_id


@pytest.mark.parametrize("pooler", ["cls", "avg"])
def test_grouped_forward_matches_one_padded_forward_with_gradients(tiny_model_dir, pooler):
    model, ids, pad = _model_and_ids(tiny_model_dir)
    model.pooling = "cls_before_pooler" if pooler == "cls" else "avg"
    model.train()  # dropout 0: the two ways must agree row for row

    def run(overhead):
        model.zero_grad(set_to_none=True)
        z = forward_by_length(model, ids, pad, "cpu", overhead)
        (z * torch.linspace(-1, 1, z.numel()).view_as(z)).sum().backward()  # a row-order-sensitive loss
        return z.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    lengths = [len(x) for x in ids]
    assert len(length_groups(lengths, 8)) > 1  # the case under test really splits
    z_one, g_one = run(None)
    z_grp, g_grp = run(8)
    assert torch.allclose(z_one, z_grp, atol=1e-5)
    assert g_one.keys() == g_grp.keys()
    for k in g_one:  # float32 sums over a different row order: equal to ~1e-6 of the gradient's scale
        scale = float(g_one[k].abs().max()) + 1e-3
        assert float((g_one[k] - g_grp[k]).abs().max()) <= 1e-4 * scale, k


def test_training_with_and_without_length_groups_ends_at_the_same_weights(tiny_model_dir, tmp_path):
    """With dropout off, grouping changes only the work: the same loss and the same weights after a few steps."""
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    from test_trainer import sentences

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sentences(64, 5)) + "\n", encoding="utf-8")
    results = {}
    for split in (True, False):
        out = tmp_path / f"out-{split}"
        cfg = build_config({"corpus": str(corpus), "output_dir": str(out), "model": str(tiny_model_dir), "batch_size": 16,
                            "max_steps": 3, "save_steps": 0, "log_steps": 1, "eval_steps": 0, "max_length": 16,
                            "dropout": 0.0, "split_by_length": split, "dup_rate": 0.5})
        losses = []
        train(cfg, on_step=lambda row: losses.append(row.get("loss")))
        results[split] = (losses, load_file(str(out / "model.safetensors")))
    (l_on, w_on), (l_off, w_off) = results[True], results[False]
    assert np.allclose(l_on, l_off, atol=1e-5)
    for k in w_on:
        assert torch.allclose(w_on[k], w_off[k], atol=1e-5), k


def test_training_splits_the_batch_on_cpu(tiny_model_dir, tmp_path, monkeypatch):
    """The default run on CPU really calls the encoder once per length group, and pads less than one forward would."""
    from esimcse_cli.core import padding
    from esimcse_cli.core.config import build_config
    from esimcse_cli.core.trainer import train

    from test_trainer import sentences

    seen = []
    real = padding.forward_by_length

    def spy(fn, batch_ids, pad_id, device="cpu", overhead_tokens=None):
        lengths = [len(x) for x in batch_ids]
        groups = length_groups(lengths, overhead_tokens) if overhead_tokens is not None else None
        seen.append((padded_tokens(lengths), padded_tokens(lengths, groups) if groups else padded_tokens(lengths), overhead_tokens))
        return real(fn, batch_ids, pad_id, device, overhead_tokens)

    monkeypatch.setattr("esimcse_cli.core.trainer.forward_by_length", spy)
    monkeypatch.setattr(padding, "OVERHEAD_TOKENS", {"cpu": 4, "cuda": 4})
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sentences(64, 7)) + "\n", encoding="utf-8")
    for split in (True, False):
        seen.clear()
        cfg = build_config({"corpus": str(corpus), "output_dir": str(tmp_path / f"o{split}"), "model": str(tiny_model_dir),
                            "batch_size": 16, "max_steps": 2, "save_steps": 0, "eval_steps": 0, "max_length": 16,
                            "split_by_length": split})
        train(cfg)
        assert len(seen) == 4  # per step: the online forward over both views, the momentum forward over view 1
        if split:
            assert all(o == 4 for _, _, o in seen) and all(g < one for one, g, _ in seen)
        else:
            assert all(o is None and g == one for one, g, o in seen)
