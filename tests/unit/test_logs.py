"""The log guard redacts secrets and bearer tokens, and keeps the rest of the line."""

from __future__ import annotations

import logging

from flexpipe.config.logs import RedactSecrets, install


def test_secrets_and_bearer_tokens_are_redacted(caplog) -> None:
    logger = logging.getLogger("flexpipe.test.logs")
    install(["sk-live-abcdef123456"], logging.getLogger())
    handler = caplog.handler
    handler.addFilter(RedactSecrets(["sk-live-abcdef123456"]))
    with caplog.at_level(logging.INFO, logger="flexpipe.test.logs"):
        logger.info("calling with key %s", "sk-live-abcdef123456")
        logger.info("header Authorization: Bearer tok_0123456789abcdef sent")
        logger.info("nothing secret here")
    text = caplog.text
    assert "sk-live-abcdef123456" not in text
    assert "tok_0123456789abcdef" not in text
    assert "calling with key ***" in text
    assert "Authorization: Bearer ***" in text
    assert "nothing secret here" in text
