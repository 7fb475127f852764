"""No secret in any repr or str.

Every public class of ``cfauth_core`` (taken from ``__all__``: a new class
fails ``test_every_public_class_is_covered`` until it is added here) is built
with distinctive secrets: the API secret, the client secret, access and
refresh tokens, the authorization code and the PKCE verifier.  Requests and
errors come from real machines, including errors built from server responses
and transport failures that echo the secrets back.  None of the secrets, nor
the base64 of the Basic headers that carry them, may appear in ``repr()`` or
``str()`` of any of them.
"""

from __future__ import annotations

import json
import types
from base64 import b64encode
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, NamedTuple

import pytest

import cfauth_core
from cfauth_core import (
    REFRESH_TOKEN_LIFETIME,
    Account,
    Action,
    ActionRequired,
    ApiKey,
    AuthorizationFailed,
    AuthorizationRequested,
    CallbackReceived,
    CallCancelled,
    CallRequested,
    CfauthError,
    ClockTick,
    Config,
    Event,
    Fail,
    Forget,
    InsecureTransport,
    InvalidInput,
    InvalidTokenRecord,
    LeaseFailed,
    LocalProtocolError,
    LogoutRequested,
    Machine,
    OAuth2App,
    OAuthStateMismatch,
    RedirectKind,
    ResponseReceived,
    Send,
    SendFailed,
    State,
    StoreFailed,
    TokenSet,
    TokensLoaded,
    Trigger,
)

T0 = 1_700_000_000.0
API_SECRET = "SECRET-api-0001"
CLIENT_SECRET = "SECRET-client-0001"
ACCESS = "SECRET-access-0001"
REFRESH = "SECRET-refresh-0001"
NEW_ACCESS = "SECRET-access-0002"
NEW_REFRESH = "SECRET-refresh-0002"
LOGIN_ACCESS = "SECRET-access-0003"
LOGIN_REFRESH = "SECRET-refresh-0003"
CODE = "SECRET-code-0001"
VERIFIER = "SECRET-verifier-0001-" + "v" * 30
LOGIN_STATE = "state-0001-" + "s" * 16

API_KEY = ApiKey("key-0001", API_SECRET)
APP = OAuth2App("client-0001", CLIENT_SECRET, "https://app.example/callback")
ACCOUNT = Account.parse("acme")


def _b64(user: str, password: str) -> str:
    return b64encode(f"{user}:{password}".encode()).decode("ascii")


SECRETS: dict[str, str] = {
    "API secret": API_SECRET,
    "client secret": CLIENT_SECRET,
    "access token": ACCESS,
    "refresh token": REFRESH,
    "refreshed access token": NEW_ACCESS,
    "refreshed refresh token": NEW_REFRESH,
    "login access token": LOGIN_ACCESS,
    "login refresh token": LOGIN_REFRESH,
    "authorization code": CODE,
    "PKCE verifier": VERIFIER,
    "API key Basic credentials": _b64("key-0001", API_SECRET),
    "client Basic credentials": _b64("client-0001", CLIENT_SECRET),
}
assert SECRETS["API key Basic credentials"] in API_KEY.authorization
assert SECRETS["client Basic credentials"] in APP.token_authorization


def echo(*secrets: str) -> str:
    """Server or transport text quoting ``secrets`` (only ones the machine knows:
    it cannot scrub what it was never told)."""
    return "echo: " + " / ".join(secrets)


#: What an OAuth2 machine with the first token pair knows.
OAUTH_ECHO = echo(CLIENT_SECRET, ACCESS, REFRESH)
#: ... after its refresh.
REFRESHED_ECHO = echo(CLIENT_SECRET, NEW_ACCESS, NEW_REFRESH)
#: What the machine knows while exchanging a code.
LOGIN_ECHO = echo(CLIENT_SECRET, CODE, VERIFIER)
API_ECHO = echo(API_SECRET)


def leaks(obj: object) -> list[str]:
    """The secrets found in ``repr(obj)`` or ``str(obj)``."""
    text = repr(obj) + "\n" + str(obj)
    return [name for name, secret in SECRETS.items() if secret in text]


def tokens(access: str = ACCESS, refresh: str = REFRESH, stamp: float = T0) -> TokenSet:
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        expires_at=stamp + 14_000,
        refresh_expires_at=stamp + REFRESH_TOKEN_LIFETIME,
        updated_at=stamp,
    )


def response(request_id: int, status: int, body: object = b"", **headers: str) -> ResponseReceived:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ResponseReceived(
        now=T0 + 13_800,
        request_id=request_id,
        status=status,
        headers=[(k.replace("_", "-"), v) for k, v in headers.items()],
        body=data,
    )


def send_of(actions: list[Action], purpose: str = "call") -> Send:
    sends = [a for a in actions if isinstance(a, Send) and a.purpose == purpose]
    assert len(sends) == 1, actions
    return sends[0]


class Specimen(NamedTuple):
    label: str
    obj: object


# -- specimens --------------------------------------------------------------------------


def value_specimens() -> Iterator[Specimen]:
    yield Specimen("ApiKey", API_KEY)
    yield Specimen("OAuth2App", APP)
    yield Specimen("TokenSet", tokens())
    yield Specimen("Account", ACCOUNT)
    yield Specimen(
        "Account (migrated)", ACCOUNT.moved_to("https://acme.manage.na1.bookingplatform.app")
    )
    yield Specimen("Config", Config())
    yield Specimen(
        "RedirectTarget",
        ACCOUNT.judge_redirect(ACCOUNT.api_url("booking/index"), "/api/3.0/item"),
    )
    for enum in (State, Trigger, RedirectKind):
        for member in enum:
            yield Specimen(f"{enum.__name__}.{member.name}", member)


def event_specimens() -> Iterator[Specimen]:
    yield Specimen("Event", Event())
    yield Specimen(
        "CallRequested",
        CallRequested(
            now=T0,
            method="POST",
            path="booking/create",
            params={"page": "1"},
            data={"item_id": "4"},
            headers=[("X-On-Behalf", "12")],
        ),
    )
    token_body = json.dumps(
        {"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": 14000}
    ).encode()
    yield Specimen(
        "ResponseReceived (token response)",
        ResponseReceived(now=T0, request_id=1, status=200, headers=[], body=token_body),
    )
    yield Specimen("SendFailed", SendFailed(now=T0, request_id=1, reason="connection reset"))
    yield Specimen("ClockTick", ClockTick(now=T0))
    yield Specimen("TokensLoaded", TokensLoaded(now=T0, tokens=tokens()))
    yield Specimen("LeaseFailed", LeaseFailed(now=T0, reason="database is locked"))
    yield Specimen("StoreFailed", StoreFailed(now=T0, tokens=tokens(), reason="disk full"))
    yield Specimen(
        "AuthorizationRequested",
        AuthorizationRequested(now=T0, state=LOGIN_STATE, code_verifier=VERIFIER),
    )
    yield Specimen(
        "CallbackReceived",
        CallbackReceived(now=T0, url=f"{APP.redirect_uri}?code={CODE}&state={LOGIN_STATE}"),
    )
    yield Specimen("CallCancelled", CallCancelled(now=T0, call_id=1))
    yield Specimen("LogoutRequested", LogoutRequested(now=T0))
    yield Specimen("Forget", Forget())


def refresh_flow() -> Iterator[Specimen]:
    """An OAuth2 machine through a refresh, redirects, rate limits, a transport
    failure and finally the loss of its grant, with servers echoing secrets."""
    machine = Machine(ACCOUNT, APP, tokens())
    yield Specimen("Machine (ready)", machine)
    now = T0 + 13_800
    actions = machine.handle(CallRequested(now=now, method="GET", path="booking/index"))
    yield from (Specimen(f"call: {type(a).__name__}", a) for a in actions)
    actions = machine.handle(TokensLoaded(now=now, tokens=machine.tokens))
    refresh = send_of(actions, "refresh")
    assert REFRESH.encode() in (refresh.request.body or b"")
    yield Specimen("refresh Send", refresh)
    yield Specimen("refresh Request", refresh.request)
    yield Specimen("Machine (mid-refresh)", machine)
    new = {"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH, "expires_in": 14000}
    actions = machine.handle(response(refresh.request_id, 200, new))
    yield from (Specimen(f"refreshed: {type(a).__name__}", a) for a in actions)
    call = send_of(actions)
    yield Specimen("Bearer Request", call.request)

    # A redirect to an untrusted host whose Location carries the access token.
    evil = f"https://evil.example/steal?access_token={NEW_ACCESS}&secret={CLIENT_SECRET}"
    actions = machine.handle(response(call.request_id, 302, Location=evil))
    (fail,) = actions
    assert isinstance(fail, Fail)
    yield Specimen("Fail (untrusted redirect)", fail)
    yield Specimen("UntrustedRedirect.location", getattr(fail.error, "location", ""))

    # The account moves, then the server rate-limits until the call fails.
    actions = machine.handle(CallRequested(now=now, method="GET", path="item"))
    call = send_of(actions)
    moved = "https://acme.manage.na1.bookingplatform.app/api/3.0/item"
    actions = machine.handle(response(call.request_id, 301, Location=moved))
    yield from (Specimen(f"moved: {type(a).__name__}", a) for a in actions)
    call = send_of(actions)
    for attempt in range(10):
        actions = machine.handle(response(call.request_id, 429, Retry_After="1"))
        if isinstance(actions[0], Fail):
            break
        yield Specimen(f"rate limited: {type(actions[0]).__name__}", actions[0])
        actions = machine.handle(ClockTick(now=now + 2 + attempt))
        call = send_of(actions)
    yield Specimen("Fail (rate limited)", actions[0])

    # A transport failure whose reason carries secrets.
    actions = machine.handle(CallRequested(now=now, method="GET", path="customer"))
    call = send_of(actions)
    actions = machine.handle(
        SendFailed(
            now=now,
            request_id=call.request_id,
            reason=f"TLS alert; sent {REFRESHED_ECHO} Bearer {NEW_ACCESS}",
        )
    )
    yield Specimen("Fail (transport)", actions[0])

    # A delivered response.
    actions = machine.handle(CallRequested(now=now, method="GET", path="customer"))
    call = send_of(actions)
    actions = machine.handle(response(call.request_id, 200, b'{"request": {"status": "OK"}}'))
    yield Specimen("Deliver", actions[0])

    # Misuse while a refresh is in flight.
    later = now + 14_000
    actions = machine.handle(CallRequested(now=later, method="GET", path="booking/index"))
    actions = machine.handle(TokensLoaded(now=later, tokens=machine.tokens))
    refresh = send_of(actions, "refresh")
    assert NEW_REFRESH.encode() in (refresh.request.body or b"")
    with pytest.raises(LocalProtocolError) as misuse:
        machine.handle(TokensLoaded(now=later, tokens=tokens(NEW_ACCESS, NEW_REFRESH)))
    yield Specimen("LocalProtocolError (TokensLoaded while refreshing)", misuse.value)
    yield Specimen("Machine (mid-refresh, rotated)", machine)

    # The grant is refused, the server's description echoing everything.
    refused = {
        "error": "invalid_grant",
        "error_description": f"refresh token rejected: {REFRESHED_ECHO}",
    }
    actions = machine.handle(response(refresh.request_id, 400, refused))
    yield from (Specimen(f"grant lost: {type(a).__name__}", a) for a in actions)
    yield Specimen("Machine (reauthorization required)", machine)


def failing_refresh_flows() -> Iterator[Specimen]:
    for status, body in [
        (500, f"<html>upstream said {OAUTH_ECHO}</html>".encode()),
        (503, {"error": "temporarily_unavailable", "error_description": OAUTH_ECHO}),
        (401, {"error": "invalid_client", "error_description": OAUTH_ECHO}),
        (200, {"access_token": f"{NEW_ACCESS} {OAUTH_ECHO}", "refresh_token": NEW_REFRESH}),
    ]:
        machine = Machine(ACCOUNT, APP, tokens())
        now = T0 + 13_800
        machine.handle(CallRequested(now=now, method="GET", path="booking/index"))
        refresh = send_of(machine.handle(TokensLoaded(now=now, tokens=machine.tokens)), "refresh")
        actions = machine.handle(response(refresh.request_id, status, body))
        yield from (Specimen(f"refresh {status}: {type(a).__name__}", a) for a in actions)
    # A redirect of the refresh to an untrusted host, its Location echoing secrets.
    machine = Machine(ACCOUNT, APP, tokens())
    machine.handle(ClockTick(now=T0 + 13_800))
    refresh = send_of(
        machine.handle(TokensLoaded(now=T0 + 13_800, tokens=machine.tokens)), "refresh"
    )
    location = f"https://evil.example/oauth/token/?rt={REFRESH}&cs={CLIENT_SECRET}"
    actions = machine.handle(response(refresh.request_id, 307, Location=location))
    yield from (Specimen(f"refresh redirected: {type(a).__name__}", a) for a in actions)
    # The refresh's transport fails with a reason echoing secrets.
    machine = Machine(ACCOUNT, APP, tokens())
    machine.handle(ClockTick(now=T0 + 13_800))
    refresh = send_of(
        machine.handle(TokensLoaded(now=T0 + 13_800, tokens=machine.tokens)), "refresh"
    )
    actions = machine.handle(
        SendFailed(now=T0 + 13_800, request_id=refresh.request_id, reason=f"reset: {OAUTH_ECHO}")
    )
    yield from (Specimen(f"refresh send failed: {type(a).__name__}", a) for a in actions)
    # The lease cannot be taken; the store's message echoes secrets.
    machine = Machine(ACCOUNT, APP, tokens())
    machine.handle(CallRequested(now=T0 + 13_800, method="GET", path="booking/index"))
    actions = machine.handle(LeaseFailed(now=T0 + 13_800, reason=f"locked by {OAUTH_ECHO}"))
    yield from (Specimen(f"lease failed: {type(a).__name__}", a) for a in actions)


def start_login() -> tuple[Machine, Send]:
    machine = Machine(ACCOUNT, APP)
    machine.handle(AuthorizationRequested(now=T0, state=LOGIN_STATE, code_verifier=VERIFIER))
    url = f"{APP.redirect_uri}?code={CODE}&state={LOGIN_STATE}"
    exchange = send_of(machine.handle(CallbackReceived(now=T0, url=url)), "exchange")
    return machine, exchange


def login_flows() -> Iterator[Specimen]:
    machine = Machine(ACCOUNT, APP)
    actions = machine.handle(
        AuthorizationRequested(now=T0, state=LOGIN_STATE, code_verifier=VERIFIER)
    )
    yield Specimen("AuthorizeAt", actions[0])
    yield Specimen("Machine (authorizing)", machine)
    with pytest.raises(OAuthStateMismatch) as mismatch:
        machine.handle(CallbackReceived(now=T0, url=f"?code={CODE}&state={'x' * 30}"))
    yield Specimen("OAuthStateMismatch", mismatch.value)
    url = f"{APP.redirect_uri}?code={CODE}&state={LOGIN_STATE}"
    actions = machine.handle(CallbackReceived(now=T0, url=url))
    exchange = send_of(actions, "exchange")
    body = exchange.request.body or b""
    assert CODE.encode() in body
    assert VERIFIER.encode() in body
    yield Specimen("exchange Send", exchange)
    yield Specimen("exchange Request", exchange.request)
    yield Specimen("Machine (exchanging)", machine)
    new = {"access_token": LOGIN_ACCESS, "refresh_token": LOGIN_REFRESH, "expires_in": 14000}
    actions = machine.handle(
        ResponseReceived(
            now=T0,
            request_id=exchange.request_id,
            status=200,
            headers=[],
            body=json.dumps(new).encode(),
        )
    )
    yield from (Specimen(f"logged in: {type(a).__name__}", a) for a in actions)
    yield Specimen("Machine (logged in)", machine)

    # Denied, with the description echoing the code; and too late.
    for label, url, redirected_at in [
        ("denied", f"?error=access_denied&error_description=no+thanks&state={LOGIN_STATE}", None),
        ("late", f"?code={CODE}&state={LOGIN_STATE}", T0 - 120),
        ("no code", f"?state={LOGIN_STATE}", None),
    ]:
        machine = Machine(ACCOUNT, APP)
        machine.handle(AuthorizationRequested(now=T0, state=LOGIN_STATE, code_verifier=VERIFIER))
        actions = machine.handle(CallbackReceived(now=T0, url=url, redirected_at=redirected_at))
        yield Specimen(f"callback {label}: {type(actions[0]).__name__}", actions[0])

    # The exchange fails in transport after its deadline.
    machine, exchange = start_login()
    actions = machine.handle(
        SendFailed(now=T0 + 61, request_id=exchange.request_id, reason=f"timeout {LOGIN_ECHO}")
    )
    yield Specimen("exchange timed out", actions[0])
    # The exchange answered with a token response that is not valid.
    machine, exchange = start_login()
    bad = {"access_token": f"{LOGIN_ACCESS}\n", "refresh_token": LOGIN_REFRESH}
    actions = machine.handle(response(exchange.request_id, 200, bad))
    yield Specimen("exchange bad token response", actions[0])


def exchange_error_echo() -> list[Specimen]:
    """The token endpoint's error description echoes the code and the verifier."""
    machine, exchange = start_login()
    echo = {"error": "invalid_grant", "error_description": f"code {CODE} / verifier {VERIFIER}"}
    actions = machine.handle(response(exchange.request_id, 400, echo))
    assert isinstance(actions[0], AuthorizationFailed)
    return [Specimen("exchange refused: AuthorizationFailed", actions[0])]


def api_key_flows() -> Iterator[Specimen]:
    machine = Machine(ACCOUNT, API_KEY)
    yield Specimen("Machine (api key)", machine)
    actions = machine.handle(CallRequested(now=T0, method="GET", path="booking/index"))
    call = send_of(actions)
    yield Specimen("API key Send", call)
    yield Specimen("API key Request", call.request)
    actions = machine.handle(
        ResponseReceived(
            now=T0,
            request_id=call.request_id,
            status=401,
            headers=[],
            body=json.dumps({"error": "invalid_client", "error_description": API_ECHO}).encode(),
        )
    )
    yield Specimen("Fail (credentials rejected)", actions[0])
    actions = machine.handle(CallRequested(now=T0, method="GET", path="booking/index"))
    call = send_of(actions)
    actions = machine.handle(
        SendFailed(now=T0, request_id=call.request_id, reason=f"proxy said {API_ECHO}")
    )
    yield Specimen("Fail (api key transport)", actions[0])


def raised_errors() -> Iterator[Specimen]:
    """Errors raised at the caller, built from inputs carrying secrets."""
    with pytest.raises(InvalidInput) as header_error:
        CallRequested(
            now=T0, method="GET", path="x", headers=[("Authorization", f"Bearer {ACCESS}")]
        )
    yield Specimen("InvalidInput (Authorization header)", header_error.value)
    with pytest.raises(InvalidInput) as secret_error:
        ApiKey("key-0001", API_SECRET + "\n")
    yield Specimen("InvalidInput (secret with newline)", secret_error.value)
    with pytest.raises(InvalidInput) as account_error:
        Account.parse(f"https://key-0001:{API_SECRET}@acme.checkfront.com")
    yield Specimen("InvalidInput (credentials in the account URL)", account_error.value)
    with pytest.raises(InsecureTransport) as insecure:
        Account.parse("http://acme.checkfront.com")
    yield Specimen("InsecureTransport", insecure.value)
    record = tokens().to_dict()
    for broken in (
        {**record, "refresh_token": f"{REFRESH} x"},
        {**record, "expires_at": ACCESS},
        {**record, "version": 99},
        {**record, "extra": REFRESH},
    ):
        with pytest.raises(InvalidTokenRecord) as invalid:
            TokenSet.from_dict(broken)
        yield Specimen("InvalidTokenRecord", invalid.value)
    with pytest.raises(InvalidInput) as verifier_error:
        Machine(ACCOUNT, APP).handle(
            AuthorizationRequested(now=T0, state=LOGIN_STATE, code_verifier=VERIFIER + "!")
        )
    yield Specimen("InvalidInput (bad verifier)", verifier_error.value)
    yield Specimen("CfauthError", CfauthError("base error"))
    yield Specimen("ActionRequired", ActionRequired("do something"))
    yield Specimen("Action", Action())


def shown_cause(error: BaseException) -> BaseException | None:
    """The chained exception a traceback shows (``__suppress_context__`` respected)."""
    if error.__cause__ is not None:
        return error.__cause__
    return None if error.__suppress_context__ else error.__context__


def with_causes(specimens: list[Specimen]) -> list[Specimen]:
    """Add every error inside an action and every cause of an error."""
    out: list[Specimen] = []
    for specimen in specimens:
        out.append(specimen)
        error = getattr(specimen.obj, "error", None)
        depth = 0
        while isinstance(error, BaseException) and depth < 5:
            out.append(Specimen(f"{specimen.label} -> {type(error).__name__}", error))
            error = getattr(error, "cause", None) or shown_cause(error)
            depth += 1
        if isinstance(specimen.obj, BaseException):
            cause = getattr(specimen.obj, "cause", None)
            if cause is not None:
                out.append(Specimen(f"{specimen.label} -> cause", cause))
    return out


def all_specimens() -> list[Specimen]:
    return with_causes(
        [
            *value_specimens(),
            *event_specimens(),
            *refresh_flow(),
            *failing_refresh_flows(),
            *login_flows(),
            *api_key_flows(),
            *raised_errors(),
        ]
    )


SPECIMENS = all_specimens()


# -- the tests -----------------------------------------------------------------------------


def test_every_public_class_is_covered() -> None:
    """A class in ``__all__`` without a specimen here fails: add one."""
    built = {type(s.obj) for s in SPECIMENS}
    missing = []
    for name in cfauth_core.__all__:
        obj = getattr(cfauth_core, name)
        if not isinstance(obj, type) or isinstance(obj, types.GenericAlias):
            continue  # not a class (Python 3.10 counts generic aliases as types)
        if issubclass(obj, Enum):
            covered = all(any(s.obj is member for s in SPECIMENS) for member in obj)
        else:
            covered = obj in built
        if not covered:
            missing.append(name)
    assert missing == []


def test_the_specimens_really_carry_the_secrets() -> None:
    """The check below is not vacuous: the secrets are in the objects' data."""
    carried: dict[str, Callable[[Any], bool]] = {
        "TokenSet": lambda o: o.access_token == ACCESS and o.refresh_token == REFRESH,
        "ApiKey": lambda o: o.secret == API_SECRET,
        "OAuth2App": lambda o: o.client_secret == CLIENT_SECRET,
        "refresh Request": lambda o: (
            REFRESH.encode() in o.body and ("Authorization", APP.token_authorization) in o.headers
        ),
        "exchange Request": lambda o: CODE.encode() in o.body and VERIFIER.encode() in o.body,
        "API key Request": lambda o: ("Authorization", API_KEY.authorization) in o.headers,
        "Bearer Request": lambda o: ("Authorization", f"Bearer {NEW_ACCESS}") in o.headers,
        "AuthorizationRequested": lambda o: o.code_verifier == VERIFIER,
        "CallbackReceived": lambda o: CODE in o.url,
        "ResponseReceived (token response)": lambda o: ACCESS.encode() in o.body,
    }
    by_label = {s.label: s.obj for s in SPECIMENS}
    for label, check in carried.items():
        assert check(by_label[label]), label


@pytest.mark.parametrize("specimen", SPECIMENS, ids=[s.label for s in SPECIMENS])
def test_no_secret_in_repr_or_str(specimen: Specimen) -> None:
    assert leaks(specimen.obj) == []


def test_errors_from_echoing_servers_still_say_what_happened() -> None:
    """Scrubbing hides the secrets but keeps the message useful (and the echo was
    really there to scrub)."""
    by_label = {s.label: s.obj for s in SPECIMENS}
    fail = by_label["Fail (untrusted redirect)"]
    assert isinstance(fail, Fail)
    assert "evil.example" in str(fail.error)
    assert "<hidden>" in str(fail.error)
    lost: Any = by_label["grant lost: AuthorizationLost"]
    assert "invalid_grant" in repr(lost.error) + repr(lost.error.cause)


@pytest.mark.parametrize("specimen", exchange_error_echo(), ids=lambda s: s.label)
def test_exchange_error_echoing_code_and_verifier_is_scrubbed(specimen: Specimen) -> None:
    assert leaks(specimen.obj) == []
    assert leaks(getattr(specimen.obj, "error", None)) == []


@pytest.mark.parametrize("oauth", [True, False], ids=["client", "api-key"])
def test_basic_credentials_echoed_by_the_transport_are_scrubbed(oauth: bool) -> None:
    """A transport error quoting the Authorization header it was given (base64 of
    the client or API credentials) must not carry it into the error."""
    header = APP.token_authorization if oauth else API_KEY.authorization
    machine = Machine(ACCOUNT, APP, tokens()) if oauth else Machine(ACCOUNT, API_KEY)
    if oauth:
        machine.handle(ClockTick(now=T0 + 13_800))
        actions = machine.handle(TokensLoaded(now=T0 + 13_800, tokens=machine.tokens))
        request_id = send_of(actions, "refresh").request_id
    else:
        actions = machine.handle(CallRequested(now=T0, method="GET", path="item"))
        request_id = send_of(actions).request_id
    reason = f"proxy refused 'Authorization: {header}'"
    actions = machine.handle(SendFailed(now=T0 + 13_800, request_id=request_id, reason=reason))
    assert actions
    for action in actions:
        assert leaks(action) == []
        assert leaks(getattr(action, "error", None)) == []


def _every_chained(error: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "cause", None)]


def test_no_secret_anywhere_in_an_error_chain() -> None:
    """Error reporters may walk ``__context__`` even when it is suppressed; the
    original, unscrubbed error must not ride along."""
    errors = [s.obj for s in SPECIMENS if isinstance(s.obj, BaseException)]
    assert errors
    for error in errors:
        for chained in _every_chained(error):
            assert leaks(chained) == [], f"{error!r} chains {chained!r}"
