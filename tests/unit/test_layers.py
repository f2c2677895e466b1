"""The layering the design promises: pipeline/ imports no Celery, only the client knows
the openai SDK, and only the store package (with its table definitions) talks SQL."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pipeline

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")
    if ".migrations.versions" not in m.name and not m.name.endswith("migrations.env")
    and not m.name.startswith("pipeline.cli") and not m.name.endswith("__main__")
    # The framework integrations import their framework (and Celery) by design.
    and not m.name.startswith("pipeline.contrib")
)


def test_pipeline_imports_no_celery() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert len(MODULES) > 20
    assert out.stdout.strip() == "[]"


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
