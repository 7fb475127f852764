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
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest

from cfauth_core import (
    Account,
    AccountMoved,
    AcquireLease,
    Action,
    ApiKey,
    AuthorizationFailed,
    AuthorizationLost,
    AuthorizationRequested,
    AuthorizeAt,
    CallAccepted,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    CfauthError,
    ClockTick,
    Config,
    Deliver,
    Fail,
    InvalidInput,
    LocalProtocolError,
    Machine,
    OAuth2App,
    OAuthStateMismatch,
    RefreshAborted,
    RefreshFailed,
    ReleaseLease,
    ResponseReceived,
    Send,
    SendFailed,
    TokenSet,
    TokensLoaded,
    UntrustedRedirect,
    call_id_of,
)
from cfauth_core._account import is_oauth_path
from tests.helpers import header

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


# -- what a 400, 401 or 403 says about the bearer token ----------------------------------


def invalid_token_body(size: int, error: str = "invalid_token") -> bytes:
    """An OAuth error body padded with spaces to exactly ``size`` bytes."""
    body = json.dumps({"error": error}).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize(
    ("status", "headers", "body", "refreshes"),
    [
        (403, [], invalid_token_body(100), True),
        (400, [], invalid_token_body(100, "invalid_grant"), True),
        (403, [], invalid_token_body(65536), True),
        (403, [], invalid_token_body(65537), False),
        (403, [], b'{"error": "INVALID_TOKEN"}', False),
        (403, [], b'{"error": "INVALID_GRANT"}', False),
        (403, [], b'{"error": "insufficient_scope"}', False),
        (403, [], b'{"error": "invalid_token"', False),  # not JSON
        (403, [], b"<html>invalid_token</html>", False),
        (403, [], b"[[[[" * 2000 + b"]]]]" * 2000, False),  # too deep to decode
        (403, [("WWW-Authenticate", 'Bearer error="invalid_token"')], b"", True),
        (403, [("WWW-Authenticate", 'Bearer error="insufficient_scope"')], b"", False),
        (400, [], b"{}", False),
        (401, [], b"", True),
    ],
)
def test_which_answers_mean_the_bearer_token_was_refused(
    status: int, headers: list[tuple[str, str]], body: bytes, refreshes: bool
) -> None:
    m = machine("oauth")
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    actions = reply(m, send, status, headers, body)
    if refreshes:
        assert of(actions, AcquireLease), actions
        assert not of(actions, Deliver)
    else:
        deliver = ended_once(actions, call_id)
        assert isinstance(deliver, Deliver)
        assert deliver.status == status
        assert deliver.body == body


# -- the callback's query ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "tail", "code"),
    [
        (APP.redirect_uri, "?code=abc&state={s}", "abc"),
        (APP.redirect_uri, "?code=ab?cd&state={s}", "ab?cd"),
        (APP.redirect_uri, "?code=ab?cd?e&state={s}", "ab?cd?e"),
        (APP.redirect_uri, "?code=abc&state={s}#frag", "abc"),
        (APP.redirect_uri, "?code=abc&state={s}#frag#more", "abc"),
        (APP.redirect_uri, "?code=abc&state={s}#frag?x=1#y", "abc"),
        ("", "?code=abc&state={s}", "abc"),  # the query string alone
        ("", "?code=abc&state={s}#frag#more", "abc"),
    ],
)
def test_the_callback_query_is_read_up_to_the_first_fragment_mark(
    prefix: str, tail: str, code: str
) -> None:
    m = Machine(Account.parse("acme"), APP, config=Config(pkce=False))
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    url = prefix + tail.format(s=STATE)
    if not prefix:
        url = url[1:]  # the query string alone
    (send,) = m.handle(CallbackReceived(now=NOW, url=url))
    assert isinstance(send, Send)
    assert send.purpose == "exchange"
    assert send.request.body is not None
    fields = dict(parse_qsl(send.request.body.decode()))
    assert fields["code"] == code


# -- token redirects: loops, and a secret across the cut of a long Location --------------


@pytest.mark.parametrize("back_to", [0, 1])
def test_a_refresh_redirect_loop_is_refused_as_a_loop_before_the_limit(back_to: int) -> None:
    m = machine("oauth", Config(max_redirects=5), tokens(NOW + 10, NOW - 14_000))
    send = refresh_send(m)
    urls = [send.request.url]
    for region in REGIONS[:2]:
        where = f"https://acme.manage.{region}.bookingplatform.app/oauth/token/"
        (send,) = of(reply(m, send, 307, [("Location", where)]), Send)
        urls.append(send.request.url)
    actions = reply(m, send, 307, [("Location", urls[back_to + 1])])
    assert not of(actions, Send)
    (aborted,) = of(actions, RefreshAborted)
    assert "loops back to a URL already requested (POST)" in str(aborted.error)


# Secrets that share no six characters with any message text.
ODD_KEY = ApiKey("key-0123456789", "Zq9Xw7Kp3Rt5Lm2Vb8")
ODD_REFRESH = "Yh4Gf6Ds1Aq0Wn3Ej5"


@pytest.mark.parametrize("kind", ["apikey", "apikey-to-oauth", "apikey-over-limit", "oauth"])
@pytest.mark.parametrize("offset", range(180, 206, 3))
def test_a_secret_across_the_cut_of_a_long_location_is_not_half_shown(
    kind: str, offset: int
) -> None:
    if kind.startswith("apikey"):
        secret = ODD_KEY.secret
        config = Config(max_redirects=0 if kind == "apikey-over-limit" else 5)
        m = Machine(Account.parse("acme"), ODD_KEY, config=config)
        _, (send,) = call(m)
        assert isinstance(send, Send)
        # Refused as untrusted, as API credentials bound for the OAuth endpoints,
        # or as one redirect too many (to a trusted place).
        base = {
            "apikey": "https://evil.example/",
            "apikey-to-oauth": ACME + "/oauth/",
            "apikey-over-limit": ACME + "/api/3.0/",
        }[kind]
    else:
        secret = ODD_REFRESH  # known to the machine while the refresh is in flight
        pair = TokenSet(ACCESS, ODD_REFRESH, NOW + 10, NOW + 14 * 86400, NOW - 14_000)
        m = machine("oauth", pair=pair)
        send = refresh_send(m)
        base = ACME + "/oauth/other/"
    location = base + "a" * (offset - len(base)) + secret + "z" * 50
    actions = reply(m, send, 302, [("Location", location)])
    errors = [a.error for a in actions if isinstance(a, (Fail, RefreshAborted))]
    assert errors, actions
    for error in errors:
        text = str(error) + repr(error) + str(getattr(error, "location", ""))
        for start in range(len(secret) - 5):
            assert secret[start : start + 6] not in text, (offset, text)


# -- whether a callback is at the redirect URI -------------------------------------------


@pytest.mark.parametrize(
    ("redirect_uri", "url", "at"),
    [
        ("https://app.example/cb", "https://app.example/cb?code=x&state={s}", True),
        ("https://app.example/cb", "https://app.example:443/cb?code=x&state={s}", True),
        ("https://app.example/cb", "HTTPS://app.example/cb?code=x&state={s}", True),
        ("https://app.example/cb", "https://app.example:444/cb?code=x&state={s}", False),
        ("https://app.example/cb", "http://app.example/cb?code=x&state={s}", False),
        ("https://app.example/cb", "https://app.example/cb2?code=x&state={s}", False),
        ("https://app.example/cb", "https://u@app.example/cb?code=x&state={s}", False),
        ("https://app.example/cb", "https://app.example:x/cb?code=x&state={s}", False),
        ("https://app.example/cb", "/cb?code=x&state={s}", True),
        ("https://app.example/cb", "/cb?code=a?b&state={s}", True),
        ("https://app.example/cb", "/cb?code=x&state={s}#f#g", True),
        ("https://app.example/cb", "/other?code=x&state={s}", False),
        ("https://app.example/cb", "//app.example/cb?code=x&state={s}", False),
        ("https://app.example//cb", "//cb?code=x&state={s}", False),  # a host, not a path
        ("https://app.example", "/?code=x&state={s}", True),
        ("https://app.example", "https://app.example?code=x&state={s}", True),
        ("https://app.example", "https://app.example/?code=x&state={s}", True),
        ("http://127.0.0.1/cb", "http://127.0.0.1:80/cb?code=x&state={s}", True),
        ("http://127.0.0.1/cb", "http://127.0.0.1:443/cb?code=x&state={s}", False),
        ("http://127.0.0.1:8765/cb", "http://127.0.0.1/cb?code=x&state={s}", False),
        ("https://app.example/cb", "code=x&state={s}", True),  # a bare query string
    ],
)
def test_a_callback_is_taken_only_at_the_redirect_uri(
    redirect_uri: str, url: str, at: bool
) -> None:
    app = OAuth2App("client-0123456789", "client-secret-value", redirect_uri)
    m = Machine(Account.parse("acme"), app, config=Config(pkce=False))
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    event = CallbackReceived(now=NOW, url=url.format(s=STATE))
    if at:
        (send,) = m.handle(event)
        assert isinstance(send, Send)
        assert send.purpose == "exchange"
    else:
        with pytest.raises(OAuthStateMismatch, match="not at the redirect URI"):
            m.handle(event)


def test_a_request_target_with_fragments_is_at_the_redirect_uri_but_has_no_state() -> None:
    app = OAuth2App("client-0123456789", "client-secret-value", "https://app.example/cb")
    m = Machine(Account.parse("acme"), app, config=Config(pkce=False))
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    with pytest.raises(OAuthStateMismatch, match="no single state parameter"):
        m.handle(CallbackReceived(now=NOW, url="/cb#a#b"))


# -- the lease: which stored pair is adopted, and what follows ----------------------------


def pair(refresh: str, updated_at: float, expires_at: float = NOW + 14_000) -> TokenSet:
    return TokenSet("access-" + refresh, refresh, expires_at, updated_at + 14 * 86400, updated_at)


@pytest.mark.parametrize(
    ("loaded_refresh", "updated_offset", "adopted"),
    [
        ("refresh-other", +1, True),
        ("refresh-other", 0, True),  # as recent as ours: taken
        ("refresh-other", -1, False),  # older: ours stays
        (REFRESH, +1, False),  # the same grant
    ],
)
def test_outside_the_lease_only_a_pair_as_recent_as_ours_is_adopted(
    loaded_refresh: str, updated_offset: float, adopted: bool
) -> None:
    m = machine("oauth", pair=tokens(updated_at=NOW))
    loaded = pair(loaded_refresh, NOW + updated_offset)
    assert m.handle(TokensLoaded(now=NOW, tokens=loaded)) == []
    assert m.tokens == (loaded if adopted else tokens(updated_at=NOW))


@pytest.mark.parametrize("updated_offset", [-5000, 0, +1])
def test_under_the_lease_a_different_stored_pair_is_adopted_whatever_its_clock(
    updated_offset: float,
) -> None:
    m = machine("oauth", pair=tokens(NOW + 10, NOW - 14_000))
    _, actions = call(m)
    assert of(actions, AcquireLease)
    # Another process refreshed: a fresh pair, stamped by a clock that may lag.
    loaded = pair("refresh-other", NOW - 14_000 + updated_offset, expires_at=NOW + 14_000)
    actions = m.handle(TokensLoaded(now=NOW, tokens=loaded))
    assert m.tokens == loaded
    assert [type(a) for a in actions][:1] == [ReleaseLease]
    assert not [s for s in of(actions, Send) if s.purpose == "refresh"]
    (resent,) = of(actions, Send)  # the waiting call goes out with the adopted token
    assert dict(resent.request.headers)["Authorization"] == "Bearer access-refresh-other"


def test_under_the_lease_a_stored_pair_that_is_also_due_is_refreshed_with_its_token() -> None:
    m = machine("oauth", pair=tokens(NOW + 10, NOW - 14_000))
    call(m)
    loaded = pair("refresh-other", NOW - 14_000, expires_at=NOW + 5)
    (send,) = m.handle(TokensLoaded(now=NOW, tokens=loaded))
    assert isinstance(send, Send)
    assert send.purpose == "refresh"
    assert send.request.body == b"grant_type=refresh_token&refresh_token=refresh-other"


@pytest.mark.parametrize("stored", ["none", "same"])
def test_under_the_lease_nothing_new_stored_means_our_pair_is_refreshed(stored: str) -> None:
    current = tokens(NOW + 10, NOW - 14_000)
    m = machine("oauth", pair=current)
    call(m)
    loaded = None if stored == "none" else current
    (send,) = m.handle(TokensLoaded(now=NOW, tokens=loaded))
    assert isinstance(send, Send)
    assert send.purpose == "refresh"
    assert send.request.body == f"grant_type=refresh_token&refresh_token={REFRESH}".encode()
    assert m.tokens == current


def test_a_refused_refresh_token_is_never_adopted_again() -> None:
    m = machine("oauth", pair=tokens(NOW + 10, NOW - 14_000))
    send = refresh_send(m)
    actions = reply(m, send, 400, [], b'{"error": "invalid_grant"}')
    assert [type(a) for a in actions][:2] == [ReleaseLease, AuthorizationLost]
    assert m.tokens is None
    # The store still holds the refused pair: neither way is it taken back.
    stale = tokens(NOW + 14_000, NOW + 5)
    assert m.handle(TokensLoaded(now=NOW, tokens=stale)) == []
    assert m.tokens is None


def test_under_the_lease_a_grant_past_its_refresh_expiry_is_lost_and_the_lease_released() -> None:
    # The refresh token expired a second ago: the access token is used while it lasts.
    old = TokenSet(ACCESS, REFRESH, NOW + 10, NOW - 1, NOW - 14 * 86400)
    m = machine("oauth", pair=old)
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    (lease,) = reply(m, send, 401)  # rejected: a refresh is tried under the lease
    assert isinstance(lease, AcquireLease)
    actions = m.handle(TokensLoaded(now=NOW + 20, tokens=old))
    assert [type(a) for a in actions][:2] == [ReleaseLease, AuthorizationLost]
    fail = ended_once(actions, call_id)
    assert isinstance(fail, Fail)
    assert "expired" in str(fail.error)
    assert m.tokens is None
    assert not of(actions, Send)


@pytest.mark.parametrize(
    ("path", "oauth"),
    [
        ("/x?/../../oauth?z", False),  # the query starts at the first "?"
        ("/oauth?x?y", True),
        ("/%5Coauth%5Ctoken/", True),  # a decoded backslash is a slash
        ("\\oauth\\token", True),
        ("/api/%5C..%5Coauth", True),
        ("/api/oauth", False),
    ],
)
def test_what_a_lenient_server_reads_as_an_oauth_path(path: str, oauth: bool) -> None:
    assert is_oauth_path(path) is oauth


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
@pytest.mark.parametrize("location", ["/%5Coauth%5Ctoken/", "/api/3.0/%5C..%5C..%5Coauth/"])
def test_an_api_call_redirected_to_an_encoded_backslash_oauth_path_is_refused(
    kind: str, location: str
) -> None:
    m = machine(kind)
    call_id, (send,) = call(m)
    assert isinstance(send, Send)
    fail = ended_once(reply(m, send, 302, [("Location", location)]), call_id)
    assert isinstance(fail, Fail)
    assert "API credentials never go to the OAuth endpoints" in str(fail.error)


# -- following a call's redirect: migration, method and body -----------------------------

NA1 = "https://acme.manage.na1.bookingplatform.app"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("where", ["same-origin", "migration"])
def test_a_call_redirect_keeps_or_drops_method_and_body_and_moves_only_when_permanent(
    status: int, method: str, where: str
) -> None:
    m = machine("apikey")
    data = {"a": "1"} if method == "POST" else None
    headers = [("Idempotency-Key", "k-1")] if method == "POST" else []
    actions = m.handle(
        CallRequested(now=NOW, method=method, path="booking/index", data=data, headers=headers)
    )
    call_id = call_id_of(actions)
    (send,) = of(actions, Send)
    base = ACME if where == "same-origin" else NA1
    location = base + "/api/3.0/booking/other"
    actions = reply(m, send, status, [("Location", location)])
    (resent,) = of(actions, Send)
    assert resent.call_id == call_id
    assert resent.request.url == location
    to_get = status == 303 and method == "POST"
    assert resent.request.method == ("GET" if to_get else method)
    assert resent.request.body == (None if to_get or method == "GET" else b"a=1")
    content_type = header(resent.request, "Content-Type")
    assert content_type == (None if to_get or method == "GET" else _FORM_TYPE)
    assert header(resent.request, "Idempotency-Key") == ("k-1" if method == "POST" else None)
    assert header(resent.request, "Authorization") == API_KEY.authorization
    moves = where == "migration" and status in (301, 308)
    assert of(actions, AccountMoved) == ([AccountMoved(ACME, NA1)] if moves else [])
    assert m.account.origin == (NA1 if moves else ACME)
    # The next call goes to wherever the account now is.
    _, (after,) = call(m)
    assert isinstance(after, Send)
    assert after.request.url == m.account.origin + "/api/3.0/booking/index"


_FORM_TYPE = "application/x-www-form-urlencoded"


# -- when a refresh is due ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("updated", "expires", "refresh_expires", "due"),
    [
        (-14_000, 301, 14 * 86400, None),
        (-14_000, 300, 14 * 86400, "expiring"),  # within the 300 s leeway
        (-10, 10, 14 * 86400, "expiring"),  # a 20 s token: the leeway is capped at 10 s
        (-9, 11, 14 * 86400, None),
        (-9, 11, 86395, "keep-alive"),  # not yet within the capped leeway: keep-alive is why
        (-14 * 86400 + 86400, 14_000, 86400, "keep-alive"),  # a day of refresh life left
        (-14 * 86400 + 86399, 14_000, 86401, None),
        (-1, 14_000, 86400, "keep-alive"),  # refreshed just before the window opened
        (0, 14_000, 86400, None),  # refreshed inside the window already: once per window
        (-14 * 86400, 100, 0, None),  # the refresh token is spent: the access token is used
        (-14 * 86400, 0, 0, "lost"),
    ],
)
def test_when_a_refresh_is_due(
    updated: float, expires: float, refresh_expires: float, due: str | None
) -> None:
    pair = TokenSet(ACCESS, REFRESH, NOW + expires, NOW + refresh_expires, NOW + updated)
    m = machine("oauth", pair=pair)
    call_id, actions = call(m)
    if due is None:
        (send,) = actions
        assert isinstance(send, Send)
        assert header(send.request, "Authorization") == "Bearer " + ACCESS
    elif due == "lost":
        assert of(actions, AuthorizationLost), actions
        fail = ended_once(actions, call_id)
        assert isinstance(fail, Fail)
        assert not of(actions, Send)
    else:
        (lease,) = of(actions, AcquireLease)
        assert lease.reason == due
        assert not of(actions, Send)


# -- cancelling one call leaves the others ------------------------------------------------


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
@pytest.mark.parametrize("cancel", [0, 1, 2])
def test_cancelling_a_call_in_flight_leaves_the_other_calls_alone(kind: str, cancel: int) -> None:
    m = machine(kind)
    started = [call(m) for _ in range(3)]
    m.handle(CallCancelled(now=NOW, call_id=started[cancel][0]))
    for index, (call_id, (send,)) in enumerate(started):
        assert isinstance(send, Send)
        if index == cancel:
            with pytest.raises(LocalProtocolError, match="not in flight"):
                reply(m, send, 200)
        else:
            deliver = ended_once(reply(m, send, 200, body=b"ok"), call_id)
            assert isinstance(deliver, Deliver)
            assert deliver.body == b"ok"
    assert m.calls_in_progress == 0


# -- a refused Location is quoted whole, however many secrets its quoting hid ------------

# Four characters that only appear once the Location is quoted: ' becomes \'.
QUOTED_SECRET = "\\'\\'"


@pytest.mark.parametrize("request_kind", ["call", "call-untrusted", "call-over-limit", "refresh"])
def test_a_refused_location_is_quoted_whole_after_its_secrets_are_hidden(
    request_kind: str,
) -> None:
    if request_kind == "refresh":
        pair = TokenSet(QUOTED_SECRET, QUOTED_SECRET, NOW + 10, NOW + 14 * 86400, NOW - 14_000)
        m = machine("oauth", pair=pair)
        send = refresh_send(m)
    else:
        pair = TokenSet(QUOTED_SECRET, REFRESH, NOW + 14_000, NOW + 86400 * 14, NOW)
        limit = 0 if request_kind == "call-over-limit" else 5
        m = machine("oauth", Config(max_redirects=limit), pair=pair)
        _, (only_send,) = call(m)
        assert isinstance(only_send, Send)
        send = only_send
    base = {"call-untrusted": "https://evil.example/", "call-over-limit": ACME + "/api/3.0/"}.get(
        request_kind, ACME + "/oauth/other/"
    )
    location = base + "'" * 150 + '"'
    actions = reply(m, send, 302, [("Location", location)])
    errors = [a.error for a in actions if isinstance(a, (Fail, RefreshAborted))]
    assert errors, actions
    # The quoted Location is cut at 200 characters, then each secret in it is hidden.
    hidden = (200 - len(base)) // 4
    for error in errors:
        assert str(error).count("<hidden>") == hidden
        assert QUOTED_SECRET not in str(error)
        if isinstance(error, UntrustedRedirect):
            assert error.location.count("<hidden>") == hidden
            assert error.location.endswith("...")


# -- the other client authentication form, once, after invalid_client ---------------------


def test_invalid_client_resends_the_token_request_once_in_the_other_form() -> None:
    pair = tokens(NOW + 10, NOW - 14_000)
    m = machine("odd-oauth", pair=pair)
    first = refresh_send(m)
    assert header(first.request, "Authorization") == ODD_APP.token_authorization_in("rfc6749")
    body = b'{"error": "invalid_client"}'
    (second,) = of(reply(m, first, 401, [], body), Send)
    assert second.purpose == "refresh"
    assert second.request.method == first.request.method == "POST"
    assert second.request.url == first.request.url
    assert second.request.body == first.request.body
    others = [(k, v) for k, v in first.request.headers if k != "Authorization"]
    assert [(k, v) for k, v in second.request.headers if k != "Authorization"] == others
    assert [k for k, _ in second.request.headers] == [k for k, _ in first.request.headers]
    assert header(second.request, "Authorization") == ODD_APP.token_authorization_in("raw")
    actions = reply(m, second, 401, [], body)  # refused in both forms: no third try
    assert not of(actions, Send)
    (aborted,) = of(actions, RefreshAborted)
    assert "in both forms tried" in str(aborted.error)


# -- a new login over a grant the machine holds -------------------------------------------


def test_a_new_login_needs_a_refresh_token_of_its_own() -> None:
    m = machine("oauth", Config(pkce=False), tokens())
    m.handle(AuthorizationRequested(now=NOW, state=STATE))
    (send,) = m.handle(CallbackReceived(now=NOW, url=f"code=c-1&state={STATE}"))
    assert isinstance(send, Send)
    assert send.purpose == "exchange"
    body = json.dumps({"access_token": "access-new", "expires_in": 100}).encode()
    actions = reply(m, send, 200, [], body)
    (failed,) = of(actions, AuthorizationFailed)
    assert "no usable refresh_token" in str(failed.error)
    assert m.tokens == tokens()  # the grant it held is kept


@pytest.mark.parametrize(
    ("updated", "expires", "refresh_expires", "due"),
    [
        (-10, 14_000, 86400 - 10, None),  # refreshed the moment the window opened
        (-11, 14_000, 86400 - 10, "keep-alive"),  # a second before it opened
        (-14_000, 299, 14 * 86400, "expiring"),
        (-14_000, 301, 14 * 86400, None),
    ],
)
def test_a_clock_tick_starts_a_refresh_when_one_is_due(
    updated: float, expires: float, refresh_expires: float, due: str | None
) -> None:
    pair = TokenSet(ACCESS, REFRESH, NOW + expires, NOW + refresh_expires, NOW + updated)
    m = machine("oauth", pair=pair)
    actions = m.handle(ClockTick(now=NOW))
    if due is None:
        assert actions == []
    else:
        (lease,) = actions
        assert isinstance(lease, AcquireLease)
        assert lease.reason == due


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_303_back_to_the_same_url_is_a_loop_only_for_the_same_method(method: str) -> None:
    m = machine("apikey")
    data = {"a": "1"} if method == "POST" else None
    headers = [("Idempotency-Key", "k-1")] if data else []
    actions = m.handle(
        CallRequested(now=NOW, method=method, path="booking/index", data=data, headers=headers)
    )
    call_id = call_id_of(actions)
    (send,) = of(actions, Send)
    url = send.request.url
    actions = reply(m, send, 303, [("Location", url)])
    if method == "POST":  # POST, then GET of the same URL: not a loop
        (send,) = of(actions, Send)
        assert (send.request.method, send.request.url) == ("GET", url)
        actions = reply(m, send, 303, [("Location", url)])
    fail = ended_once(actions, call_id)
    assert isinstance(fail, Fail)
    assert "loops back to a URL already requested (GET)" in str(fail.error)


@pytest.mark.parametrize("status", [300, 404, 409, 500, 502])
@pytest.mark.parametrize("params", [None, {"a": "1"}])
def test_only_the_special_statuses_are_read_for_a_token_refusal(
    status: int, params: dict[str, str] | None
) -> None:
    m = machine("oauth")
    for warm in (True, False):  # the second plain call reuses the first one's request
        actions = m.handle(
            CallRequested(now=NOW, method="GET", path="booking/index", params=params)
        )
        call_id = call_id_of(actions)
        (send,) = of(actions, Send)
        if warm:
            reply(m, send, 200)
    challenge = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
    deliver = ended_once(reply(m, send, status, challenge, b'{"error": "invalid_token"}'), call_id)
    assert isinstance(deliver, Deliver)
    assert deliver.status == status


# -- a remembered plain request is only reused for the same plain call ------------------


@pytest.mark.parametrize(
    "first",
    [
        {"data": {"a": "1"}},
        {"headers": [("X-On-Behalf", "7")]},
        {"params": {"q": "1"}},
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_call_with_a_body_headers_or_params_is_not_reused_for_a_plain_one(
    first: dict[str, Any], method: str
) -> None:
    m = machine("apikey")
    for kwargs in (first, {}, {}):
        actions = m.handle(CallRequested(now=NOW, method=method, path="booking/x", **kwargs))
        (send,) = of(actions, Send)
        reply(m, send, 200)
    plain = send.request
    assert plain.body is None
    assert plain.url == ACME + "/api/3.0/booking/x"
    assert [k for k, _ in plain.headers] == ["Authorization", "Accept", "User-Agent"]


@pytest.mark.parametrize("offset", [-1, 0])
def test_a_remembered_plain_request_is_not_reused_once_a_refresh_may_be_due(
    offset: float,
) -> None:
    # Leeway 300 s: a refresh may be due from NOW + 10 on.
    m = machine("oauth", pair=tokens(expires_at=NOW + 310, updated_at=NOW - 14_000))
    _, (first,) = call(m)
    assert isinstance(first, Send)
    reply(m, first, 200)
    _, actions = call(m, now=NOW + 10 + offset)
    if offset < 0:
        (send,) = actions
        assert isinstance(send, Send)
        assert send.request == first.request
    else:
        (lease,) = of(actions, AcquireLease)
        assert lease.reason == "expiring"
        assert not of(actions, Send)


def test_a_light_call_is_delivered_with_its_headers_body_and_url() -> None:
    m = machine("oauth")
    for _ in range(2):  # the second plain call goes out light
        call_id, (send,) = call(m)
        assert isinstance(send, Send)
        deliver = ended_once(reply(m, send, 200, [("X-Page", "2")], b"[1]"), call_id)
        assert isinstance(deliver, Deliver)
        assert list(deliver.headers) == [("X-Page", "2")]
        assert deliver.body == b"[1]"
        assert deliver.url == ACME + "/api/3.0/booking/index"


def test_a_plain_call_waits_while_the_lease_is_taken_even_if_its_request_is_remembered() -> None:
    m = machine("oauth")
    _, (warm,) = call(m)
    assert isinstance(warm, Send)
    reply(m, warm, 200)  # its request is now remembered
    actions = m.handle(CallRequested(now=NOW, method="GET", path="x", params={"a": "1"}))
    (other,) = of(actions, Send)
    assert of(reply(m, other, 401), AcquireLease)  # the lease is asked for: not ready
    call_id, actions = call(m)
    assert not of(actions, Send)  # it waits for the refresh
    assert call_id not in [a.call_id for a in of(actions, Fail)]


# -- what every call carries, and a 401 for a token already replaced ----------------------


@pytest.mark.parametrize("kind", ["apikey", "oauth"])
@pytest.mark.parametrize("extra", [{}, {"params": {"q": "1"}}])
def test_every_call_asks_for_json_and_names_cfauth(kind: str, extra: dict[str, Any]) -> None:
    m = machine(kind)
    for _ in range(2):  # the first request and the remembered one
        actions = m.handle(CallRequested(now=NOW, method="GET", path="item", **extra))
        (send,) = of(actions, Send)
        authorization = "Bearer " + ACCESS if kind == "oauth" else API_KEY.authorization
        assert send.request.headers == (
            ("Authorization", authorization),
            ("Accept", "application/json"),
            ("User-Agent", Config().user_agent),
        )
        reply(m, send, 200)


@pytest.mark.parametrize("extra", [{}, {"params": {"q": "1"}}, {"data": {"a": "1"}}])
def test_a_401_for_a_token_a_refresh_already_replaced_is_sent_again_without_refreshing(
    extra: dict[str, Any],
) -> None:
    """Two calls go out with the same access token; the first comes back 401 and
    the refresh replaces the token; when the second comes back 401 too, it is
    re-sent with the new token at once: its 401 was for the old one."""
    m = machine("oauth")
    first_actions = m.handle(CallRequested(now=NOW, method="POST", path="item"))
    (first,) = of(first_actions, Send)
    second_actions = m.handle(CallRequested(now=NOW, method="POST", path="booking", **extra))
    (second,) = of(second_actions, Send)
    assert of(reply(m, first, 401), AcquireLease)
    (refresh,) = m.handle(TokensLoaded(now=NOW, tokens=m.tokens))
    assert isinstance(refresh, Send)
    body = json.dumps(
        {"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 14000}
    ).encode()
    after = reply(m, refresh, 200, [("Content-Type", "application/json")], body)
    (resent_first,) = [s for s in of(after, Send) if s.call_id == first.call_id]
    assert ("Authorization", "Bearer access-2") in resent_first.request.headers
    again = reply(m, second, 401)
    assert not of(again, AcquireLease)
    (resent,) = of(again, Send)
    assert resent.call_id == second.call_id
    assert ("Authorization", "Bearer access-2") in resent.request.headers


def plain(m: Machine, now: float) -> list[Action]:
    return m.handle(CallRequested(now=now, method="GET", path="item"))


def plain_send(m: Machine, now: float) -> Send:
    (send,) = plain(m, now)
    assert isinstance(send, Send)
    return send


def test_a_pair_adopted_while_ready_that_is_due_sooner_is_refreshed_in_time() -> None:
    """The remembered request of a plain call is reused only while no refresh
    can be due: a pair adopted outside the lease that expires sooner than ours
    moves that time earlier."""
    m = machine("oauth", pair=tokens(expires_at=NOW + 14_000, updated_at=NOW))
    reply(m, plain_send(m, NOW), 200)
    sooner = pair("refresh-other", NOW + 1, expires_at=NOW + 1_000)
    assert m.handle(TokensLoaded(now=NOW + 1, tokens=sooner)) == []
    assert m.tokens == sooner
    due = plain(m, NOW + 900)  # inside the new pair's leeway, long before the old one's
    assert isinstance(due[0], CallAccepted)
    assert of(due, AcquireLease)
    assert not of(due, Send)


@pytest.mark.parametrize("now", [0.0, 0.5])
def test_a_plain_call_waits_for_a_refresh_even_with_the_clock_at_1970(now: float) -> None:
    """A clock at the epoch is a valid time: a plain call whose request is
    remembered still waits while a refresh runs."""
    m = machine("oauth", pair=TokenSet(ACCESS, REFRESH, 14_000.0, 14 * 86400.0, 0.0))
    reply(m, plain_send(m, now), 200)
    assert of(reply(m, plain_send(m, now), 401), AcquireLease)
    waiting = plain(m, now)
    assert [type(a) for a in waiting] == [CallAccepted]
