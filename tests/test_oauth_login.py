"""The OAuth2 authorization code flow: authorize URL, callback, code exchange."""

from __future__ import annotations

import json
from base64 import b64encode
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest

from cfauth_core import (
    Account,
    Action,
    AuthorizationDenied,
    AuthorizationFailed,
    AuthorizationRequested,
    AuthorizeAt,
    Authorized,
    CallAccepted,
    CallbackReceived,
    CallRequested,
    CfauthError,
    ClientCredentialsRejected,
    CodeExpired,
    Config,
    Fail,
    InvalidInput,
    Machine,
    OAuth2App,
    OAuthError,
    OAuthStateMismatch,
    ReauthorizationRequired,
    RemoteProtocolError,
    ResponseReceived,
    Send,
    SendFailed,
    State,
    Store,
    TokenSet,
    call_id_of,
)
from tests.helpers import one, only

NOW = 1_700_000_000.0
CLIENT_ID = "client-id"
CLIENT_SECRET = "s3cr+t"
REDIRECT_URI = "https://app.example/cb"
APP = OAuth2App(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
ORIGIN = "https://acme.checkfront.com"
TOKEN_URL = ORIGIN + "/oauth/token/"

# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

STATE = "Yx3p_Q8-vLr2mT0kWc9hZa"  # 22 URL-safe characters
OTHER_STATE = "Hq7_nB2-xPe5rU1sKd8jVb4"
CODE = "auth-code-123"
# RFC 6749 section 2.3.1: id and secret form-encoded, then Basic.
CLIENT_BASIC = "Basic " + b64encode(b"client-id:s3cr%2Bt").decode()
SECRET_FORMS = (CLIENT_SECRET, "s3cr%2Bt", "s3cr%2bt", CLIENT_BASIC.split()[1])

A = TypeVar("A", bound=Action)


def machine(config: Config | None = None) -> Machine:
    return Machine(Account.parse("acme"), APP, config=config)


def authorize(
    m: Machine, state: str = STATE, verifier: str | None = VERIFIER, now: float = NOW
) -> str:
    actions = m.handle(AuthorizationRequested(now=now, state=state, code_verifier=verifier))
    assert m.state is State.AUTHORIZING
    return one(actions, AuthorizeAt).url


def callback_url(state: str = STATE, code: str = CODE) -> str:
    return f"{REDIRECT_URI}?code={code}&state={state}"


def token_body(access: str = "AT-1", refresh: str = "RT-1", expires_in: int = 14000) -> bytes:
    return json.dumps(
        {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in,
            "token_type": "bearer",
        }
    ).encode()


def exchange_send(m: Machine, now: float = NOW, redirected_at: float | None = None) -> Send:
    actions = m.handle(CallbackReceived(now=now, url=callback_url(), redirected_at=redirected_at))
    assert m.state is State.EXCHANGING
    return one(actions, Send)


def form(body: bytes | None) -> dict[str, list[str]]:
    assert body is not None
    return parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


def headers(send: Send) -> dict[str, str]:
    return {name.lower(): value for name, value in send.request.headers}


def call(m: Machine, now: float = NOW) -> list[Action]:
    return m.handle(CallRequested(now=now, method="GET", path="booking/index"))


# -- the authorize URL ------------------------------------------------------------


def test_authorize_url_carries_exactly_the_required_parameters() -> None:
    url = authorize(machine())
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == ORIGIN + "/oauth/"
    assert parse_qs(parts.query, strict_parsing=True) == {
        "client_id": [CLIENT_ID],
        "response_type": ["code"],
        "redirect_uri": [REDIRECT_URI],
        "state": [STATE],
        "code_challenge": [CHALLENGE],
        "code_challenge_method": ["S256"],
    }


def test_authorize_url_never_carries_the_client_secret_or_the_verifier() -> None:
    url = authorize(machine())
    for secret in (*SECRET_FORMS, VERIFIER):
        assert secret not in url


def test_authorize_url_without_pkce() -> None:
    url = authorize(machine(Config(pkce=False)), verifier=None)
    query = parse_qs(urlsplit(url).query, strict_parsing=True)
    assert set(query) == {"client_id", "response_type", "redirect_uri", "state"}


def test_verifier_refused_when_pkce_is_off() -> None:
    m = machine(Config(pkce=False))
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    assert m.state is State.UNAUTHORIZED


@pytest.mark.parametrize(
    "verifier",
    [None, "", "a" * 42, "a" * 129, VERIFIER[:-1] + "+", VERIFIER[:-1] + "="],
    ids=["none", "empty", "short", "long", "plus", "padding"],
)
def test_bad_or_missing_verifier_refused_when_pkce_is_on(verifier: str | None) -> None:
    m = machine()
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=verifier))
    assert m.state is State.UNAUTHORIZED
    # Nothing was left pending: a callback is still not accepted.
    with pytest.raises(CfauthError):
        m.handle(CallbackReceived(now=NOW, url=callback_url()))


@pytest.mark.parametrize(
    "state",
    [
        "",
        "a" * 21,
        "Yx3p_Q8-vLr2mT0kWc9h+a",
        "Yx3p_Q8-vLr2mT0kWc9h/a",
        "Yx3p_Q8-vLr2mT0kWc9h a",
        "Yx3p_Q8-vLr2mT0kWc9h&a",
        "Yx3p_Q8-vLr2mT0kWc9h=a",
        "Yx3p_Q8-vLr2mT0kWc9h\u00e9a",
        "Yx3p_Q8-vLr2mT0kWc9h\na",
    ],
    ids=["empty", "short", "plus", "slash", "space", "amp", "equals", "non-ascii", "newline"],
)
def test_bad_state_is_refused_and_nothing_changes(state: str) -> None:
    m = machine()
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=state, code_verifier=VERIFIER))
    assert m.state is State.UNAUTHORIZED


def test_bad_state_during_a_pending_login_keeps_the_pending_login() -> None:
    m = machine()
    authorize(m)
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state="short", code_verifier=VERIFIER))
    assert m.state is State.AUTHORIZING
    send = exchange_send(m)
    assert form(send.request.body)["code_verifier"] == [VERIFIER]


def test_state_of_22_characters_is_enough() -> None:
    url = authorize(machine(), state="A" * 22)
    assert parse_qs(urlsplit(url).query)["state"] == ["A" * 22]


def test_a_state_cannot_be_reused_for_a_new_login() -> None:
    m = machine()
    authorize(m, state=STATE)
    authorize(m, state=OTHER_STATE)
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    assert m.state is State.AUTHORIZING
    actions = m.handle(CallbackReceived(now=NOW, url=callback_url(OTHER_STATE)))
    assert one(actions, Send).purpose == "exchange"


# -- the callback --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"{REDIRECT_URI}?code={CODE}&state={STATE}",
        f"{REDIRECT_URI}?state={STATE}&code={CODE}",
        f"code={CODE}&state={STATE}",
        f"?code={CODE}&state={STATE}",
        f"{REDIRECT_URI}?code={CODE}&state={STATE}#fragment",
    ],
    ids=["full-url", "reordered", "bare-query", "question-mark", "fragment"],
)
def test_callback_as_full_url_or_bare_query(url: str) -> None:
    m = machine()
    authorize(m)
    send = one(m.handle(CallbackReceived(now=NOW, url=url)), Send)
    assert form(send.request.body)["code"] == [CODE]
    assert m.state is State.EXCHANGING


def test_wrong_state_raises_and_leaves_the_login_pending() -> None:
    m = machine()
    authorize(m)
    with pytest.raises(OAuthStateMismatch):
        m.handle(CallbackReceived(now=NOW, url=callback_url(OTHER_STATE)))
    assert m.state is State.AUTHORIZING
    send = exchange_send(m)
    assert form(send.request.body)["code"] == [CODE]


@pytest.mark.parametrize(
    "url",
    [
        f"code={CODE}",
        f"code={CODE}&state=",
        f"code={CODE}&state={STATE}&state={STATE}",
        f"code={CODE}&state={OTHER_STATE}&state={STATE}",
        f"code={CODE}&state={STATE[:-1]}",
        f"code={CODE}&state={STATE}x",
    ],
    ids=["no-state", "empty-state", "two-same", "two-different", "prefix", "longer"],
)
def test_callback_without_one_matching_state_is_refused(url: str) -> None:
    m = machine()
    authorize(m)
    with pytest.raises(CfauthError):
        m.handle(CallbackReceived(now=NOW, url=url))
    assert m.state is State.AUTHORIZING
    assert exchange_send(m).purpose == "exchange"


def test_error_callback_with_wrong_state_cannot_abort_the_login() -> None:
    m = machine()
    authorize(m)
    with pytest.raises(OAuthStateMismatch):
        m.handle(CallbackReceived(now=NOW, url=f"error=access_denied&state={OTHER_STATE}"))
    assert m.state is State.AUTHORIZING
    assert exchange_send(m).purpose == "exchange"


def test_denied_authorization() -> None:
    m = machine()
    authorize(m)
    url = f"{REDIRECT_URI}?error=access_denied&error_description=The+user+said+no&state={STATE}"
    actions = m.handle(CallbackReceived(now=NOW, url=url))
    assert len(actions) == 1
    error = one(actions, AuthorizationFailed).error
    assert isinstance(error, AuthorizationDenied)
    assert error.error == "access_denied"
    assert error.description == "The user said no"
    assert m.state is State.UNAUTHORIZED


def test_second_callback_for_the_same_state_is_refused_after_an_exchange() -> None:
    m = machine()
    authorize(m)
    exchange_send(m)
    with pytest.raises(CfauthError):
        m.handle(CallbackReceived(now=NOW, url=callback_url(code="another-code")))
    assert m.state is State.EXCHANGING


def test_second_callback_for_the_same_state_is_refused_after_a_denial() -> None:
    m = machine()
    authorize(m)
    m.handle(CallbackReceived(now=NOW, url=f"error=access_denied&state={STATE}"))
    with pytest.raises(CfauthError):
        m.handle(CallbackReceived(now=NOW, url=callback_url()))
    assert m.state is State.UNAUTHORIZED


def test_second_callback_is_refused_after_a_new_login_started() -> None:
    m = machine()
    authorize(m)
    m.handle(CallbackReceived(now=NOW, url=f"error=access_denied&state={STATE}"))
    authorize(m, state=OTHER_STATE)
    with pytest.raises(OAuthStateMismatch):
        m.handle(CallbackReceived(now=NOW, url=callback_url(STATE)))
    assert m.state is State.AUTHORIZING


def test_old_state_refused_after_a_new_authorization_request() -> None:
    m = machine()
    authorize(m, state=STATE)
    authorize(m, state=OTHER_STATE)
    with pytest.raises(OAuthStateMismatch):
        m.handle(CallbackReceived(now=NOW, url=callback_url(STATE)))
    assert m.state is State.AUTHORIZING
    send = one(m.handle(CallbackReceived(now=NOW, url=callback_url(OTHER_STATE))), Send)
    assert form(send.request.body)["code"] == [CODE]


@pytest.mark.parametrize(
    "query",
    [f"state={STATE}", f"code=&state={STATE}", f"code=a&code=b&state={STATE}"],
    ids=["no-code", "empty-code", "two-codes"],
)
def test_callback_without_one_code_fails_the_login(query: str) -> None:
    m = machine()
    authorize(m)
    actions = m.handle(CallbackReceived(now=NOW, url=query))
    assert not only(actions, Send)
    assert isinstance(one(actions, AuthorizationFailed).error, RemoteProtocolError)
    assert m.state is State.UNAUTHORIZED


# -- the exchange --------------------------------------------------------------------


def test_exchange_request() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m, now=NOW, redirected_at=NOW - 5)
    assert send.purpose == "exchange"
    assert send.call_id is None
    assert send.deadline == NOW - 5 + 60
    assert send.request.method == "POST"
    assert send.request.url == TOKEN_URL
    assert form(send.request.body) == {
        "grant_type": ["authorization_code"],
        "code": [CODE],
        "redirect_uri": [REDIRECT_URI],
        "code_verifier": [VERIFIER],
    }
    sent = headers(send)
    assert sent["authorization"] == CLIENT_BASIC
    assert sent["content-type"] == "application/x-www-form-urlencoded"


def test_exchange_request_without_pkce_has_no_verifier() -> None:
    m = machine(Config(pkce=False))
    authorize(m, verifier=None)
    send = exchange_send(m)
    assert form(send.request.body) == {
        "grant_type": ["authorization_code"],
        "code": [CODE],
        "redirect_uri": [REDIRECT_URI],
    }


def test_client_secret_only_in_the_authorization_header() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    assert send.request.body is not None
    body = send.request.body.decode()
    for secret in SECRET_FORMS:
        assert secret not in send.request.url
        assert secret not in body
        for name, value in send.request.headers:
            if name.lower() != "authorization":
                assert secret not in value
    assert CLIENT_SECRET not in repr(send)
    assert CLIENT_BASIC.split()[1] not in repr(send)


def test_deadline_defaults_to_now() -> None:
    m = machine()
    authorize(m)
    assert exchange_send(m, now=NOW + 3).deadline == NOW + 3 + 60


def test_callback_on_the_deadline_is_still_exchanged() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m, now=NOW + 60, redirected_at=NOW)
    assert send.deadline == NOW + 60


def test_callback_after_the_deadline_fails_with_code_expired() -> None:
    m = machine()
    authorize(m)
    actions = m.handle(CallbackReceived(now=NOW + 60.5, url=callback_url(), redirected_at=NOW))
    assert not only(actions, Send)
    assert isinstance(one(actions, AuthorizationFailed).error, CodeExpired)
    assert m.state is State.UNAUTHORIZED
    with pytest.raises(CfauthError):
        m.handle(CallbackReceived(now=NOW + 61, url=callback_url(), redirected_at=NOW + 61))


def test_send_failed_after_the_deadline_is_code_expired() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m, now=NOW, redirected_at=NOW)
    actions = m.handle(SendFailed(now=NOW + 61, request_id=send.request_id, reason="timed out"))
    assert isinstance(one(actions, AuthorizationFailed).error, CodeExpired)
    assert not only(actions, Store)
    assert m.state is State.UNAUTHORIZED
    assert m.tokens is None


def test_send_failed_before_the_deadline_is_not_code_expired() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m, now=NOW, redirected_at=NOW)
    actions = m.handle(SendFailed(now=NOW + 10, request_id=send.request_id, reason="reset"))
    error = one(actions, AuthorizationFailed).error
    assert not isinstance(error, CodeExpired)
    assert error.retryable
    assert m.state is State.UNAUTHORIZED


def test_exchange_success_stores_then_authorizes() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    actions = m.handle(
        ResponseReceived(
            now=NOW + 1,
            request_id=send.request_id,
            status=200,
            headers=[("Content-Type", "application/json")],
            body=token_body(),
        )
    )
    assert len(actions) == 2
    store, authorized = actions
    assert isinstance(store, Store)
    assert isinstance(authorized, Authorized)
    tokens = store.tokens
    assert (tokens.access_token, tokens.refresh_token) == ("AT-1", "RT-1")
    assert tokens.expires_at == NOW + 1 + 14000
    assert tokens.refresh_expires_at == NOW + 1 + 14 * 24 * 3600
    assert tokens.updated_at == NOW + 1
    assert m.tokens == tokens
    assert m.state is State.READY


def test_calls_during_the_exchange_wait_and_go_after_the_store() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    waiting = [call(m, NOW + 0.5) for _ in range(3)]
    for actions in waiting:
        assert len(actions) == 1
        assert isinstance(actions[0], CallAccepted)
    call_ids = [one(actions, CallAccepted).call_id for actions in waiting]
    actions = m.handle(
        ResponseReceived(
            now=NOW + 1, request_id=send.request_id, status=200, headers=[], body=token_body()
        )
    )
    assert isinstance(actions[0], Store)
    assert isinstance(actions[1], Authorized)
    sends = actions[2:]
    assert [s.call_id for s in only(sends, Send)] == call_ids
    assert len(sends) == 3
    for s in only(sends, Send):
        assert s.purpose == "call"
        assert headers(s)["authorization"] == "Bearer AT-1"
        assert s.request.url.startswith(ORIGIN + "/api/3.0/booking/index")
        for secret in SECRET_FORMS:
            assert secret not in str(s.request.headers)


def test_exchange_answered_invalid_grant() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    waiting = one(call(m), CallAccepted).call_id
    body = json.dumps(
        {"error": "invalid_grant", "error_description": "Authorization code doesn't exist"}
    ).encode()
    actions = m.handle(
        ResponseReceived(now=NOW + 1, request_id=send.request_id, status=400, headers=[], body=body)
    )
    error = one(actions, AuthorizationFailed).error
    assert isinstance(error, OAuthError)
    assert error.error == "invalid_grant"
    assert error.status == 400
    assert not only(actions, Store)
    assert not only(actions, Send)
    assert one(actions, Fail).call_id == waiting
    assert m.state is State.UNAUTHORIZED
    assert m.tokens is None


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"access_token": "AT-1"}', b'{"access_token": "A\\nB"}'],
    ids=["html", "no-refresh-token", "newline"],
)
def test_exchange_answered_with_a_bad_token_response(body: bytes) -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    actions = m.handle(
        ResponseReceived(now=NOW + 1, request_id=send.request_id, status=200, headers=[], body=body)
    )
    assert isinstance(one(actions, AuthorizationFailed).error, RemoteProtocolError)
    assert not only(actions, Store)
    assert m.state is State.UNAUTHORIZED
    assert m.tokens is None


def test_login_again_after_a_failed_exchange() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    m.handle(SendFailed(now=NOW + 1, request_id=send.request_id))
    authorize(m, state=OTHER_STATE, now=NOW + 2)
    actions = m.handle(CallbackReceived(now=NOW + 3, url=callback_url(OTHER_STATE, "code-2")))
    assert form(one(actions, Send).request.body)["code"] == ["code-2"]


# -- calls without tokens ------------------------------------------------------------


def test_call_before_any_login_fails_with_reauthorization_required() -> None:
    m = machine()
    actions = call(m)
    assert len(actions) == 1
    (fail,) = actions
    assert isinstance(fail, Fail)
    assert fail.call_id == call_id_of(actions)
    assert isinstance(fail.error, ReauthorizationRequired)
    assert m.state is State.UNAUTHORIZED
    assert m.calls_in_progress == 0


def test_call_while_authorizing_fails_with_reauthorization_required() -> None:
    m = machine()
    authorize(m)
    assert isinstance(one(call(m), Fail).error, ReauthorizationRequired)
    assert m.state is State.AUTHORIZING


def test_machine_built_with_tokens_needs_no_login() -> None:
    tokens = TokenSet("AT-0", "RT-0", NOW + 14000, NOW + 14 * 24 * 3600, NOW)
    m = Machine(Account.parse("acme"), APP, tokens)
    assert m.state is State.READY
    assert headers(one(call(m), Send))["authorization"] == "Bearer AT-0"


def test_exchange_error_never_shows_the_code_verifier() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    body = json.dumps(
        {"error": "invalid_grant", "error_description": f"code_verifier {VERIFIER} mismatch"}
    ).encode()
    actions = m.handle(
        ResponseReceived(now=NOW + 1, request_id=send.request_id, status=400, headers=[], body=body)
    )
    error = one(actions, AuthorizationFailed).error
    assert isinstance(error, OAuthError)
    assert VERIFIER not in str(error)
    assert VERIFIER not in repr(error)
    assert error.description is not None
    assert VERIFIER not in error.description


def test_exchange_error_never_shows_the_client_secret() -> None:
    m = machine()
    authorize(m)
    send = exchange_send(m)
    body = json.dumps(
        {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}
    ).encode()
    actions = m.handle(
        ResponseReceived(now=NOW + 1, request_id=send.request_id, status=401, headers=[], body=body)
    )
    # The secret has a '+': the exchange is re-sent once with the raw credentials.
    retry = one(actions, Send)
    assert CLIENT_SECRET not in repr(actions)
    actions = m.handle(
        ResponseReceived(
            now=NOW + 1, request_id=retry.request_id, status=401, headers=[], body=body
        )
    )
    error = one(actions, AuthorizationFailed).error
    assert isinstance(error, ClientCredentialsRejected)
    assert isinstance(error.cause, OAuthError)
    assert error.cause.error == "invalid_client"
    assert CLIENT_SECRET not in str(error)
    assert CLIENT_SECRET not in str(error.cause)
    assert "bad secret" in str(error)
