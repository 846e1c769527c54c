"""Run ``esimcse_cli.cli.main`` in-process, as the console script would, capturing bytes and exit code.

Subprocesses cost seconds each (importing torch); this keeps CLI tests fast while still going through
``main()``, where errors become one-line messages and exit codes.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [l for l in self.stderr.splitlines() if l.strip()]


def run_main(*args: str, stdin: bytes = b"", cwd: str | os.PathLike | None = None) -> Result:
    from esimcse_cli import cli

    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr, os.getcwd()
    out, err = io.BytesIO(), io.BytesIO()
    sys.argv = ["esimcse", *map(str, args)]
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    code = 0
    result = None
    try:
        if cwd is not None:
            os.chdir(cwd)
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # read the buffers before the wrappers are dropped: a collected TextIOWrapper closes its buffer
        result = Result(code, out.getvalue(), err.getvalue().decode("utf-8", "replace"))
        sys.argv, sys.stdin, sys.stdout, sys.stderr, cwd0 = saved
        os.chdir(cwd0)
    return result


def run_group(cmd, timeout, **kw):
    """subprocess.run in its own process group, killed as a whole on timeout (torchrun's children included)."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
