"""Each layer keeps its errors in its own ``errors`` module, and the layers import only
downwards: ``statemachine`` imports neither ``store`` nor ``consumer``, ``store`` never
imports ``consumer``."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
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
