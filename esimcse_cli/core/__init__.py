"""Core logic of esimcse: plain Python, no Typer or Rich; torch only where a model runs.

The rooms, grouped as docs/DESIGN.md groups them (which says what each one holds):

- what every room leans on: ``errors``, ``signals``, ``atomic``, ``variants``, ``defaults``
- resolve a model, pool, encode: ``models``, ``pooling``, ``encoder``, ``embed``, ``search``
- readers: ``corpus``, ``sts``, ``pairs_file``
- the paper's algorithm and the text tool around it: ``augment``, ``augment_text``
- evaluation: ``evaluate``, ``eval_sts``, ``stats``, ``compare``, ``length``
- training: ``config`` (+ ``presets/``), ``views``, ``padding``, ``contrastive``, ``momentum``, ``loss``,
  ``trainer``, ``run_log``, ``run_folder``, ``distributed``, ``checkpoint``, ``runlock``, ``export``, ``card``
"""
