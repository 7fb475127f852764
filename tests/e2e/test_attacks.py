"""Attacks on request building, headers, OAuth inputs and secrets, against every driver.

Each attack runs on the blocking driver over http.client, the blocking
driver over urllib3, and the trio driver over h11, through their public
``client()`` factories, against a loopback TLS server that records the exact
bytes that arrive (``raw_server.RawServer``), reached through ``resolve``
with real certificates.  The same input gets the same answer from every
driver: refused with ``InvalidInput`` before a single byte is sent, or sent
in a form that cannot split a header or a request.  Errors are checked for
secrets in every form the machine wrote them, in their text and in the
locals of every frame of their traceback (what error reporters upload).
"""

from __future__ import annotations

import json
import traceback
from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

import cfauth.stdlib
import cfauth.trio
import cfauth.urllib3
from cfauth import ApiError, Response
from cfauth_core import (
    ApiKey,
    CfauthError,
    Credential,
    InvalidInput,
    OAuth2App,
    OAuthError,
    OAuthStateMismatch,
    ReauthorizationRequired,
    RemoteProtocolError,
    UntrustedRedirect,
)

from .harness import KINDS, TrioThread
from .raw_server import RawServer, Seen, response

TESTS = str(Path(__file__).parent.parent)
HOST = "acme.checkfront.com"
EVIL = "evil.example"
API_KEY = ApiKey("key-attack", "api+secret/attack=0001")
APP = OAuth2App("client attack", "client+secret/attack=0001", "https://app.example/cb")
STATE = "state-attack-" + "s" * 16
VERIFIER = "verifier-attack-" + "v" * 40
CODE = "code+attack/0001="


def forms(secret: str) -> set[str]:
    return {secret, quote_plus(secret, safe=""), quote(secret, safe="")}


def b64(text: str) -> str:
    return b64encode(text.encode()).decode("ascii")


#: What a token pair client knows, and what an OAuth2 client knows while logging in.
PAIR_SECRETS = forms(API_KEY.secret) | {API_KEY.authorization[6:]}
APP_SECRETS = set().union(
    forms(APP.client_secret),
    forms(CODE),
    forms(VERIFIER),
    {APP.token_authorization[6:], b64(f"{APP.client_id}:{APP.client_secret}")},
)
SECRETS = PAIR_SECRETS | APP_SECRETS


def leaked(error: BaseException) -> list[str]:
    """The secrets in ``error``'s text or in the locals of its traceback's frames
    (and its cause's), the frames of these tests aside (they hold the secrets)."""
    text = ""
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        rendered = traceback.TracebackException.from_exception(current, capture_locals=True)
        rendered.stack = traceback.StackSummary.from_list(
            [frame for frame in rendered.stack if not frame.filename.startswith(TESTS)]
        )
        text += "".join(rendered.format())
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            todo.append(cause)
    return sorted(s for s in SECRETS if s in text)


class Attacker:
    """A client of one kind, pointed at the raw server, with one blocking interface."""

    def __init__(self, kind: str, server: RawServer, credential: Credential, **options: Any):
        self.kind = kind
        self._trio: TrioThread | None = None
        common: dict[str, Any] = {
            "ssl_context": server.client_context(),
            "resolve": server.resolve,
        }
        if kind == "trio":
            self._trio = TrioThread()
            try:
                self.client: Any = cfauth.trio.client(HOST, credential, **common, **options)
            except BaseException:
                self._trio.close()
                raise
        elif kind == "stdlib":
            self.client = cfauth.stdlib.client(HOST, credential, **common, **options)
        else:
            self.client = cfauth.urllib3.client(HOST, credential, **common, **options)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._trio is not None:
            # A closure, not functools.partial: trio's frames show their
            # arguments' reprs, and a partial's shows the callback URL.
            async def call() -> Any:
                return await fn(*args, **kwargs)

            return self._trio.run(call)
        return fn(*args, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        result: Response = self._run(self.client.request, method, path, **kwargs)
        return result

    def login(self, callback: str) -> None:
        self.client.driver.authorize(STATE, VERIFIER)
        self._run(self.client.driver.complete_authorization, callback)

    def close(self) -> None:
        if self._trio is not None:
            self._trio.run(self.client.aclose)
            self._trio.close()
        else:
            self.client.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    running = RawServer((HOST, EVIL, "acme.manage.na1.bookingplatform.app"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(kind: str, server: RawServer) -> Iterator[Attacker]:
    attacker = Attacker(kind, server, API_KEY)
    try:
        yield attacker
    finally:
        attacker.close()


@pytest.fixture
def app(kind: str, server: RawServer) -> Iterator[Attacker]:
    attacker = Attacker(kind, server, APP)
    try:
        yield attacker
    finally:
        attacker.close()


def only_request(server: RawServer) -> Seen:
    assert len(server.seen) == 1, [s.request_line for s in server.seen]
    return server.seen[0]


def assert_well_framed(seen: Seen) -> None:
    """One request line, headers that are all ``name: value`` with known names
    at most once, to the account's host, and no header an attacker named."""
    _, target, version = seen.request_line.split(b" ")
    assert version == b"HTTP/1.1"
    assert target.startswith(b"/api/3.0/")
    assert seen.sni == HOST
    assert seen.header("host") == [HOST.encode()]
    assert len(seen.header("authorization")) == 1
    for line in seen.lines[1:]:
        assert b":" in line, line
        assert all(0x20 <= b < 0x7F or b == 0x09 for b in line), line
    assert not seen.header("x-evil")


# -- headers ---------------------------------------------------------------------------

HOSTILE_VALUES = [
    "1\r\nX-Evil: 1",
    "1\nX-Evil: 1",
    "1\rX-Evil: 1",
    "1\r\n\r\nGET /steal HTTP/1.1",
    "a\x00b",
    "a\x01b",
    "a\x1b[31mb",
    "a\x7fb",
    "caf\u00e9",
    "a\u2028b",
    " x1",
    "x1 ",
]


@pytest.mark.parametrize("where", ["on_behalf", "forwarded_for", "headers"])
def test_header_values_that_cannot_be_sent_are_refused_before_any_byte(
    pair: Attacker, server: RawServer, where: str
) -> None:
    for value in HOSTILE_VALUES:
        kwargs: dict[str, Any] = (
            {"headers": [("X-Note", value)]} if where == "headers" else {where: value}
        )
        with pytest.raises(InvalidInput) as caught:
            pair.request("GET", "item", **kwargs)
        assert value not in str(caught.value)
    assert server.seen == []
    # A value within the rule arrives exactly as given, once.
    kwargs = {"headers": [("X-Note", "a\tb c")]} if where == "headers" else {where: "a\tb c"}
    pair.request("GET", "item", **kwargs)
    seen = only_request(server)
    assert_well_framed(seen)
    name = {"on_behalf": "x-on-behalf", "forwarded_for": "x-forwarded-for"}.get(where, "x-note")
    assert seen.header(name) == [b"a\tb c"]


@pytest.mark.parametrize("where", ["on_behalf", "forwarded_for"])
def test_a_client_refuses_a_hostile_default_header(
    kind: str, server: RawServer, where: str
) -> None:
    with pytest.raises(InvalidInput, match=where):
        Attacker(kind, server, API_KEY, **{where: "10.0.0.1\r\nX-Evil: 1"})
    assert server.seen == []


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "Proxy-Authorization",
        "Host",
        "Content-Length",
        "Content-Type",
        "Transfer-Encoding",
        "Connection",
        "Expect",
        "Upgrade",
        "TE",
        "Trailer",
        "Keep-Alive",
        "X Evil",
        "X-Evil\r\nHost",
        "",
    ],
)
def test_reserved_or_malformed_header_names_are_refused(
    pair: Attacker, server: RawServer, name: str
) -> None:
    with pytest.raises(InvalidInput):
        pair.request("GET", "item", headers=[(name, "1")])
    assert server.seen == []


# -- paths and parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../oauth/token/",
        "item/../../oauth",
        "item/./x",
        "item?access_token=x",
        "item#x",
        "item\r\nHost: evil.example",
        "item\nX-Evil: 1",
        "item\\..\\oauth",
        "item\x00",
        "item/\udc80",
    ],
)
def test_hostile_paths_are_refused_before_any_byte(
    pair: Attacker, server: RawServer, path: str
) -> None:
    with pytest.raises(InvalidInput):
        pair.request("GET", path)
    assert server.seen == []


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("item/a b", b"/api/3.0/item/a%20b"),
        ("item/caf\u00e9", b"/api/3.0/item/caf%C3%A9"),
        ("item/%2e%2e/oauth", b"/api/3.0/item/%252e%252e/oauth"),
        ("item/\u2028", b"/api/3.0/item/%E2%80%A8"),
    ],
)
def test_odd_paths_are_percent_encoded_under_the_api_base(
    pair: Attacker, server: RawServer, path: str, target: bytes
) -> None:
    pair.request("GET", path)
    seen = only_request(server)
    assert_well_framed(seen)
    assert seen.request_line == b"GET " + target + b" HTTP/1.1"


INJECTION = "a\r\nX-Evil: 1 HTTP/1.1\r\nHost: evil.example\r\n\r\nGET / HTTP/1.1"


def test_parameters_cannot_split_the_request(pair: Attacker, server: RawServer) -> None:
    pair.request("GET", "item", params={"q": INJECTION, INJECTION: "1"})
    pair.request("POST", "booking/create", data={"note": INJECTION, "x": [INJECTION, "2"]})
    assert len(server.seen) == 2
    for seen in server.seen:
        assert_well_framed(seen)
    assert b"\r" not in server.seen[1].body
    assert server.seen[1].header("content-length") == [str(len(server.seen[1].body)).encode()]


@pytest.mark.parametrize(
    "value", [None, True, {"status_id": "PAID"}, [["a"]], b"raw", "\udc80"], ids=repr
)
def test_parameter_values_without_a_query_form_are_refused(
    pair: Attacker, server: RawServer, value: object
) -> None:
    with pytest.raises(InvalidInput, match="'filter'"):
        pair.request("GET", "item", params={"filter": value})
    with pytest.raises(InvalidInput, match="'filter'"):
        pair.request("POST", "item", data={"filter": value})
    assert server.seen == []


# -- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        f"https://{EVIL}/api/3.0/item",
        f"https://{HOST}@{EVIL}/api/3.0/item",
        f"http://{HOST}/api/3.0/item",
        f"https://{HOST}:8443/api/3.0/item",
        f"//{EVIL}/api/3.0/item",
        "/oauth/token/",
        f"https://{EVIL}/?leak=" + API_KEY.authorization,
    ],
)
def test_hostile_redirects_get_no_credentials(
    pair: Attacker, server: RawServer, location: str
) -> None:
    server.answer(response(302, b"", ("Location", location)))
    with pytest.raises(UntrustedRedirect) as caught:
        pair.request("GET", "item")
    seen = only_request(server)
    assert_well_framed(seen)
    assert not [s for s in server.seen if s.sni == EVIL]
    assert leaked(caught.value) == []
    assert str(caught.value).isprintable()


# -- what servers echo -------------------------------------------------------------------


def test_an_api_error_echoing_every_form_of_the_secret_shows_none(
    pair: Attacker, server: RawServer
) -> None:
    echo = (
        " ".join(sorted(PAIR_SECRETS)) + " \x1b[2J\x1b]0;pwned\x07 Basic " + API_KEY.authorization
    )
    body = json.dumps({"error": {"message": echo, "code": 401}}).encode()
    server.answer(response(400, body))
    with pytest.raises(ApiError) as caught:
        pair.request("GET", "item")
    assert leaked(caught.value) == []
    assert str(caught.value).isprintable()
    assert caught.value.error["code"] == 401


def test_a_token_endpoint_echoing_the_form_body_shows_none_of_it(
    app: Attacker, server: RawServer
) -> None:
    # The body the machine will send, echoed back in every form.
    form = f"grant_type=authorization_code&code={quote_plus(CODE)}&code_verifier={VERIFIER}"
    echo = f"{form} {' '.join(sorted(APP_SECRETS))} \x1b[31m\r\n"
    server.answer(
        response(400, json.dumps({"error": "invalid_grant", "error_description": echo}).encode())
    )
    with pytest.raises(OAuthError) as caught:
        app.login(f"https://app.example/cb?code={quote_plus(CODE)}&state={STATE}")
    assert leaked(caught.value) == []
    assert str(caught.value).isprintable()
    exchange = only_request(server)
    assert exchange.request_line == b"POST /oauth/token/ HTTP/1.1"
    assert exchange.header("authorization") == [APP.token_authorization.encode()]


@pytest.mark.parametrize(
    "access_token", ["a\r\nX-Evil: 1", "a\nb", "a\x01b", "a b", "caf\u00e9", "", 42, None]
)
def test_a_hostile_token_is_never_used(
    app: Attacker, server: RawServer, access_token: object
) -> None:
    body = {"access_token": access_token, "refresh_token": "RT-1", "expires_in": 14000}
    server.answer(response(200, json.dumps(body).encode()))
    with pytest.raises(RemoteProtocolError) as caught:
        app.login(f"https://app.example/cb?code={quote_plus(CODE)}&state={STATE}")
    assert leaked(caught.value) == []
    with pytest.raises(ReauthorizationRequired):
        app.request("GET", "item")
    # Only the exchange went out; no request ever carried a bearer token.
    assert [s.request_line for s in server.seen] == [b"POST /oauth/token/ HTTP/1.1"]


@pytest.mark.parametrize(
    ("callback", "error"),
    [
        (f"https://{EVIL}/cb?code=x&state={STATE}", OAuthStateMismatch),
        (f"https://app.example/other?code=x&state={STATE}", OAuthStateMismatch),
        (f"https://app.example/cb?code=x&state={'t' * 30}", OAuthStateMismatch),
        (f"https://app.example/cb?code=x&state={STATE}&iss=https%3A%2F%2F{EVIL}", CfauthError),
    ],
)
def test_hostile_callbacks_exchange_nothing(
    app: Attacker, server: RawServer, callback: str, error: type[CfauthError]
) -> None:
    with pytest.raises(error):
        app.login(callback)
    assert server.seen == []
