"""The sandbox every end-to-end test module uses, with the log scan for secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from cfauth.sandbox import Sandbox
from cfauth_core import ApiKey

from .harness import app_of

#: Seconds since the epoch as a number (this decade's), the way logs must not show times.
EPOCH = re.compile(r"(?<![\w.])1\d{9}(?:\.\d+)?(?![\w])")
ISO_TIME = re.compile(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def sandbox(caplog: pytest.LogCaptureFixture) -> Iterator[Sandbox]:
    """The sandbox, with every log record at DEBUG captured and scanned at the
    end of each test for every secret the sandbox made (keys, client secrets,
    codes, access and refresh tokens)."""
    caplog.set_level(logging.DEBUG)
    with Sandbox() as running:
        yield running
        account = running.account("acme")
        secrets = set(running.issued_secrets()) | {
            # and the Basic header values that carry them, base64 and all
            ApiKey(account.api_key, account.api_secret).authorization[len("Basic ") :],
            app_of(running).token_authorization[len("Basic ") :],
        }
    assert len(secrets) >= 4
    # (test_debug_logs_carry_no_secret checks that the drivers do log at DEBUG)
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage()
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"a log record carries a secret: {record.name} {record.levelname}"
        if record.name.startswith("cfauth"):
            # the logger's name says where a record comes from: no prefix of its own;
            # times are ISO 8601 UTC, never epoch seconds
            assert not text.startswith("cfauth:"), text
            assert not EPOCH.search(text), text
