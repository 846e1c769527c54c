"""``esimcse search``: NPY + queries -> search_queries (checks, the sidecar's model, top-k) -> a table, TSV or JSONL.

On a terminal each query gets a table; in a pipe, one line a hit: TSV (``query_index rank score row text``,
no header) or, with ``--json``, JSONL. A reader that stops early (``| head``) ends the run as a success.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from esimcse_cli import console as ui
from esimcse_cli.cli.options import MODEL_HELP, BatchSize, Device, EncodingErrors, TextColumn, TrustRemoteCode


def search_cmd(
    npy: str = typer.Argument(..., metavar="NPY", help="The .npy that encode wrote (its .npy.json sidecar says which model)."),
    query: Optional[List[str]] = typer.Argument(None, metavar="QUERY", help="Queries; none: one a line from stdin."),
    texts: Optional[str] = typer.Option(None, "--texts", help="The file that was encoded: hits show its texts (row i = line i+1)."),
    text_column: TextColumn = None,
    top_k: int = typer.Option(10, "-k", "--top-k", help="Hits per query."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: the model that encoded NPY."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="The queries' pooling: NPY's unless given (another is refused)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Max tokens per query (default: NPY's)."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object a hit on stdout (JSONL)."),
    batch_size: BatchSize = 64,
    device: Device = "auto",
    chunk_rows: Optional[int] = typer.Option(None, "--chunk-rows", help="Matrix rows scored at a time (default: from a 256 MB budget)."),
    rescore: int = typer.Option(0, "--rescore", metavar="M", help="Binary matrices: re-rank the M x k best by Hamming "
                                "distance with the float query (0: Hamming only)."),
    encoding_errors: EncodingErrors = "strict",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Exact cosine top-k of each query over an encoded corpus (memory-mapped, read in chunks; no faiss).

    Example: esimcse search corpus.npy --texts corpus.txt "a man is playing a guitar" -k 5
    """
    from esimcse_cli.core.search import search_queries

    found = search_queries(npy, query, k=top_k, texts=texts, text_column=text_column, model=model, pooling=pooling,
                           max_length=max_length, device=device, trust_remote_code=bool(trust_remote_code),
                           batch_size=batch_size, chunk_rows=chunk_rows, encoding_errors=encoding_errors, rescore=rescore)
    if json_lines:
        _print_lines(json.dumps({"query": found.queries[h.query], "query_index": h.query, "rank": h.rank,
                                 "score": round(h.score, 6), "row": h.row, "text": h.text}, ensure_ascii=False)
                     for h in found.hits)
    elif ui.out.is_terminal:
        _tables(found, with_text=texts is not None)
    else:
        _print_lines(f"{h.query}\t{h.rank}\t{h.score:.6f}\t{h.row}\t{_tsv_cell(h.text or '')}" for h in found.hits)


def _tables(found, with_text: bool) -> None:
    from rich.text import Text

    by_query: dict[int, list] = {}
    for hit in found.hits:
        by_query.setdefault(hit.query, []).append(hit)
    for index, text in found.queries.items():
        # Text, not str: a corpus line with [brackets] is not Rich markup
        table = ui.new_table(Text(f"query {index}: {text}"), "rank", "score", "row", *(["text"] if with_text else []))
        for hit in by_query.get(index, []):
            table.add_row(str(hit.rank), f"{hit.score:.4f}", str(hit.row), *([Text(hit.text)] if with_text else []))
        ui.print_table(table)


def _tsv_cell(text: str) -> str:
    """One field on one line: backslash, tab and line breaks escaped as ``\\\\``, ``\\t``, ``\\n``, ``\\r``."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _print_lines(lines) -> None:
    """One line each on stdout; a reader that went away (``| head``) has what it wanted: a success."""
    from esimcse_cli.core.atomic import write_stdout

    def run(write) -> None:
        for line in lines:
            write(line + "\n")

    write_stdout(run)
