"""Every mistake in the sandbox's options is a CfauthError naming the value and the fix."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from cfauth.sandbox import Sandbox, SandboxApp, SandboxClock
from cfauth_core import CfauthError, LocalProtocolError


def _app() -> SandboxApp:
    return SandboxApp()


MISTAKES: dict[str, tuple[Callable[[], Any], str]] = {
    "no accounts": (lambda: SandboxApp(accounts=()), "accounts=('acme',)"),
    "a bad account name": (lambda: SandboxApp(accounts=("Bad_Name",)), "'Bad_Name'"),
    "the same account twice": (lambda: SandboxApp(accounts=("acme", "acme")), "'acme'"),
    "an unknown account": (lambda: _app().account("nobody"), "'nobody'"),
    "an unknown region": (lambda: _app().migrate("acme", region="mars1"), "'mars1'"),
    "fail_next with 200": (lambda: _app().fail_next(1, status=200), "got 200"),
    "redirect_next with 200": (lambda: _app().redirect_next(1, "https://x.example", 200), "200"),
    "n=0": (lambda: _app().fail_next(0, status=500), "got 0"),
    "no redirect_uri": (lambda: _app().register_client("acme", redirect_uri=""), "redirect_uri="),
    "a clock going back": (lambda: SandboxClock(100.0).advance(-5), "not -5"),
    "a clock set back": (lambda: SandboxClock(100.0).set(50), "after 100.0"),
    "a negative port": (lambda: Sandbox(port=-1), "port=-1"),
    "a port as text": (lambda: Sandbox(port="8443"), "port='8443'"),  # type: ignore[arg-type]
    "stopped sandbox used": (lambda: Sandbox().port, "call start()"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_sandbox_mistakes_are_cfauth_errors(case: str) -> None:
    make, named = MISTAKES[case]
    with pytest.raises(CfauthError) as refused:
        make()
    assert named in str(refused.value)
    assert isinstance(refused.value, LocalProtocolError)


def test_unknown_account_is_still_a_key_error_with_a_plain_message() -> None:
    with pytest.raises(KeyError) as refused:
        SandboxApp().account("nobody")
    assert str(refused.value).startswith("no sandbox account 'nobody'")


def test_a_port_in_use_names_the_port_and_the_fix() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sandbox = Sandbox(port=port)
        with pytest.raises(CfauthError, match=f"127.0.0.1:{port} .*port=0 for any free one"):
            sandbox.start()
        assert not sandbox.running
