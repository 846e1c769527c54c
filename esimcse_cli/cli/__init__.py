"""The ``esimcse`` command line: argument parsing and rendering only.

    sys.argv -> main -> app (the root options, then one command: its options, one call into
    :mod:`esimcse_cli.core`, its tables) -> an exit code

Each command lives in its own module (``eval-sts`` and ``length-analysis`` share one, and their
tables); the options several commands share are in :mod:`esimcse_cli.cli.options`. ``main`` is the
one place where errors become exit codes: a problem the user can fix
(:class:`~esimcse_cli.core.errors.EsimcseError`) is one line on stderr with exit code 2; ``--debug``
(or ``ESIMCSE_DEBUG=1``) shows the full traceback instead. Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys

import typer

from esimcse_cli import __version__
from esimcse_cli import console as ui
from esimcse_cli.cli import augment, compare, encode, evaluate, export_onnx, search, train
from esimcse_cli.cli.options import fill_bare_bootstrap
from esimcse_cli.core.errors import EsimcseError, first_line

app = typer.Typer(
    name="esimcse",
    help="ESimCSE sentence embeddings: augment, train, encode, search, eval-sts, compare, length-analysis, export-onnx.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# in --help, the commands in the order of this list
app.command("encode")(encode.encode)
app.command("search")(search.search_cmd)
app.command("augment")(augment.augment_cmd)
app.command("eval-sts")(evaluate.eval_sts)
app.command("compare")(compare.compare_cmd)
app.command("length-analysis")(evaluate.length_analysis_cmd)
app.command("train")(train.train_cmd)
app.command("export-onnx")(export_onnx.export_onnx_cmd)

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


def _environment_errnos() -> frozenset:
    import errno

    names = ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EMFILE", "ENFILE", "EIO", "ENAMETOOLONG", "ELOOP", "EFBIG")
    return frozenset(getattr(errno, n) for n in names if hasattr(errno, n))


_ENVIRONMENT_ERRNOS = _environment_errnos()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one-line messages.

    Exit codes: 0 success; 1 internal error (a bug); 2 bad input or usage; 130 SIGINT; 143 SIGTERM
    (an interrupted run leaves no partial output file).
    """
    import signal

    from esimcse_cli.core import signals

    _state["debug"] = os.environ.get("ESIMCSE_DEBUG", "") not in ("", "0")  # --debug sets it again per run
    saved = signals.install_interrupt_handlers()  # SIGINT/SIGTERM -> KeyboardInterrupt, the signal remembered
    try:
        rv = app(args=fill_bare_bootstrap(sys.argv[1:]), standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (Typer vendors click): one line, no box
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # the help text was already shown
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(ctx, "command_path", None) else ""
        ui.error(_one_line(exc.format_message()) + hint)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        ui.error("aborted")
        sys.exit(1)
    except EsimcseError as exc:
        if _state["debug"]:
            raise
        ui.error(first_line(exc, type(exc).__name__))
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
        if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:  # disk full, read-only, no permission: not a bug
            where = f"{exc.filename}: " if exc.filename else ""
            ui.error(f"{where}{exc.strerror or exc}")
            sys.exit(2)
        ui.error(f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the traceback)")
        sys.exit(1)
    finally:
        signals.restore(saved)
    if isinstance(rv, int) and rv:
        got = signals.last_signal()
        if got is not None and rv == 130:  # Typer turns KeyboardInterrupt into exit 130
            rv = 128 + int(got)
            ui.error(f"interrupted ({signal.Signals(got).name})")
        sys.exit(rv)
