"""The benchmark tables in docs/benchmarks.md: one table format and one way to replace a section."""

from __future__ import annotations

import os
import time
from pathlib import Path

Row = tuple[str, str, str]


def format_table(rows: list[Row]) -> str:
    lines = ["| figure | value | against baseline / target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def put_section(path: Path, heading: str, how: str, rows: list[Row], notes: list[str], *,
                whole: bool = True) -> None:
    """Write ``heading (DATE)`` into ``path`` — replaced where it exists, else appended, other sections
    untouched — with ``how`` (``{cores}`` and ``{date}`` filled in), the table and the notes. With
    ``whole``, a run with any row "not measured" leaves the section as it was (a failed run never
    erases figures); without, each row stands on its own."""
    if whole and any(value == "not measured" for _, value, _ in rows):
        print(f"{heading.lstrip('# ')}: figures not measured, {path} keeps its section as it was")
        return
    date = time.strftime("%Y-%m-%d")
    body = [f"{heading} ({date})", "", how.format(cores=os.cpu_count(), date=date), "", format_table(rows), ""]
    body += [f"- {note}" for note in notes]
    section = "\n".join(body).rstrip() + "\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(f"\n{heading} (")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    path.write_text(text)
