"""Token pairs (``ApiKey``): a static Basic header, never refreshed."""

from __future__ import annotations

import contextlib
from base64 import b64encode
from typing import TypeVar
from urllib.parse import parse_qs

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    Action,
    ApiKey,
    AuthorizationRequested,
    CallbackReceived,
    CallRequested,
    ClockTick,
    CredentialsRejected,
    Deliver,
    Fail,
    InvalidInput,
    LocalProtocolError,
    Machine,
    NetworkError,
    ResponseReceived,
    Send,
    SendFailed,
    State,
    TokenSet,
    TokensLoaded,
    call_id_of,
)
from tests.helpers import one, only

NOW = 1_700_000_000.0
KEY = "0123456789abcdef"
SECRET = "pa55:w0rd+secret"
BASIC = "Basic " + b64encode(f"{KEY}:{SECRET}".encode()).decode()
API = "https://acme.checkfront.com/api/3.0/"

A = TypeVar("A", bound=Action)


def machine() -> Machine:
    return Machine(Account.parse("acme"), ApiKey(KEY, SECRET))


def state(m: Machine) -> State:
    return m.state


def header_values(send: Send, name: str) -> list[str]:
    return [v for n, v in send.request.headers if n.lower() == name]


def send_call(m: Machine, now: float = NOW, **kwargs: object) -> Send:
    fields: dict[str, object] = {"method": "GET", "path": "booking/index"}
    fields.update(kwargs)
    actions = m.handle(CallRequested(now=now, **fields))  # type: ignore[arg-type]
    assert len(actions) == 1
    (send,) = actions
    assert isinstance(send, Send)
    assert send.call_id == call_id_of(actions)
    assert send.purpose == "call"
    return send


def respond(
    m: Machine, send: Send, status: int, body: bytes = b"", now: float = NOW
) -> list[Action]:
    return m.handle(
        ResponseReceived(now=now, request_id=send.request_id, status=status, headers=[], body=body)
    )


# -- the header ------------------------------------------------------------------------


def test_every_call_carries_the_same_precomputed_basic_header() -> None:
    m = machine()
    assert state(m) is State.READY
    sends = [
        send_call(m, NOW),
        send_call(m, NOW + 20_000, path="item"),
        send_call(m, NOW + 30 * 86400, method="POST", path="booking/create", data={"a": "1"}),
    ]
    for send in sends:
        assert header_values(send, "authorization") == [BASIC]
    assert len({s.request_id for s in sends}) == 3
    assert len({s.call_id for s in sends}) == 3


def test_basic_header_is_not_form_encoded() -> None:
    # Token pairs are plain RFC 7617 Basic, unlike OAuth2 client credentials.
    assert ApiKey(KEY, SECRET).authorization == BASIC


def test_the_secret_appears_only_in_the_authorization_header() -> None:
    m = machine()
    send = send_call(m, params={"q": "x"})
    assert SECRET not in send.request.url
    for name, value in send.request.headers:
        if name.lower() != "authorization":
            assert SECRET not in value
            assert BASIC.split()[1] not in value
    assert SECRET not in repr(send)
    assert BASIC.split()[1] not in repr(send)
    assert SECRET not in repr(m)
    assert SECRET not in repr(ApiKey(KEY, SECRET))


def test_call_url_is_under_the_api_base() -> None:
    send = send_call(machine(), params={"status_id": "PAID"})
    assert send.request.method == "GET"
    assert send.request.url == API + "booking/index?status_id=PAID"
    assert send.request.body is None


# -- rejected pairs ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_pair_fails_the_call_without_retry(status: int) -> None:
    m = machine()
    send = send_call(m)
    body = b'{"error": "invalid_request", "error_description": "Malformed auth header."}'
    actions = respond(m, send, status, body)
    assert len(actions) == 1
    fail = one(actions, Fail)
    assert fail.call_id == send.call_id
    assert isinstance(fail.error, CredentialsRejected)
    assert fail.error.status == status
    assert not fail.error.retryable
    message = fail.error.message.lower()
    assert "rejected" in message
    assert "pair" in message
    assert SECRET not in str(fail.error)
    assert state(m) is State.READY
    assert m.calls_in_progress == 0
    # The next call goes out as before: nothing was refreshed or changed.
    assert header_values(send_call(m), "authorization") == [BASIC]


def test_no_refresh_is_ever_due() -> None:
    m = machine()
    seen: list[Action] = []
    for step in range(5):
        now = NOW + step * 15 * 86400
        send = send_call(m, now)
        seen += respond(m, send, 401, now=now)
        seen += m.handle(ClockTick(now=now))
    assert not only(seen, AcquireLease)
    assert not only(seen, Send)
    assert len(only(seen, Fail)) == 5
    assert m.tokens is None


@pytest.mark.parametrize("status", [200, 201, 400, 404, 409, 500])
def test_other_statuses_are_delivered(status: int) -> None:
    m = machine()
    send = send_call(m)
    body = b'{"request": {"status": "OK"}}'
    actions = respond(m, send, status, body)
    assert len(actions) == 1
    deliver = one(actions, Deliver)
    assert deliver.call_id == send.call_id
    assert deliver.status == status
    assert deliver.body == body
    assert deliver.url == API + "booking/index"


def test_400_with_invalid_token_challenge_is_delivered_not_refreshed() -> None:
    m = machine()
    send = send_call(m)
    challenge = ("WWW-Authenticate", 'Bearer error="invalid_token"')
    actions = m.handle(
        ResponseReceived(
            now=NOW, request_id=send.request_id, status=400, headers=[challenge], body=b""
        )
    )
    assert not only(actions, AcquireLease)
    assert one(actions, Deliver).status == 400


# -- OAuth2 events are refused -------------------------------------------------------------


def test_authorization_requested_is_refused() -> None:
    m = machine()
    with pytest.raises(LocalProtocolError):
        m.handle(
            AuthorizationRequested(
                now=NOW,
                state="Yx3p_Q8-vLr2mT0kWc9hZa",
                code_verifier="dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            )
        )
    assert state(m) is State.READY
    assert header_values(send_call(m), "authorization") == [BASIC]


def test_callback_is_refused() -> None:
    m = machine()
    with pytest.raises(LocalProtocolError):
        m.handle(CallbackReceived(now=NOW, url="code=x&state=Yx3p_Q8-vLr2mT0kWc9hZa"))
    assert state(m) is State.READY


def test_machine_with_a_token_pair_takes_no_tokens() -> None:
    tokens = TokenSet("AT-0", "RT-0", NOW + 14000, NOW + 14 * 86400, NOW)
    with pytest.raises(InvalidInput):
        Machine(Account.parse("acme"), ApiKey(KEY, SECRET), tokens)


def test_tokens_loaded_never_replaces_the_pair() -> None:
    m = machine()
    tokens = TokenSet("AT-0", "RT-0", NOW + 14000, NOW + 14 * 86400, NOW)
    with contextlib.suppress(LocalProtocolError):  # refusing it is fine too
        m.handle(TokensLoaded(now=NOW, tokens=tokens))
    assert m.tokens is None
    assert header_values(send_call(m), "authorization") == [BASIC]


# -- headers and bodies ------------------------------------------------------------------------


def test_extra_headers_are_passed_through() -> None:
    extra = [("X-On-Behalf", "42"), ("X-Forwarded-For", "203.0.113.7")]
    send = send_call(machine(), headers=extra)
    assert header_values(send, "x-on-behalf") == ["42"]
    assert header_values(send, "x-forwarded-for") == ["203.0.113.7"]
    assert header_values(send, "authorization") == [BASIC]


@pytest.mark.parametrize(
    "name", ["Authorization", "authorization", "AUTHORIZATION", "Proxy-Authorization"]
)
def test_caller_authorization_header_is_refused(name: str) -> None:
    m = machine()
    with pytest.raises(InvalidInput):
        m.handle(
            CallRequested(
                now=NOW, method="GET", path="booking/index", headers=[(name, "Bearer stolen")]
            )
        )
    assert m.calls_in_progress == 0
    assert header_values(send_call(m), "authorization") == [BASIC]


@pytest.mark.parametrize(
    "value", ["42\r\nAuthorization: Basic x", "42\nX: y", "42\x00"], ids=["crlf", "lf", "nul"]
)
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        CallRequested(now=NOW, method="GET", path="booking/index", headers=[("X-On-Behalf", value)])


def test_post_data_becomes_a_form_body() -> None:
    data = {"item_id": "12", "name": "A & B", "tags": ["x", "y"]}
    send = send_call(machine(), method="POST", path="booking/create", data=data)
    assert send.request.method == "POST"
    assert send.request.url == API + "booking/create"
    assert header_values(send, "content-type") == ["application/x-www-form-urlencoded"]
    assert send.request.body is not None
    assert parse_qs(send.request.body.decode("ascii"), strict_parsing=True) == {
        "item_id": ["12"],
        "name": ["A & B"],
        "tags": ["x", "y"],
    }
    assert header_values(send, "authorization") == [BASIC]


def test_get_has_no_body_and_no_content_type() -> None:
    send = send_call(machine())
    assert send.request.body is None
    assert header_values(send, "content-type") == []


def test_get_with_data_is_refused() -> None:
    with pytest.raises(InvalidInput):
        CallRequested(now=NOW, method="GET", path="booking/index", data={"a": "1"})


@pytest.mark.parametrize("retryable", [True, False])
def test_a_transport_failure_says_whether_to_retry(retryable: bool) -> None:
    m = machine()
    send = send_call(m)
    reason = "the TLS certificate of acme.checkfront.com was not trusted; pass ca_file="
    actions = m.handle(
        SendFailed(now=NOW, request_id=send.request_id, reason=reason, retryable=retryable)
    )
    error = one(actions, Fail).error
    assert isinstance(error, NetworkError)
    assert error.retryable is retryable
    assert reason in str(error)
    assert ("may be retried" in str(error)) is retryable
