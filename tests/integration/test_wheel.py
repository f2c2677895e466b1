"""The wheel as a new user gets it: built with ``pip wheel .``, installed (not editable, with
its dependencies) into a fresh venv next to a cookiecutter-style Django project that has its
own ``config/`` package, an invoke-style ``tasks.py`` and django-pipeline's ``pipeline``.

From that project's root the test runs the bundled emulator and ``flexpipe worker --beat``
from the venv on the embedded defaults (SQLite and the filesystem broker in the project's
``.flexpipe/``), runs the README's first Python example, and checks that the job completed,
that its callback ran, and that ``config``, ``tasks`` and ``pipeline`` are still the user's
and django-pipeline's. Needs no Redis or PostgreSQL; pip reads its packages from its cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Installing ~60 packages from pip's cache takes one to three minutes on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
#: What ``pip wheel .`` reads: the three source folders and the project metadata.
SOURCES = ("pipeline", "tasks", "config", "pyproject.toml", "README.md")
INSTALL_TIMEOUT = 600.0
START_TIMEOUT = 60.0
JOB_TIMEOUT = 120.0

PROJECT_FILES = {
    "config/__init__.py": "",
    "config/settings/__init__.py": "",
    "config/settings/base.py": """
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parents[2]
        SECRET_KEY = "not-a-secret"
        INSTALLED_APPS = ["pipeline", "myapp"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                                 "NAME": BASE_DIR / "django.sqlite3"}}
        STATIC_URL = "/static/"
        PIPELINE = {"PIPELINE_ENABLED": False}
        USE_TZ = True
    """,
    "config/celery_app.py": """
        import os

        from celery import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
        app = Celery("myproject")
        app.config_from_object("django.conf:settings", namespace="CELERY")
    """,
    "tasks.py": '''
        """invoke-style chores (``invoke test``); invoke itself is not needed here."""

        WHOSE = "the project's tasks.py"


        def test(c):
            c.run("pytest")
    ''',
    "myapp/__init__.py": "",
    "myapp/tasks.py": """
        from pathlib import Path

        from celery import shared_task

        import flexpipe


        @shared_task(name="myapp.tasks.summary_ready")
        def summary_ready(job_id):
            view = flexpipe.get(job_id)
            Path(f"callback-{job_id}.json").write_text(view.status.value)
    """,
}

#: Runs after the README's example, in the same process: what ``import`` finds.
CHECK_LAYOUT = """
    import importlib.metadata, os
    import django
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)  # loads django-pipeline's app, never flexpipe's
    import config, config.celery_app, config.settings.base, tasks, pipeline, flexpipe
    from django.apps import apps
    layout = {
        "config": config.__file__,
        "celery_app": config.celery_app.app.main,
        "tasks": tasks.__file__,
        "tasks_whose": tasks.WHOSE,
        "pipeline": pipeline.__file__,
        "pipeline_app": str(apps.get_app_config("pipeline").path),
        "flexpipe": flexpipe.__file__,
        "flexpipe_tasks": flexpipe.tasks.__file__,
        "flexpipe_config": flexpipe.config.__file__,
        "django_pipeline_files": [
            str(f.locate()) for f in importlib.metadata.files("django-pipeline")
        ],
    }
    print("LAYOUT " + json.dumps(layout))
"""


# -- the wheel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .`` on a clean copy of the sources (no stale ``build/`` can leak in)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", out], cwd=src)
    (built,) = out.glob("flexpipe-*.whl")
    return built


def test_wheel_installs_one_top_level_package_and_one_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
        top_level = (
            whl.read(f"{dist_info}/top_level.txt").decode().split()
            if f"{dist_info}/top_level.txt" in names
            else ["flexpipe"]
        )
    assert {n.split("/")[0] for n in names} == {"flexpipe", dist_info}
    assert top_level == ["flexpipe"]
    assert "flexpipe/__init__.py" in names
    assert "flexpipe/tasks/__init__.py" in names
    assert "flexpipe/config/__init__.py" in names
    assert "flexpipe/migrations/env.py" in names
    sections = _entry_points(entry_points)
    assert set(sections) == {"console_scripts"}
    assert list(sections["console_scripts"]) == ["flexpipe"]
    assert sections["console_scripts"]["flexpipe"].startswith("flexpipe.")


def _entry_points(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            current[name] = value
    return sections


# -- the user's project -------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("user")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=base)
    # Not editable, with the dependencies (pip's cache serves them), beside the packages
    # that clash by name: django-pipeline's top-level ``pipeline``.
    install = [venv / "bin/python", "-m", "pip", "install", "--quiet", "--no-compile"]
    run(
        [*install, f"{wheel}[emulator]", "django-pipeline", "django"],
        cwd=base,
        timeout=INSTALL_TIMEOUT,
        env=user_env(venv),
    )
    root = base / "myproject"
    for path, text in PROJECT_FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text).lstrip())
    user = Project(root, venv)
    yield user
    user.stop()


class Project:
    """The user's project folder, its venv and the processes started from its root."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root = root
        self.venv = venv
        self.env = user_env(venv)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def log(self, name: str) -> Path:
        return self.root.parent / f"{name}.log"

    def start(self, name: str, argv: list[str]) -> None:
        with open(self.log(name), "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for_log(self, name: str, pattern: str) -> re.Match[str]:
        end = time.monotonic() + START_TIMEOUT
        while True:
            found = re.search(pattern, self.log(name).read_text(errors="replace"))
            if found:
                return found
            if self.processes[name].poll() is not None or time.monotonic() > end:
                raise AssertionError(
                    f"{name} did not log {pattern!r} within {START_TIMEOUT}s "
                    f"(exit code {self.processes[name].poll()})\n{self.logs()}"
                )
            time.sleep(0.1)

    def run(self, argv: list[str], timeout: float = JOB_TIMEOUT) -> str:
        return run(argv, cwd=self.root, env=self.env, timeout=timeout, logs=self.logs)

    def logs(self) -> str:
        parts = []
        for name in self.processes:
            lines = self.log(name).read_text(errors="replace").splitlines()[-60:]
            parts.append(f"--- {name} log (last 60 lines):\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def user_env(venv: Path) -> dict[str, str]:
    """This machine's environment as a user's shell has it: none of the test run's
    flexpipe settings, venv or import path, and the project's venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLEXPIPE_")
        and k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def readme_example() -> str:
    """The README's first Python block that enqueues, as it is written."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(block for block in blocks if "enqueue(" in block)


def test_readme_example_runs_in_a_cookiecutter_project_from_the_wheel(project: Project) -> None:
    emulator = ["emulator", "--port", "0", "--time-scale", "0.01", "--slots", "0", "--seed", "3"]
    project.start("emulator", [project.bin("flexpipe"), *emulator])
    url = project.wait_for_log("emulator", r"listening on (http://\S+/v1)").group(1)
    project.env.update(
        {
            "FLEXPIPE_API_BASE_URL": url,
            "FLEXPIPE_TIME_SCALE": "0.01",
            "FLEXPIPE_SWEEP_INTERVAL": "0.5",
            "FLEXPIPE_IMPORTS": "myapp.tasks",  # the README's callback runs in the worker
            # The example's process does not import myapp.tasks: allow the name (README).
            "FLEXPIPE_CALLBACKS": "myapp.*",
        }
    )
    # Started first, in a folder with no .flexpipe/ yet, as a new user would.
    project.start("worker", [project.bin("flexpipe"), "worker", "--beat", "-c", "1"])
    project.wait_for_log("worker", r"beat: Starting|celery@\S+ ready")
    project.run([project.bin("flexpipe"), "db", "upgrade"])

    script = project.root / "readme_example.py"
    script.write_text(
        "import json\nfrom types import SimpleNamespace\n\n"
        "article = SimpleNamespace(pk=42, body='The Harbour Board approved a new timetable.')\n"
        + readme_example()
        + "print('JOB ' + json.dumps({'id': job_id, 'status': view.status.value,"
        " 'output': view.output_text}))\n" + textwrap.dedent(CHECK_LAYOUT)
    )
    out = project.run([project.bin("python"), script.name])
    job = json.loads(_line(out, "JOB "))
    assert job["status"] == "completed", project.logs()
    assert job["output"]

    callback = project.root / f"callback-{job['id']}.json"
    end = time.monotonic() + JOB_TIMEOUT
    while not callback.exists():
        assert time.monotonic() < end, f"no callback after {JOB_TIMEOUT}s\n{project.logs()}"
        time.sleep(0.1)
    assert callback.read_text() == "completed"
    assert "FileNotFoundError" not in project.log("worker").read_text(), project.logs()
    assert (project.root / ".flexpipe" / "flexpipe.db").exists()  # the embedded default

    layout = json.loads(_line(out, "LAYOUT "))
    site = project.venv / "lib"
    assert Path(layout["config"]) == project.root / "config" / "__init__.py"
    assert layout["celery_app"] == "myproject"
    assert Path(layout["tasks"]) == project.root / "tasks.py"
    assert layout["tasks_whose"] == "the project's tasks.py"
    for name in ("pipeline", "pipeline_app", "flexpipe", "flexpipe_tasks", "flexpipe_config"):
        assert Path(layout[name]).is_relative_to(site), (name, layout[name])  # not editable
    assert Path(layout["pipeline"]).parent == Path(layout["pipeline_app"])
    assert Path(layout["flexpipe_tasks"]).parent.parent == Path(layout["flexpipe"]).parent

    # Uninstalling flexpipe takes none of django-pipeline's files with it.
    project.run([project.bin("python"), "-m", "pip", "uninstall", "--quiet", "--yes", "flexpipe"])
    files = [Path(f) for f in layout["django_pipeline_files"]]
    assert files and [f for f in files if not f.exists()] == []
    out = project.run(
        [
            project.bin("python"),
            "-c",
            "import importlib.util, pipeline; print(pipeline.__file__, "
            "importlib.util.find_spec('flexpipe'))",
        ]
    )
    assert out.split() == [layout["pipeline"], "None"]


def _line(out: str, prefix: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert lines, f"no {prefix!r} line in:\n{out}"
    return lines[-1][len(prefix) :]


def run(
    argv: list[str | Path],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = INSTALL_TIMEOUT,
    logs: object = None,
) -> str:
    """Run a command; on failure or timeout, fail with its output (and the processes' logs)."""
    command = [str(a) for a in argv]
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        extra = logs() if callable(logs) else ""
        raise AssertionError(
            f"{' '.join(command)} did not finish in {timeout}s\n{exc.stdout}\n{exc.stderr}\n{extra}"
        ) from None
    if done.returncode != 0:
        extra = logs() if callable(logs) else ""
        raise AssertionError(
            f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}\n{extra}"
        )
    return done.stdout
