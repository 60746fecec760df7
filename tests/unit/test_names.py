"""One name per concept: a strategy is named by its own module only (the registry's promise), the
baseline is the registry's, and the old names of renamed things are gone."""

from __future__ import annotations

import re
from pathlib import Path

from engine.search import registry

ROOT = Path(__file__).resolve().parents[2]
# Keys of stored formats that name the baseline (summary.json and exchange.json have always had
# them); the value is the registry's baseline's.
FORMAT_KEYS = ('"best_of_n": base,', '"large": {"best_of_n"', 'bn["large"]["best_of_n"]')


def _sources() -> list[Path]:
    return sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "gui").rglob("*.py")])


def test_nothing_but_its_module_names_a_strategy():
    search = ROOT / "engine" / "search"
    offenders = []
    for name in registry.names():
        quoted = re.compile(rf"[\"']{re.escape(name)}[\"']")
        for path in _sources():
            if path == search / f"{name}.py":
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                code = line.split("#", 1)[0]
                if quoted.search(code) and not any(k in line for k in FORMAT_KEYS):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_the_baseline_is_the_registrys():
    assert registry.baseline() == "best_of_n"
    assert [s.name for s in registry.strategies() if s.baseline] == ["best_of_n"]


def test_old_names_are_gone():
    """Each concept under one name: summarise (not summarize), budget_tokens (not token_budget),
    n_params for parameter counts, out_of_tokens for 'is the token budget used up', count_spent for
    a strategy's own count of what a run spent, engine/run/opening.py beside engine/executor.py,
    branch_table.py beside branch.py."""
    old = [
        r"\bsummarize\b",
        r"\btoken_budget\b",
        r"\bparams_override\b",
        r"\bmodel_params\s*[:=]",
        r"ctx\.spent\(",
    ]
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for pat in old:
            for line in text.splitlines():
                if re.search(pat, line) and "recorded before the name was one" not in line:
                    found.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert found == []
    assert not (ROOT / "engine" / "run" / "executors.py").exists()
    assert not (ROOT / "engine" / "backends" / "llama_cpp" / "branches.py").exists()
