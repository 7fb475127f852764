# ruff: noqa: E501 - the messages are compared whole, one string each
"""Every message the core writes, pinned word for word.

A message is behaviour: it names the value that was refused (never a
secret) and says what to do next.  Each case below reaches one refusal or
outcome through the public API and compares the whole text, so that a
message which loses its next step, its value or its class is noticed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    Action,
    ApiKey,
    AuthorizationDenied,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    CallAccepted,
    CallbackReceived,
    CallRequested,
    CfauthError,
    ClientCredentialsRejected,
    ClockTick,
    CodeExpired,
    Config,
    CredentialsRejected,
    Fail,
    InsecureTransport,
    InvalidInput,
    InvalidTokenRecord,
    LeaseFailed,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    NetworkError,
    OAuth2App,
    OAuthError,
    OAuthStateMismatch,
    RateLimited,
    ReauthorizationRequired,
    RefreshAborted,
    RefreshFailed,
    ReleaseLease,
    RemoteProtocolError,
    Request,
    ResponseReceived,
    Send,
    SendFailed,
    StoreFailed,
    TokenSet,
    TokensLoaded,
    UntrustedRedirect,
    call_id_of,
)
from cfauth_core._state import State, Trigger, next_state
from cfauth_core._tokens import MAX_TOKEN_BODY, parse_token_response

NOW = 1_700_000_000.0
STATE = "Yx3p_Q8-vLr2mT0kWc9hZa"
APP = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/callback")
ODD_APP = OAuth2App("client+0123/x", "s3cr+t/value=x", "https://app.example/callback")
KEY = ApiKey("key-0123456789", "apikey-secret-value")
GOOD = TokenSet("access-1", "refresh-1", NOW + 100, NOW + 1000, NOW).to_dict()


def record(**changes: Any) -> dict[str, Any]:
    """A stored token record with ``changes``; ``...`` removes a key."""
    merged = {**GOOD, **changes}
    return {k: v for k, v in merged.items() if v is not ...}


def api_call(path: str = "booking/index", **kwargs: Any) -> list[Action]:
    m = Machine(Account.parse("acme"), KEY)
    return m.handle(CallRequested(now=NOW, method="GET", path=path, **kwargs))


def tokens(expires_at: float = NOW + 14_000) -> TokenSet:
    return TokenSet("access-1", "refresh-1", expires_at, NOW + 14 * 86400, NOW - 14_000)


def machine(kind: str = "apikey", pair: TokenSet | None = None, **config: Any) -> Machine:
    account = Account.parse("acme")
    if kind == "apikey":
        return Machine(account, KEY, config=Config(**config))
    return Machine(account, APP, pair, config=Config(**config))


def sends(actions: Sequence[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def start(m: Machine, method: str = "GET", **kwargs: Any) -> list[Action]:
    """Start a call; the actions other than the acknowledgement."""
    actions = m.handle(CallRequested(now=NOW, method=method, path="booking/index", **kwargs))
    return [a for a in actions if not isinstance(a, CallAccepted)]


def answer(
    m: Machine, send: Send, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> list[Action]:
    return m.handle(
        ResponseReceived(
            now=NOW, request_id=send.request_id, status=status, headers=list(headers), body=body
        )
    )


def call_answered(
    status: int, headers: Sequence[tuple[str, str]] = (), kind: str = "apikey", **config: Any
) -> list[Action]:
    m = machine(kind, tokens(), **config)
    (send,) = sends(start(m))
    return answer(m, send, status, headers)


def call_answered_twice(status: int) -> list[Action]:
    """An OAuth call answered ``status``, refreshed, and answered ``status`` again."""
    m = machine("oauth", tokens())
    (send,) = sends(start(m))
    answer(m, send, status)
    (refresh,) = sends(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)))
    body = b'{"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 14000}'
    (resent,) = sends(answer(m, refresh, 200, [("Content-Type", "application/json")], body))
    return answer(m, resent, status)


def refreshing() -> tuple[Machine, Send]:
    """A machine whose call waits for a refresh, and the refresh's Send."""
    m = machine("oauth", tokens(NOW + 10))
    actions = start(m)
    assert [a for a in actions if isinstance(a, AcquireLease)], actions
    (send,) = sends(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)))
    return m, send


def refresh_answered(
    status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> list[Action]:
    m, send = refreshing()
    return answer(m, send, status, headers, body)


def refresh_send_failed(reason: str, *, retryable: bool = True) -> list[Action]:
    m, send = refreshing()
    return m.handle(
        SendFailed(now=NOW, request_id=send.request_id, reason=reason, retryable=retryable)
    )


def lease_failed(reason: str) -> list[Action]:
    m = machine("oauth", tokens(NOW + 10))
    start(m)
    return m.handle(LeaseFailed(now=NOW, reason=reason))


def call_send_failed(
    method: str = "GET", *, retryable: bool = True, unsent: bool = False, **kwargs: Any
) -> list[Action]:
    m = machine()
    (send,) = sends(start(m, method, **kwargs))
    return m.handle(
        SendFailed(
            now=NOW, request_id=send.request_id, reason="reset", retryable=retryable, unsent=unsent
        )
    )


def apikey_event(event: str) -> list[Action]:
    m = machine()
    if event == "logout":
        return m.handle(LogoutRequested(now=NOW))
    if event == "store-failed":
        return m.handle(StoreFailed(now=NOW, tokens=tokens()))
    return m.handle(TokensLoaded(now=NOW, tokens=None))


def unknown_request(event: str) -> list[Action]:
    m = machine()
    if event == "response":
        return m.handle(ResponseReceived(now=NOW, request_id=7, status=200, headers=[], body=b""))
    return m.handle(SendFailed(now=NOW, request_id=7))


def callback(query: str, **kwargs: Any) -> list[Action]:
    m = Machine(Account.parse("acme"), APP)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 43))
    url = f"{APP.redirect_uri}?{query}&state={STATE}"
    return m.handle(CallbackReceived(now=NOW, url=url, **kwargs))


def login_twice(*, same: bool) -> list[Action]:
    """A second login with the pending login's state, or with a replaced one's."""
    m = machine("oauth", pkce=False)
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    if not same:
        m.handle(AuthorizationRequested(now=NOW, state="Q" * 22))
    return m.handle(AuthorizationRequested(now=NOW, state=STATE))


def callback_raw(query: str, at: str = APP.redirect_uri + "?") -> list[Action]:
    m = machine("oauth", pkce=False)
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    return m.handle(CallbackReceived(now=NOW, url=at + query))


def callback_after_denial() -> list[Action]:
    """A callback with the state of a login that a newer one replaced."""
    m = machine("oauth", pkce=False)
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    m.handle(AuthorizationRequested(now=NOW, state="Q" * 22))
    return m.handle(CallbackReceived(now=NOW, url=f"code=x&state={STATE}"))


def call_after_grant_lost() -> list[Action]:
    m, send = refreshing()
    answer(m, send, 400, [], b'{"error": "invalid_grant"}')
    return start(m)


def exchange(pkce: bool) -> tuple[Machine, Send]:
    m = machine("oauth", pkce=pkce)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 43 if pkce else None))
    (send,) = m.handle(CallbackReceived(now=NOW, url=f"code=the-code&state={STATE}"))
    assert isinstance(send, Send)
    return m, send


def exchange_send_failed(pkce: bool, after: float = 0) -> list[Action]:
    """The exchange's request failed ``after`` seconds after the redirect."""
    m, send = exchange(pkce)
    return m.handle(
        SendFailed(now=NOW + after, request_id=send.request_id, reason="reset the-code")
    )


def exchange_answered(pkce: bool, status: int, body: bytes) -> list[Action]:
    m, send = exchange(pkce)
    return answer(m, send, status, [], body)


def refused_in_both_forms() -> list[Action]:
    m = Machine(Account.parse("acme"), ODD_APP, tokens(NOW + 10))
    start(m)
    (send,) = sends(m.handle(TokensLoaded(now=NOW, tokens=m.tokens)))
    (again,) = sends(answer(m, send, 401, [], b'{"error": "invalid_client"}'))
    return answer(m, again, 401, [], b'{"error": "invalid_client"}')


def call_waiting_on_a_failed_exchange() -> list[Action]:
    """The Fail of a call that waited for a first login's exchange, which failed."""
    m, send = exchange(True)
    assert not sends(start(m))  # no tokens yet: the call waits for the exchange
    actions = m.handle(SendFailed(now=NOW, request_id=send.request_id, reason="reset"))
    fails: list[Action] = [a for a in actions if isinstance(a, Fail)]
    (failed,) = [a for a in actions if isinstance(a, AuthorizationFailed)]
    assert [getattr(getattr(f, "error", None), "cause", None) for f in fails] == [failed.error]
    return fails


def token_response(body: object, status: int = 200, previous: TokenSet | None = None) -> TokenSet:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_token_response(status, raw, now=NOW, previous=previous, secrets=("refresh-1",))


def error_of(trigger: Callable[[], object]) -> CfauthError:
    """The error ``trigger`` raises, or the one its actions report."""
    try:
        actions = trigger()
    except CfauthError as error:
        return error
    assert isinstance(actions, Sequence), actions
    for action in actions:
        if isinstance(action, (Fail, AuthorizationFailed, RefreshAborted, AuthorizationLost)):
            return action.error
    raise AssertionError(f"no error: {actions!r}")


CASES: dict[str, tuple[Callable[[], object], type[CfauthError], str, dict[str, object]]] = {
    "record-not-mapping": (
        lambda: TokenSet.from_dict(cast(Any, [1])),
        InvalidTokenRecord,
        "token record: expected a JSON object, got list; the store is corrupt: log in again to replace it",
        {"retryable": False},
    ),
    "record-no-version": (
        lambda: TokenSet.from_dict(record(version=...)),
        InvalidTokenRecord,
        "token record: this is not a cfauth token record (it has no 'version'); pass a dict written by TokenSet.to_dict, or log in again to make one",
        {"retryable": False},
    ),
    "record-bad-version": (
        lambda: TokenSet.from_dict(record(version=2)),
        InvalidTokenRecord,
        "token record: unknown version 2 (this cfauth reads version 1); upgrade cfauth or log in again",
        {"retryable": False},
    ),
    "record-bad-access": (
        lambda: TokenSet.from_dict(record(access_token="a b")),
        InvalidTokenRecord,
        "token record: access_token is missing or not a printable ASCII string; the store is corrupt: log in again to replace it",
        {"retryable": False},
    ),
    "record-bad-refresh": (
        lambda: TokenSet.from_dict(record(refresh_token=...)),
        InvalidTokenRecord,
        "token record: refresh_token is missing or not a printable ASCII string; the store is corrupt: log in again to replace it",
        {"retryable": False},
    ),
    "record-bad-time": (
        lambda: TokenSet.from_dict(record(updated_at=-1)),
        InvalidTokenRecord,
        "token record: updated_at is missing or not a finite, non-negative number; the store is corrupt: log in again to replace it",
        {"retryable": False},
    ),
    "record-bad-scope": (
        lambda: TokenSet.from_dict(record(scope=1)),
        InvalidTokenRecord,
        "token record: scope must be a string or null",
        {"retryable": False},
    ),
    "record-unknown-fields": (
        lambda: TokenSet.from_dict(record(extra=1, other=2)),
        InvalidTokenRecord,
        "token record: unexpected fields ['extra', 'other']; it was not written by this version of cfauth",
        {"retryable": False},
    ),
    "header-not-a-pair": (
        lambda: api_call(headers=[("X-On-Behalf",)]),
        InvalidInput,
        "headers: pass (name, value) pairs of strings",
        {"retryable": False},
    ),
    "header-reserved": (
        lambda: api_call(headers=[("Authorization", "x")]),
        InvalidInput,
        "headers: Authorization is set by cfauth or its transport; pass credentials as ApiKey or OAuth2App and data through params or data",
        {"retryable": False},
    ),
    "path-lone-surrogate": (
        lambda: api_call("booking/\udc80"),
        InvalidInput,
        "path: not valid text (it holds a lone surrogate, e.g. from bytes that are not UTF-8); pass the resource path as valid text",
        {"retryable": False},
    ),
    "path-with-query": (
        lambda: api_call("booking?x=1"),
        InvalidInput,
        "path 'booking?x=1': pass the resource path alone ('booking/index'); query parameters go in params",
        {"retryable": False},
    ),
    "path-with-control": (
        lambda: api_call("booking/\x1f"),
        InvalidInput,
        "path 'booking/\\x1f': pass the resource path alone ('booking/index'); query parameters go in params",
        {"retryable": False},
    ),
    "path-dot-segment": (
        lambda: api_call("booking/../x"),
        InvalidInput,
        "path 'booking/../x': '.' and '..' segments are not allowed",
        {"retryable": False},
    ),
    "denied-access": (
        lambda: callback("error=access_denied&error_description=The+user+said+no"),
        AuthorizationDenied,
        "the login was not authorized: the authorization server sent back error 'access_denied' ('The user said no'): start the login again if the user wants to allow access",
        {"retryable": False, "status": None},
    ),
    "denied-other": (
        lambda: callback("error=invalid_scope"),
        AuthorizationDenied,
        "the login was not authorized: the authorization server sent back error 'invalid_scope': check the OAuth2 application's settings under Manage > Developer, then start the login again",
        {"retryable": False, "status": None},
    ),
    "lease-failed": (
        lambda: lease_failed("locked by pid 7"),
        RefreshFailed,
        "the token refresh could not start: locked by pid 7; the tokens are unchanged, try again",
        {"retryable": True, "status": None},
    ),
    "logout-apikey": (
        lambda: apikey_event("logout"),
        LocalProtocolError,
        "a token pair (ApiKey) has no OAuth2 grant to forget: revoke the pair under Manage > Developer instead",
        {"retryable": False},
    ),
    "store-failed-apikey": (
        lambda: apikey_event("store-failed"),
        LocalProtocolError,
        "a token pair (ApiKey) emits no Store to fail",
        {"retryable": False},
    ),
    "tokens-loaded-apikey": (
        lambda: apikey_event("tokens-loaded"),
        LocalProtocolError,
        "a token pair (ApiKey) has no OAuth2 tokens to load",
        {"retryable": False},
    ),
    "response-unknown-request": (
        lambda: unknown_request("response"),
        LocalProtocolError,
        "request 7 is not in flight: report each Send's answer once",
        {"retryable": False},
    ),
    "send-failed-unknown-request": (
        lambda: unknown_request("send-failed"),
        LocalProtocolError,
        "request 7 is not in flight: report each Send's answer once",
        {"retryable": False},
    ),
    "send-failed-get": (
        lambda: call_send_failed("GET"),
        NetworkError,
        "GET https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset; the call may be retried",
        {"retryable": True},
    ),
    "send-failed-post": (
        lambda: call_send_failed("POST", data={"a": "1"}),
        NetworkError,
        "POST https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset; the server may have processed it: check whether it took effect before sending it again",
        {"retryable": False},
    ),
    "send-failed-post-unsent": (
        lambda: call_send_failed("POST", unsent=True, data={"a": "1"}),
        NetworkError,
        "POST https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset; the call may be retried",
        {"retryable": True},
    ),
    "send-failed-post-idempotency-key": (
        lambda: call_send_failed("POST", data={"a": "1"}, headers=[("Idempotency-Key", "k-1")]),
        NetworkError,
        "POST https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset; the call may be retried",
        {"retryable": True},
    ),
    "send-failed-not-retryable": (
        lambda: call_send_failed("GET", retryable=False),
        NetworkError,
        "GET https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset",
        {"retryable": False},
    ),
    "send-failed-post-not-retryable": (
        lambda: call_send_failed("POST", retryable=False, data={"a": "1"}),
        NetworkError,
        "POST https://acme.checkfront.com/api/3.0/booking/index could not be completed: reset",
        {"retryable": False},
    ),
    "refresh-send-failed": (
        lambda: refresh_send_failed("reset by peer"),
        RefreshFailed,
        "the token refresh failed (the token request could not be completed: reset by peer); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": None},
    ),
    "refresh-redirect-elsewhere": (
        lambda: refresh_answered(302, [("Location", "/oauth/other/")]),
        RefreshFailed,
        "the token refresh failed (redirect to '/oauth/other/' refused: client credentials go to /oauth/token/ only, by POST; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": None},
    ),
    "refresh-redirect-303": (
        lambda: refresh_answered(303, [("Location", "/oauth/token/")]),
        RefreshFailed,
        "the token refresh failed (redirect to '/oauth/token/' refused: it loops back to a URL already requested (POST); no credentials were sent there. The server keeps redirecting: check the account URL and the path, and try again later); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": None},
    ),
    "refresh-redirect-untrusted": (
        lambda: refresh_answered(302, [("Location", "https://evil.example/oauth/token/")]),
        RefreshFailed,
        "the token refresh failed (redirect to 'https://evil.example/oauth/token/' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": None},
    ),
    "refresh-500": (
        lambda: refresh_answered(500),
        RefreshFailed,
        "the token refresh failed (the token endpoint answered HTTP 500 with a body that is not JSON; check the account URL and try again later); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": 500},
    ),
    "refresh-invalid-grant": (
        lambda: refresh_answered(400, [], b'{"error": "invalid_grant"}'),
        ReauthorizationRequired,
        "the refresh token was refused: the OAuth2 grant is gone; log in again (a new OAuth2 authorization)",
        {"retryable": False},
    ),
    "refresh-invalid-client": (
        lambda: refresh_answered(
            401, [], b'{"error": "invalid_client", "error_description": "bad"}'
        ),
        ClientCredentialsRejected,
        "the token URL refused the OAuth2 client id and secret: the server answered 'invalid_client' ('bad') with HTTP 401; check the client id and secret under Manage > Developer in Checkfront and pass the right ones in OAuth2App; the tokens are kept",
        {"retryable": False, "status": 401},
    ),
    "refresh-not-json": (
        lambda: refresh_answered(200, [], b"<html>"),
        RefreshFailed,
        "the token refresh failed (the token endpoint answered HTTP 200 with a body that is not JSON; check the account URL and try again later); the tokens are unchanged and the next call will try again",
        {"retryable": True, "status": 200},
    ),
    "call-429-too-long": (
        lambda: call_answered(429, [("Retry-After", "301")]),
        RateLimited,
        "the server answered HTTP 429 (rate limited) and asked to wait 301 s; cfauth gave up after 0 retries: slow down and try again later",
        {"retryable": True, "status": 429, "retry_after": 301.0},
    ),
    "call-429-retries-spent": (
        lambda: call_answered(429, [("Retry-After", "1")], max_rate_limit_retries=0),
        RateLimited,
        "the server answered HTTP 429 (rate limited) and asked to wait 1 s; cfauth gave up after 0 retries: slow down and try again later",
        {"retryable": True, "status": 429, "retry_after": 1.0},
    ),
    "apikey-401": (
        lambda: call_answered(401),
        CredentialsRejected,
        "the server rejected the API key and secret (HTTP 401): the token pair is wrong or was revoked; check it under Manage > Developer. cfauth does not retry a rejected pair",
        {"retryable": False, "status": 401},
    ),
    "apikey-403": (
        lambda: call_answered(403),
        CredentialsRejected,
        "the server rejected the API key and secret (HTTP 403): the token pair is wrong or was revoked; check it under Manage > Developer. cfauth does not retry a rejected pair",
        {"retryable": False, "status": 403},
    ),
    "oauth-401-twice": (
        lambda: call_answered_twice(401),
        CredentialsRejected,
        "the server rejected a freshly refreshed access token (HTTP 401); the grant may have been revoked: log in again if this persists",
        {"retryable": False, "status": 401},
    ),
    "call-redirect-oauth": (
        lambda: call_answered(302, [("Location", "/oauth/token/")]),
        UntrustedRedirect,
        "redirect to '/oauth/token/' refused: API credentials never go to the OAuth endpoints; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "/oauth/token/"},
    ),
    "call-redirect-untrusted": (
        lambda: call_answered(302, [("Location", "https://evil.example/x")]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/x' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://evil.example/x"},
    ),
    "call-redirect-limit": (
        lambda: call_answered(302, [("Location", "/api/3.0/x")], max_redirects=0),
        UntrustedRedirect,
        "redirect to '/api/3.0/x' refused: more than 0 redirects; no credentials were sent there. The server keeps redirecting: check the account URL and the path, and try again later",
        {"retryable": False, "location": "/api/3.0/x"},
    ),
    "call-redirect-loop": (
        lambda: call_answered(302, [("Location", "/api/3.0/booking/index")]),
        UntrustedRedirect,
        "redirect to '/api/3.0/booking/index' refused: it loops back to a URL already requested (GET); no credentials were sent there. The server keeps redirecting: check the account URL and the path, and try again later",
        {"retryable": False, "location": "/api/3.0/booking/index"},
    ),
    "no-tokens-yet": (
        lambda: start(machine("oauth")),
        ReauthorizationRequired,
        "there are no OAuth2 tokens for this account yet: log in first (an OAuth2 authorization)",
        {"retryable": False},
    ),
    "callback-no-code": (
        lambda: callback("code="),
        RemoteProtocolError,
        "the callback carries no single, printable authorization code: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-code-expired": (
        lambda: callback("code=abc", redirected_at=NOW - 61),
        CodeExpired,
        "the authorization code arrived 61 s after the redirect, more than the 60 s it is valid: log in again",
        {"retryable": False},
    ),
    "callback-iss-mismatch": (
        lambda: callback("code=abc&iss=https://evil.example"),
        RemoteProtocolError,
        "the callback's issuer (iss) is 'https://evil.example', not this account's origin https://acme.checkfront.com: the answer may come from another server (a mix-up attack, RFC 9207); nothing was exchanged: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-iss-twice": (
        lambda: callback(
            "code=abc&iss=https://acme.checkfront.com&iss=https://acme.checkfront.com"
        ),
        RemoteProtocolError,
        "the callback's issuer (iss) is given more than once, not this account's origin https://acme.checkfront.com: the answer may come from another server (a mix-up attack, RFC 9207); nothing was exchanged: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-wrong-state": (
        lambda: Machine(Account.parse("acme"), APP).handle(
            CallbackReceived(now=NOW, url=APP.redirect_uri + "?code=x&state=other")
        ),
        LocalProtocolError,
        "CallbackReceived is not accepted in state unauthorized: no login is pending (the callback was already used, or AuthorizationRequested was never sent), or a token refresh or exchange is in flight (pass the callback again once the refresh has ended)",
        {"retryable": False},
    ),
    "params-not-a-mapping": (
        lambda: api_call(params=5),
        InvalidInput,
        "params: pass a dict or a list of (name, value) pairs, not int",
        {"retryable": False},
    ),
    "params-item-in-mapping": (
        lambda: api_call(params={"a": object()}),
        InvalidInput,
        "params: 'a' is object; pass a string or a number (or a list of them): leave out a parameter that has no value, and spell booleans as Checkfront expects them ('1' / '0')",
        {"retryable": False},
    ),
    "params-item-in-pairs": (
        lambda: api_call(params=[("a", object())]),
        InvalidInput,
        "params: 'a' is object; pass a string or a number: leave out a parameter that has no value, and spell booleans as Checkfront expects them ('1' / '0')",
        {"retryable": False},
    ),
    "redirect-empty": (
        lambda: call_answered(302, [("Location", "")]),
        UntrustedRedirect,
        "redirect to '' refused: it is empty or longer than 2048 characters; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": ""},
    ),
    "redirect-too-long": (
        lambda: call_answered(302, [("Location", "/x" * 1025)]),
        UntrustedRedirect,
        "redirect to '/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x...' refused: it is empty or longer than 2048 characters; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {
            "retryable": False,
            "location": "/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x/x...",
        },
    ),
    "redirect-space": (
        lambda: call_answered(302, [("Location", "https://evil.example/a b")]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/a b' refused: it holds spaces, control characters, backslashes or non-ASCII; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://evil.example/a b"},
    ),
    "redirect-not-a-url": (
        lambda: call_answered(302, [("Location", "https://[::1/x")]),
        UntrustedRedirect,
        "redirect to 'https://[::1/x' refused: it is not a valid URL; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://[::1/x"},
    ),
    "redirect-scheme": (
        lambda: call_answered(302, [("Location", "javascript:alert(1)")]),
        UntrustedRedirect,
        "redirect to 'javascript:alert(1)' refused: the scheme 'javascript' is not https; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "javascript:alert(1)"},
    ),
    "redirect-userinfo": (
        lambda: call_answered(302, [("Location", "https://u@acme.checkfront.com/")]),
        UntrustedRedirect,
        "redirect to 'https://u@acme.checkfront.com/' refused: it carries user information; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://u@acme.checkfront.com/"},
    ),
    "redirect-bad-port": (
        lambda: call_answered(302, [("Location", "https://acme.checkfront.com:99999/")]),
        UntrustedRedirect,
        "redirect to 'https://acme.checkfront.com:99999/' refused: its port is not valid; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://acme.checkfront.com:99999/"},
    ),
    "redirect-port-text": (
        lambda: call_answered(302, [("Location", "https://acme.checkfront.com:44x/")]),
        UntrustedRedirect,
        "redirect to 'https://acme.checkfront.com:44x/' refused: its port is not valid; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://acme.checkfront.com:44x/"},
    ),
    "redirect-downgrade": (
        lambda: call_answered(302, [("Location", "http://acme.manage.na1.bookingplatform.app/")]),
        UntrustedRedirect,
        "redirect to 'http://acme.manage.na1.bookingplatform.app/' refused: it downgrades to plain http; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "http://acme.manage.na1.bookingplatform.app/"},
    ),
    "redirect-other-port": (
        lambda: call_answered(
            302, [("Location", "https://acme.manage.na1.bookingplatform.app:8443/")]
        ),
        UntrustedRedirect,
        "redirect to 'https://acme.manage.na1.bookingplatform.app:8443/' refused: it changes the port; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://acme.manage.na1.bookingplatform.app:8443/"},
    ),
    "redirect-ip": (
        lambda: call_answered(302, [("Location", "https://192.0.2.1/")]),
        UntrustedRedirect,
        "redirect to 'https://192.0.2.1/' refused: its host is not a plain DNS name; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://192.0.2.1/"},
    ),
    "redirect-other-account": (
        lambda: call_answered(302, [("Location", "https://other.manage.na1.bookingplatform.app/")]),
        UntrustedRedirect,
        "redirect to 'https://other.manage.na1.bookingplatform.app/' refused: other.manage.na1.bookingplatform.app is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://other.manage.na1.bookingplatform.app/"},
    ),
    "redirect-long-location-shown-cut": (
        lambda: call_answered(302, [("Location", "https://evil.example/" + "a" * 300)]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {
            "retryable": False,
            "location": "https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...",
        },
    ),
    "redirect-secret-hidden": (
        lambda: call_answered(302, [("Location", "https://evil.example/?k=apikey-secret-value")]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/?k=<hidden>' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://evil.example/?k=<hidden>"},
    ),
    "account-blank": (
        lambda: Account.parse(" "),
        InvalidInput,
        "account: pass the account name ('acme') or its https origin ('https://acme.checkfront.com')",
        {"retryable": False},
    ),
    "account-not-ascii": (
        lambda: Account.parse("acme\u00e9"),
        InvalidInput,
        "account: only visible ASCII without spaces or backslashes is accepted; pass e.g. 'https://acme.checkfront.com' (IDN hosts in their xn-- form)",
        {"retryable": False},
    ),
    "account-with-path-no-scheme": (
        lambda: Account.parse("acme/x"),
        InvalidInput,
        "account 'acme/x': pass the account name ('acme') or its https origin ('https://acme.checkfront.com') with no path",
        {"retryable": False},
    ),
    "account-not-a-url": (
        lambda: Account.parse("https://[::1"),
        InvalidInput,
        "account 'https://[::1' is not a valid URL; pass e.g. 'https://acme.checkfront.com'",
        {"retryable": False},
    ),
    "account-scheme": (
        lambda: Account.parse("ftp://acme.checkfront.com"),
        InvalidInput,
        "account: scheme 'ftp' is not supported; pass an https:// origin",
        {"retryable": False},
    ),
    "account-userinfo": (
        lambda: Account.parse("https://u@acme.checkfront.com"),
        InvalidInput,
        "account: credentials do not belong in the URL; pass the bare origin ('https://acme.checkfront.com') and give the key and secret as ApiKey(...) or OAuth2App(...)",
        {"retryable": False},
    ),
    "account-path": (
        lambda: Account.parse("https://acme.checkfront.com/api"),
        InvalidInput,
        "account: pass only the origin ('https://acme.checkfront.com'); the API path goes in api_base and each call's path, parameters in its params",
        {"retryable": False},
    ),
    "account-port-text": (
        lambda: Account.parse("https://acme.checkfront.com:x"),
        InvalidInput,
        "account: the port must be a number, as in https://acme.checkfront.com:8443",
        {"retryable": False},
    ),
    "account-port-range": (
        lambda: Account.parse("https://acme.checkfront.com:0"),
        InvalidInput,
        "account: the port must be between 1 and 65535, e.g. 8443",
        {"retryable": False},
    ),
    "account-bad-host": (
        lambda: Account.parse("https://-acme-.example"),
        InvalidInput,
        "account: '-acme-.example' is not a valid host name; pass e.g. 'https://acme.checkfront.com'",
        {"retryable": False},
    ),
    "account-loopback": (
        lambda: Account.parse("https://127.0.0.1"),
        InvalidInput,
        "account: loopback hosts are for tests only; pass insecure_loopback=True in tests, or use the real host with a resolve override in the transport",
        {"retryable": False},
    ),
    "account-http": (
        lambda: Account.parse("http://acme.checkfront.com"),
        InsecureTransport,
        "account: plain http is refused; use https://acme.checkfront.com (http is allowed only to 127.0.0.1, ::1 or localhost with insecure_loopback=True, for tests)",
        {"retryable": False},
    ),
    "trusted-hosts-string": (
        lambda: Account.parse("acme", trusted_hosts="a.example"),
        InvalidInput,
        "trusted_hosts: pass a list of host names, not one string",
        {"retryable": False},
    ),
    "trusted-hosts-not-a-host": (
        lambda: Account.parse("acme", trusted_hosts=["https://a.example"]),
        InvalidInput,
        "trusted_hosts: 'https://a.example' is not a host name; pass names like 'acme.manage.eu1.bookingplatform.app' (no scheme, port or path)",
        {"retryable": False},
    ),
    "api-base-relative": (
        lambda: Account.parse("acme", api_base="api/3.0/"),
        InvalidInput,
        "api_base: pass an absolute path such as '/api/3.0/' (no '.' or '..' segments)",
        {"retryable": False},
    ),
    "params-not-pairs": (
        lambda: api_call(params=[("a", "1", "2")]),
        InvalidInput,
        "params: pass (name, value) pairs, e.g. [('status_id', 'PAID')]",
        {"retryable": False},
    ),
    "params-empty-name": (
        lambda: api_call(params={"": "1"}),
        InvalidInput,
        "params: each name must be a non-empty string of valid text",
        {"retryable": False},
    ),
    "params-surrogate-value": (
        lambda: api_call(params={"a": "\udc80"}),
        InvalidInput,
        "params: the value of 'a' is not valid text (a lone surrogate, e.g. from bytes that are not UTF-8); decode it properly first",
        {"retryable": False},
    ),
    "credential-surrogate": (
        lambda: ApiKey("key\udc80", "apikey-secret-value"),
        InvalidInput,
        "ApiKey key: not valid text (a lone surrogate, as os.environ holds for a byte that is not UTF-8); check the variable or file it came from",
        {"retryable": False},
    ),
    "credential-empty": (
        lambda: ApiKey("", "apikey-secret-value"),
        InvalidInput,
        "ApiKey key: pass a non-empty string",
        {"retryable": False},
    ),
    "credential-control": (
        lambda: ApiKey("key-01", "secret\x1fvalue"),
        InvalidInput,
        "ApiKey secret: control characters (CR, LF, ...) are not allowed",
        {"retryable": False},
    ),
    "send-failed-bad-id": (
        lambda: SendFailed(now=NOW, request_id=0),
        InvalidInput,
        "pass the id from the machine's action (a positive int)",
        {"retryable": False},
    ),
    "token-body-too-big": (
        lambda: token_response(b" " * (MAX_TOKEN_BODY + 1)),
        RemoteProtocolError,
        "the token endpoint sent 65537 bytes (more than 65536); this is not a token response: check the account URL",
        {"retryable": False, "status": 200},
    ),
    "token-body-not-json": (
        lambda: token_response(b"<html>", 502),
        RemoteProtocolError,
        "the token endpoint answered HTTP 502 with a body that is not JSON; check the account URL and try again later",
        {"retryable": False, "status": 502},
    ),
    "token-body-a-list": (
        lambda: token_response([1]),
        RemoteProtocolError,
        "the token endpoint sent JSON list, not an object",
        {"retryable": False, "status": 200},
    ),
    "token-500-object": (
        lambda: token_response({}, 500),
        RemoteProtocolError,
        "the token endpoint answered HTTP 500 without an OAuth error; try again later",
        {"retryable": False, "status": 500},
    ),
    "token-oauth-error": (
        lambda: token_response(
            {"error": "invalid_grant", "error_description": "expired refresh-1"}, 400
        ),
        OAuthError,
        "the server answered OAuth error 'invalid_grant' ('expired <hidden>') with HTTP 400: log in again (a new OAuth2 authorization)",
        {"retryable": False, "status": 400},
    ),
    "token-oauth-error-200": (
        lambda: token_response({"error": "server_error"}, 200),
        OAuthError,
        "the server answered OAuth error 'server_error' with HTTP 200: try again later",
        {"retryable": False, "status": 200},
    ),
    "token-oauth-error-unknown": (
        lambda: token_response({"error": "weird_error"}, 400),
        OAuthError,
        "the server answered OAuth error 'weird_error' with HTTP 400: check the request against the description, then try again",
        {"retryable": False, "status": 400},
    ),
    "token-no-access": (
        lambda: token_response({"refresh_token": "r-2"}),
        RemoteProtocolError,
        "the token response has no usable access_token (missing, empty, or with characters other than visible ASCII)",
        {"retryable": False, "status": 200},
    ),
    "token-bad-access": (
        lambda: token_response({"access_token": "a b", "refresh_token": "r-2"}),
        RemoteProtocolError,
        "the token response has no usable access_token (missing, empty, or with characters other than visible ASCII)",
        {"retryable": False, "status": 200},
    ),
    "token-no-refresh": (
        lambda: token_response({"access_token": "a-2"}),
        RemoteProtocolError,
        "the token response has no usable refresh_token (missing, empty, or with characters other than visible ASCII)",
        {"retryable": False, "status": 200},
    ),
    "token-bad-refresh": (
        lambda: token_response({"access_token": "a-2", "refresh_token": ""}),
        RemoteProtocolError,
        "the token response has no usable refresh_token (missing, empty, or with characters other than visible ASCII)",
        {"retryable": False, "status": 200},
    ),
    "token-expires-zero": (
        lambda: token_response({"access_token": "a-2", "refresh_token": "r-2", "expires_in": 0}),
        RemoteProtocolError,
        "the token response has an expires_in that is not a whole number of seconds between 1 and 31536000",
        {"retryable": False, "status": 200},
    ),
    "token-expires-float": (
        lambda: token_response({"access_token": "a-2", "refresh_token": "r-2", "expires_in": 1.5}),
        RemoteProtocolError,
        "the token response has an expires_in that is not a whole number of seconds between 1 and 31536000",
        {"retryable": False, "status": 200},
    ),
    "token-expires-bool": (
        lambda: token_response({"access_token": "a-2", "refresh_token": "r-2", "expires_in": True}),
        RemoteProtocolError,
        "the token response has an expires_in that is not a whole number of seconds between 1 and 31536000",
        {"retryable": False, "status": 200},
    ),
    "token-expires-too-long": (
        lambda: token_response(
            {"access_token": "a-2", "refresh_token": "r-2", "expires_in": 365 * 86400 + 1}
        ),
        RemoteProtocolError,
        "the token response has an expires_in that is not a whole number of seconds between 1 and 31536000",
        {"retryable": False, "status": 200},
    ),
    "token-type-mac": (
        lambda: token_response(
            {"access_token": "a-2", "refresh_token": "r-2", "token_type": "mac"}
        ),
        RemoteProtocolError,
        "the token response is not for a bearer token; cfauth only uses bearer tokens",
        {"retryable": False, "status": 200},
    ),
    "token-type-not-text": (
        lambda: token_response({"access_token": "a-2", "refresh_token": "r-2", "token_type": 1}),
        RemoteProtocolError,
        "the token response is not for a bearer token; cfauth only uses bearer tokens",
        {"retryable": False, "status": 200},
    ),
    "call-id-of-nothing": (
        lambda: call_id_of([]),
        InvalidInput,
        "actions: pass the list Machine.handle returned for a CallRequested (its first action names the call)",
        {"retryable": False},
    ),
    "call-id-of-no-call": (
        lambda: call_id_of([ReleaseLease()]),
        InvalidInput,
        "actions: pass the list Machine.handle returned for a CallRequested (its first action names the call)",
        {"retryable": False},
    ),
    "call-id-of-token-send": (
        lambda: call_id_of([Send(1, Request("POST", "https://x.example/", ()), None, "refresh")]),
        InvalidInput,
        "actions: pass the list Machine.handle returned for a CallRequested (its first action names the call)",
        {"retryable": False},
    ),
    "token-oauth-error-long-code": (
        lambda: token_response({"error": "e" * 150}, 400),
        OAuthError,
        "the server answered OAuth error 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee...' with HTTP 400: check the request against the description, then try again",
        {"retryable": False, "status": 400},
    ),
    "moved-to-bad-port": (
        lambda: Account.parse("acme").moved_to("https://x.example:99999"),
        InvalidInput,
        "origin: the port must be between 1 and 65535, e.g. 8443",
        {"retryable": False},
    ),
    "moved-to-port-text": (
        lambda: Account.parse("acme").moved_to("https://x.example:8x"),
        InvalidInput,
        "origin: the port must be a number, as in https://acme.checkfront.com:8443",
        {"retryable": False},
    ),
    "judge-redirect-bad-current-port": (
        lambda: Account.parse("acme").judge_redirect(
            "https://acme.checkfront.com:99999/x", "https://acme.checkfront.com/y"
        ),
        InvalidInput,
        "current URL: the port must be between 1 and 65535, e.g. 8443",
        {"retryable": False},
    ),
    "machine-account": (
        lambda: Machine(cast(Any, "acme"), KEY),
        InvalidInput,
        "account: pass an Account, e.g. Account.parse('acme')",
        {"retryable": False},
    ),
    "machine-credential": (
        lambda: Machine(Account.parse("acme"), cast(Any, "key")),
        InvalidInput,
        "credential: pass ApiKey(key, secret) or OAuth2App(...)",
        {"retryable": False},
    ),
    "machine-tokens-type": (
        lambda: Machine(Account.parse("acme"), APP, cast(Any, {"access_token": "a"})),
        InvalidInput,
        "tokens: pass a TokenSet or None",
        {"retryable": False},
    ),
    "machine-tokens-with-apikey": (
        lambda: Machine(Account.parse("acme"), KEY, tokens()),
        InvalidInput,
        "tokens: a token pair (ApiKey) has no OAuth2 tokens",
        {"retryable": False},
    ),
    "machine-client-auth": (
        lambda: Machine(Account.parse("acme"), APP, client_auth="basic"),
        InvalidInput,
        "client_auth: pass 'rfc6749', 'raw' (the form a store recorded) or None",
        {"retryable": False},
    ),
    "login-with-apikey": (
        lambda: machine().handle(AuthorizationRequested(now=NOW, state=STATE)),
        LocalProtocolError,
        "a token pair (ApiKey) has no OAuth2 login: use an OAuth2App machine to log in",
        {"retryable": False},
    ),
    "login-short-state": (
        lambda: machine("oauth").handle(
            AuthorizationRequested(now=NOW, state="short", code_verifier="v" * 43)
        ),
        InvalidInput,
        "state: pass at least 16 random bytes as 22 or more URL-safe characters (secrets.token_urlsafe(16))",
        {"retryable": False},
    ),
    "login-state-pending": (
        lambda: login_twice(same=True),
        InvalidInput,
        "state: this is the pending login's state; pass a fresh random state for each login",
        {"retryable": False},
    ),
    "login-state-used": (
        lambda: login_twice(same=False),
        InvalidInput,
        "state: this value was used before; pass a fresh random state",
        {"retryable": False},
    ),
    "login-pkce-bad-verifier": (
        lambda: machine("oauth").handle(
            AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 42)
        ),
        InvalidInput,
        "code_verifier: PKCE is on; pass 43 to 128 URL-safe characters (secrets.token_urlsafe(64)), or turn PKCE off with Config(pkce=False)",
        {"retryable": False},
    ),
    "login-pkce-off-verifier": (
        lambda: machine("oauth", pkce=False).handle(
            AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 43)
        ),
        InvalidInput,
        "code_verifier: PKCE is off (Config(pkce=False)); pass no verifier",
        {"retryable": False},
    ),
    "callback-no-state": (
        lambda: callback_raw("code=x"),
        OAuthStateMismatch,
        "the callback carries no single state parameter; it was not started by this login and was ignored",
        {"retryable": False},
    ),
    "callback-state-mismatch": (
        lambda: callback_raw("code=x&state=" + "Z" * 22),
        OAuthStateMismatch,
        "the callback's state does not match the pending login; it was ignored",
        {"retryable": False},
    ),
    "callback-state-twice": (
        lambda: callback_raw(f"code=x&state={STATE}&state={STATE}"),
        OAuthStateMismatch,
        "the callback carries no single state parameter; it was not started by this login and was ignored",
        {"retryable": False},
    ),
    "callback-state-used": (
        callback_after_denial,
        OAuthStateMismatch,
        "the callback's state was already used; it was ignored",
        {"retryable": False},
    ),
    "callback-not-at-redirect-uri": (
        lambda: callback_raw(f"code=x&state={STATE}", "https://evil.example/callback?"),
        OAuthStateMismatch,
        "the callback URL is not at the redirect URI (its scheme, host, port or path differ); it was not meant for this login and was ignored",
        {"retryable": False},
    ),
    "logout-while-refreshing": (
        lambda: refreshing()[0].handle(LogoutRequested(now=NOW)),
        LocalProtocolError,
        "LogoutRequested is not accepted in state refreshing: a token refresh or exchange is in flight; log out once it has ended",
        {"retryable": False},
    ),
    "login-while-refreshing": (
        lambda: refreshing()[0].handle(
            AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 43)
        ),
        LocalProtocolError,
        "AuthorizationRequested is not accepted in state refreshing: a login cannot start while a token refresh or exchange is in flight; start it once that has ended",
        {"retryable": False},
    ),
    "tokens-loaded-while-refreshing": (
        lambda: refreshing()[0].handle(TokensLoaded(now=NOW, tokens=None)),
        LocalProtocolError,
        "TokensLoaded is not accepted in state refreshing: tokens can be loaded only when no refresh or exchange is in flight",
        {"retryable": False},
    ),
    "grant-expired-on-tick": (
        lambda: machine(
            "oauth", TokenSet("access-1", "refresh-1", NOW + 10, NOW + 20, NOW - 14_000)
        ).handle(ClockTick(now=NOW + 30)),
        ReauthorizationRequired,
        "the refresh token has expired (14 days after it was issued): the OAuth2 grant is gone; log in again (a new OAuth2 authorization)",
        {"retryable": False},
    ),
    "call-after-grant-lost": (
        call_after_grant_lost,
        ReauthorizationRequired,
        "the OAuth2 grant is gone (refresh token expired, revoked or rotated away): log in again (a new OAuth2 authorization)",
        {"retryable": False},
    ),
    "callback-when-no-login-pending": (
        lambda: machine("oauth", tokens()).handle(
            CallbackReceived(now=NOW, url=f"code=x&state={STATE}")
        ),
        LocalProtocolError,
        "CallbackReceived is not accepted: no login is pending (the callback was already used, or AuthorizationRequested was never sent)",
        {"retryable": False},
    ),
    "callback-iss-long": (
        lambda: callback("code=abc&iss=https://" + "i" * 150),
        RemoteProtocolError,
        "the callback's issuer (iss) is 'https://iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii...', not this account's origin https://acme.checkfront.com: the answer may come from another server (a mix-up attack, RFC 9207); nothing was exchanged: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-error-long": (
        lambda: callback("error=" + "e" * 150),
        AuthorizationDenied,
        "the login was not authorized: the authorization server sent back error 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee...': check the OAuth2 application's settings under Manage > Developer, then start the login again",
        {"retryable": False, "status": None},
    ),
    "callback-code-not-ascii": (
        lambda: callback("code=caf%C3%A9"),
        RemoteProtocolError,
        "the callback carries no single, printable authorization code: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-code-control": (
        lambda: callback("code=a%1Fb"),
        RemoteProtocolError,
        "the callback carries no single, printable authorization code: log in again",
        {"retryable": False, "status": None},
    ),
    "callback-code-twice": (
        lambda: callback("code=a&code=b"),
        RemoteProtocolError,
        "the callback carries no single, printable authorization code: log in again",
        {"retryable": False, "status": None},
    ),
    "exchange-send-failed-no-pkce": (
        lambda: exchange_send_failed(False),
        NetworkError,
        "the token request could not be completed: reset <hidden>",
        {"retryable": True},
    ),
    "exchange-send-failed-pkce": (
        lambda: exchange_send_failed(True),
        NetworkError,
        "the token request could not be completed: reset <hidden>",
        {"retryable": True},
    ),
    "exchange-error-no-pkce": (
        lambda: exchange_answered(
            False, 400, b'{"error": "invalid_grant", "error_description": "code the-code used"}'
        ),
        OAuthError,
        "the server answered OAuth error 'invalid_grant' ('code <hidden> used') with HTTP 400: log in again (a new OAuth2 authorization)",
        {"retryable": False, "status": 400},
    ),
    "refresh-invalid-client-both-forms": (
        refused_in_both_forms,
        ClientCredentialsRejected,
        "the token URL refused the OAuth2 client id and secret in both forms tried (RFC 6749 form-encoded and raw): the server answered 'invalid_client' with HTTP 401; check the client id and secret under Manage > Developer in Checkfront and pass the right ones in OAuth2App; the tokens are kept",
        {"retryable": False, "status": 401},
    ),
    "refresh-invalid-client-no-description": (
        lambda: refresh_answered(400, [], b'{"error": "invalid_client"}'),
        ClientCredentialsRejected,
        "the token URL refused the OAuth2 client id and secret: the server answered 'invalid_client' with HTTP 400; check the client id and secret under Manage > Developer in Checkfront and pass the right ones in OAuth2App; the tokens are kept",
        {"retryable": False, "status": 400},
    ),
    "exchange-invalid-client": (
        lambda: exchange_answered(
            True, 401, b'{"error": "invalid_client", "error_description": "who?"}'
        ),
        ClientCredentialsRejected,
        "the token URL refused the OAuth2 client id and secret: the server answered 'invalid_client' ('who?') with HTTP 401; check the client id and secret under Manage > Developer in Checkfront and pass the right ones in OAuth2App, then log in",
        {"retryable": False, "status": 401},
    ),
    "login-verifier-too-long": (
        lambda: machine("oauth").handle(
            AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * 129)
        ),
        InvalidInput,
        "code_verifier: PKCE is on; pass 43 to 128 URL-safe characters (secrets.token_urlsafe(64)), or turn PKCE off with Config(pkce=False)",
        {"retryable": False},
    ),
    "exchange-send-failed-at-the-deadline": (
        lambda: exchange_send_failed(True, after=60),
        NetworkError,
        "the token request could not be completed: reset <hidden>",
        {"retryable": True},
    ),
    "exchange-send-failed-after-the-deadline": (
        lambda: exchange_send_failed(True, after=61),
        CodeExpired,
        "the authorization code could not be exchanged within 60 s of the redirect: log in again",
        {"retryable": False},
    ),
    "call-waiting-on-a-failed-exchange": (
        call_waiting_on_a_failed_exchange,
        ReauthorizationRequired,
        "the login failed (the token request could not be completed: reset): log in again",
        {"retryable": False},
    ),
    "redirect-location-of-200-quoted": (
        lambda: call_answered(302, [("Location", "https://evil.example/" + "a" * 179)]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {
            "retryable": False,
            "location": "https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        },
    ),
    "redirect-location-of-201-quoted": (
        lambda: call_answered(302, [("Location", "https://evil.example/" + "a" * 180)]),
        UntrustedRedirect,
        "redirect to 'https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' refused: evil.example is not this account's origin or a trusted migration target; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {
            "retryable": False,
            "location": "https://evil.example/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...",
        },
    ),
    "no-transition": (
        lambda: next_state(State.UNAUTHORIZED, Trigger.CODE_RECEIVED),
        LocalProtocolError,
        "no transition from unauthorized on code received; this is a bug in cfauth, please report it",
        {"retryable": False},
    ),
    "path-not-text": (
        lambda: api_call(cast(Any, 5)),
        InvalidInput,
        "path: pass the resource as a string, e.g. 'booking/index'",
        {"retryable": False},
    ),
    "call-when-the-grant-expired": (
        lambda: start(
            machine("oauth", TokenSet("access-1", "refresh-1", NOW - 1, NOW - 1, NOW - 14 * 86400))
        ),
        ReauthorizationRequired,
        "the refresh token has expired (14 days after it was issued): the OAuth2 grant is gone; log in again (a new OAuth2 authorization)",
        {"retryable": False},
    ),
    "call-when-the-grant-expired-with-params": (
        lambda: start(
            machine("oauth", TokenSet("access-1", "refresh-1", NOW - 1, NOW - 1, NOW - 14 * 86400)),
            params={"a": "1"},
        ),
        ReauthorizationRequired,
        "the refresh token has expired (14 days after it was issued): the OAuth2 grant is gone; log in again (a new OAuth2 authorization)",
        {"retryable": False},
    ),
    "redirect-two-closing-brackets": (
        lambda: call_answered(302, [("Location", "https://[::1]]/x")]),
        UntrustedRedirect,
        "redirect to 'https://[::1]]/x' refused: its port is not valid; no credentials were sent there. If the account really moved there, pass the host in trusted_hosts or use the new origin as the account",
        {"retryable": False, "location": "https://[::1]]/x"},
    ),
    "moved-to-two-closing-brackets": (
        lambda: Account.parse("acme").moved_to("https://[::1]]"),
        InvalidInput,
        "origin: the port must be a number, as in https://acme.checkfront.com:8443",
        {"retryable": False},
    ),
    "account-host-with-a-colon": (
        lambda: Account.parse("https://a:b:443"),
        InvalidInput,
        "account: 'a:b' is not a valid host name; pass e.g. 'https://acme.checkfront.com'",
        {"retryable": False},
    ),
    "header-bad-value": (
        lambda: api_call(headers=[("X-On-Behalf", "a\nb")]),
        InvalidInput,
        "headers: the value of X-On-Behalf must be a string of visible ASCII characters, with spaces or tabs only between them (no CR, LF, NUL or other control characters, no non-ASCII, no leading or trailing whitespace); percent-encode other text",
        {"retryable": False},
    ),
    "account-host-too-long": (
        lambda: Account.parse("https://" + ".".join(["a" * 63] * 3 + ["a" * 62])),
        InvalidInput,
        "account: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not a valid host name; pass e.g. 'https://acme.checkfront.com'",
        {"retryable": False},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_message(name: str) -> None:
    trigger, kind, message, attributes = CASES[name]
    error = error_of(trigger)
    assert type(error) is kind
    assert str(error) == message
    assert error.message == message
    assert repr(error) == f"{kind.__name__}({message!r})"
    for attribute, value in attributes.items():
        assert getattr(error, attribute) == value, attribute


def test_network_error_is_retryable_unless_told_otherwise() -> None:
    assert NetworkError("reset").retryable is True
    assert NetworkError("reset", retryable=False).retryable is False


VALID = {"access_token": "a-2", "refresh_token": "r-2"}


@pytest.mark.parametrize("error", ["", 5, None, ["invalid_grant"], {"x": 1}])
def test_an_error_field_that_is_no_error_code_leaves_the_response_to_the_other_checks(
    error: object,
) -> None:
    assert token_response({**VALID, "error": error}).access_token == "a-2"


@pytest.mark.parametrize(
    ("scope", "kept"), [("read write", "read write"), (5, None), (["r"], None)]
)
def test_a_scope_that_is_not_text_is_dropped(scope: object, kept: str | None) -> None:
    assert token_response({**VALID, "scope": scope}).scope == kept


@pytest.mark.parametrize("length", [43, 128])
def test_a_verifier_of_43_to_128_characters_is_taken(length: int) -> None:
    (authorize,) = machine("oauth").handle(
        AuthorizationRequested(now=NOW, state=STATE, code_verifier="v" * length)
    )
    assert "code_challenge=" in getattr(authorize, "url", "")


EVENTS_WITH_NOW = [
    lambda now: ClockTick(now=now),
    lambda now: LogoutRequested(now=now),
    lambda now: LeaseFailed(now=now),
    lambda now: TokensLoaded(now=now, tokens=None),
    lambda now: SendFailed(now=now, request_id=1),
    lambda now: CallRequested(now=now, method="GET", path="x"),
]


@pytest.mark.parametrize("make", EVENTS_WITH_NOW)
@pytest.mark.parametrize("now", [0, 0.0, 1_700_000_000, 1_700_000_000.5])
def test_now_is_any_non_negative_int_or_float(
    make: Callable[[object], object], now: object
) -> None:
    event: Any = make(now)
    assert event.now == now


@pytest.mark.parametrize("make", EVENTS_WITH_NOW)
@pytest.mark.parametrize("now", [-1, -0.5, float("inf"), float("nan"), True, "1", None])
def test_now_that_is_no_wall_clock_time_is_refused(
    make: Callable[[object], object], now: object
) -> None:
    with pytest.raises(InvalidInput) as caught:
        make(now)
    assert str(caught.value) == "now: pass the wall-clock time in seconds (time.time())"


@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
def test_a_token_of_8192_characters_is_the_longest_taken(field: str) -> None:
    assert getattr(token_response({**VALID, field: "t" * 8192}), field) == "t" * 8192
    with pytest.raises(RemoteProtocolError, match=f"no usable {field}"):
        token_response({**VALID, field: "t" * 8193})
