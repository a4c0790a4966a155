"""The package's imports run one way: each folder (or top-level module) imports only those below it.

A node is a first-level folder of `consumer/` or a top-level module (`app.py`, `errors.py`, ...);
there is an edge from A to B when any file of A imports any file of B. Every import counts: at
module level, inside a function, and under `if TYPE_CHECKING:` (a type named in a signature is a
dependency of meaning, even when it is never imported at run time). The order, bottom first, is
the one the README's layout section lists top first.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "consumer"

# Bottom first: a node may import the nodes before it, never one after it.
ORDER = (
    "__init__.py",  # the version
    "values",
    "errors.py",
    "util",
    "config",
    "ops",
    "kafka",
    "formats",
    "liveperson",
    "accounts",
    "delivery",
    "handover.py",
    "flow.py",
    "park_wiring.py",
    "app.py",
    "sandbox",
    "tools",
    "cli.py",
    "__main__.py",
)


def _node(parts: list[str]) -> str | None:
    """The node a dotted `consumer...` name lands in (None: not ours)."""
    if not parts or parts[0] != "consumer":
        return None
    if len(parts) == 1:
        return "__init__.py"
    head = parts[1]
    if (PACKAGE / head).is_dir():
        return head
    if (PACKAGE / f"{head}.py").is_file():
        return f"{head}.py"
    return "__init__.py"  # a name defined in consumer/__init__.py (`from consumer import __version__`)


def _module(path: Path) -> list[str]:
    """The dotted name of a file, as a list (`consumer/kafka/__init__.py` -> consumer, kafka)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> list[tuple[list[str], int]]:
    """Every module a file imports (`from a import b` also as `a.b`, b may be a module), with its line."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here[:-1]
    out: list[tuple[list[str], int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name.split("."), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            out.append((target, node.lineno))
            out += [([*target, alias.name], node.lineno) for alias in node.names]
    return out


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer node, imported node) -> the `file:line` of each import making that edge."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.relative_to(PACKAGE).parts[0]  # a folder, or a top-level module
        for target, line in _imports(path):
            dst = _node(target)
            if dst is not None and dst != src:
                where = f"{path.relative_to(ROOT)}:{line}"
                if where not in edges[(src, dst)]:
                    edges[(src, dst)].append(where)
    return edges


def test_every_node_has_a_place_in_the_order() -> None:
    """A new folder or top-level module must be given its place (bottom first) in ORDER and the README."""
    nodes = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"}
    missing, gone = sorted(nodes - set(ORDER)), sorted(set(ORDER) - nodes)
    assert not missing and not gone, f"not in ORDER: {missing}; in ORDER but gone: {gone}"


def test_imports_point_down_the_order() -> None:
    """No node imports one above it, so the package graph has no cycle; a failure names both nodes."""
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = [
        f"{src} imports {dst} ({', '.join(where)})"
        for (src, dst), where in sorted(package_edges().items())
        if src in rank and dst in rank and rank[dst] >= rank[src]  # an unknown node: the test above
    ]
    order = " < ".join(ORDER)
    assert not upward, f"imports against the order (bottom first: {order}):\n" + "\n".join(upward)


def test_no_import_circle_among_files() -> None:
    """No circle among the files either (TYPE_CHECKING and function-level imports included)."""
    files = {".".join(_module(p)): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for target, _ in _imports(path):
            dotted = ".".join(target)
            if dotted in files and dotted != name:
                graph[name].add(dotted)
    circles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not circles, f"files importing each other: {circles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def test_the_readme_lists_the_order() -> None:
    """The README's layout section lists the nodes top first, in ORDER reversed (its one line each)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Development", 1)[1]
    block = section.split("```", 2)[1]
    listed = re.findall(r"^  ([\w.]+/?)\s", block, flags=re.MULTILINE)
    assert [name.rstrip("/") for name in listed] == list(reversed(ORDER))
