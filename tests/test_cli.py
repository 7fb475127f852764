"""The ``cfauth`` command: the demo runs every flow and prints no secret."""

from __future__ import annotations

import io
import subprocess
import sys

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
    assert "demo" in result.stderr


def test_main_runs_the_demo(capsys: object) -> None:
    assert main(["demo"]) == 0
