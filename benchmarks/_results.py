"""Write one benchmark's section of docs/RESULTS.md, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

Each benchmark owns its section; re-running it replaces that section only. The section records the exact
command that produced it, the date and the machine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "RESULTS.md"
ORDER = ["encode_speed", "eval_speed", "train_speed", "memory", "gpu", "study"]


def file_sha256(path: os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def machine() -> str:
    try:
        import torch

        t = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            t += f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:
        t = "torch ?"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {t}"


def command_line() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
    return (env + " " if env else "") + "python " + " ".join(shlex.quote(a) for a in sys.argv)


def update_section(name: str, markdown: str, command: str | None = None, path: Path = RESULTS) -> None:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"<!-- {name}:begin -->\n{markdown.rstrip()}\n\n"
        f"Command: `{command or command_line()}`  \nMeasured {stamp} on {machine()}.\n<!-- {name}:end -->"
    )
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def publish(name: str, markdown: str, write: bool) -> None:
    """Print a benchmark's markdown; with ``write`` (``--write-results``), also replace its section."""
    print(markdown)
    if write:
        update_section(name, markdown)
