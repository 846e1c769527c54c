"""Saved per-pair scores (.npz): the round trip, the pair fingerprints, and files that are refused in one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from esimcse_cli.core import scores_file
from esimcse_cli.core.errors import InputError
from esimcse_cli.core.evaluate import TaskScores
from esimcse_cli.core.sts import Pair


def _pairs(n: int, subset: str = "test", tag: str = "") -> list:
    return [Pair(f"a {tag}{i} é", f"b {tag}{i % 7}", float(i % 6) * 0.83, subset) for i in range(n)]


def _scores():
    rng = np.random.default_rng(0)
    sts12 = _pairs(12, "MSRpar", "x") + _pairs(9, "MSRvid", "y")
    stsb = _pairs(15)
    scores = {
        "STS12": TaskScores(cos=rng.uniform(-1, 1, 21), gold=np.array([p.score for p in sts12]), subsets=("MSRpar", "MSRvid"),
                            subset_ids=np.array([0] * 12 + [1] * 9), diff=rng.integers(0, 9, 21)),
        "STSBenchmark": TaskScores(cos=rng.uniform(-1, 1, 15), gold=np.array([p.score for p in stsb])),
    }
    return scores, {"STS12": sts12, "STSBenchmark": stsb}


def test_round_trip_is_exact(tmp_path):
    scores, pairs = _scores()
    scores["STS12"].cos[0] = np.nextafter(0.5, 1.0)  # a float64 that float32 would round away
    meta = {"model": "runs/x", "pooling": "cls", "max_length": 32, "name": "x"}
    path = tmp_path / "s.npz"
    scores_file.save_scores(path, scores, meta, pairs=pairs, length_unit="words")
    back, meta_back = scores_file.load_scores(path)
    assert meta_back == meta and list(back) == list(scores)
    for name, ts in scores.items():
        got = back[name]
        assert got.cos.dtype == np.float64 and np.array_equal(got.cos, ts.cos) and np.array_equal(got.gold, ts.gold)
        assert got.subsets == ts.subsets
        for key in ("subset_ids", "diff"):
            a, b = getattr(ts, key), getattr(got, key)
            assert (a is None and b is None) or np.array_equal(a, b)
    sf = scores_file.read_scores(path)
    assert sf.length_unit == "words" and sf.pairs == {"STS12": 21, "STSBenchmark": 15}
    assert sf.sha256["STS12"] == scores_file.fingerprint(pairs["STS12"])
    assert list(scores_file.check_pairs(sf, {"STSBenchmark": pairs["STSBenchmark"], "STS12": pairs["STS12"]})) == ["STSBenchmark", "STS12"]
    with np.load(path, allow_pickle=False) as z:  # nothing pickled: the whole file reads without pickle
        assert json.loads(str(z["header"][0]))["schema"] == scores_file.SCHEMA


def test_fingerprint_tells_other_pairs_apart(tmp_path):
    scores, pairs = _scores()
    path = tmp_path / "s.npz"
    scores_file.save_scores(path, scores, {}, pairs=pairs)
    sf = scores_file.read_scores(path)
    other = list(pairs["STSBenchmark"])
    other[3] = Pair(other[3].a, other[3].b, other[3].score + 0.1, other[3].subset)  # one gold score differs
    for bad, needle in [({"STSBenchmark": other}, "scored on other pairs"),
                        ({"STSBenchmark": other[::-1]}, "scored on other pairs"),  # the same pairs in another order
                        ({"STSBenchmark": other[:-1]}, "scored on other pairs"),
                        ({"SICKRelatedness": other}, "has no scores for task SICKRelatedness")]:
        with pytest.raises(InputError, match=needle):
            scores_file.check_pairs(sf, bad)
    scores_file.save_scores(path, scores, {})  # no pairs given: no fingerprint, and it cannot be checked
    with pytest.raises(InputError, match="without its pairs' fingerprint"):
        scores_file.check_pairs(scores_file.read_scores(path), pairs)


def _one_line(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_bad_files_are_refused_in_one_line(tmp_path):
    scores, pairs = _scores()
    good = tmp_path / "good.npz"
    scores_file.save_scores(good, scores, {"m": 1}, pairs=pairs)
    data = good.read_bytes()
    cases = {}
    cases["missing.npz"] = None
    cases["truncated.npz"] = data[: len(data) // 2]
    cases["text.npz"] = b"not a zip at all\n"
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # a flipped byte inside the compressed arrays: CRC / zlib error
    cases["flipped.npz"] = bytes(flipped)
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(InputError) as exc:
            scores_file.load_scores(path)
        _one_line(exc, path)
    bare = tmp_path / "bare.npz"
    with open(bare, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(InputError, match="single array") as exc:
        scores_file.load_scores(bare)
    _one_line(exc, bare)
    # a zip of arrays that is not ours, another schema, an object array (needs pickle), a short array
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"][0]))
    variants = {
        "noheader.npz": ({k: v for k, v in arrays.items() if k != "header"}, "no header"),
        "schema.npz": ({**arrays, "header": np.array([json.dumps({**header, "schema": 99})])}, "schema 99"),
        "format.npz": ({**arrays, "header": np.array([json.dumps({**header, "format": "x"})])}, "not an esimcse scores file"),
        "pickled.npz": ({**arrays, "header": np.array([{"a": 1}], dtype=object)}, "not a readable scores file"),
        "short.npz": ({**arrays, "t1.cos": arrays["t1.cos"][:-1]}, "corrupt scores file (task STSBenchmark: cos"),
        "ids.npz": ({**arrays, "t0.subset_ids": arrays["t0.subset_ids"] + 5}, "subset ids out of range"),
    }
    for name, (content, needle) in variants.items():
        path = tmp_path / name
        with open(path, "wb") as f:
            np.savez(f, **content)
        with pytest.raises(InputError, match=re.escape(needle)) as exc:
            scores_file.load_scores(path)
        _one_line(exc, path)


def test_no_partial_file_on_failure(tmp_path, monkeypatch):
    scores, pairs = _scores()
    path = tmp_path / "s.npz"
    scores_file.save_scores(path, scores, {"v": 1}, pairs=pairs)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(InputError, match="No space left on device"):
        scores_file.save_scores(path, scores, {"v": 2}, pairs=pairs)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # and no temporary left behind
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(np, "savez_compressed", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        scores_file.save_scores(tmp_path / "new.npz", scores, {}, pairs=pairs)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_bad_arguments_are_refused_before_writing(tmp_path):
    scores, pairs = _scores()
    for path, meta, kw, needle in [
        (tmp_path / "s.json", {}, {}, "must end in .npz"),
        (tmp_path / "nofolder" / "s.npz", {}, {}, "does not exist"),
        (tmp_path / "s.npz", {"x": object()}, {}, "meta is not JSON"),
        (tmp_path / "s.npz", {}, {"pairs": {"STSBenchmark": pairs["STSBenchmark"][:-1]}}, "14 pairs but 15 scores"),
    ]:
        with pytest.raises(InputError, match=needle):
            scores_file.save_scores(path, scores, meta, **kw)
    assert list(tmp_path.iterdir()) == []
