"""How a delivery handed back for a retry is reported."""

from __future__ import annotations

import logging

import pytest

from shared.logging import configure_logging
from shared.settlement import RetryLaterError, log_failure


@pytest.fixture(autouse=True)
def json_logs() -> None:
    configure_logging("INFO", "json")


def test_an_expected_wait_is_logged_as_info_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        log_failure(RetryLaterError("invoice of M1 is busy"), 2.0, delivery_message_id="d1")
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.msg["event"] == "message.retry_later"
    assert record.msg["reason"] == "invoice of M1 is busy"
    assert record.msg["delivery_message_id"] == "d1"
    assert "Traceback" not in caplog.text


def test_any_other_failure_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ConnectionError("database away")
    except ConnectionError as error:
        with caplog.at_level(logging.INFO):
            log_failure(error, 1.0)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.msg["event"] == "message.failed"
    assert record.msg["retry_in_seconds"] == 1.0
    assert record.msg["exc_info"] is not None
