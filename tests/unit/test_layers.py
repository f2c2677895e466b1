"""The layering the design promises, as import contracts (pyproject.toml,
``[tool.importlinter]``): the core imports no Celery and no top layer, config imports
neither the tasks nor the CLI, the tasks do not import the CLI, and no import cycles.
Also: only the client knows the openai SDK, and only the store package (with its table
definitions) talks SQL.

grimp, under import-linter, finds a package by walking its folder; the editable install
maps ``flexpipe.tasks`` and ``flexpipe.config`` from other folders, so the checks run on
a tree of symlinks laid out as the wheel is (``make lint`` builds the same one for mypy).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CORE = next(c for c in CONTRACTS["contracts"] if c["id"] == "core")["source_modules"]
#: Modules above the core: the root module (a lazy facade over the public API), the
#: Celery layer, settings, the command line, the framework integrations and the test stack.
TOP = {"flexpipe.tasks", "flexpipe.config", "flexpipe.cli", "flexpipe.contrib", "flexpipe.testing"}

#: Strongly connected components of the module graph (Tarjan), run where grimp sees the
#: wheel's layout; parent packages count as importing nothing but what they import.
CYCLES = """
import json, sys
import grimp

graph = grimp.build_graph("flexpipe", cache_dir=None)
edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
index, low, stack, on_stack, found = {}, {}, [], set(), []
sys.setrecursionlimit(10000)

def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in edges.get(node, []):
        if nxt not in index:
            visit(nxt)
            low[node] = min(low[node], low[nxt])
        elif nxt in on_stack:
            low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
        component = []
        while True:
            top = stack.pop()
            on_stack.discard(top)
            component.append(top)
            if top == node:
                break
        if len(component) > 1:
            found.append(sorted(component))

for module in sorted(graph.modules):
    if module not in index:
        visit(module)
print(json.dumps({"modules": len(graph.modules), "cycles": found}))
"""


@pytest.fixture(scope="module")
def wheel_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipeline/, tasks/ and config/ linked under ``flexpipe/`` as the wheel installs them."""
    tree = tmp_path_factory.mktemp("wheel-layout")
    package = tree / "flexpipe"
    package.mkdir()
    for entry in (ROOT / "pipeline").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "tasks").symlink_to(ROOT / "tasks")
    (package / "config").symlink_to(ROOT / "config")
    return tree


def _run(argv: list[str], tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH comes before the editable install's finder, so `flexpipe` is the tree.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_import_contracts_are_kept(wheel_tree: Path) -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    out = _run([str(lint_imports), "--no-cache"], wheel_tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(CONTRACTS['contracts'])} kept, 0 broken." in out.stdout


def test_no_module_imports_itself_round_a_loop(wheel_tree: Path) -> None:
    """Finer than the acyclic_siblings contract: a package and its own modules count too."""
    out = _run([sys.executable, "-c", CYCLES], wheel_tree)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["modules"] > 60  # flexpipe.tasks and flexpipe.config were seen
    assert found["cycles"] == []


def test_every_module_has_a_layer() -> None:
    """A new module of flexpipe must be placed in the core contract or among the top."""
    children = {
        f"flexpipe.{p.stem}"
        for p in (ROOT / "pipeline").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    } | {"flexpipe.tasks", "flexpipe.config"}
    assert children == set(CORE) | (TOP & children)
    assert not set(CORE) & TOP


def test_the_core_imports_no_celery_when_run() -> None:
    """What the contracts cannot see: imports made by name (importlib) while loading."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for top in {CORE!r}:\n"
        "    module = importlib.import_module(top)\n"
        "    for m in pkgutil.walk_packages(getattr(module, '__path__', []), top + '.'):\n"
        "        if '.migrations.versions' not in m.name and not m.name.endswith(\n"
        "            ('migrations.env', '__main__')):\n"
        "            importlib.import_module(m.name)\n"
        "print(len(sys.modules), sorted(m for m in sys.modules\n"
        "      if m.split('.')[0] in ('celery', 'kombu') or m.startswith('flexpipe.tasks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    count, rest = out.stdout.strip().split(" ", 1)
    assert int(count) > 100
    assert rest == "[]"


def _importers(pattern: str) -> set[str]:
    found = set()
    for path in (ROOT / "pipeline").rglob("*.py"):
        if re.search(pattern, path.read_text(), re.MULTILINE):
            found.add(str(path.relative_to(ROOT)))
    return found


def test_only_the_client_knows_the_openai_sdk() -> None:
    assert _importers(r"^\s*(import openai|from openai)") == {"pipeline/client.py"}


def test_only_the_store_and_its_schema_talk_sql() -> None:
    sql = {p for p in _importers(r"^\s*(import sqlalchemy|from sqlalchemy)")
           if not p.startswith("pipeline/migrations/versions/")
           # builds a SQLAlchemy URL from Django's DATABASES; runs no SQL
           and p != "pipeline/contrib/django/settings.py"}
    outside = {p for p in sql if not p.startswith("pipeline/store/")}
    # The migrations package runs Alembic, reads and moves its version table.
    assert outside <= {
        "pipeline/schema.py", "pipeline/migrations/env.py", "pipeline/migrations/__init__.py"
    }
    assert "pipeline/store/statements.py" in sql


def test_the_test_stack_imports_no_pytest() -> None:
    """Apps use flexpipe.testing from fixtures of their own, with or without pytest."""
    code = "import sys, flexpipe.testing\nprint(sorted(m for m in sys.modules if 'pytest' in m))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
