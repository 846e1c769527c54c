"""User-facing errors.

Anything raised as :class:`EsimcseError` is a problem with the user's input, not a bug:
the CLI prints its message as one line on stderr and exits with code 2.
"""

from contextlib import contextmanager
from typing import Iterator


class EsimcseError(Exception):
    """A clear, one-line problem with the user's input or environment."""

    exit_code = 2


class InputError(EsimcseError):
    """A bad input file, line or value. Messages name the file (and ``file:line`` where a line is at fault)."""


class ModelLoadError(EsimcseError):
    """A model that cannot be resolved or loaded."""


class ConfigError(EsimcseError):
    """A bad option value or configuration file."""


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of an exception's message (stripped), or ``default`` when it has none.

    Messages of other libraries (pandas, safetensors, transformers) run over many lines; ours are one line,
    so a wrapped error quotes only the first: ``f"{path}: cannot read ({first_line(exc, type(exc).__name__)})"``.
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else default


@contextmanager
def naming_stdout() -> Iterator[None]:
    """An ``OSError`` while writing stdout (a full disk behind ``> file``) names ``<stdout>``.

    Without a file name the CLI's one-line message would say only ``No space left on device``. A reader
    that went away (``BrokenPipeError``) is left as it is: the CLI treats that as success.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None and not isinstance(exc, BrokenPipeError):
            exc.filename = "<stdout>"
        raise
