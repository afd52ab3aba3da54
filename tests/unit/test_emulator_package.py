"""The emulator is a test double in a package of its own: product code never imports it (except
lazily inside the ``serve`` and ``demo`` commands), and its modules import each other without a
circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "marketlake"
EMULATOR = ROOT / "marketlake_emulator"
#: The only functions of product code allowed to import the emulator (its CLI entry point).
ALLOWED_IMPORTERS = {"serve", "demo"}


def _imports(tree: ast.AST) -> list[tuple[ast.AST, str, list[ast.AST]]]:
    """Every import in ``tree`` as (node, module name, enclosing nodes, outermost first)."""
    out: list[tuple[ast.AST, str, list[ast.AST]]] = []

    def walk(node: ast.AST, stack: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((child, a.name, stack) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child, child.module, stack))
            walk(child, [*stack, child])

    walk(tree, [])
    return out


def test_product_code_imports_the_emulator_only_inside_serve_and_demo() -> None:
    offenders, allowed = [], []
    for path in sorted(PRODUCT.rglob("*.py")):
        for node, module, stack in _imports(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] != "marketlake_emulator":
                continue
            funcs = [n.name for n in stack if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            where = f"{path.relative_to(ROOT)}:{node.lineno} in {funcs or 'module level'}"
            (allowed if funcs and funcs[0] in ALLOWED_IMPORTERS else offenders).append(where)
    assert offenders == [], f"product code imports the emulator: {offenders}"
    # The CLI's serve and demo really are where it is reached from (else this test checks nothing).
    assert {w.split(" in ")[1] for w in allowed} >= {"['serve']", "['demo']"}, allowed


def test_importing_every_product_module_leaves_the_emulator_unloaded() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import marketlake\n"
        "names = [m.name for m in pkgutil.walk_packages(marketlake.__path__, 'marketlake.')\n"
        "         if not m.name.endswith('__main__')]  # __main__ runs the CLI\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'marketlake_emulator')\n"
        "print(len(names), loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.strip().split(" ", 1)
    assert int(count) > 50  # the walk really imported the product (and the CLI) modules
    assert loaded == "[]"


def test_emulator_modules_import_each_other_without_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sorted(EMULATOR.glob("*.py")):
        name = f"marketlake_emulator.{path.stem}" if path.stem != "__init__" else "marketlake_emulator"
        deps = {m for _, m, _ in _imports(ast.parse(path.read_text())) if m.startswith("marketlake_emulator.")}
        graph[name] = deps
    assert len(graph) >= 8
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"import circle: {' -> '.join([*trail, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_the_emulator_package_is_installed_with_the_project() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"marketlake_emulator"' in text
    import marketlake_emulator

    assert Path(marketlake_emulator.__file__).resolve().parent == EMULATOR
    assert marketlake_emulator.Emulator is marketlake_emulator.BybitEmulator
