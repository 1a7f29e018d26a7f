"""The layers contract: make lint fails on an import that runs back up."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package in ``tree`` with the project's contract."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / ".importlinter")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_package(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "guard", tree / "guard", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_tree_keeps_the_layers_contract(tmp_path: Path) -> None:
    """The package as it is keeps every import-linter contract."""
    result = _lint_imports(_copy_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "back_import", "reported"),
    [
        ("domain/errors.py", "guard.app", "guard.domain.errors -> guard.app"),
        ("services/ingest.py", "guard.listener.server", "guard.services.ingest -> guard.listener.server"),
    ],
)
def test_a_back_import_breaks_the_contract(tmp_path: Path, module: str, back_import: str, reported: str) -> None:
    """A module that imports a layer above its own (the domain the composition root, a service the listener) fails, naming the import."""
    tree = _copy_package(tmp_path)
    target = tree / "guard" / module
    target.write_text(target.read_text() + f"\nimport {back_import}  # a deliberate back-import\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert reported in result.stdout


def test_services_name_sop_classes_but_never_open_associations() -> None:
    """The services import from pynetdicom only its SOP class UIDs: every association is made in guard.dicom."""
    offending = []
    for path in sorted((ROOT / "guard" / "services").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pynetdicom":
                if node.module != "pynetdicom.sop_class":
                    offending.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offending += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names if a.name.split(".")[0] == "pynetdicom"]
    assert offending == []


def test_metric_objects_are_declared_only_by_the_runtime() -> None:
    """Every Prometheus Counter, Gauge and Histogram is declared in guard.runtime.metrics, the owner of process-wide state."""
    declared = []
    for path in sorted((ROOT / "guard").rglob("*.py")):
        if path == ROOT / "guard" / "runtime" / "metrics.py":
            continue
        metrics = {"Counter", "Gauge", "Histogram"}
        calls = [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        declared += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in calls if isinstance(n.func, ast.Name) and n.func.id in metrics]
    assert declared == []
