"""docker/ without a Docker engine: the compose file parses, every service runs a command
this project has, the worker, beat and Flower commands are the ones the integration tests
start, the image runs as a non-root user, and .env.example names only real settings."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

#: Services that run the flexpipe image (its ENTRYPOINT is the flexpipe CLI).
FLEXPIPE_SERVICES = {"migrate", "worker", "beat", "flower", "emulator"}
#: Services that run and stop (no healthcheck), and the one that may run only once.
ONE_SHOT = {"migrate"}
NO_HEALTHCHECK = {"migrate", "beat"}  # beat answers no ping; its sends show in Flower


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(compose, dict)
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


# -- helpers ---------------------------------------------------------------------------------


def flexpipe_cli() -> click.Group:
    """The ``flexpipe`` group as ``main()`` builds it (the emulator is added there)."""
    from flexpipe.cli import _add_emulator, cli

    _add_emulator()
    return cli


def parse_flexpipe(args: list[str]) -> click.Context:
    """Resolve ``flexpipe ARGS`` to its command and parse its options (nothing runs)."""
    group = flexpipe_cli()
    ctx = click.Context(group, info_name="flexpipe")
    command: click.Command = group
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"flexpipe {' '.join(args)}: names a group, not a command"
        name, *rest = rest
        found = command.get_command(ctx, name)
        assert found is not None, f"flexpipe has no command {name!r} ({' '.join(args)})"
        if isinstance(found, click.Group):
            ctx = click.Context(found, info_name=name, parent=ctx)
        else:
            ctx = found.make_context(name, rest, parent=ctx)
        command = found
    return ctx


def exec_call(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> tuple[list[str], dict[str, str] | None]:
    """The argv (and environment, if given) ``flexpipe ARGS`` would exec."""
    calls: list[tuple[list[str], dict[str, str] | None]] = []
    cli_os = "flexpipe.cli.services.os"
    monkeypatch.setattr(f"{cli_os}.execvp", lambda file, argv: calls.append((argv, None)))
    monkeypatch.setattr(f"{cli_os}.execvpe", lambda file, argv, env: calls.append((argv, env)))
    result = CliRunner().invoke(flexpipe_cli(), args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1, f"flexpipe {' '.join(args)} did not exec one process"
    return calls[0]


def exec_argv(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> list[str]:
    """The argv ``flexpipe ARGS`` would exec (``os.execvp``/``execvpe`` are caught)."""
    return exec_call(monkeypatch, args)[0]


def without(argv: list[str], flags: dict[str, int]) -> list[str]:
    """``argv`` without each option in ``flags`` and the number of values it takes."""
    kept: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in flags:
            skip = flags[arg]
        else:
            kept.append(arg)
    return kept


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The FLEXPIPE_* settings compose gives a service, placeholders for ${...} values."""
    env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
    return {key: re.sub(r"\$\{[^}]*\}", "secret", value) for key, value in env.items()}


@pytest.fixture
def container_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, services: dict[str, dict[str, Any]]
) -> Iterator[pytest.MonkeyPatch]:
    """This process's settings as in the worker's container (no .env file is read)."""
    from flexpipe.config.settings import configure

    monkeypatch.chdir(tmp_path)
    for key, value in compose_env(services["worker"]).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLEXPIPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLEXPIPE_FLOWER_PASSWORD", "test-password")
    configure()
    yield monkeypatch
    configure()


# -- the compose file ------------------------------------------------------------------------


def test_compose_runs_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "postgres", *FLEXPIPE_SERVICES}


def test_redis_keeps_an_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_flexpipe_services_run_the_image_of_this_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    images = set()
    for name in FLEXPIPE_SERVICES:
        build = services[name]["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name
        images.add(services[name]["image"])
    assert len(images) == 1


def test_every_dependency_waits_for_a_condition_its_target_meets(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            else:
                assert condition == "service_completed_successfully", (name, target)
                assert target in ONE_SHOT, (name, target)
    for name in ("worker", "beat"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert ("healthcheck" in service) == (name not in NO_HEALTHCHECK), name


@pytest.mark.parametrize("name", sorted(FLEXPIPE_SERVICES))
def test_service_command_is_a_flexpipe_command(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    parse_flexpipe(services[name]["command"])


def test_worker_healthcheck_pings_the_worker_with_celery(
    services: dict[str, dict[str, Any]],
) -> None:
    from celery.bin.celery import celery
    from celery.worker.control import Panel

    kind, text = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # Compose turns $$ into $, and the container's shell expands $HOSTNAME.
    argv = shlex.split(text.replace("$$HOSTNAME", "container-host"))
    assert argv[:3] == ["python", "-m", "celery"]
    import flexpipe.config.celery

    ctx = celery.make_context("celery", argv[3:])
    # Celery 5.4 loads the app while parsing -A; 5.5 and later keep its name.
    assert ctx.params["app"] in ("flexpipe.config.celery", flexpipe.config.celery.app)
    sub = celery.get_command(ctx, "inspect")
    assert sub is not None
    inspect = sub.make_context("inspect", argv[argv.index("inspect") + 1 :], parent=ctx)
    assert inspect.params["command"] == "ping" and Panel.meta["ping"].type == "inspect"
    # The worker's default node name is celery@<hostname>, as `flexpipe worker` leaves it.
    assert inspect.params["destination"] == ["celery@container-host"]
    assert flexpipe.config.celery.app.main == "flexpipe"


def healthcheck_url(service: dict[str, Any]) -> urllib.parse.SplitResult:
    kind, python, flag, code = service["healthcheck"]["test"]
    assert (kind, python, flag) == ("CMD", "python", "-c")
    compile(code, "healthcheck", "exec")
    found = re.search(r"'(http://[^']+)'", code)
    assert found, code
    return urllib.parse.urlsplit(found.group(1))


def test_flower_healthcheck_asks_flower_on_its_port(services: dict[str, dict[str, Any]]) -> None:
    from flower.urls import handlers

    url = healthcheck_url(services["flower"])
    ctx = parse_flexpipe(services["flower"]["command"])
    assert url.port == ctx.params["port"]
    assert url.path in {handler[0] for handler in handlers if isinstance(handler, tuple)}


def test_emulator_healthcheck_runs_against_a_real_emulator(
    services: dict[str, dict[str, Any]],
) -> None:
    from flexpipe.emulator import run_in_thread

    service = services["emulator"]
    url = healthcheck_url(service)
    assert url.port == parse_flexpipe(service["command"]).params["port"]
    code = service["healthcheck"]["test"][-1]
    with run_in_thread() as handle:
        port = urllib.parse.urlsplit(handle.url).port
        local = code.replace(f":{url.port}/", f":{port}/")
        subprocess.run([sys.executable, "-c", local], check=True, timeout=30)


# -- the same commands as the integration tests ----------------------------------------------


def test_worker_runs_what_the_integration_tests_start(
    container_env: pytest.MonkeyPatch, tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    from tests.integration.stack import Stack

    compose_argv = exec_argv(container_env, services["worker"]["command"])
    started: list[list[str]] = []
    container_env.setattr(
        "flexpipe.testing.subprocess.Popen", lambda argv, **kwargs: started.append(argv)
    )
    stack = Stack(
        name="services",
        data_dir=tmp_path,
        database_url="sqlite://",
        broker_url="redis://127.0.0.1:6379/0",
        emulator_url="http://127.0.0.1:1",
    )
    stack.start_worker()
    [test_argv] = started
    # The tests add processes and embed beat; compose runs beat as its own service.
    assert without(test_argv, {"-c": 1, "-B": 0, "-s": 1}) == without(compose_argv, {"-c": 1})
    assert compose_argv[1:7] == ["-m", "celery", "-A", "flexpipe.config.celery", "worker", "-Q"]


def test_beat_uses_the_schedule_the_integration_tests_worker_embeds(
    container_env: pytest.MonkeyPatch, services: dict[str, dict[str, Any]]
) -> None:
    from flexpipe.cli.services import worker_command

    beat_argv = exec_argv(container_env, services["beat"]["command"])
    test_argv = worker_command(beat=True, concurrency=2, loglevel="info")
    assert beat_argv[1:6] == ["-m", "celery", "-A", "flexpipe.config.celery", "beat"]
    assert option(beat_argv, "-s") == option(test_argv, "-s")


def test_flower_runs_what_the_flower_tests_start(
    container_env: pytest.MonkeyPatch, services: dict[str, dict[str, Any]]
) -> None:
    from tests.integration.test_flower import FLOWER_ARGS

    compose_argv, compose_env = exec_call(container_env, services["flower"]["command"])
    test_argv, test_env = exec_call(container_env, FLOWER_ARGS)
    assert compose_env and test_env
    assert compose_env["FLOWER_BASIC_AUTH"] == test_env["FLOWER_BASIC_AUTH"]  # never --no-auth
    assert compose_argv[1:6] == ["-m", "celery", "-A", "flexpipe.config.celery", "flower"]
    local = [arg for arg in test_argv if not arg.startswith(("--port=", "--address="))]
    assert [arg for arg in compose_argv if not arg.startswith(("--port=", "--address="))] == local
    assert "--address=0.0.0.0" in compose_argv  # reachable from the published port


# -- the Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_image_is_python_311_slim_and_runs_the_flexpipe_cli() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    entrypoint = [rest for keyword, rest in stage if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["flexpipe"]']


def test_image_runs_as_a_user_that_is_not_root() -> None:
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}


def test_image_installs_the_project_without_dev_dependencies() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip" in runs and "[dev]" not in runs
    for keyword, rest in instructions:
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# -- settings --------------------------------------------------------------------------------


def env_example_names() -> dict[str, str]:
    """Every NAME=value in .env.example, commented-out defaults included."""
    names = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        found = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if found:
            names[found.group(1)] = found.group(2)
    return names


def setting_names() -> set[str]:
    from flexpipe.config.settings import Settings

    return {f"FLEXPIPE_{name.upper()}" for name in Settings.model_fields}


def test_env_example_names_only_real_settings() -> None:
    compose_variables = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    for name in env_example_names():
        if name.startswith("FLEXPIPE_"):
            assert name in setting_names(), f".env.example: {name} is no setting"
        else:
            assert name in compose_variables, f".env.example: {name} is used nowhere"
    assert compose_variables <= set(env_example_names())


def test_env_example_has_what_compose_needs() -> None:
    names = env_example_names()
    for name in ("FLEXPIPE_API_BASE_URL", "FLEXPIPE_API_KEY", "FLEXPIPE_FLOWER_PASSWORD"):
        assert names.get(name), f".env.example must set {name}"


def test_env_example_values_are_valid_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flexpipe.config.settings import Settings

    for name in [n for n in os.environ if n.startswith("FLEXPIPE_")]:
        monkeypatch.delenv(name)
    uncommented = "\n".join(
        line.lstrip("# ") if re.match(r"#\s*FLEXPIPE_", line) else line
        for line in ENV_EXAMPLE.read_text().splitlines()
    )
    env_file = tmp_path / ".env"
    env_file.write_text(uncommented)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.flower_password is not None
    assert not settings.embedded_broker


#: Commented-out lines in .env.example that show an example, not the default.
ENV_EXAMPLES = {
    "FLEXPIPE_BROKER_URL",
    "FLEXPIPE_DATABASE_URL",
    "FLEXPIPE_WORKER_CONCURRENCY",
    "FLEXPIPE_IMPORTS",
    "FLEXPIPE_WEBHOOK_SECRET",
    "FLEXPIPE_CALLBACKS",
}


def test_env_example_shows_the_real_defaults() -> None:
    from flexpipe.config.settings import Settings

    for line in ENV_EXAMPLE.read_text().splitlines():
        found = re.match(r"#\s*FLEXPIPE_([A-Z0-9_]+)=(.*)$", line)
        if found and f"FLEXPIPE_{found.group(1)}" not in ENV_EXAMPLES:
            default = Settings.model_fields[found.group(1).lower()].default
            text = found.group(2)
            shown = text.lower() == "true" if isinstance(default, bool) else type(default)(text)
            assert shown == default, f".env.example: {line}"


def test_env_example_holds_no_real_secrets() -> None:
    for name, value in env_example_names().items():
        if re.search(r"KEY|PASSWORD|SECRET|TOKEN", name):
            assert value in {"", "change-me"}, f".env.example: {name} looks like a real secret"


def test_compose_names_only_real_settings(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key in service.get("environment") or {}:
            if key.startswith("FLEXPIPE_"):
                assert key in setting_names(), f"{name}: {key} is no setting"
