"""``import flexpipe`` does nothing but make names available: no settings read, no Celery,
no SDK, no SQL. A bad setting surfaces on first use, as one error that names it.

Each check runs in a fresh interpreter (outside the repository, so only the installed
``flexpipe`` is importable) to see what an app's own ``import flexpipe`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flexpipe

#: What an app that only imports flexpipe must not pay for (or be broken by) at import.
HEAVY = ("celery", "kombu", "openai", "aiohttp", "sqlalchemy", "flower", "pydantic_settings")


def python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_reads_no_settings_and_imports_no_celery_sdk_or_sql(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import flexpipe\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('flexpipe'))))\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    # A .env in the working directory is one of the places settings are read from.
    (tmp_path / ".env").write_text("FLEXPIPE_TIME_SCALE=not-a-number\n")
    done = python(code, tmp_path, FLEXPIPE_DATABASE_URL="bogus://", FLEXPIPE_SWEEP_INTERVAL="x")
    assert done.returncode == 0, done.stderr
    ours, heavy = (json.loads(line) for line in done.stdout.splitlines())
    assert ours == ["flexpipe"]  # not even flexpipe.config.settings
    assert heavy == []


def test_a_bad_setting_fails_the_first_enqueue_with_one_error_naming_it(tmp_path: Path) -> None:
    assert python("import flexpipe", tmp_path, FLEXPIPE_DATABASE_URL="bogus://").returncode == 0

    done = python(
        "import flexpipe\nflexpipe.enqueue('Summarise this.')",
        tmp_path,
        FLEXPIPE_DATABASE_URL="bogus://",
    )
    assert done.returncode == 1
    # One exception, not a chain ("During handling of the above exception ...").
    assert done.stderr.count("Traceback") == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("flexpipe.errors.ConfigurationError: "), done.stderr
    assert "FLEXPIPE_DATABASE_URL" in last


def test_every_public_name_imports() -> None:
    assert flexpipe.__all__ == sorted(flexpipe.__all__)
    namespace: dict[str, object] = {}
    exec("from flexpipe import *", namespace)
    missing = [name for name in flexpipe.__all__ if namespace.get(name) is None]
    assert missing == []
    assert set(flexpipe.__all__) <= set(dir(flexpipe))
    assert issubclass(namespace["ConfigurationError"], namespace["FlexpipeError"])  # type: ignore[arg-type]
    assert callable(namespace["enqueue"])
