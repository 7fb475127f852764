"""The ``cfauth`` command: the demo runs every flow and prints no secret."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import pytest

from cfauth._http import iso_times
from cfauth.cli import demo, main
from cfauth.sandbox import Sandbox


def test_demo_runs_every_flow_without_printing_secrets() -> None:
    out = io.StringIO()
    with Sandbox() as sandbox:
        failures = demo(out, sandbox)
        account = sandbox.account("acme")
        secrets = [account.api_secret, account.client_secret]
        assert sandbox.evil_requests() == []
        refreshes = sandbox.token_requests("refresh_token")
    text = out.getvalue()
    assert failures == 0, text
    assert "all flows behaved" in text
    for title in (
        "token pair",
        "OAuth2",
        "proactive refresh",
        "reactive refresh",
        "rate limit",
        "migration",
        "evil.example",
        "rotated-out",
    ):
        assert title in text
    assert "AccountMoved(old_origin='https://acme.checkfront.com'" in text
    assert len(refreshes) >= 3
    for secret in secrets:
        assert secret not in text
    assert "Bearer " not in text
    assert "Basic " not in text


def test_cli_requires_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfauth.cli"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "demo" in result.stdout  # bare cfauth prints its help


def test_main_runs_the_demo(capsys: object) -> None:
    assert main(["demo"]) == 0


#: Seconds since the epoch as a number (this decade's): how times must not be shown.
EPOCH = re.compile(r"(?<![\w.])1\d{9}(?:\.\d+)?(?![\w])")
ISO_TIME = re.compile(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_demo_shows_times_in_iso_8601_and_nothing_on_stderr() -> None:
    """A fresh process with no logging configured: the demo's warnings (the
    refused refresh token) stay out of its output, and times read as dates."""
    done = subprocess.run(
        [sys.executable, "-m", "cfauth.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert "all flows behaved" in done.stdout
    assert not EPOCH.search(done.stdout), EPOCH.search(done.stdout)
    assert ISO_TIME.search(done.stdout)
    assert "expires_at=20" in done.stdout  # a token set's times too


def test_the_cfauth_logger_has_a_null_handler_and_propagates() -> None:
    logger = logging.getLogger("cfauth")
    assert any(isinstance(handler, logging.NullHandler) for handler in logger.handlers)
    assert logger.propagate  # the application's own handlers still get the records


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ClockTick(now=1796527487.2143598)", "ClockTick(now=2026-12-06T03:24:47Z)"),
        ("RetryAt(call_id=3, at=1796527489.0)", "RetryAt(call_id=3, at=2026-12-06T03:24:49Z)"),
        (
            "TokenSet(expires_at=1796541487, refresh_expires_at=1797737087.5, updated_at=0.0)",
            "TokenSet(expires_at=2026-12-06T07:18:07Z, refresh_expires_at=2026-12-20T"
            "03:24:47Z, updated_at=1970-01-01T00:00:00Z)",
        ),
        ("Send(request_id=1796527487)", "Send(request_id=1796527487)"),  # not a time
        ("CallRequested(now=1e308)", "CallRequested(now=1e308)"),  # not a plain number
        ("ClockTick(now=99999999999999999)", "ClockTick(now=99999999999999999)"),
    ],
)
def test_iso_times_rewrites_only_time_fields(text: str, expected: str) -> None:
    assert iso_times(text) == expected
