"""The ``esimcse`` command line: argument parsing and rendering only.

Every command is a thin layer over :mod:`esimcse_cli.core`. Errors the user can fix
(:class:`~esimcse_cli.core.errors.EsimcseError`) are printed as one line on stderr with exit
code 2; ``--debug`` (or ``ESIMCSE_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from esimcse_cli import __version__
from esimcse_cli import console as ui
from esimcse_cli.core.errors import EsimcseError

app = typer.Typer(
    name="esimcse",
    help="ESimCSE sentence embeddings: augment, train, encode, eval-sts, length-analysis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": os.environ.get("ESIMCSE_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        print(f"esimcse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also: ESIMCSE_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        _state["debug"] = True
    ui.setup_logging(_state["debug"])


# Shared option definitions ------------------------------------------------------------------
MODEL_HELP = "'default' (bundled all-MiniLM-L6-v2), a local model folder, or a hub name."
POOLING_HELP = "cls | cls_before_pooler | avg | avg_first_last | avg_top2 (default: what the folder records)."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."


# ---- encode ----------------------------------------------------------------------------------
# (command defined below by the encode section)

# ---- augment ---------------------------------------------------------------------------------

# ---- eval-sts / length-analysis ----------------------------------------------------------------

# ---- train -----------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one-line messages."""
    try:
        app()
    except EsimcseError as exc:
        if _state["debug"]:
            raise
        ui.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.error("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(0)
    except Exception as exc:  # a bug: still one line unless --debug
        if _state["debug"]:
            raise
        ui.error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (rerun with --debug for the traceback)")
        sys.exit(1)
