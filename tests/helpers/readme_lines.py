"""The README's `ponder …` lines, as tests/unit/test_readme.py parses them and
tests/integration/test_readme_runs.py runs the quick ones."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
QUICK = {("--help",), ("models",), ("info",), ("sessions", "list")}  # run, not only parsed


def ponder_lines() -> list[str]:
    """Lines of fenced code blocks that start with `ponder`, and inline `ponder …` spans that are
    concrete (no PLACEHOLDER, [option] or a | b)."""
    text = README.read_text(encoding="utf-8")
    out: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if fence and line.startswith("ponder"):
            out.append(re.split(r"\s+#\s", line)[0].strip())
    for span in re.findall(r"`(ponder(?: [^`]*)?)`", text):
        if not re.search(r"\b[A-Z]{3,}\b|\[|\||…", span):
            out.append(span.strip())
    return list(dict.fromkeys(out))
