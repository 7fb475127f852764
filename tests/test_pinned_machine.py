"""Decisions of the machine pinned through its public API: bounds, refusals,
endings, scrubbing and a login without PKCE.

Each test drives ``Machine.handle`` with events and looks only at the actions,
errors and public properties, so it holds whatever the core's modules are
called inside.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from cfauth_core import (
    Account,
    AcquireLease,
    Action,
    ApiKey,
    AuthorizationRequested,
    AuthorizeAt,
    CallAccepted,
    CallbackReceived,
    CallRequested,
    CfauthError,
    Config,
    Deliver,
    Fail,
    InvalidInput,
    Machine,
    OAuth2App,
    OAuthStateMismatch,
    RefreshAborted,
    RefreshFailed,
    ResponseReceived,
    Send,
    SendFailed,
    TokenSet,
    TokensLoaded,
    UntrustedRedirect,
    call_id_of,
)

NOW = 1_700_000_000.0
ACME = "https://acme.checkfront.com"
API_KEY = ApiKey("key-0123456789", "apikey-secret-value")
APP = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/callback")
# A secret that form-encoding changes: the raw and the encoded Basic values differ.
ODD_APP = OAuth2App("client+0123/x", "s3cr+t/value=x", "https://app.example/callback")
ACCESS = "access-token-value-1"
REFRESH = "refresh-token-value-1"
STATE = "Yx3p_Q8-vLr2mT0kWc9hZa"
REGIONS = ("na1", "eu1", "na2", "eu2", "na3", "eu3", "na4", "eu4")

A = TypeVar("A", bound=Action)


def of(actions: Sequence[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def tokens(expires_at: float = NOW + 14_000, updated_at: float = NOW) -> TokenSet:
    return TokenSet(ACCESS, REFRESH, expires_at, NOW + 14 * 86400, updated_at)


def machine(kind: str, config: Config | None = None, pair: TokenSet | None = None) -> Machine:
    account = Account.parse("acme")
    if kind == "apikey":
        return Machine(account, API_KEY, config=config)
    app = ODD_APP if kind == "odd-oauth" else APP
    return Machine(account, app, pair if pair is not None else tokens(), config=config)


def call(m: Machine, now: float = NOW) -> tuple[int, list[Action]]:
    """The new call's id and the actions after its CallAccepted (all of them
    when the first is already the call's Send or Fail)."""
    actions = m.handle(CallRequested(now=now, method="GET", path="booking/index"))
    call_id = call_id_of(actions)
    return call_id, actions[1:] if isinstance(actions[0], CallAccepted) else actions


def reply(
    m: Machine, send: Send, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> list[Action]:
    return m.handle(
        ResponseReceived(
            now=NOW, request_id=send.request_id, status=status, headers=tuple(headers), body=body
        )
    )


def ended_once(actions: Sequence[Action], call_id: int) -> Deliver | Fail:
    endings = [a for a in actions if isinstance(a, (Deliver, Fail)) and a.call_id == call_id]
    assert len(endings) == 1, actions
    return endings[0]


def refresh_send(m: Machine) -> Send:
    _, actions = call(m)
    assert of(actions, AcquireLease), actions
    (send,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(send, Send)
    assert send.purpose == "refresh"
    return send


# -- bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1, 2, 5])
@pytest.mark.parametrize("kind", ["apikey", "oauth"])
def test_call_follows_exactly_max_redirects_trusted_hops(kind: str, limit: int) -> None:
    m = machine(kind, Config(max_redirects=limit))
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    for hop in range(limit + 1):
        # Same host, a new path each time: trusted, never a loop.
        actions = reply(m, send, 307, [("Location", f"/api/3.0/booking/index?hop={hop}")])
        if hop < limit:
            (send,) = actions
            assert isinstance(send, Send)
        else:
            fail = ended_once(actions, call_id)
            assert isinstance(fail, Fail)
            assert isinstance(fail.error, UntrustedRedirect)
            assert not of(actions, Send)
    assert m.calls_in_progress == 0


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_refresh_bounced_across_migration_hosts_stops_at_the_limit(limit: int) -> None:
    m = machine("oauth", Config(max_redirects=limit), tokens(NOW + 10, NOW - 14_000))
    send = refresh_send(m)
    for hop in range(limit + 1):
        where = f"https://acme.manage.{REGIONS[hop]}.bookingplatform.app/oauth/token/"
        actions = reply(m, send, 308, [("Location", where)])
        sends = of(actions, Send)
        if hop < limit:
            assert len(sends) == 1, actions
            send = sends[0]
            assert send.purpose == "refresh"
            assert send.request.url == where
        else:
            assert sends == [], actions
            assert of(actions, RefreshAborted), actions
            fail = ended_once(actions, 1)  # the call that waited for the refresh
            assert isinstance(fail, Fail)
            assert isinstance(fail.error, RefreshFailed)
            assert f"more than {limit} redirects" in str(fail.error)
    assert m.calls_in_progress == 0


@pytest.mark.parametrize("back_to", [0, 1, 2])
def test_a_loop_back_to_any_earlier_url_is_refused(back_to: int) -> None:
    m = machine("apikey")
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    urls = [send.request.url]
    for hop in range(1, 3):
        (send,) = reply(m, send, 302, [("Location", f"/api/3.0/booking/index?hop={hop}")])
        assert isinstance(send, Send)
        urls.append(send.request.url)
    actions = reply(m, send, 302, [("Location", urls[back_to])])
    fail = ended_once(actions, call_id)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, UntrustedRedirect)
    assert "loops" in str(fail.error)


@pytest.mark.parametrize(("extra", "followed"), [(0, True), (1, False)])
def test_location_length_limit_on_both_sides(extra: int, followed: bool) -> None:
    m = machine("apikey")
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    prefix = ACME + "/api/3.0/booking/index?q="
    location = prefix + "a" * (2048 - len(prefix) + extra)
    actions = reply(m, send, 302, [("Location", location)])
    if followed:
        (resent,) = actions
        assert isinstance(resent, Send)
        assert resent.request.url == location
    else:
        fail = ended_once(actions, call_id)
        assert isinstance(fail, Fail)
        assert isinstance(fail.error, UntrustedRedirect)


def test_expires_in_of_one_second_is_accepted() -> None:
    m = machine("oauth", pair=tokens(NOW + 10, NOW - 14_000))
    send = refresh_send(m)
    body = json.dumps({"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 1})
    reply(m, send, 200, [("Content-Type", "application/json")], body.encode())
    assert m.tokens is not None
    assert m.tokens.access_token == "access-2"
    assert m.tokens.expires_at == NOW + 1


@pytest.mark.parametrize(("offset", "refreshes"), [(-1, True), (0, True), (1, False)])
def test_a_token_expiring_exactly_now_is_not_used(offset: float, refreshes: bool) -> None:
    # Leeway 0: only expiry itself decides; at now == expires_at the token is spent.
    pair = tokens(expires_at=NOW + offset, updated_at=NOW - 1000)
    m = machine("oauth", Config(refresh_leeway=0), pair)
    _, actions = call(m, now=NOW)
    if refreshes:
        assert of(actions, AcquireLease), actions
        assert not of(actions, Send)
    else:
        (send,) = of(actions, Send)
        assert dict(send.request.headers)["Authorization"] == "Bearer " + ACCESS


# -- the used-state memory ----------------------------------------------------------------


def fresh_state(n: int) -> str:
    return f"state-{n:04d}-abcdefghijklmnop"


def test_finished_login_state_cannot_start_a_new_login() -> None:
    m = Machine(Account.parse("acme"), APP, config=Config(pkce=False))
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    with pytest.raises(OAuthStateMismatch):
        m.handle(CallbackReceived(now=NOW, url=APP.redirect_uri + "?error=access_denied&state=x"))
    m.handle(
        CallbackReceived(now=NOW, url=APP.redirect_uri + f"?error=access_denied&state={STATE}")
    )
    with pytest.raises(InvalidInput, match="used before"):
        m.handle(AuthorizationRequested(now=NOW, state=STATE))


def test_used_state_memory_keeps_the_last_32_and_forgets_older() -> None:
    m = Machine(Account.parse("acme"), APP, config=Config(pkce=False))
    for n in range(33):
        m.handle(AuthorizationRequested(now=NOW, state=fresh_state(n)))
    # 32 replaced logins are remembered (0..31); the pending one is 32.
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=fresh_state(31)))
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=fresh_state(0)))
    # Each new login remembers the one it replaces and forgets the oldest.
    m.handle(AuthorizationRequested(now=NOW, state=fresh_state(33)))  # keeps 1..32
    m.handle(AuthorizationRequested(now=NOW, state=fresh_state(0)))  # 0 forgotten; keeps 2..33
    with pytest.raises(InvalidInput):
        m.handle(AuthorizationRequested(now=NOW, state=fresh_state(2)))
    m.handle(AuthorizationRequested(now=NOW, state=fresh_state(1)))  # 1 forgotten too


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
@pytest.mark.parametrize(
    "host",
    [
        "acme.checkfront.com",
        "acme.checkfront.com:443",
        "acme.manage.na1.bookingplatform.app",
        "acme.manage.na1.bookingplatform.app:443",
    ],
)
def test_http_downgrade_to_a_trusted_host_is_refused_not_upgraded(kind: str, host: str) -> None:
    m = machine(kind)
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    actions = reply(m, send, 301, [("Location", f"http://{host}/api/3.0/booking/index")])
    assert not of(actions, Send)
    fail = ended_once(actions, call_id)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, UntrustedRedirect)
    assert m.account.origin == ACME


@pytest.mark.parametrize("value", ["caf\u00e9/1.0", "agent\u2028x", "agent\x7f", "\u00a0agent"])
def test_non_ascii_or_control_in_config_header_value_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="user_agent"):
        Config(user_agent=value)


@pytest.mark.parametrize("char", ["\x1f", "\x00", "\x7f", "\x1b", "\n"])
def test_control_characters_in_credentials_are_refused(char: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ApiKey("key-0123", "secret" + char + "value")
    assert "secret" + char not in str(caught.value)
    with pytest.raises(InvalidInput):
        ApiKey("key" + char + "0123", "secret-value")
    with pytest.raises(InvalidInput):
        OAuth2App("client" + char, "client-secret-value", "https://app.example/cb")
    with pytest.raises(InvalidInput):
        OAuth2App("client", "client-secret" + char, "https://app.example/cb")


# -- endings ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
@pytest.mark.parametrize(
    "location", ["/oauth/token/", "/oauth/authorize/", "/oauth", ACME + "/oauth/token/?x=1"]
)
def test_api_call_redirected_to_oauth_ends_once_without_credentials(
    kind: str, location: str
) -> None:
    m = machine(kind)
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    actions = reply(m, send, 302, [("Location", location)])
    for resent in of(actions, Send):
        assert not urlsplit(resent.request.url).path.startswith("/oauth")
    if not of(actions, Send):
        ended_once(actions, call_id)
        assert m.calls_in_progress == 0


@pytest.mark.parametrize("pkce", [False, True])
def test_call_failing_while_a_login_is_pending_ends_normally(pkce: bool) -> None:
    verifier = "v" * 43 if pkce else None
    m = machine("oauth", Config(pkce=pkce))
    (authorize,) = m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=verifier))
    assert isinstance(authorize, AuthorizeAt)
    assert ("code_challenge" in authorize.url) is pkce
    # The machine still has its tokens: calls go out while the login is pending.
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    location = f"https://evil.example/{verifier or 'x'}"
    fail = ended_once(reply(m, send, 302, [("Location", location)]), call_id)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, UntrustedRedirect)
    if verifier is not None:
        assert verifier not in str(fail.error)
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    failed = m.handle(
        SendFailed(now=NOW, request_id=send.request_id, reason="reset by peer", unsent=False)
    )
    ended_once(failed, call_id)
    assert m.calls_in_progress == 0


# -- scrubbing ----------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return b64encode(f"{user}:{password}".encode()).decode()


def secret_forms(kind: str) -> list[str]:
    if kind == "apikey":
        return [API_KEY.secret, basic(API_KEY.key, API_KEY.secret)]
    if kind == "odd-oauth":
        return [
            ODD_APP.client_secret,
            basic(ODD_APP.client_id, ODD_APP.client_secret),  # raw
            basic("client%2B0123%2Fx", "s3cr%2Bt%2Fvalue%3Dx"),  # RFC 6749 section 2.3.1
        ]
    return [APP.client_secret, ACCESS, REFRESH, basic(APP.client_id, APP.client_secret)]


@pytest.mark.parametrize("kind", ["apikey", "oauth", "odd-oauth"])
@pytest.mark.parametrize("glue", ["{}", "Basic{}", "x{}y", "{}{}", "%22{}%22"])
def test_secrets_glued_to_other_text_are_hidden_in_messages(kind: str, glue: str) -> None:
    m = machine(kind)
    for secret in secret_forms(kind):
        text = "https://evil.example/" + glue.format(secret, secret)
        call_id, (send,) = call(m)
        assert isinstance(send, Send)
        fail = ended_once(reply(m, send, 302, [("Location", text)]), call_id)
        assert isinstance(fail, Fail)
        error = fail.error
        for shown in (str(error), repr(error), getattr(error, "location", "")):
            assert secret not in shown
            assert secret[4:-4] not in shown
        assert secret not in m.scrub("before" + secret + "after")


CONTROL = ["\x1b[31m", "\x00", "\x07", "\x1f", "\x7f", "\x9b", "\u2028", "\u202e", "\r\n"]


@pytest.mark.parametrize("junk", CONTROL)
def test_control_characters_from_server_or_transport_never_reach_a_message(junk: str) -> None:
    m = machine("apikey")
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    fail = ended_once(reply(m, send, 302, [("Location", f"https://evil.example/{junk}x")]), call_id)
    assert isinstance(fail, Fail)
    assert str(fail.error).isprintable()
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    actions = m.handle(
        SendFailed(
            now=NOW, request_id=send.request_id, reason=f"reset {junk} by peer", unsent=False
        )
    )
    error: CfauthError | None = None
    for action in actions:
        if isinstance(action, Fail):
            error = action.error
    assert error is not None, actions
    assert str(error).isprintable()
    assert m.scrub(f"a{junk}b").isprintable()
