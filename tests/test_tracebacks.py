"""Errors that leave the core carry no traceback into the frames that held secrets.

Error reporters (Sentry's defaults, ``traceback.TracebackException`` with
``capture_locals=True``) print the local variables of every frame in a
traceback.  The core's frames hold the secrets: the tuple it scrubs with, the
token response body, the Basic header.  Every common failure path below ends
in an error handed out in an action (``Fail``, ``AuthorizationFailed``,
``RefreshAborted``, ``AuthorizationLost``); the error, its ``cause`` and any
context it carries are rendered with their locals and scanned for every
secret in every form the machine produced.
"""

from __future__ import annotations

import json
import traceback
from base64 import b64encode
from collections.abc import Callable, Sequence
from urllib.parse import quote, quote_plus

import pytest

from cfauth_core import (
    REFRESH_TOKEN_LIFETIME,
    Account,
    Action,
    ApiKey,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    CallbackReceived,
    CallRequested,
    CfauthError,
    Fail,
    Machine,
    OAuth2App,
    RefreshAborted,
    RefreshFailed,
    ResponseReceived,
    Send,
    SendFailed,
    TokenSet,
    TokensLoaded,
)
from cfauth_core._errors import detach

NOW = 1_700_000_000.0
API_KEY_ID = "key-0001"
API_SECRET = "api+secret/0001="
CLIENT_ID = "client 0001"
CLIENT_SECRET = "client+secret/0001= x"
ACCESS = "access-token-0001"
REFRESH = "refresh+token/0001="
CODE = "code+0001/="
VERIFIER = "verifier-0001-" + "v" * 40
STATE = "state-0001-" + "s" * 16

API_KEY = ApiKey(API_KEY_ID, API_SECRET)
APP = OAuth2App(CLIENT_ID, CLIENT_SECRET, "https://app.example/cb")


def _b64(text: str) -> str:
    return b64encode(text.encode()).decode("ascii")


def forms(secret: str) -> set[str]:
    return {secret, quote_plus(secret, safe=""), quote(secret, safe="")}


SECRETS: set[str] = set().union(
    *(forms(s) for s in (API_SECRET, CLIENT_SECRET, ACCESS, REFRESH, CODE, VERIFIER)),
    {
        _b64(f"{API_KEY_ID}:{API_SECRET}"),
        _b64(f"{quote(CLIENT_ID, safe='')}:{quote(CLIENT_SECRET, safe='')}"),
        _b64(f"{CLIENT_ID}:{CLIENT_SECRET}"),
    },
)
assert API_KEY.authorization[6:] in SECRETS
assert APP.token_authorization[6:] in SECRETS


def rendered(error: BaseException) -> str:
    """Everything an error reporter could show of ``error``: its traceback with
    every frame's locals, its ``cause``, and its context even if suppressed."""
    parts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts.extend(
            traceback.TracebackException.from_exception(current, capture_locals=True).format()
        )
        for linked in (current.__cause__, current.__context__, getattr(current, "cause", None)):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return "".join(parts)


def errors(actions: Sequence[Action]) -> list[CfauthError]:
    return [
        a.error
        for a in actions
        if isinstance(a, (Fail, AuthorizationFailed, RefreshAborted, AuthorizationLost))
    ]


def sends(actions: Sequence[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def answer(request_id: int, status: int, body: bytes = b"", **headers: str) -> ResponseReceived:
    return ResponseReceived(
        now=NOW + 1,
        request_id=request_id,
        status=status,
        headers=[(k.replace("_", "-"), v) for k, v in headers.items()],
        body=body,
    )


def oauth_error(error: str, description: str = "") -> bytes:
    return json.dumps({"error": error, "error_description": description}).encode()


def tokens(updated_at: float = NOW - 13_900) -> TokenSet:
    return TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=updated_at + 14_000,
        refresh_expires_at=updated_at + REFRESH_TOKEN_LIFETIME,
        updated_at=updated_at,
    )


# -- the failure paths ---------------------------------------------------------


def _api_call(status: int, body: bytes = b"", **headers: str) -> list[Action]:
    m = Machine(Account.parse("acme"), API_KEY)
    send = sends(m.handle(CallRequested(now=NOW, method="GET", path="booking/index")))[0]
    return m.handle(answer(send.request_id, status, body, **headers))


def refused_redirect() -> list[Action]:
    return _api_call(302, Location="https://evil.example/steal")


def redirect_to_oauth() -> list[Action]:
    return _api_call(302, Location="/oauth/token/")


def api_send_failed() -> list[Action]:
    m = Machine(Account.parse("acme"), API_KEY)
    send = sends(m.handle(CallRequested(now=NOW, method="GET", path="booking/index")))[0]
    return m.handle(SendFailed(now=NOW, request_id=send.request_id, reason="reset " + API_SECRET))


def _exchange() -> tuple[Machine, Send]:
    m = Machine(Account.parse("acme"), APP)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    callback = f"https://app.example/cb?code={quote_plus(CODE)}&state={STATE}"
    return m, sends(m.handle(CallbackReceived(now=NOW, url=callback)))[0]


def exchange_invalid_grant() -> list[Action]:
    m, send = _exchange()
    echoed = f"code {CODE} verifier {VERIFIER} client {CLIENT_SECRET}"
    return m.handle(answer(send.request_id, 400, oauth_error("invalid_grant", echoed)))


def exchange_not_json() -> list[Action]:
    m, send = _exchange()
    return m.handle(answer(send.request_id, 200, b"<html>" + CODE.encode()))


def exchange_send_failed() -> list[Action]:
    m, send = _exchange()
    return m.handle(SendFailed(now=NOW, request_id=send.request_id, reason="TLS " + CODE))


def exchange_bad_token() -> list[Action]:
    m, send = _exchange()
    body = json.dumps({"access_token": "a\r\nb", "refresh_token": CODE}).encode()
    return m.handle(answer(send.request_id, 200, body))


def exchange_redirected() -> list[Action]:
    m, send = _exchange()
    return m.handle(answer(send.request_id, 307, Location="https://evil.example/oauth/token/"))


def _refresh() -> tuple[Machine, Send]:
    m = Machine(Account.parse("acme"), APP, tokens())
    m.handle(CallRequested(now=NOW, method="GET", path="booking/index"))
    return m, sends(m.handle(TokensLoaded(now=NOW, tokens=tokens())))[0]


def refresh_server_error() -> list[Action]:
    m, send = _refresh()
    return m.handle(answer(send.request_id, 500, b"{broken " + REFRESH.encode()))


def refresh_invalid_grant() -> list[Action]:
    m, send = _refresh()
    echoed = f"refresh {REFRESH} access {ACCESS}"
    return m.handle(answer(send.request_id, 400, oauth_error("invalid_grant", echoed)))


def refresh_invalid_client() -> list[Action]:
    m, send = _refresh()
    # Refused in both client authentication forms (the raw one is tried second).
    refused = oauth_error("invalid_client", CLIENT_SECRET)
    actions = m.handle(answer(send.request_id, 401, refused))
    for retry in sends(actions):
        actions = m.handle(answer(retry.request_id, 401, refused))
    return actions


def refresh_send_failed() -> list[Action]:
    m, send = _refresh()
    return m.handle(SendFailed(now=NOW, request_id=send.request_id, reason="reset " + REFRESH))


PATHS: dict[str, Callable[[], list[Action]]] = {
    f.__name__: f
    for f in (
        refused_redirect,
        redirect_to_oauth,
        api_send_failed,
        exchange_invalid_grant,
        exchange_not_json,
        exchange_send_failed,
        exchange_bad_token,
        exchange_redirected,
        refresh_server_error,
        refresh_invalid_grant,
        refresh_invalid_client,
        refresh_send_failed,
    )
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_no_secret_in_the_traceback_locals_of_an_error_the_core_hands_out(path: str) -> None:
    found = errors(PATHS[path]())
    assert found
    for error in found:
        text = rendered(error)
        leaked = sorted(s for s in SECRETS if s in text)
        assert not leaked, f"{path}: {type(error).__name__} carries {len(leaked)} secret(s)"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_errors_handed_out_have_no_traceback(path: str) -> None:
    for error in errors(PATHS[path]()):
        chain: list[BaseException] = [error]
        cause = getattr(error, "cause", None)
        if isinstance(cause, BaseException):
            chain.append(cause)
        for link in chain:
            assert link.__traceback__ is None, f"{path}: {type(link).__name__}"
            assert link.__context__ is None or not link.__suppress_context__


def test_the_scan_finds_secrets_in_a_raised_errors_locals() -> None:
    """The scan itself works: a frame holding a secret shows it."""

    def build() -> None:
        secret = CLIENT_SECRET  # noqa: F841 - the local the scan must see
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as caught:
        build()
    assert CLIENT_SECRET in rendered(caught.value)


def test_an_error_raised_by_handle_carries_none_of_the_core_frames() -> None:
    """A callback for another login is refused with OAuthStateMismatch; the frames
    that parsed it held its code."""
    m = Machine(Account.parse("acme"), APP)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    callback = f"https://app.example/cb?code={quote_plus(CODE)}&state=" + "t" * 30
    with pytest.raises(CfauthError) as caught:
        m.handle(CallbackReceived(now=NOW, url=callback))
    frames = [frame for frame, _ in traceback.walk_tb(caught.value.__traceback__)]
    # The caller's own frame, then Machine.handle, and none of the core's below it.
    assert [f.f_code.co_name for f in frames][1:] == ["handle"]
    shown = repr(frames[-1].f_locals)
    assert not [s for s in SECRETS if s in shown]


def test_detach_walks_a_chain_that_meets_itself() -> None:
    """An error reached twice (as the cause and the context of another, or in a
    cycle) is cut loose once, and the walk ends."""
    inner = RefreshFailed("inner")
    outer = RefreshFailed("outer", cause=inner)
    for error in (inner, outer):
        try:
            raise error
        except RefreshFailed:
            pass
    outer.__context__ = inner
    inner.__context__ = outer  # a cycle
    assert detach(outer) is outer
    assert outer.__traceback__ is None
    assert inner.__traceback__ is None
