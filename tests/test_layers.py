"""The import rules of README.md's Architecture section, read from every module's import statements (AST):
kernels <- core <- tasks/data, and between tasks and data only the DNA tools' two modules reach into data."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
#: source folder -> the package it installs as
PACKAGES = {"kernels": "seqpipe.kernels", "seqpipe": "seqpipe", "tasks": "seqpipe.tasks", "data": "seqpipe.data"}
#: the modules of tasks that may import seqpipe.data (the DNA tools read their inputs as `seqpipe predict` does)
TASKS_READING_DATA = {"model_scoring", "variant_effects"}


def layer(module: str) -> str | None:
    """'kernels', 'tasks', 'data' or 'core' for a seqpipe module name; None outside seqpipe."""
    if module != "seqpipe" and not module.startswith("seqpipe."):
        return None
    part = module.split(".")[1] if "." in module else ""
    return part if part in ("kernels", "tasks", "data") else "core"


def imported_modules(path: Path) -> set[str]:
    """The absolute module names ``path``'s import statements name, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_by_layer() -> dict[tuple[str, str], set[str]]:
    """(layer, module stem) -> the layers of the seqpipe modules it imports."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            found[(layer(package), path.stem)] = {layer(name) for name in imported_modules(path)} - {None}
    return found


def test_imports_point_one_way():
    found = imports_by_layer()
    assert len(found) > 60  # every module was read
    allowed = {"kernels": {"kernels"}, "core": {"core", "kernels"}, "data": {"data", "core", "kernels"},
               "tasks": {"tasks", "core", "kernels"}}
    wrong = {f"{where}.{stem} imports {sorted(layers - allowed[where])}"
             for (where, stem), layers in found.items()
             if layers - allowed[where] and not (where == "tasks" and stem in TASKS_READING_DATA and layers - allowed[where] == {"data"})}
    assert not wrong, wrong
    assert all("data" in found[("tasks", stem)] for stem in TASKS_READING_DATA)  # the exception is still needed
