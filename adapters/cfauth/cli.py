"""The ``cfauth`` command.

``cfauth demo`` starts the built-in HTTPS sandbox and runs every flow against
it (token pair, OAuth2 login, proactive and reactive refresh, rate limiting,
the bookingplatform.app migration, a refused redirect, a rotated-out refresh
token), printing each event the machine received and the actions it
returned.  ``cfauth sandbox`` serves the sandbox in the foreground.

Nothing printed contains a secret: the events, actions and errors of
cfauth_core have secret-free reprs, and the demo prints only those.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from cfauth_core import (
    Account,
    Action,
    ApiKey,
    CfauthError,
    Config,
    Event,
    Machine,
    OAuth2App,
    TokenSet,
)

from ._extras import MissingExtra
from ._http import iso_times, shorten
from .stores import MemoryGrant
from .sync import Client, Driver

if TYPE_CHECKING:
    from cfauth.sandbox import Sandbox

__all__ = ["TracingMachine", "main"]


class TracingMachine(Machine):
    """A machine that reports every event and the actions it returned."""

    def __init__(self, *args: object, trace: Callable[[str], None], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._trace = trace

    def handle(self, event: Event) -> list[Action]:
        actions = super().handle(event)
        self._trace(f"    event  {_short(event)}")
        for action in actions:
            self._trace(f"      -> {_short(action)}")
        return actions


def _short(item: object) -> str:
    return shorten(iso_times(repr(item)), 160)


def browse(url: str, *, port: int, context: ssl.SSLContext) -> str:
    """What a browser does with the authorize URL under auto-consent: GET it
    (no credentials) from 127.0.0.1:``port`` and return the redirect's Location."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = http.client.HTTPSConnection(host, 443, context=context, timeout=10)
    conn.sock = context.wrap_socket(sock, server_hostname=host)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        location = response.getheader("Location")
    finally:
        conn.close()
    if response.status != 302 or location is None:
        raise RuntimeError(f"the consent page answered {response.status}, not a redirect")
    return location


def demo(out: TextIO = sys.stdout, sandbox: Sandbox | None = None) -> int:
    """Run every flow against a sandbox (a fresh one unless given); return the
    number of steps that did not behave."""
    from cfauth.sandbox import Sandbox  # noqa: PLC0415 - needs the sandbox extra

    if sandbox is None:
        with Sandbox() as fresh:
            return _demo(out, fresh)
    return _demo(out, sandbox)


def _demo(out: TextIO, sandbox: Sandbox) -> int:
    from cfauth.stdlib import HttpClientTransport  # noqa: PLC0415

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    failures = 0
    account = sandbox.account("acme")
    transport = HttpClientTransport(ssl_context=sandbox.ssl_context(), resolve=sandbox.resolve)
    clock = sandbox.clock

    def sleep(seconds: float) -> None:
        say(f"    (waiting {seconds:g} s on the sandbox clock)")
        clock.advance(seconds)

    def driver(credential: ApiKey | OAuth2App, tokens: TokenSet | None = None) -> Driver:
        machine = TracingMachine(
            Account.parse("acme"), credential, tokens, config=Config(), trace=say
        )
        return Driver(machine, transport, store=MemoryGrant(tokens), clock=clock.now, sleep=sleep)

    def step(
        title: str, run: Callable[[], str], expect_error: type[Exception] | None = None
    ) -> None:
        nonlocal failures
        say(f"\n== {title}")
        try:
            result = run()
        except CfauthError as error:
            if expect_error is not None and isinstance(error, expect_error):
                say(f"  ok, refused as it should be: {type(error).__name__}: {error}")
                return
            failures += 1
            say(f"  FAILED: {type(error).__name__}: {error}")
            return
        if expect_error is not None:
            failures += 1
            say(f"  FAILED: expected {expect_error.__name__}, got: {result}")
        else:
            say(f"  ok: {result}")

    say(f"cfauth demo: a Checkfront sandbox on https://127.0.0.1:{sandbox.port}, reached")
    say("through the real host names (acme.checkfront.com) with TLS verified against the")
    say("sandbox's own CA.  Below, every event the machine got and the actions it returned.")

    pair = Client(driver(ApiKey(account.api_key, account.api_secret)))
    step(
        "token pair: GET booking/index with HTTP Basic",
        lambda: f"{len(pair.get('booking/index').json()['booking/index'])} bookings",
    )

    app = OAuth2App(account.client_id, account.client_secret, account.redirect_uri)
    oauth = driver(app)
    client = Client(oauth)

    def login() -> str:
        import secrets  # noqa: PLC0415

        url = oauth.authorize(secrets.token_urlsafe(16), secrets.token_urlsafe(64))
        callback = browse(url, port=sandbox.port, context=sandbox.ssl_context())
        oauth.complete_authorization(callback)
        return "logged in; tokens stored"

    step("OAuth2: authorization code with PKCE (the sandbox consents at once)", login)
    step("OAuth2: a call with the bearer token", lambda: _status(client.get("item")))

    def proactive() -> str:
        clock.advance(14000 - 120)
        return _status(client.get("customer")) + " after refreshing before expiry"

    step("proactive refresh: 2 minutes before the access token expires", proactive)

    def reactive() -> str:
        sandbox.revoke_access_token("acme")
        return _status(client.get("item")) + " after a 401 and one refresh"

    step("reactive refresh: the access token was revoked", reactive)

    def limited() -> str:
        sandbox.fail_next(1, status=429, retry_after="2")
        return _status(client.get("item")) + " after honouring Retry-After"

    step("rate limit: 429 with Retry-After: 2", limited)

    def moved() -> str:
        sandbox.migrate("acme")
        response = client.post("customer", data={"customer_name": "Ada Lovelace"})
        return f"{_status(response)}; the account now lives at {oauth.machine.account.origin}"

    step("migration: 301 to acme.manage.na1.bookingplatform.app (POST kept)", moved)

    def hostile() -> str:
        sandbox.redirect_next(1, "https://evil.example/steal")
        return _status(client.get("item"))

    step(
        "a redirect to evil.example: refused, nothing sent there",
        hostile,
        expect_error=CfauthError,
    )

    stale = oauth.machine.tokens

    def rotated() -> str:
        clock.advance(14000)
        _status(client.get("item"))  # rotates the pair
        assert stale is not None
        other = Client(driver(app, stale))
        return _status(other.get("item"))

    step(
        "a second process still holding the rotated-out refresh token",
        rotated,
        expect_error=CfauthError,
    )
    evil = sandbox.evil_requests()
    say("\n== what reached evil.example: " + (f"{len(evil)} request(s)!" if evil else "nothing"))
    if evil:
        failures += 1
    transport.close()
    say(f"\n{'all flows behaved' if not failures else f'{failures} step(s) FAILED'}")
    return failures


def _status(response: object) -> str:
    status = getattr(response, "status", None)
    return f"HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cfauth", description="Checkfront API authentication")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run every flow against the built-in sandbox")
    serve = commands.add_parser("sandbox", help="serve the sandbox in the foreground")
    serve.add_argument("rest", nargs=argparse.REMAINDER, help="options for the sandbox")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return 1 if demo() else 0
        from cfauth.sandbox.__main__ import main as sandbox_main  # noqa: PLC0415

        return sandbox_main(args.rest)
    except MissingExtra as error:  # one line that says what to install, no traceback
        print(f"cfauth {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
