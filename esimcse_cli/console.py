"""The one module that owns Rich.

- ``console``: stderr, for progress bars, logs and warnings, so that data on stdout stays clean.
- ``out``: stdout, for result tables (never used while stdout carries data, e.g. ``encode -o -``).

Core modules report through :mod:`logging` (logger ``esimcse``) and plain progress callbacks;
this module turns both into Rich output.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

class _Console(Console):
    """A Rich console that outlives its reader: on a broken pipe it goes quiet instead of exiting.

    Rich's own reaction is ``SystemExit(1)`` (and it points *stdout* at /dev/null even for the stderr console):
    ``esimcse train ... 2>&1 | head`` would kill a training run mid-step with exit 1 and nothing saved, and
    ``eval-sts --json r.json | head -1`` would exit 1 before writing the JSON. Instead, the stream this console
    writes to is pointed at /dev/null, the console stops printing, and the work goes on; a reader that went
    away is not an error (exit 0 unless something else fails).
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        try:
            fd = self.file.fileno()
        except (AttributeError, OSError, ValueError):
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except OSError:
            pass


console = _Console(stderr=True)
out = _Console()


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``812 sent/s``."""

    def __init__(self, unit: str = "it"):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} {self.unit}/s", style="progress.data.speed")


class _ConsoleHandler(logging.Handler):
    """One line per record on the stderr console: ``warning: ...`` in yellow, notes plain."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                console.print(Text(f"warning: {msg}", style="yellow"), soft_wrap=True)
            elif record.levelno >= logging.INFO:
                console.print(Text(msg, style="dim"), soft_wrap=True)
            else:
                console.print(Text(f"debug: {msg}", style="dim"), soft_wrap=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(debug: bool = False) -> None:
    """Route the ``esimcse`` logger (and warnings from core) to the stderr console."""
    logger = logging.getLogger("esimcse")
    logger.handlers.clear()
    logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "sent", extra: str | None = None) -> Iterator[Callable[..., None]]:
    """A Rich progress bar on stderr. Yields ``advance(n=1, total=None, **fields)``.

    ``extra`` is a format string over the task's fields (e.g. ``"loss {task.fields[loss]}"``).
    """
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if extra:
        columns.insert(4, TextColumn(extra))
    prog = Progress(*columns, console=console, transient=False)
    task = prog.add_task(description, total=total, **_initial_fields(extra))

    def advance(n: int = 1, total: int | None = None, **fields) -> None:
        if total is not None:
            fields["total"] = total
        prog.update(task, advance=n, **fields)

    prog.start()
    try:
        yield advance
    except BaseException:
        prog.live.transient = True  # an error message, not a half-drawn bar, is the last word
        raise
    finally:
        prog.stop()


@contextmanager
def deferred_progress(description: str, unit: str = "sent", extra: str | None = None) -> Iterator[Callable[[int], Callable[..., None]]]:
    """Yield ``start(total) -> advance``: the bar appears only once work starts (not before a clean error)."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(total: int) -> Callable[..., None]:
            return stack.enter_context(progress_bar(total, description, unit, extra))

        yield start


def _initial_fields(extra: str | None) -> dict:
    """Placeholder values for the ``{task.fields[...]}`` names an ``extra`` column uses."""
    import re

    return {name: "-" for name in re.findall(r"task\.fields\[['\"]?(\w+)", extra or "")}


def warn(message: str) -> None:
    console.print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def info(message: str) -> None:
    console.print(Text(message), soft_wrap=True)


def error(message: str) -> None:
    console.print(Text(f"esimcse: error: {message}", style="bold red"), soft_wrap=True)


def print_table(table: Table) -> None:
    from esimcse_cli.core.errors import naming_stdout

    with naming_stdout():  # a full disk behind `> file` says <stdout>
        out.print(table)


def new_table(title: str | None = None, *columns: str) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table
