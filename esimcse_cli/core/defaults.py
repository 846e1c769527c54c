"""Defaults that several rooms and the CLI's --help share, owned here because their rooms import numpy.

    DEFAULT_SEED -> augment's and train's --seed, the bootstrap (stats) and length-analysis's probe
    DEFAULT_PROBE_SENTENCES -> length-analysis's --probe-sentences (length)

The CLI builds its options from these at import time and must not load numpy (or torch) to show --help;
``stats`` and ``length`` import them from here like every other user.
"""

DEFAULT_SEED = 42
DEFAULT_PROBE_SENTENCES = 1000  # sentences in the repetition-bias probe (0: no probe)
