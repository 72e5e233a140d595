"""Figures of the package's shape, so a restructuring can show before and after.

Run from a checkout: `python scripts/house.py`. It reads the code as text (ast), runs none of it.
The same checks back `tests/test_house.py`, so a shell literal outside `remote/` (and the
templates, which are not Python) or an import circle fails the fast lane.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vedfin_ops"
#: Where remote commands may be spelled out: the command builders and the templates (which
#: are not Python: `rendering/templates/*.j2`).
SHELL_HOMES = ("remote",)
#: The programs the tool runs on a host (or on this machine: `docker build`).
_WORDS = ("docker|sudo|psql|pg_dump|pg_restore|crontab|systemctl|netdatacli|ufw|tail|head|"
          "printf|echo|cat|tee|mkdir|chmod|chgrp|rm|mv|cp|ln|touch|test|grep|sed|awk|find|stat|"
          "readlink|mktemp|basename|sha256sum|df|ls|ps|tr|cut|date|curl|wget|kill|sleep|"
          "timeout|umask|trap|exec|command")
#: Where a shell expects a command: the start, after an operator, an opening `$(`, `{ ` or
#: `( `, a line break; then any of `if`, `then`, `else`, `do`, `!`, `$S`. (Not after a
#: backquote: that is how a message quotes a command, "`ufw status verbose` needs root".)
_AT = r"(?:^|;|&&|\|\||\||\$\(|\n|[{(]\s)\s*(?:(?:if|then|else|elif|do|!|\$S)\s+)*"
#: A command: a command word there, followed by its arguments.
_SHELL = re.compile(rf"{_AT}(?:{_WORDS})\s+\S")
#: A literal that is only `&&` or `||` joins commands (`" && ".join(...)`), as does the
#: argument `-At` added to a psql command. A bare `;` or `|` joins prose as often ("; " between
#: a message's parts): it counts only where what it joins are commands (see `_messages`).
_JOIN = re.compile(r"^\s*(&&|\|\|)\s*$|^\s+-At\b")
_SEPARATOR = re.compile(r"^\s*(;|\|)\s*$")
#: A formatted value of an f-string: the text around it is read as it stands (a value put
#: right before a word makes no command of it: "(…docker node update …)" is a hint).
_VALUE = "\x00"


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
    """Strongly connected groups of more than one module (Tarjan). A module's import of a
    package it is in is left out (Python ran that `__init__` before the module: no circle).
    A package's `__init__` is a module like any other: one that re-exports its children
    (`remote.commands`) is in a circle when a module one of them imports imports it back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(w for w in graph[v] if not v.startswith(w + ".")):
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
        if v not in index:
            visit(v)
    return out


def _text(node: ast.AST) -> str | None:
    """A string literal's text, an f-string's with `_VALUE` for each formatted value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else _VALUE
                       for v in node.values)
    return None


def is_command(text: str) -> bool:
    """Does this text spell a shell command (or join commands)? A formatted value alone
    between operators (`f"{a} && {b}"`) joins commands too."""
    return bool(_SHELL.search(text) or _JOIN.search(text.replace(_VALUE, "")))


def _builds_commands(piece: ast.AST) -> bool:
    """A piece of a join that is a command: a literal that spells one, or a builder's call
    (`commands.x(...)`)."""
    text = _text(piece)
    if text is not None:
        return is_command(text)
    return isinstance(piece, ast.Call) and isinstance(piece.func, ast.Attribute) and \
        isinstance(piece.func.value, ast.Name) and piece.func.value.id == "commands"


def _messages(tree: ast.AST) -> set[int]:
    """The ids of every string node that is prose for a person, not a command: docstrings,
    what a `raise` says, a step's name (`what=`), a joining literal whose pieces are no
    commands (`" || ".join(f"Host(`{d}`)" ...)`, a Traefik rule), and a bare `;` or `|`
    unless it joins commands."""
    prose: set[int] = set()
    joining: set[int] = set()  # `;`/`|` separators seen joining commands
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            prose.add(id(node.body[0].value))
        elif isinstance(node, ast.Raise) and node.exc is not None:
            prose.update(id(n) for n in ast.walk(node.exc))
        elif isinstance(node, ast.keyword) and node.arg == "what":
            prose.update(id(n) for n in ast.walk(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "join" and node.args:
            joined = node.args[0]
            pieces = [joined.elt] if isinstance(joined, ast.GeneratorExp | ast.ListComp) \
                else list(joined.elts) if isinstance(joined, ast.List | ast.Tuple) else []
            texts = [_text(piece) for piece in pieces]
            if texts and all(text is not None and not is_command(text) for text in texts):
                prose.add(id(node.func.value))
            elif pieces and any(_builds_commands(piece) for piece in pieces):
                joining.add(id(node.func.value))
    for node in ast.walk(tree):
        text = _text(node)
        if text is not None and _SEPARATOR.search(text.replace(_VALUE, "")) \
                and id(node) not in joining:
            prose.add(id(node))
    return prose


def shell_literals(root: Path = PACKAGE) -> list[str]:
    """`file:line: text` for every string literal outside the shell's homes that spells a
    remote command (docker, sudo, psql, ...) or joins commands (`" && "`). An f-string is
    read whole. Prose does not count (see `_messages`): a hint in a message ("... (docker
    node ls)") is for the user, not for a shell."""
    found = []
    for path in modules(root):
        rel = path.relative_to(root)
        if rel.parts[0] in SHELL_HOMES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        prose = _messages(tree)
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                 for v in n.values}  # read with their f-string
        for node in ast.walk(tree):
            text = _text(node)
            if text is None or id(node) in prose or id(node) in parts:
                continue
            # a bare `;` or `|` left here joins commands (`_messages` took the others)
            if is_command(text) or _SEPARATOR.search(text.replace(_VALUE, "")):
                shown = text.strip().replace(_VALUE, "{}")
                found.append(f"{rel}:{getattr(node, 'lineno', 0)}: {shown[:70]!r}")
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
