"""The scheduled classification job: its settings, its beat entry and its task.
(It runs under a real beat in tests/integration/test_scheduled.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flexpipe.config.celery import app, beat_schedule
from flexpipe.config.settings import Settings, configure, load_settings
from flexpipe.errors import ConfigurationError
from flexpipe.tasks.schedule import classify_job, load_job

calls: list[str] = []
NOT_A_FUNCTION = 42


def sample_job() -> str | None:
    calls.append("ran")
    return "b" * 32 if len(calls) == 1 else None


def test_no_schedule_by_default() -> None:
    assert list(beat_schedule(Settings())) == ["flexpipe-sweep"]


def test_the_schedule_runs_the_task_every_interval() -> None:
    settings = Settings(classify_schedule=30, classify_job="myapp.jobs.classify")
    entry = beat_schedule(settings)["flexpipe-classify"]
    assert entry == {
        "task": "flexpipe.classify_job",
        "schedule": 30,
        "options": {"expires": 30},
    }
    assert "flexpipe.classify_job" in app.tasks
    assert "flexpipe.tasks.schedule" in app.conf.include


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FLEXPIPE_CLASSIFY_SCHEDULE": "60"},
            "bad setting: FLEXPIPE_CLASSIFY_SCHEDULE is set but FLEXPIPE_CLASSIFY_JOB",
        ),
        (
            {"FLEXPIPE_CLASSIFY_SCHEDULE": "60", "FLEXPIPE_CLASSIFY_JOB": "classify"},
            "bad setting: FLEXPIPE_CLASSIFY_JOB 'classify' is not a dotted path",
        ),
        ({"FLEXPIPE_CLASSIFY_SCHEDULE": "-1"}, "bad setting: FLEXPIPE_CLASSIFY_SCHEDULE: "),
    ],
)
def test_bad_schedule_settings_stop_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_load_job_finds_the_function_or_says_why_not() -> None:
    assert load_job(f"{__name__}.sample_job") is sample_job
    for path, why in [
        ("", "FLEXPIPE_CLASSIFY_JOB is not set"),
        ("no_such_module.job", "cannot import 'no_such_module.job'"),
        (f"{__name__}.no_such_function", f"cannot import '{__name__}.no_such_function'"),
        (f"{__name__}.NOT_A_FUNCTION", "is not a function"),
    ]:
        with pytest.raises(ConfigurationError, match=why):
            load_job(path)


@pytest.fixture
def scheduled_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from flexpipe.tasks.runtime import reset

    monkeypatch.setenv("FLEXPIPE_CLASSIFY_SCHEDULE", "1")
    monkeypatch.setenv("FLEXPIPE_CLASSIFY_JOB", f"{__name__}.sample_job")
    configure()
    calls.clear()
    yield
    reset()
    monkeypatch.undo()
    configure()


def test_the_task_calls_the_configured_function(scheduled_settings: None) -> None:
    # Called directly (as the worker does), not through a broker.
    assert classify_job() == f"bulk {'b' * 32}"
    assert classify_job() == "nothing to classify"
    assert calls == ["ran", "ran"]


def test_retention_is_off_by_default_and_beat_prunes_when_set() -> None:
    assert Settings().retention_age is None
    assert "flexpipe-prune" not in beat_schedule(Settings())
    settings = Settings(retention="30d", retention_interval=600)
    assert settings.retention_age is not None and settings.retention_age.days == 30
    entry = beat_schedule(settings)["flexpipe-prune"]
    assert entry["task"] == "flexpipe.prune" and entry["schedule"] == 600
    with pytest.raises(ConfigurationError, match="FLEXPIPE_RETENTION"):
        load_settings(retention="a month")


def test_the_prune_task_deletes_old_history(tmp_path) -> None:
    from datetime import UTC, datetime, timedelta

    from flexpipe.models import build_request
    from flexpipe.states import JobStatus
    from flexpipe.store import NewJob, Outcome, Store, make_engine
    from flexpipe.tasks.retention import prune

    url = f"sqlite:///{tmp_path / 'prune.db'}"
    old = datetime.now(UTC) - timedelta(days=2)
    store = Store(make_engine(url), clock=lambda: old)
    store.create_tables()
    job_id, _ = store.add_job(NewJob(request=build_request("hi", model="m")))
    assert store.finish(job_id, Outcome(status=JobStatus.FAILED)) is not None
    store.dispose()
    configure(database_url=url, data_dir=str(tmp_path), retention="1d")
    try:
        assert prune() == {"jobs": 1, "bulks": 0}
        assert prune() == {"jobs": 0, "bulks": 0}
    finally:
        configure()
