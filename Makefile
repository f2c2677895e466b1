# One command per chore, the same locally and in CI. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast test-lowest lint format bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,emulator,flower]'
	touch $(STAMP)

## Run the whole flow on embedded defaults (no Redis, no PostgreSQL, no API key).
demo: $(STAMP)
	$(VENV)/bin/flexpipe demo

## All tests: unit, emulator contract, integration (real Redis + PostgreSQL), faults,
## and the example apps' own suites.
test: $(STAMP)
	$(PY) -m pytest
	$(PY) -m pytest examples/django_app
	$(PY) -m pytest examples/flask_app

## The same tests that concern the dependencies' versions (unit tests, the flow on both
## backends) in a venv of its own with every dependency at its floor (pyproject.toml),
## as pinned in .ci/lowest-constraints.txt. Only the test runner from the dev extra: Flask 3
## needs a newer click than Celery 5.4 does.
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed-stamp
LOWEST := .ci/lowest-constraints.txt

$(LOWEST_STAMP): pyproject.toml $(LOWEST)
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c $(LOWEST) -e '.[emulator,flower]' \
		'pytest>=8' 'pytest-timeout>=2.3' 'pyyaml>=6' 'hypothesis>=6'
	touch $(LOWEST_STAMP)

## Not at the floors: the layering contracts (import-linter needs click>=8.2 and rich>=14.2;
## they test the code, not the versions), the Flask blueprint (Flask 3 needs click>=8.1.3),
## and RabbitMQ (quorum queues with countdowns need Celery 5.5's native delayed delivery).
LOWEST_SKIP := --ignore=tests/unit/test_layers.py \
	--deselect tests/unit/test_webhooks.py::test_the_flask_blueprint_answers_like_the_receiver \
	-k 'not rabbitmq'

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python -m pip check
	$(LOWEST_VENV)/bin/python -m pytest tests/unit tests/integration/test_flow.py $(LOWEST_SKIP)

## Unit tests only (no services).
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit tests/emulator

## mypy sees the one import package as the wheel lays it out: pipeline/, tasks/ and config/
## linked under build/typecheck/flexpipe (editable installs hide it behind an import hook).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	rm -rf build/typecheck && mkdir -p build/typecheck/flexpipe
	for f in pipeline/*; do ln -s "../../../$$f" build/typecheck/flexpipe/; done
	ln -s ../../../tasks ../../../config build/typecheck/flexpipe/
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build .flexpipe .pytest_cache .mypy_cache .ruff_cache
