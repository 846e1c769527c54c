"""User-facing errors.

Anything raised as :class:`EsimcseError` is a problem with the user's input, not a bug:
the CLI prints its message as one line on stderr and exits with code 2.
"""


class EsimcseError(Exception):
    """A clear, one-line problem with the user's input or environment."""

    exit_code = 2


class InputError(EsimcseError):
    """A bad input file, line or value. Messages name the file (and ``file:line`` where a line is at fault)."""


class ModelLoadError(EsimcseError):
    """A model that cannot be resolved or loaded."""


class ConfigError(EsimcseError):
    """A bad option value or configuration file."""
