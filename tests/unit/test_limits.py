"""The layout's size limits (README *Development*): modules 400 lines, classes 250, functions 60."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "consumer"
MODULE_MAX, CLASS_MAX, FUNCTION_MAX = 400, 250, 60


def _sizes() -> list[tuple[str, str, int, int]]:
    """(kind, where, lines, limit) of every module, class and function of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(PACKAGE.parent))
        out.append(("module", where, len(text.splitlines()), MODULE_MAX))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                is_class = isinstance(node, ast.ClassDef)
                kind, limit = ("class", CLASS_MAX) if is_class else ("function", FUNCTION_MAX)
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                out.append((kind, f"{where}:{node.lineno} {node.name}", lines, limit))
    return out


def test_no_module_class_or_function_outgrows_its_limit() -> None:
    sizes = _sizes()
    assert any(kind == "function" for kind, *_ in sizes)  # the walk found the package
    over = [f"{kind} {where}: {n} lines (max {limit})" for kind, where, n, limit in sizes if n > limit]
    assert not over, over
