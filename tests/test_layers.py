"""Each layer keeps its errors in its own ``errors`` module, and the layers import only
downwards: ``statemachine`` imports neither ``store`` nor ``consumer``, ``store`` never
imports ``consumer``."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ERRORS_MODULES = {"statemachine.errors", "store.errors", "consumer.errors"}


def modules(package: str) -> list[str]:
    found = [package]
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not info.name.endswith(".__main__"):  # running it is the command line
            found.append(info.name)
    return found


def test_every_exception_lives_in_its_layer_s_errors_module() -> None:
    stray = []
    for package in ("statemachine", "store", "consumer"):
        for name in modules(package):
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                ours = cls.__module__ == name and issubclass(cls, BaseException)
                if ours and name not in ERRORS_MODULES:
                    stray.append(f"{name}.{cls.__name__}")
    assert not stray


def test_layers_import_only_downwards() -> None:
    forbidden = {"statemachine": {"store", "consumer"}, "store": {"consumer"}}
    wrong = []
    for package, banned in forbidden.items():
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                wrong += [
                    f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in banned
                ]
    assert not wrong


LONGEST_CLASS = 350
"""Lines a class in the product may span (issue 25: the 728-line ``Worker`` was split)."""


def _classes(package: str) -> list[tuple[int, str]]:
    found = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                span = node.end_lineno - node.lineno + 1
                found.append((span, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return found


def test_no_class_in_the_product_is_over_350_lines() -> None:
    spans = [
        found for package in ("statemachine", "store", "consumer") for found in _classes(package)
    ]
    assert spans, "the walk found the classes"
    assert [found for found in spans if found[0] > LONGEST_CLASS] == []


def _python_files(*packages: str) -> list[Path]:
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


def _imported(tree: ast.AST) -> list[str]:
    """Every module name an import in ``tree`` names (``from a import b`` gives a and a.b)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_nothing_below_the_entry_point_imports_the_cli() -> None:
    """The CLI parses, calls and renders; what it calls (operations, display, devtools, the
    worker) never reaches back up into it."""
    cli = ROOT / "consumer" / "cli"
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files("consumer", "store", "statemachine")
        if cli not in path.parents
        for name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        if name == "consumer.cli" or name.startswith("consumer.cli.")
    ]
    assert wrong == []


SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|LOCK"
    r"|VACUUM|WITH)\s"
)
"""How a statement starts; messages for people never start with an upper-case keyword."""


def test_no_sql_outside_the_store() -> None:
    """Every statement lives in ``store/``: a new backend is a change there alone."""
    found = []
    for path in _python_files("consumer", "statemachine"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if SQL.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:40]}")
    assert found == []


def test_no_database_driver_outside_the_store() -> None:
    """The store translates sqlite3's and psycopg's errors into its own, so nothing above it
    imports a driver, to catch its errors or otherwise."""
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files("consumer", "statemachine")
        for name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] in {"sqlite3", "psycopg", "psycopg_pool", "sqlite_utils"}
    ]
    assert wrong == []
