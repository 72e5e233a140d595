"""Figures of the package's shape, so a restructuring can show before and after.

Run from a checkout: `python scripts/house.py`. It reads the code as text (ast), runs none of it.
The same checks back `tests/test_house.py`, so a shell literal outside `remote/` or an import
circle fails the fast lane.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vedfin_ops"
#: Where remote commands may be spelled out: the command builders and the templates.
SHELL_HOMES = ("remote",)
_WORDS = r"(docker|sudo|psql|pg_dump|pg_restore|crontab|systemctl|tail|printf|mkdir|chmod|rm|test)"
#: A command: a literal that starts with a command word, or puts one after a shell operator.
#: A hint inside a message ("... (docker node ls)") is prose for the user and does not count.
_SHELL = re.compile(
    rf"^\s*{_WORDS}\s|(;|&&|\|\||\||\$\(|`)\s*{_WORDS}\s|^\s*(&&|\|\|)\s*$|^\s+-At\b"
)


def modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Modules of the package this file imports at its top level or in functions."""
    name = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {  # `if TYPE_CHECKING:` imports never run: they make no circle
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(root.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                kept = base[: len(base) - node.level + 1]
                mod = ".".join(kept + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith(root.name):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> modules it imports, at module level only (what can make a circle at import)."""
    paths = {module_name(p, root): p for p in modules(root)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = {t for t in imports(path, root) if t in paths and t != name}
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), packages' __init__ left out:
    a package importing its own children is how a package is made, not a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    packages = {n for n in graph if any(o.startswith(n + ".") for o in graph)}

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v] - packages:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index and v not in packages:
            visit(v)
    return out


def shell_literals(root: Path = PACKAGE) -> list[str]:
    """`file:line: text` for every string literal outside the shell's homes that spells a
    remote command (docker, sudo, psql, ...). Docstrings are prose and do not count."""
    found = []
    for path in modules(root):
        rel = path.relative_to(root)
        if rel.parts[0] in SHELL_HOMES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) not in docstrings:
                text = node.value
                if _SHELL.search(text):
                    found.append(f"{rel}:{node.lineno}: {text.strip()[:70]!r}")
    return found


def largest_function(root: Path = PACKAGE) -> tuple[int, str]:
    best = (0, "")
    for path in modules(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > best[0]:
                    best = (size, f"{path.relative_to(root)}:{node.name}")
    return best


def function_params(root: Path, rel: str, name: str) -> int:
    for node in ast.walk(ast.parse((root / rel).read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            return len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    return -1


def main() -> None:
    paths = modules()
    per_folder = Counter(str(p.parent.relative_to(PACKAGE.parent)) for p in paths)
    lines = {p: len(p.read_text().splitlines()) for p in paths}
    print(f"modules: {len(paths)}, lines: {sum(lines.values())}")
    print("modules per folder:")
    for folder, n in sorted(per_folder.items()):
        rel = PACKAGE.parent
        share = sum(v for p, v in lines.items() if str(p.parent.relative_to(rel)) == folder)
        print(f"  {folder:34} {n:3}  {share:6} lines")
    big = max(lines, key=lines.__getitem__)
    print(f"largest module: {big.relative_to(PACKAGE)} ({lines[big]} lines)")
    size, where = largest_function()
    print(f"largest function: {where} ({size} lines)")
    names = Counter(p.name for p in paths if p.name != "__init__.py")
    print(f"file names repeated: {sorted(n for n, c in names.items() if c > 1)}")
    found = circles(import_graph())
    print(f"import circles: {len(found)} {found}")
    literals = shell_literals()
    print(f"shell literals outside remote/ and templates: {len(literals)}")
    for line in literals:
        print("  " + line)


if __name__ == "__main__":
    main()
