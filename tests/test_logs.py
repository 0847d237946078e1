"""Log redaction: configured secrets and sensitive keys never reach a log line."""

from __future__ import annotations

import io
import json
import logging

import structlog

from receiver import logs


def test_redactor_masks_sensitive_keys_and_secret_values() -> None:
    redact = logs.Redactor(["s3cr3t-value", "tok-123456", 'quo"te\\back'])
    record = redact(None, "info", {
        "event": "x",
        "api_key": "anything",
        "message": "bad request with s3cr3t-value inside",
        "headers": {"Authorization": "Bearer tok-123456", "X-Other": "fine"},
        "list": ["tok-123456", 3],
        "nested": [{"token": "deep"}],
        "tricky": 'a quo"te\\back b',
        "s3cr3t-value": 1,  # a secret in a key is masked too
    })
    text = redact.render(None, "info", record)
    out = json.loads(text)
    for leaked in ("s3cr3t-value", "tok-123456", "anything", "deep", "quo"):
        assert leaked not in text, leaked
    assert out["headers"]["X-Other"] == "fine" and out["list"][1] == 3
    assert out["api_key"] == logs.MASK and out["nested"] == [{"token": logs.MASK}]
    assert out["tricky"] == "a [redacted] b" and out["[redacted]"] == 1
    assert out["message"] == "bad request with [redacted] inside"


def test_configured_logging_writes_redacted_json_for_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    logs.configure(["hunter2-secret"], stream=stream)
    try:
        with structlog.contextvars.bound_contextvars(request_id="r1"):
            structlog.get_logger("t").info("hello", note="hunter2-secret leaked")
        logging.getLogger("uvicorn.error").warning("stdlib says hunter2-secret")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["request_id"] == "r1"
    assert "hunter2-secret" not in stream.getvalue()
    assert lines[1]["level"] == "warning"
