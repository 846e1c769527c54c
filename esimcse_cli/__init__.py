"""esimcse: unsupervised sentence embeddings (ESimCSE, SimCSE) from the command line.

The logic lives in :mod:`esimcse_cli.core`, importable without Typer or Rich.
"""

__version__ = "0.1.0"
