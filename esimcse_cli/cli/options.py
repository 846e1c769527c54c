"""The options several commands share, written once as ``Annotated`` aliases (Typer's style since 0.9).

    a command's parameter: ``model: Model = "default"`` -> the alias names the flags and the help,
    the ``=`` sets this command's default (``train`` gives ``None``: a flag left out must not override
    its ``--config`` file) -> Typer copies the option per command.

An option whose help or kind differs by command (``compare``'s repeatable ``--model``, ``--bootstrap``'s
defaults) is written in its command, from the help texts here. The choices and defaults the help names
come from their owners in core, which check them and name them in their one-line errors; only
torch- and numpy-free modules are imported, so that --help stays quick.
"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from esimcse_cli.core.corpus import ENCODING_ERRORS
from esimcse_cli.core.defaults import DEFAULT_SEED
from esimcse_cli.core.models import DEFAULT_MODEL
from esimcse_cli.core.onnx_export import BACKENDS, INT8_FILE, QUANTIZE
from esimcse_cli.core.pairs_file import PAIRS_FORMATS
from esimcse_cli.core.pooling import POOLINGS
from esimcse_cli.core.sts import SPLITS, TASKS


def choice_list(names) -> str:
    """How a help text lists an option's choices: ``a | b | c``."""
    return " | ".join(names)


MODEL_HELP = f"{DEFAULT_MODEL!r} (bundled all-MiniLM-L6-v2), a local model folder, or a hub name."
POOLING_HELP = f"{choice_list(POOLINGS)} (default: what the folder records)."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."
DATA_DIR_HELP = ("SentEval's data/downstream folder (with STS/ and SICK/) or a parent of it, e.g. ../shared/data "
                 "(default: $ESIMCSE_DATA_DIR, else the first of ./SentEval/data/downstream, ./data/downstream and "
                 "the user data and cache folders (see README) that holds it).")
BUCKETS_HELP = "Length-difference buckets, inclusive ranges from 0 with an open end: default 0-3,4- (the paper's <=3 vs >3)."
CI_HELP = "Interval level in (0, 1) (default 0.95)."
SEED_HELP = f"Seed of the bootstrap resampling (default {DEFAULT_SEED}); the same seed gives the same intervals."

# ---- the model and how it runs: encode, eval-sts, compare, length-analysis, train
Model = Annotated[Optional[str], typer.Option("--model", "-m", help=MODEL_HELP)]
Pooling = Annotated[Optional[str], typer.Option("--pooling", help=POOLING_HELP)]
MaxLength = Annotated[Optional[int], typer.Option("--max-length", help="Max tokens per sentence (default: the model's own limit).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Sentences per forward pass.")]
Device = Annotated[Optional[str], typer.Option("--device", help=DEVICE_HELP)]
Backend = Annotated[str, typer.Option(
    "--backend", help=f"{choice_list(BACKENDS)}: what runs the forward; onnx: ONNX Runtime on the CPU (the [onnx] extra), "
    "exporting the model once into its folder's onnx/ or the user cache.")]
Quantize = Annotated[str, typer.Option(
    "--quantize", help=f"{choice_list(QUANTIZE)}: with --backend onnx, int8 runs the dynamic int8 model (onnx/{INT8_FILE}).")]
TrustRemoteCode = Annotated[Optional[bool], typer.Option("--trust-remote-code", help="Allow custom model code from the model folder/hub.")]

# ---- text input: encode, augment, train
EncodingErrors = Annotated[Optional[str], typer.Option("--encoding-errors", help=f"{choice_list(ENCODING_ERRORS)}, for text that is not UTF-8.")]
TextColumn = Annotated[Optional[str], typer.Option("--text-column", help="Column to read from csv/tsv/jsonl/parquet.")]

# ---- STS data: eval-sts, compare, length-analysis
Data = Annotated[Optional[str], typer.Argument(metavar="DATA_DIR", help="Same as --data-dir.")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", "-d", help=DATA_DIR_HELP)]
Tasks = Annotated[Optional[str], typer.Option(
    "--tasks", "-t", help=f"Comma-separated tasks: {','.join(TASKS)} (default: all).")]
Split = Annotated[str, typer.Option(
    "--split", help=f"Split for STSBenchmark and SICKRelatedness: {choice_list(SPLITS)} (SICK dev = trial).")]
Pairs = Annotated[Optional[List[str]], typer.Option(
    "--pairs", help="Your own scored pairs: sentence1<TAB>sentence2<TAB>score (.tsv, header optional), or "
    ".csv/.jsonl/.parquet, or CNSD's sent1||sent2||score lines. Repeatable.")]
PairsFormat = Annotated[str, typer.Option(
    "--pairs-format", help=f"{choice_list(PAIRS_FORMATS)}: how --pairs files are read; auto: by the suffix, then a text "
    "file's first line (a tab: tsv, e.g. text1<TAB>text2<TAB>label; '||' and no tab: cnsd).")]
PairsColumns = Annotated[Optional[str], typer.Option(
    "--pairs-columns", help="Columns of --pairs files: sentence1,sentence2,score (names or 0-based indices).")]
BucketByLength = Annotated[bool, typer.Option("--bucket-by-length", help="Also score within length-difference buckets.")]
Buckets = Annotated[Optional[str], typer.Option("--buckets", help=BUCKETS_HELP + " Implies --bucket-by-length.")]
LengthUnit = Annotated[str, typer.Option(
    "--length-unit", help="words (whitespace words of the stored text) | tokens (each model's own sub-words, no specials) | "
    "chars (characters other than spaces: for text without spaces, such as Chinese).")]
BootstrapSeed = Annotated[Optional[int], typer.Option("--seed", help=SEED_HELP)]
Json = Annotated[Optional[str], typer.Option("--json", help="Write the full result as JSON (schema in the README).")]


def fill_bare_bootstrap(args: List[str]) -> List[str]:
    """Give a bare ``--bootstrap`` (no number after it) its default N, which click cannot do for an int option."""
    out: List[str] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return out + args[i:]
        out.append(tok)
        if tok == "--bootstrap":
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or not nxt.lstrip("-").isdigit():
                from esimcse_cli.core.stats import DEFAULT_REPLICATES

                out.append(str(DEFAULT_REPLICATES))
    return out
