"""The house keeps its shape: no import circle exists among Ponder's own modules, counting imports
inside functions; no module, function or signature grows past the limits the redesign set.
import-linter's contracts and an engine that loads no Qt are checked in processes of their own, in
tests/integration/test_layering_imports.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "gui", "bench")
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMS = 600, 100, 10


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            mod = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[mod.removesuffix(".__init__")] = f
    return out


def _imports(mod: str, f: Path, mods: set[str]) -> set[str]:
    """Every first-party module ``mod`` imports, at the top or inside a function."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        out |= {t for n in names if (t := resolve(n)) and t != mod}
    return out


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_counting_imports_inside_functions():
    files = _modules()
    edges = {m: _imports(m, f, set(files)) for m, f in files.items()}
    assert edges["engine.run.compare"] >= {
        "engine.run.scheduler",
        "engine.run.request",
    }  # the walk sees imports
    assert _cycles(edges) == []
    # the same check finds a circle where there is one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_functions_and_signatures_stay_within_the_limits():
    too_long, too_wide = [], []
    for mod, f in _modules().items():
        src = f.read_text(encoding="utf-8")
        if src.count("\n") + 1 > MAX_MODULE_LINES:
            too_long.append(f"{mod}: {src.count(chr(10)) + 1} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{mod}.{node.name}")
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                n -= 1 if a.args and a.args[0].arg in ("self", "cls") else 0
                if n > MAX_PARAMS:
                    too_wide.append(f"{mod}.{node.name}: {n} parameters")
    assert too_long == [] and too_wide == []
