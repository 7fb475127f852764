"""What a hostile or merely unusual server can do to the machine.

Each test drives a real :class:`Machine` with no I/O through sequences a
server controls, and checks that ``handle()`` neither raises nor wedges the
grant: every token request ends, the lease is released, calls end.
"""

from __future__ import annotations

import base64
import json
from typing import TypeVar
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth_core import (
    Account,
    AccountMoved,
    AcquireLease,
    Action,
    ActionRequired,
    ApiKey,
    AuthorizationDenied,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    AuthorizeAt,
    Authorized,
    CallbackReceived,
    CallRequested,
    ClientCredentialsRejected,
    ClockTick,
    Config,
    Deliver,
    Fail,
    Forget,
    InvalidInput,
    InvalidTokenRecord,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    OAuth2App,
    OAuthError,
    ReauthorizationRequired,
    RefreshAborted,
    RefreshFailed,
    ReleaseLease,
    ResponseReceived,
    Send,
    State,
    Store,
    TokenSet,
    TokensLoaded,
    UntrustedRedirect,
)
from cfauth_core._account import is_oauth_path
from tests.helpers import only

NOW = 1_700_000_000.0
ACME = "https://acme.checkfront.com"
NA1 = "https://acme.manage.na1.bookingplatform.app"
EU1 = "https://acme.manage.eu1.bookingplatform.app"
TOKEN_PATH = "/oauth/token/"
APP = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/callback")
STATE = "s" * 22
VERIFIER = "v" * 43

A = TypeVar("A", bound=Action)


def state_of(m: Machine) -> State:
    return m.state


def tokens(n: int, *, at: float = NOW, life: float = 14000.0) -> TokenSet:
    return TokenSet(f"access-{n:04d}", f"refresh-{n:04d}", at + life, at + 14 * 86400, at)


def token_body(n: int) -> bytes:
    return json.dumps(
        {
            "access_token": f"access-{n:04d}",
            "refresh_token": f"refresh-{n:04d}",
            "expires_in": 14000,
        }
    ).encode()


def answer(
    m: Machine, send: Send, status: int, body: bytes = b"", location: str | None = None
) -> list[Action]:
    headers = (("Location", location),) if location is not None else ()
    return m.handle(
        ResponseReceived(
            now=NOW, request_id=send.request_id, status=status, headers=headers, body=body
        )
    )


def start_refresh_with_call_in_flight(m: Machine) -> tuple[Send, Send]:
    """A call goes out with a fresh token; then a tick starts a (forced) refresh."""
    (call,) = m.handle(CallRequested(now=NOW, method="GET", path="booking/index"))
    assert isinstance(call, Send)
    later = NOW + 13_800
    (due,) = m.handle(ClockTick(now=later))
    assert isinstance(due, AcquireLease)
    (refresh,) = m.handle(TokensLoaded(now=later, tokens=m.tokens))
    assert isinstance(refresh, Send)
    assert refresh.purpose == "refresh"
    return call, refresh


def start_exchange_with_call_in_flight(m: Machine) -> tuple[Send, Send]:
    """A call is in flight (old tokens) while a new login's code is exchanged: the
    grant was lost (the refresh answered invalid_grant) and the user logged in again."""
    call, refresh = start_refresh_with_call_in_flight(m)
    answer(m, refresh, 400, b'{"error":"invalid_grant"}')
    assert m.state is State.REAUTHORIZATION_REQUIRED
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    (exchange,) = m.handle(
        CallbackReceived(now=NOW, url=f"https://app.example/callback?code=c0de&state={STATE}")
    )
    assert isinstance(exchange, Send)
    assert exchange.purpose == "exchange"
    return call, exchange


# -- 1. migrations racing token requests ----------------------------------------------


@pytest.mark.parametrize("purpose", ["refresh", "exchange"])
@pytest.mark.parametrize("call_status", [301, 308])
@pytest.mark.parametrize("token_status", [301, 307, 308])
@pytest.mark.parametrize("target", [NA1, EU1])
@pytest.mark.parametrize("order", ["call-first", "token-first"])
def test_migration_racing_a_token_request_never_wedges_the_grant(
    purpose: str, call_status: int, token_status: int, target: str, order: str
) -> None:
    """A call's 301/308 moves the account while a token request is in flight, and the
    token request itself is redirected to the new origin's /oauth/token/ (in either
    order): handle() never raises, the token request ends, the lease is released."""
    m = Machine(Account.parse("acme"), APP, tokens(1))
    if purpose == "refresh":
        call, token = start_refresh_with_call_in_flight(m)
    else:
        call, token = start_exchange_with_call_in_flight(m)
    seen: list[Action] = []
    if order == "call-first":
        seen += answer(m, call, call_status, location=NA1 + "/api/3.0/booking/index")
        seen += answer(m, token, token_status, location=target + TOKEN_PATH)
    else:
        seen += answer(m, token, token_status, location=target + TOKEN_PATH)
        seen += answer(m, call, call_status, location=NA1 + "/api/3.0/booking/index")
    # Whatever was re-sent is answered 200 until nothing is left in flight.
    for _ in range(10):
        sends = [a for a in seen if isinstance(a, Send)]
        if not sends:
            break
        seen = []
        for send in sends:
            body = token_body(2) if send.purpose != "call" else b"{}"
            seen += answer(m, send, 200, body)
    assert m.state is State.READY
    assert m.calls_in_progress == 0
    assert m.account.origin in (NA1, EU1)


def test_token_redirect_to_the_moved_accounts_own_token_url_is_followed() -> None:
    """The exact sequence: refresh in flight, a call's 301 moves the account to na1,
    then the refresh is redirected to na1's /oauth/token/ (the account's own origin
    now): it is re-sent there, and its success stores tokens and releases the lease."""
    m = Machine(Account.parse("acme"), APP, tokens(1))
    call, refresh = start_refresh_with_call_in_flight(m)
    moved = answer(m, call, 301, location=NA1 + "/api/3.0/booking/index")
    assert only(moved, AccountMoved) == [AccountMoved(ACME, NA1)]
    (resend,) = answer(m, refresh, 308, location=NA1 + TOKEN_PATH)
    assert isinstance(resend, Send)
    assert resend.request.url == NA1 + TOKEN_PATH
    assert resend.purpose == "refresh"
    done = answer(m, resend, 200, token_body(2))
    assert [type(a) for a in done] == [Store, ReleaseLease, Send]  # the moved call
    assert m.state is State.READY


# -- 2. Post/Redirect/Get is not a loop ------------------------------------------------

API_KEY = ApiKey("key-0123456789", "apikey-secret-value")


def sent_call(m: Machine, method: str, path: str = "booking/create") -> Send:
    data = {"item_id": "1"} if method != "GET" else None
    (send,) = m.handle(CallRequested(now=NOW, method=method, path=path, data=data))
    assert isinstance(send, Send)
    return send


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("oauth", [True, False], ids=["bearer", "api-key"])
@pytest.mark.parametrize("where", ["same-url", "same-url-absolute", "other-path"])
def test_post_redirect_get_to_the_same_url_is_followed(
    method: str, oauth: bool, where: str
) -> None:
    """A POST answered 303 with Location equal to the request URL was processed;
    the follow-up is a GET of that URL, not a loop."""
    m = (
        Machine(Account.parse("acme"), APP, tokens(1))
        if oauth
        else Machine(Account.parse("acme"), API_KEY)
    )
    send = sent_call(m, method)
    location = {
        "same-url": send.request.url[len(ACME) :],
        "same-url-absolute": send.request.url,
        "other-path": "/api/3.0/booking/index",
    }[where]
    (get,) = answer(m, send, 303, location=location)
    assert isinstance(get, Send)
    assert get.request.method == "GET"
    assert get.request.body is None
    (deliver,) = answer(m, get, 200, b"{}")
    assert isinstance(deliver, Deliver)
    # But the GET redirected to itself again is a loop.
    send = sent_call(m, method)
    (again,) = answer(m, send, 303, location=send.request.url)
    assert isinstance(again, Send)
    (fail,) = answer(m, again, 303, location=send.request.url)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, UntrustedRedirect)
    assert "loops back" in fail.error.message


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_same_method_to_the_same_url_is_still_a_loop(status: int) -> None:
    m = Machine(Account.parse("acme"), API_KEY)
    send = sent_call(m, "POST")
    (fail,) = answer(m, send, status, location=send.request.url)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, UntrustedRedirect)


@pytest.mark.parametrize(
    "location",
    [
        "/api/3.0/booking/index",  # the account's own origin
        NA1 + "/api/3.0/booking/index",  # a trusted migration target
    ],
)
def test_loop_error_does_not_suggest_trusting_a_host(location: str) -> None:
    """A loop means the target was trusted already: the hint is to check the URL,
    not to add the host to trusted_hosts."""
    m = Machine(Account.parse("acme"), API_KEY)
    send = sent_call(m, "GET", "item")
    (again,) = answer(m, send, 302, location=location)
    assert isinstance(again, Send)
    (fail,) = answer(m, again, 302, location=location)
    assert isinstance(fail, Fail)
    error = fail.error
    assert isinstance(error, UntrustedRedirect)
    assert "loops back" in error.message
    assert "trusted_hosts" not in error.message
    assert "new origin" not in error.message
    assert "check the account URL and the path" in error.message


def test_too_many_redirects_does_not_suggest_trusting_a_host() -> None:
    m = Machine(Account.parse("acme"), API_KEY)
    send = sent_call(m, "GET", "booking/index")
    for hop in range(5):
        (follow,) = answer(m, send, 302, location=f"/api/3.0/booking/index?hop={hop}")
        assert isinstance(follow, Send)
        send = follow
    (fail,) = answer(m, send, 302, location="/api/3.0/booking/index?hop=9")
    assert isinstance(fail, Fail)
    assert "more than 5 redirects" in fail.error.message
    assert "trusted_hosts" not in fail.error.message


# -- 3. only invalid_grant ends a grant ---------------------------------------------------


def refresh_in_flight(calls: int = 2) -> tuple[Machine, Send, list[int]]:
    """An expiring grant: calls wait while the refresh is in flight."""
    m = Machine(Account.parse("acme"), APP, tokens(1, at=NOW - 13_900))
    ids = []
    for _ in range(calls):
        actions = m.handle(CallRequested(now=NOW, method="GET", path="booking/index"))
        ids.append(actions[0].call_id)  # type: ignore[attr-defined]
    assert m.state is State.LEASING
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    return m, refresh, ids


def assert_grant_kept(m: Machine, before: TokenSet | None) -> None:
    assert m.state is State.READY
    assert m.tokens == before
    # The same refresh token is sent again on the next refresh: it was not blocked.
    actions = m.handle(CallRequested(now=NOW + 1, method="GET", path="booking/index"))
    assert isinstance(actions[-1], AcquireLease)
    (again,) = m.handle(TokensLoaded(now=NOW + 1, tokens=before))
    assert isinstance(again, Send)
    assert b"refresh-0001" in (again.request.body or b"")
    # And the stored pair is adopted again if the store offers it.
    m2 = Machine(Account.parse("acme"), APP)
    m2.handle(TokensLoaded(now=NOW, tokens=before))
    assert m2.tokens == before


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize(
    "body",
    [
        b'{"error":"invalid_client","error_description":"The client credentials are invalid"}',
        b'{"error":"invalid_client"}',
    ],
)
def test_invalid_client_on_refresh_keeps_the_grant(status: int, body: bytes) -> None:
    m, refresh, ids = refresh_in_flight()
    before = m.tokens
    done = answer(m, refresh, status, body)
    kinds = [type(a) for a in done]
    assert Store not in kinds
    assert AuthorizationLost not in kinds
    assert ReleaseLease in kinds
    (aborted,) = only(done, RefreshAborted)
    error = aborted.error
    assert isinstance(error, ClientCredentialsRejected)
    assert isinstance(error, ActionRequired)
    assert not error.retryable
    assert error.status == status
    assert "client id and secret" in error.message
    assert "Manage > Developer" in error.message
    assert [f.call_id for f in only(done, Fail)] == ids
    assert all(f.error is error for f in only(done, Fail))
    assert_grant_kept(m, before)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b"<html><body>Bad Request</body></html>"),
        (401, b"<html><body>Authorization Required</body></html>"),
        (401, b""),
        (400, b""),
        (500, b"<html>Internal Server Error</html>"),
        (502, b"Bad Gateway"),
        (503, b'{"error":"temporarily_unavailable"}'),
        (400, b'{"error":"temporarily_unavailable"}'),
        (400, b'{"error":"invalid_request","error_description":"The request is missing"}'),
        (200, b'{"error":"server_error"}'),
        (400, b'["not", "an", "error", "object"]'),
    ],
)
def test_refresh_answers_that_are_not_invalid_grant_keep_the_grant(
    status: int, body: bytes
) -> None:
    m, refresh, ids = refresh_in_flight()
    before = m.tokens
    done = answer(m, refresh, status, body)
    assert AuthorizationLost not in [type(a) for a in done]
    (aborted,) = only(done, RefreshAborted)
    error = aborted.error
    assert isinstance(error, RefreshFailed)
    assert error.retryable
    assert error.status == status
    assert f"HTTP {status}" in error.message
    assert [f.call_id for f in only(done, Fail)] == ids
    assert_grant_kept(m, before)


@pytest.mark.parametrize("status", [200, 400, 401])
def test_only_invalid_grant_loses_the_grant(status: int) -> None:
    m, refresh, _ = refresh_in_flight()
    done = answer(m, refresh, status, b'{"error":"invalid_grant"}')
    (lost,) = only(done, AuthorizationLost)
    assert isinstance(lost.error, ReauthorizationRequired)
    assert m.state is State.REAUTHORIZATION_REQUIRED


@pytest.mark.parametrize("status", [400, 401])
def test_invalid_client_on_exchange_says_to_check_the_client_credentials(status: int) -> None:
    m = Machine(Account.parse("acme"), APP)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    (exchange,) = m.handle(
        CallbackReceived(now=NOW, url=f"https://app.example/callback?code=c0de&state={STATE}")
    )
    assert isinstance(exchange, Send)
    (failed,) = answer(m, exchange, status, b'{"error":"invalid_client"}')
    assert isinstance(failed, AuthorizationFailed)
    assert isinstance(failed.error, ClientCredentialsRejected)
    assert "client id and secret" in failed.error.message


# -- 5. API credentials never go to /oauth*, however the path is spelt ---------------------


def _spell(text: str, draw: st.DrawFn) -> str:
    out = []
    for char in text:
        how = draw(st.sampled_from(["keep", "upper", "pct", "pct-upper", "pct-twice"]))
        if how == "upper":
            out.append(char.upper())
        elif how == "pct":
            out.append(f"%{ord(char):02x}")
        elif how == "pct-upper":
            out.append(f"%{ord(char):02X}")
        elif how == "pct-twice":
            out.append(f"%25{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


@st.composite
def oauth_paths(draw: st.DrawFn) -> str:
    """``/oauth/token/`` or ``/oauth/`` as a hostile server may spell it."""
    prefix = draw(
        st.lists(
            st.sampled_from(
                ["", ".", "%2e", "%2E", "api/..", "api/3.0/../..", "x/%2e%2e", "x/%2E.", "./."]
            ),
            max_size=3,
        )
    )
    word = _spell("oauth", draw)
    rest = draw(st.sampled_from(["/token/", "/", "/token", "", "/token/?x=1", ";x=1/token/"]))
    if "/" in rest and draw(st.booleans()):
        rest = "/" + _spell(rest.strip("/"), draw) + "/"
    path = "/".join(["", *prefix, word]) + rest
    if draw(st.booleans()):
        path = "/" + path  # //oauth...
    return path


@given(path=oauth_paths(), oauth=st.booleans(), status=st.sampled_from([301, 302, 307, 308]))
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_call_redirect_to_any_spelling_of_oauth_is_refused(
    path: str, oauth: bool, status: int
) -> None:
    m = (
        Machine(Account.parse("acme"), APP, tokens(1))
        if oauth
        else Machine(Account.parse("acme"), API_KEY)
    )
    send = sent_call(m, "GET", "booking/index")
    for location in (path, ACME + path, NA1 + path):
        actions = answer(m, send, status, location=location)
        assert not only(actions, Send), f"credentials followed {location!r}"
        (fail,) = only(actions, Fail)
        assert isinstance(fail.error, UntrustedRedirect)
        send = sent_call(m, "GET", "booking/index")


@pytest.mark.parametrize(
    "path",
    [
        "/%6fauth/token/",
        "/%2e/oauth/token/",
        "/OAUTH/",
        "//oauth/token/",
        "/api/%2e%2e/oauth/token/",
        "/api/3.0/%2E%2E/%2e%2e/oauth/token/",
        "/%4F%41%55%54%48/TOKEN/",
        "/%256fauth/token/",
        "/\uff4fauth/token/",
        "/../oauth/token/",  # '..' above the root stays at the root
        "/..%2f%2e%2e/OAuth",
        "/%" + "25" * 4 + "6fauth/token/",  # percent-encoded five times over
    ],
)
def test_is_oauth_path_examples(path: str) -> None:
    assert is_oauth_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/3.0/booking/index",
        "/api/3.0/oauth/token/",
        "/",
        "",
        "/api/3.0/%6fauth",
        "/%" + "25" * 5 + "6fauth/token/",  # six times: no server decodes that often
    ],
)
def test_api_paths_are_not_oauth_paths(path: str) -> None:
    assert not is_oauth_path(path)


# -- 7. every message says what to do next ----------------------------------------------

#: Words that name a next step; every message holds one of them.
NEXT_STEP = (
    "check",
    "log in",
    "try again",
    "retry",
    "start the login",
    "pass ",
    "use ",
    "fix",
    "slow down",
)


@pytest.mark.parametrize(
    "error",
    [
        OAuthError("invalid_request"),
        OAuthError("invalid_request", "The access token was not found.", status=400),
        OAuthError("invalid_grant", status=400),
        OAuthError("invalid_client", "The client credentials are invalid", status=401),
        OAuthError("unsupported_grant_type", status=400),
        OAuthError("insufficient_scope", "You do not have access to this resource.", status=403),
        OAuthError("server_error"),
        AuthorizationDenied("access_denied"),
        AuthorizationDenied("access_denied", "The user denied access to your application"),
        AuthorizationDenied("invalid_scope", None),
        AuthorizationDenied("server_error", "try later"),
    ],
    ids=repr,
)
def test_oauth_errors_say_what_to_do_next(error: OAuthError) -> None:
    message = error.message
    assert error.error in message
    assert any(step in message.lower() for step in NEXT_STEP), message


def test_authorization_denied_says_to_start_the_login_again() -> None:
    message = AuthorizationDenied("access_denied").message
    assert "start the login again" in message


def test_token_record_without_version_is_not_a_cfauth_record() -> None:
    record = tokens(1).to_dict()
    del record["version"]
    with pytest.raises(InvalidTokenRecord) as info:
        TokenSet.from_dict(record)
    message = info.value.message
    assert "not a cfauth token record" in message
    assert "upgrade" not in message
    assert "TokenSet.to_dict" in message
    # An OAuth token response pasted in is not one either.
    with pytest.raises(InvalidTokenRecord, match="not a cfauth token record"):
        TokenSet.from_dict({"access_token": "a", "refresh_token": "b", "expires_in": 14000})
    # A record of a newer version still says to upgrade.
    with pytest.raises(InvalidTokenRecord, match="upgrade cfauth"):
        TokenSet.from_dict({**tokens(1).to_dict(), "version": 2})


@pytest.mark.parametrize("api_base", ["/api/3.0/", "/api/4.0/"])
@pytest.mark.parametrize("prefix", ["", "/", "{base}", "{base_no_slash}"])
@pytest.mark.parametrize("resource", ["booking/index", "item/42", "customer"])
def test_paths_with_the_api_prefix_are_accepted_as_if_absent(
    api_base: str, prefix: str, resource: str
) -> None:
    account = Account.parse("acme", api_base=api_base)
    path = prefix.format(base=api_base, base_no_slash=api_base.lstrip("/")) + resource
    assert account.api_path(path) == api_base + resource
    assert account.api_url(path, {"page": 2}) == ACME + api_base + resource + "?page=2"


def test_refresh_leeway_docstring_states_the_half_lifetime_cap() -> None:
    doc = " ".join((Config.__doc__ or "").split())
    assert "half" in doc
    assert "refresh_leeway" in doc


# -- 4. client authentication that works on real servers ---------------------------------

SPECIAL_SECRET = "s+c:r%t ë/x=y"
SPECIAL_APP = OAuth2App("app-1", SPECIAL_SECRET, "https://app.example/callback")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def client_header(send: Send) -> str:
    return dict(send.request.headers)["Authorization"]


def special_refresh(
    config: Config | None = None, client_auth: str | None = None
) -> tuple[Machine, Send]:
    m = Machine(
        Account.parse("acme"),
        SPECIAL_APP,
        tokens(1, at=NOW - 13_900),
        config=config,
        client_auth=client_auth,
    )
    m.handle(ClockTick(now=NOW))
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    return m, refresh


ENCODED = basic("app-1", quote(SPECIAL_SECRET, safe=""))
RAW = basic("app-1", SPECIAL_SECRET)
INVALID_CLIENT = (
    b'{"error":"invalid_client","error_description":"The client credentials are invalid"}'
)


def test_client_credentials_are_percent_encoded_with_space_as_20() -> None:
    """The one encoded form every decoding server reads back: '+' as %2B, ' ' as %20."""
    assert SPECIAL_APP.token_authorization == ENCODED
    user, _, password = base64.b64decode(ENCODED[6:]).decode().partition(":")
    assert user == "app-1"
    assert password == "s%2Bc%3Ar%25t%20%C3%AB%2Fx%3Dy"
    assert "+" not in password


@given(
    client_id=st.text("abcdefABCDEF0123456789-._~", min_size=1, max_size=40),
    secret=st.text("abcdefABCDEF0123456789", min_size=1, max_size=64),
)
@settings(max_examples=100, deadline=None, derandomize=True, database=None)
def test_plain_secrets_send_exactly_what_they_sent_before(client_id: str, secret: str) -> None:
    app = OAuth2App(client_id, secret, "https://app.example/callback")
    expected = basic(quote_plus(client_id, safe=""), quote_plus(secret, safe=""))
    assert app.token_authorization == expected == basic(client_id, secret)
    # And no fallback: invalid_client is final at once.
    m = Machine(Account.parse("acme"), app, tokens(1, at=NOW - 13_900))
    m.handle(ClockTick(now=NOW))
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    done = answer(m, refresh, 401, INVALID_CLIENT)
    assert not only(done, Send)
    (aborted,) = only(done, RefreshAborted)
    assert isinstance(aborted.error, ClientCredentialsRejected)
    assert "both" not in aborted.error.message


@pytest.mark.parametrize("status", [400, 401])
def test_raw_form_is_tried_once_after_invalid_client_and_kept(status: int) -> None:
    """A server that compares the credentials raw refuses the encoded form: cfauth
    re-sends once with the raw form, and keeps using the form that worked."""
    m, refresh = special_refresh()
    assert m.client_auth == "rfc6749"
    assert client_header(refresh) == ENCODED
    (retry,) = answer(m, refresh, status, INVALID_CLIENT)
    assert isinstance(retry, Send)
    assert retry.purpose == "refresh"
    assert retry.request.url == refresh.request.url
    assert retry.request.body == refresh.request.body
    assert client_header(retry) == RAW
    done = answer(m, retry, 200, token_body(2))
    (store,) = only(done, Store)
    assert store.client_auth == "raw"
    assert m.client_auth == "raw"
    assert only(done, ReleaseLease)
    # The next refresh goes raw straight away.
    later = NOW + 14_000
    m.handle(ClockTick(now=later))
    (again,) = m.handle(TokensLoaded(now=later, tokens=m.tokens))
    assert isinstance(again, Send)
    assert client_header(again) == RAW


def test_when_both_forms_fail_the_error_says_so() -> None:
    m, refresh = special_refresh()
    (retry,) = answer(m, refresh, 401, INVALID_CLIENT)
    assert isinstance(retry, Send)
    done = answer(m, retry, 401, INVALID_CLIENT)
    assert not only(done, Send)
    (aborted,) = only(done, RefreshAborted)
    error = aborted.error
    assert isinstance(error, ClientCredentialsRejected)
    assert "both" in error.message
    assert "form-encoded" in error.message
    assert "raw" in error.message
    assert SPECIAL_SECRET not in error.message
    assert m.client_auth == "rfc6749"
    assert m.tokens == tokens(1, at=NOW - 13_900)


def test_a_learnt_raw_form_falls_back_to_the_encoded_one() -> None:
    m, refresh = special_refresh(client_auth="raw")
    assert client_header(refresh) == RAW
    (retry,) = answer(m, refresh, 401, INVALID_CLIENT)
    assert isinstance(retry, Send)
    assert client_header(retry) == ENCODED
    done = answer(m, retry, 200, token_body(2))
    assert only(done, Store)[0].client_auth == "rfc6749"


@pytest.mark.parametrize("pinned", ["rfc6749", "raw"])
def test_a_pinned_form_never_falls_back(pinned: str) -> None:
    m, refresh = special_refresh(Config(client_auth=pinned), client_auth="raw")
    assert client_header(refresh) == (ENCODED if pinned == "rfc6749" else RAW)
    done = answer(m, refresh, 401, INVALID_CLIENT)
    assert not only(done, Send)
    assert isinstance(only(done, RefreshAborted)[0].error, ClientCredentialsRejected)
    assert m.client_auth == pinned


def test_other_errors_do_not_trigger_the_fallback() -> None:
    m, refresh = special_refresh()
    done = answer(m, refresh, 400, b'{"error":"invalid_grant"}')
    assert not only(done, Send)
    assert only(done, AuthorizationLost)


def test_the_learnt_form_comes_back_through_tokens_loaded() -> None:
    m = Machine(Account.parse("acme"), SPECIAL_APP)
    m.handle(TokensLoaded(now=NOW, tokens=tokens(1, at=NOW - 13_900), client_auth="raw"))
    assert m.client_auth == "raw"
    m.handle(ClockTick(now=NOW))
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    assert client_header(refresh) == RAW


def test_the_exchange_falls_back_too() -> None:
    m = Machine(Account.parse("acme"), SPECIAL_APP)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    (exchange,) = m.handle(
        CallbackReceived(now=NOW, url=f"https://app.example/callback?code=c0de&state={STATE}")
    )
    assert isinstance(exchange, Send)
    (retry,) = answer(m, exchange, 401, INVALID_CLIENT)
    assert isinstance(retry, Send)
    assert retry.purpose == "exchange"
    assert retry.deadline == exchange.deadline
    assert client_header(retry) == RAW
    done = answer(m, retry, 200, token_body(2))
    assert only(done, Store)[0].client_auth == "raw"
    assert m.state is State.READY


@pytest.mark.parametrize("bad", ["form", "", "RAW", None, 1])
def test_bad_client_auth_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput, match="client_auth"):
        Config(client_auth=bad)  # type: ignore[arg-type]
    if bad is not None:
        with pytest.raises(InvalidInput, match="client_auth"):
            Machine(Account.parse("acme"), APP, client_auth=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="client_auth"):
            TokensLoaded(now=NOW, tokens=None, client_auth=bad)  # type: ignore[arg-type]


# -- 6. a new login over a (dead) stored grant, and logging out -------------------------------

CALLBACK = f"https://app.example/callback?code=c0de&state={STATE}"


def ready_machine() -> Machine:
    return Machine(Account.parse("acme"), APP, tokens(1))


def test_a_new_login_starts_from_ready_and_calls_keep_the_old_tokens() -> None:
    m = ready_machine()
    (authorize,) = m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    assert isinstance(authorize, AuthorizeAt)
    assert m.state is State.READY
    assert m.tokens == tokens(1)
    # Calls still go out, with the old token, while the user is in the browser...
    (call,) = m.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(call, Send)
    assert dict(call.request.headers)["Authorization"] == "Bearer access-0001"
    (exchange,) = m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    assert isinstance(exchange, Send)
    assert exchange.purpose == "exchange"
    assert state_of(m) is State.EXCHANGING
    # ... and during the exchange.
    (during,) = m.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(during, Send)
    assert dict(during.request.headers)["Authorization"] == "Bearer access-0001"
    done = answer(m, exchange, 200, token_body(2))
    assert [type(a) for a in done] == [Store, Authorized]
    assert m.state is State.READY
    assert m.tokens is not None
    assert m.tokens.access_token == "access-0002"
    (after,) = m.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(after, Send)
    assert dict(after.request.headers)["Authorization"] == "Bearer access-0002"


def test_a_401_during_the_new_login_waits_for_the_new_tokens() -> None:
    """The motivating case: the stored grant is dead; the call's 401 waits for the login."""
    m = ready_machine()
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    (exchange,) = m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    assert isinstance(exchange, Send)
    actions = m.handle(CallRequested(now=NOW, method="GET", path="item"))
    call = actions[-1]
    assert isinstance(call, Send)
    assert answer(m, call, 401) == []
    done = answer(m, exchange, 200, token_body(2))
    assert [type(a) for a in done] == [Store, Authorized, Send]
    assert dict(done[-1].request.headers)["Authorization"] == "Bearer access-0002"  # type: ignore[attr-defined]


def test_a_failed_new_login_keeps_the_old_grant() -> None:
    m = ready_machine()
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    (exchange,) = m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    assert isinstance(exchange, Send)
    (failed,) = answer(m, exchange, 400, b'{"error":"invalid_grant"}')
    assert isinstance(failed, AuthorizationFailed)
    assert m.state is State.READY
    assert m.tokens == tokens(1)


def test_a_denied_new_login_keeps_the_old_grant() -> None:
    m = ready_machine()
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    url = f"https://app.example/callback?error=access_denied&state={STATE}"
    (failed,) = m.handle(CallbackReceived(now=NOW, url=url))
    assert isinstance(failed, AuthorizationFailed)
    assert m.state is State.READY
    assert m.tokens == tokens(1)


def test_a_login_pending_when_the_grant_is_lost_can_still_finish() -> None:
    m = Machine(Account.parse("acme"), APP, tokens(1, at=NOW - 13_900))
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    m.handle(ClockTick(now=NOW))
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    # The callback cannot be taken while the refresh is in flight ...
    with pytest.raises(LocalProtocolError, match="refresh"):
        m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    answer(m, refresh, 400, b'{"error":"invalid_grant"}')
    assert m.state is State.REAUTHORIZATION_REQUIRED
    # ... but once it ended, the pending login finishes.
    (exchange,) = m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    assert isinstance(exchange, Send)
    done = answer(m, exchange, 200, token_body(2))
    assert [type(a) for a in done] == [Store, Authorized]
    assert state_of(m) is State.READY


def test_callback_in_ready_without_a_pending_login_is_refused() -> None:
    m = ready_machine()
    with pytest.raises(LocalProtocolError, match="no login is pending"):
        m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    assert m.state is State.READY


def test_an_api_key_machine_has_no_login_and_no_logout() -> None:
    m = Machine(Account.parse("acme"), API_KEY)
    with pytest.raises(LocalProtocolError, match="token pair"):
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    with pytest.raises(LocalProtocolError, match="no login is pending"):
        m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    with pytest.raises(LocalProtocolError, match="token pair"):
        m.handle(LogoutRequested(now=NOW))
    assert m.state is State.READY


@pytest.mark.parametrize("where", ["ready", "authorizing", "unauthorized", "lost", "pending"])
def test_logout_forgets_the_grant(where: str) -> None:
    m = (
        ready_machine()
        if where in ("ready", "lost", "pending")
        else Machine(Account.parse("acme"), APP)
    )
    if where in {"authorizing", "pending"}:
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=VERIFIER))
    if where == "lost":
        m.handle(ClockTick(now=NOW + 15 * 86400))
        assert m.state is State.REAUTHORIZATION_REQUIRED
    old = tokens(1)
    assert m.handle(LogoutRequested(now=NOW)) == [Forget()]
    assert m.state is State.UNAUTHORIZED
    assert m.tokens is None
    actions = m.handle(CallRequested(now=NOW, method="GET", path="item"))
    assert isinstance(actions[-1], Fail)
    assert isinstance(actions[-1].error, ReauthorizationRequired)
    # The forgotten pair is never adopted again; a new login works.
    if where in {"ready", "pending", "lost"}:
        m.handle(TokensLoaded(now=NOW + 1, tokens=old))
        assert m.tokens is None
    with pytest.raises(LocalProtocolError):
        m.handle(CallbackReceived(now=NOW, url=CALLBACK))
    state2 = "t" * 22
    m.handle(AuthorizationRequested(now=NOW, state=state2, code_verifier=VERIFIER))
    url = f"https://app.example/callback?code=c0de&state={state2}"
    (exchange,) = m.handle(CallbackReceived(now=NOW, url=url))
    assert isinstance(exchange, Send)


def test_logout_during_a_refresh_is_refused_and_changes_nothing() -> None:
    m = Machine(Account.parse("acme"), APP, tokens(1, at=NOW - 13_900))
    m.handle(ClockTick(now=NOW))
    assert m.state is State.LEASING
    with pytest.raises(LocalProtocolError, match="in flight"):
        m.handle(LogoutRequested(now=NOW))
    assert m.state is State.LEASING
