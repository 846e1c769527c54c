"""Core logic of esimcse: plain Python, no Typer or Rich.

Modules, one concept each:

- ``errors``    user-facing error types (one line, exit code 2 in the CLI)
- ``atomic``    the one atomic-write helper every output goes through
- ``models``    resolve ``--model`` (default | folder | hub name) to tokenizer, encoder and pooling
- ``pooling``   SimCSE's poolers
- ``encoder``   ``SentenceEncoder``: length-sorted batched encoding to float32 arrays
- ``corpus``    streaming text readers (txt, csv, tsv, jsonl, parquet)
- ``augment``   word repetition, insertion and deletion
"""
