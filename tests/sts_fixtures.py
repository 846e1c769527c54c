"""Small SentEval-layout fixtures written in code (no text from the real data)."""

from __future__ import annotations

import random
from pathlib import Path

from esimcse_cli.core import sts

_WORDS = (
    "the man woman dog cat child plays runs eats reads a guitar ball book park street car "
    "red blue big small old new is on in with quickly slowly"
).split()


def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words)) + " ."


def make_senteval(root: Path, n_per_subset: int = 12, seed: int = 0, sick_crlf: bool = True) -> Path:
    """Write a tiny SentEval ``data/downstream`` tree under ``root`` and return ``root``.

    Every STS12-16 subset gets ``n_per_subset`` input lines; every 4th gold line is empty (unscored).
    Some sentences repeat across tasks so that deduplication has something to do.
    """
    rng = random.Random(seed)
    shared = [_sentence(rng, rng.randint(2, 12)) for _ in range(8)]

    def pick() -> str:
        return rng.choice(shared) if rng.random() < 0.3 else _sentence(rng, rng.randint(1, 14))

    for task, subsets in sts.STS_SUBSETS.items():
        folder = root / "STS" / f"{task}-en-test"
        folder.mkdir(parents=True, exist_ok=True)
        for subset in subsets:
            inputs, golds = [], []
            for i in range(n_per_subset):
                inputs.append(f"{pick()}\t{pick()}")
                golds.append("" if i % 4 == 3 else f"{rng.uniform(0, 5):.3f}")
            (folder / f"STS.input.{subset}.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
            (folder / f"STS.gs.{subset}.txt").write_text("\n".join(golds) + "\n", encoding="utf-8")
    stsb = root / "STS" / "STSBenchmark"
    stsb.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 30), ("dev", 25), ("test", 20)):
        lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{pick()}\t{pick()}" for i in range(n)]
        (stsb / f"sts-{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sick = root / "SICK"
    sick.mkdir(parents=True, exist_ok=True)
    for name, n in (("SICK_train.txt", 30), ("SICK_trial.txt", 15), ("SICK_test_annotated.txt", 22)):
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        rows += [f"{i}\t{pick()}\t{pick()}\t{rng.uniform(1, 5):.1f}\tNEUTRAL" for i in range(n)]
        eol = "\r\n" if (sick_crlf and name == "SICK_test_annotated.txt") else "\n"
        (sick / name).write_bytes((eol.join(rows) + eol).encode("utf-8"))
    return root


def expected_counts(n_per_subset: int = 12) -> dict:
    scored = sum(1 for i in range(n_per_subset) if i % 4 != 3)
    out = {t: scored * len(s) for t, s in sts.STS_SUBSETS.items()}
    out["STSBenchmark"] = 20
    out["SICKRelatedness"] = 22
    return out
