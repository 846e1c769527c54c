"""The two readings of ESimCSE this tool runs: the paper as written, and the released code.

``--repetition-variant`` / ``esimcse augment --variant`` and ``--momentum-variant`` each choose between them:

=========  ========================================  ============================================
variant    word repetition (:mod:`.augment`)          momentum encoder (:mod:`.momentum`)
=========  ========================================  ============================================
paper      the paper's count formula at both levels  a copy of the online model, EMA per step
official   caskcsg/sentemb's per-level formulas      random start, online MLP, EMA per forward;
                                                     clipped at 1.0 unless ``--max-grad-norm``
=========  ========================================  ============================================

The names live here, apart from both, so that the configuration, the augmentation and the momentum
encoder check one tuple without importing each other (or torch).
"""

VARIANTS = ("paper", "official")
