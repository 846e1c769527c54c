"""How a score, an interval and a paired difference read in a table cell (eval-sts, compare, length-analysis).

    a report's numbers (Spearman x100, its bootstrap interval, a difference with its p-value)
      -> one cell's text: ``82.03 [80.9, 83.1]``, ``-8.52 [-9.6, -7.4] p<0.002 *``, ``—`` where there is none
"""

from __future__ import annotations

from pathlib import Path
from typing import List


def fmt_score(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def fmt_ci(value, ci) -> str:
    """``82.03 [80.9, 83.1]`` with an interval, else the score alone."""
    if value is None or not ci:
        return fmt_score(value)
    return f"{value:.2f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def bucket_cell(b: dict) -> str:
    return f"{fmt_ci(b['spearman'], b.get('ci'))} ({b['pairs']})"


def fmt_p(p, n: int) -> str:
    if p is None:
        return "—"
    return f"p<{2 / n:.2g}" if p == 0 else f"p={p:.3f}"


def diff_cell(cell: dict, n: int):
    """``-8.52 [-9.6, -7.4] p<0.002 *``, coloured when significant."""
    from rich.text import Text

    if cell.get("diff") is None:
        return Text("—")
    ci = cell.get("diff_ci")
    text = f"{cell['diff']:+.2f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "") + f" {fmt_p(cell.get('p'), n)}"
    if cell.get("significant"):
        return Text(text + " *", style="bold green" if cell["diff"] > 0 else "bold red")
    return Text(text)


def short_labels(specs: List[str]) -> List[str]:
    """Model labels for tables: the shortest path tails that still tell the models apart."""
    parts = [Path(s).parts or (s,) for s in specs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(set(specs)):
            return labels
    return list(specs)
