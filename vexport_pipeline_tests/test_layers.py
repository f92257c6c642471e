"""The house rules, checked on the source: one direction of imports (edges -> defs -> core), a core
without framework imports, no import cycles, no function over 80 lines, a docstring per package."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vexport_pipeline"
FRAMEWORKS = ("dagster", "dagster_", "starlette", "click", "uvicorn")
MAX_FUNCTION_LINES = 80


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


SOURCES = sorted(PKG.rglob("*.py"))
MODULES = {_module(p): p for p in SOURCES}


def _internal(path: Path) -> set[str]:
    return {m for m in _imports(path) if m in MODULES and m != _module(path)}


def test_core_imports_no_framework_and_nothing_above_it():
    for path in (PKG / "core").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(FRAMEWORKS), f"{path}: the core imports {name}"
            assert not name.startswith(
                ("vexport_pipeline.defs", "vexport_pipeline.cli", "vexport_pipeline.definitions")
            ), f"{path}: the core imports {name} (imports go edges -> defs -> core, never back)"


def test_defs_never_import_the_edges():
    for path in (PKG / "defs").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith("vexport_pipeline.cli"), f"{path} imports {name}"


def test_no_import_cycles():
    graph = {m: _internal(p) for m, p in MODULES.items()}
    # a package's __init__ re-exporting its children is not a cycle of ideas; edges into a package count
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n] if n in stack else [m, n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(n):
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m, [m])


def test_no_function_longer_than_80_lines():
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_every_package_says_what_lives_there():
    for init in PKG.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PKG.parent)} has no docstring"


def test_the_readme_documents_every_setting():
    from vexport_pipeline.core.settings import Settings

    readme = (PKG.parent / "README.md").read_text()
    missing = [name for name, _, _ in Settings.variables() if f"| `{name}` |" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"
