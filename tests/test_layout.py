"""The layout's rules (docs/architecture.md): no import cycles among wattmesh's modules,
and no private name imported from another module. Read from the source with ast, so
nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("exchange", "matching", "settlement", "meters", "agents")


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every Python and Cython module of wattmesh."""
    found = {}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*")):
            if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
                continue
            dotted = ".".join(("wattmesh", *path.relative_to(ROOT).with_suffix("").parts))
            found[dotted.removesuffix(".__init__")] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _python_imports(lines: list[str]) -> list[str]:
    """The top-level ``import`` and ``from ... import`` statements of a Cython file (not
    its cimports), each with its continuation lines."""
    out: list[str] = []
    depth = 0
    for line in lines:
        if depth:
            out.append(line)
            depth += line.count("(") - line.count(")")
        elif line.startswith(("import ", "from ")) and " cimport " not in line:
            out.append(line)
            depth = line.count("(") - line.count(")")
    return out


def imports(module: str, path: Path) -> list[tuple[str, str | None, bool]]:
    """(imported module, imported name or None, at module level outside TYPE_CHECKING)."""
    if path.suffix == ".pyx":  # Cython: only its top-level Python imports are read
        tree = ast.parse("\n".join(_python_imports(path.read_text().splitlines())))
    else:
        tree = ast.parse(path.read_text())
    top = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        top.update(id(n) for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path.stem == "__init__", node)
            out += [(source, a.name, id(node) in top) for a in node.names]
    return out


def test_no_private_name_is_imported_from_another_module():
    mods = modules()
    bad = []
    for module, path in mods.items():
        for source, name, _top in imports(module, path):
            if not source.startswith("wattmesh.") or name is None or not name.startswith("_"):
                continue
            if f"{source}.{name}" in mods:  # a private module: fine from its own package
                if source == module or module.startswith(source + ".") or module == source:
                    continue
                package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
                if source == package:
                    continue
            bad.append(f"{module} imports {name} from {source}")
    assert bad == []


def test_there_are_no_import_cycles():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for source, name, top in imports(module, path):
            if not top:
                continue  # an import inside a function runs late and breaks no cycle
            for target in (f"{source}.{name}", source):
                if target in mods and target != module:
                    graph[module].add(target)
                    break
    # Importing a module imports its packages first: a cycle through a package's
    # __init__ counts too, which the edges above already show when __init__ imports.
    cycles = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []
    assert len(mods) > 60  # every part was read


# What each part may import of the others (docs/architecture.md, "Layout").
MAY_USE = {
    "matching": set(),
    "settlement": set(),
    "meters": {"settlement"},
    "agents": {"matching", "meters", "settlement"},
    "exchange": {"matching", "meters", "settlement", "agents"},
}


def test_dependencies_point_one_way():
    bad = []
    for module, path in modules().items():
        part = module.split(".")[1]
        for source, _name, _top in imports(module, path):
            if not source.startswith("wattmesh."):
                continue
            other = source.split(".")[1]
            if other != part and other not in MAY_USE[part]:
                bad.append(f"{module} imports {source}")
    assert bad == []


# Paths of documents outside the repository that a file could point at.
_OUTSIDE = ("../shared", "shared/notes", "shared/data", "shared/bench", "DESIGN.md", "seeds/")
_TEXT = (".py", ".pyx", ".pxd", ".md", ".toml", ".txt", ".js", ".html", "")


def test_no_file_points_outside_the_repository():
    """The project's files state what they need in the project's own docs (design.md),
    never as a path outside the repository (docs/architecture.md)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in _TEXT or not path.is_file() or name == "tests/test_layout.py":
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {p}" for p in _OUTSIDE if p in text]
    assert found == [], found
