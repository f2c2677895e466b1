"""flexpipe's test fixtures, shared: the run guards (no FLEXPIPE_* from the environment,
local hosts only), Redis/PostgreSQL that skip locally and fail in CI, the emulator in a
thread and ``make_stack`` (a flexpipe worker on each backend). The newsroom's own fixtures
are in ``tests/conftest.py``."""

pytest_plugins = ["tests.conftest", "tests.integration.conftest"]
