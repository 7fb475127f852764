"""Server text that echoes a secret, in any form the machine wrote it, never
reaches a message; nor do control characters or escape sequences.

Secrets are drawn from the widest alphabets their types accept.  A hostile
server (or transport) echoes each of them in every form the machine itself
produced — as given, form-encoded as in a token request body, percent-encoded
(either case of hex digit), inside the base64 of a Basic header (the
form-encoded pair and the raw pair), escaped as ``repr`` escapes it — glued
to other text with control characters and terminal escape sequences, through
every channel by which server text reaches an error: an OAuth error body, a
redirect's Location, a transport failure, a lease failure, the callback's
error description, and a Checkfront error object (``ApiError``).
"""

from __future__ import annotations

import json
import re
from base64 import b64encode
from collections.abc import Callable, Sequence
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cfauth import ApiError, Response, check_api_response
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
    LeaseFailed,
    Machine,
    OAuth2App,
    RefreshAborted,
    ResponseReceived,
    Send,
    SendFailed,
    TokenSet,
    TokensLoaded,
)

NOW = 1_700_000_000.0
STATE = "state-0001-" + "s" * 16


def _credential_text(min_size: int) -> st.SearchStrategy[str]:
    """What ApiKey and OAuth2App accept: any text without C0 controls, DEL or
    lone surrogates (``<`` and ``>`` left out: a secret starting or ending
    with them could be formed anew next to the ``<hidden>`` marker)."""
    return st.text(
        alphabet=st.characters(
            blacklist_categories=["Cs"], blacklist_characters="<>\x7f", min_codepoint=0x20
        ),
        min_size=min_size,
        max_size=24,
    )


#: What token responses may hold: visible ASCII.
_TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="<>"),
    min_size=8,
    max_size=24,
)
#: An authorization code: printable ASCII (spaces too).
_CODE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="<>"),
    min_size=8,
    max_size=24,
).filter(lambda c: c.strip() == c)
_VERIFIER = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~",
    min_size=43,
    max_size=64,
)
#: Text a hostile server glues around the echo: anything, controls and escapes included.
_NOISE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\x1b[31m", "\x1b]0;title\x07", "\r\n", "\x00", "\u2028", "\x9b2J", "\t"]),
)


def b64(text: str) -> str:
    return b64encode(text.encode()).decode("ascii")


def encodings(secret: str) -> set[str]:
    """The forms of ``secret`` the machine writes, computed here independently."""
    found = {secret, quote_plus(secret, safe=""), quote(secret, safe="")}
    found |= {re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in found}
    escaped = repr(secret + "'\"")[1:-4]  # as repr escapes it inside mixed quotes
    found |= {escaped, escaped.replace("\\'", "'")}
    return found


def basic_forms(user: str, password: str) -> set[str]:
    """The Basic credentials of an OAuth2 client: percent-encoded (RFC 6749
    section 2.3.1) and raw (the fallback for servers that do not decode)."""
    return {
        b64(f"{quote(user, safe='')}:{quote(password, safe='')}"),
        b64(f"{user}:{password}"),
    }


class World:
    """The secrets of one example, and machines that know them."""

    def __init__(
        self,
        *,
        api_key: str = "key-0001",
        api_secret: str = "api-secret-0001",
        client_id: str = "client-0001",
        client_secret: str = "client-secret-0001",
        access: str = "access-token-0001",
        refresh: str = "refresh-token-0001",
        code: str = "code-0001",
        verifier: str = "verifier-0001-" + "v" * 40,
    ) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.client_id, self.client_secret = client_id, client_secret
        self.access, self.refresh = access, refresh
        self.code, self.verifier = code, verifier
        self.pair = ApiKey(api_key, api_secret)
        self.app = OAuth2App(client_id, client_secret, "https://app.example/cb")

    @classmethod
    def draw(cls, data: st.DataObject) -> World:
        return cls(
            api_key=data.draw(_credential_text(1).filter(lambda k: ":" not in k)),
            api_secret=data.draw(_credential_text(8)),
            client_id=data.draw(_credential_text(1)),
            client_secret=data.draw(_credential_text(8)),
            access=data.draw(_TOKEN),
            refresh=data.draw(_TOKEN),
            code=data.draw(_CODE),
            verifier=data.draw(_VERIFIER),
        )

    def forms(self, knows: str = "all") -> set[str]:
        """Every form of the secrets a machine of kind ``knows`` holds: "pair"
        (an ApiKey machine), "call" or "refresh" (an OAuth2 machine with
        tokens), "login" (a login pending), "exchange" (one exchanging a
        code), or "all"."""
        found: set[str] = set()
        secrets: list[str] = []
        if knows in ("pair", "all"):
            found.add(b64(f"{self.api_key}:{self.api_secret}"))  # ApiKey: the raw pair
            secrets.append(self.api_secret)
        if knows != "pair":
            found |= basic_forms(self.client_id, self.client_secret)
            secrets.append(self.client_secret)
        if knows in ("call", "refresh", "all"):
            secrets += [self.access, self.refresh]
        if knows in ("exchange", "all"):
            secrets += [self.code, self.verifier]
        if knows == "login":
            secrets.append(self.verifier)
        for secret in secrets:
            found |= encodings(secret)
        return found

    def tokens(self) -> TokenSet:
        issued = NOW - 13_900
        return TokenSet(
            access_token=self.access,
            refresh_token=self.refresh,
            expires_at=issued + 14_000,
            refresh_expires_at=issued + REFRESH_TOKEN_LIFETIME,
            updated_at=issued,
        )

    # -- machines at the points where server text arrives --------------------------

    def api_call(self, oauth: bool) -> tuple[Machine, Send]:
        if oauth:
            m = Machine(Account.parse("acme"), self.app, self.tokens())
            now = NOW - 10_000  # fresh: no refresh
        else:
            m = Machine(Account.parse("acme"), self.pair)
            now = NOW
        actions = m.handle(CallRequested(now=now, method="GET", path="booking/index"))
        return m, sends(actions)[0]

    def exchange(self) -> tuple[Machine, Send]:
        m = Machine(Account.parse("acme"), self.app)
        m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=self.verifier))
        url = f"https://app.example/cb?code={quote(self.code, safe='')}&state={STATE}"
        return m, sends(m.handle(CallbackReceived(now=NOW, url=url)))[0]

    def refresh_request(self) -> tuple[Machine, Send]:
        m = Machine(Account.parse("acme"), self.app, self.tokens())
        m.handle(CallRequested(now=NOW, method="GET", path="booking/index"))
        return m, sends(m.handle(TokensLoaded(now=NOW, tokens=self.tokens())))[0]


def sends(actions: Sequence[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


Found = list[tuple[CfauthError, str]]


def errors(actions: Sequence[Action]) -> list[CfauthError]:
    found: list[CfauthError] = []
    for a in actions:
        if isinstance(a, (Fail, AuthorizationFailed, RefreshAborted, AuthorizationLost)):
            found.append(a.error)
            cause = getattr(a.error, "cause", None)
            if isinstance(cause, CfauthError):
                found.append(cause)
    return found


def answer(send: Send, status: int, body: bytes = b"", **headers: str) -> ResponseReceived:
    return ResponseReceived(
        now=NOW,
        request_id=send.request_id,
        status=status,
        headers=[(k.replace("_", "-"), v) for k, v in headers.items()],
        body=body,
    )


def oauth_error(description: str) -> bytes:
    return json.dumps({"error": "invalid_request", "error_description": description}).encode()


# -- the channels: server text in, the errors it ended up in out ---------------------


def via_token_error(world: World, echo: str) -> Found:
    found: Found = []
    for knows, start in (("exchange", world.exchange), ("refresh", world.refresh_request)):
        m, send = start()
        found += [(e, knows) for e in errors(m.handle(answer(send, 400, oauth_error(echo))))]
    return found


def via_location(world: World, echo: str) -> Found:
    found: Found = []
    for oauth in (False, True):
        knows = "call" if oauth else "pair"
        for location in ("https://evil.example/" + echo, "/oauth/" + echo):
            m, send = world.api_call(oauth)
            found += [(e, knows) for e in errors(m.handle(answer(send, 302, Location=location)))]
    for knows, start in (("exchange", world.exchange), ("refresh", world.refresh_request)):
        m, send = start()
        location = "https://evil.example/" + echo
        found += [(e, knows) for e in errors(m.handle(answer(send, 307, Location=location)))]
    return found


def via_send_failed(world: World, echo: str) -> Found:
    found: Found = []
    starts: list[tuple[str, Callable[[], tuple[Machine, Send]]]] = [
        ("pair", lambda: world.api_call(False)),
        ("call", lambda: world.api_call(True)),
        ("exchange", world.exchange),
        ("refresh", world.refresh_request),
    ]
    for knows, start in starts:
        m, send = start()
        event = SendFailed(now=NOW, request_id=send.request_id, reason=echo)
        found += [(e, knows) for e in errors(m.handle(event))]
    return found


def via_lease_failed(world: World, echo: str) -> Found:
    m = Machine(Account.parse("acme"), world.app, world.tokens())
    m.handle(CallRequested(now=NOW, method="GET", path="booking/index"))
    return [(e, "refresh") for e in errors(m.handle(LeaseFailed(now=NOW, reason=echo)))]


def via_callback_error(world: World, echo: str) -> Found:
    m = Machine(Account.parse("acme"), world.app, None)
    m.handle(AuthorizationRequested(now=NOW, state=STATE, code_verifier=world.verifier))
    url = (
        "https://app.example/cb?error=access_denied"
        f"&error_description={quote(echo, safe='', errors='surrogatepass')}&state={STATE}"
    )
    found = errors(m.handle(CallbackReceived(now=NOW, url=url)))
    # The verifier is known while the login is pending; the code is not (there is none).
    return [(e, "login") for e in found]


def via_api_error(world: World, echo: str) -> Found:
    found: Found = []
    for oauth in (False, True):
        m, _ = world.api_call(oauth)
        for body in (
            {"error": {"message": echo, echo: 1}},
            {"error": echo, "error_description": echo},
            {"request": {"status": "ERROR", "error": echo}},
        ):
            response = Response(400, [], json.dumps(body).encode(), "https://x.example/api")
            with pytest.raises(ApiError) as caught:
                check_api_response(response, m.scrub)
            found.append((caught.value, "call" if oauth else "pair"))
    return found


CHANNELS = {
    f.__name__: f
    for f in (
        via_token_error,
        via_location,
        via_send_failed,
        via_lease_failed,
        via_callback_error,
        via_api_error,
    )
}


def check(world: World, channel: str, echo: str) -> None:
    run = CHANNELS[channel]
    # A secret that is also part of the fixed text of a message cannot be told apart.
    baseline = " ".join(str(e) + repr(e) for e, _ in run(world, "x"))
    assume(not any(form in baseline for form in world.forms()))
    found = run(world, echo)
    assert found, channel
    for error, knows in found:
        text = str(error) + "\n" + repr(error)
        leaked = [form for form in world.forms(knows) if form in text]
        assert not leaked, f"{channel}: {type(error).__name__} shows {leaked!r}"
        assert str(error).isprintable(), f"{channel}: {str(error)!r}"


@pytest.mark.parametrize("channel", sorted(CHANNELS))
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_form_of_every_secret_is_hidden(channel: str, data: st.DataObject) -> None:
    world = World.draw(data)
    noise = [data.draw(_NOISE) for _ in range(3)]
    forms = sorted(world.forms())
    check(world, channel, noise[0].join(forms) + noise[1] + "|".join(forms) + noise[2])


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_control_characters_and_escape_sequences_never_reach_a_message(channel: str) -> None:
    world = World()
    hostile = "\x1b[2J\x1b]0;pwned\x07\r\nX-Evil: 1\x00\x9b31m\u2028\u202e"
    for error, _ in CHANNELS[channel](world, hostile):
        assert str(error).isprintable(), f"{channel}: {str(error)!r}"


def test_a_checkfront_error_object_quoting_the_basic_header_is_scrubbed() -> None:
    pair = ApiKey("key-0001", "api-secret-0001")
    m = Machine(Account.parse("acme"), pair)
    body = {"error": {"message": "bad header: " + pair.authorization, "code": 401}}
    response = Response(401, [], json.dumps(body).encode(), "https://acme.checkfront.com/api")
    with pytest.raises(ApiError) as caught:
        check_api_response(response, m.scrub)
    assert pair.authorization[6:] not in str(caught.value)
    assert pair.authorization[6:] not in repr(caught.value.error)
    assert "<hidden>" in str(caught.value)
    assert caught.value.error["code"] == 401
