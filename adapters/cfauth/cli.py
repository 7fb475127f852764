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
import json
import logging
import os
import socket
import ssl
import sys
import time
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
from .stores import GrantStore, MemoryGrant
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


# -- the commands -------------------------------------------------------------------

#: Exit codes (documented in docs/cli.rst).
EXIT_OK = 0
EXIT_FAILED = 1  # anything else that went wrong (a demo step, a store problem)
EXIT_USAGE = 2  # bad command line or configuration (argparse uses 2 as well)
EXIT_LOGIN = 3  # no usable grant: run cfauth login
EXIT_REMOTE = 4  # Checkfront answered with an error
EXIT_NETWORK = 5  # could not reach Checkfront (connect, TLS, timeout)

_DEFAULT_REDIRECT = "http://127.0.0.1:8976/callback"


class UsageProblem(CfauthError):
    """The command line or the environment is missing something."""


def _exit_code(error: BaseException) -> int:
    from cfauth_core import (  # noqa: PLC0415
        ActionRequired,
        CredentialsRejected,
        InvalidInput,
        LocalProtocolError,
        NetworkError,
        OAuthError,
        ReauthorizationRequired,
        RefreshFailed,
        RemoteProtocolError,
    )

    from ._http import ApiError  # noqa: PLC0415
    from .login import LoginError  # noqa: PLC0415

    if isinstance(error, (ReauthorizationRequired, LoginError)):
        return EXIT_LOGIN
    if isinstance(error, NetworkError) or (
        isinstance(error, RefreshFailed) and isinstance(error.cause, NetworkError)
    ):
        return EXIT_NETWORK
    if isinstance(error, RefreshFailed):
        return EXIT_REMOTE
    if isinstance(error, (UsageProblem, InvalidInput, LocalProtocolError)):
        return EXIT_USAGE
    if isinstance(error, (ApiError, OAuthError, RemoteProtocolError, CredentialsRejected)):
        return EXIT_REMOTE
    if isinstance(error, ActionRequired):
        return EXIT_REMOTE
    return EXIT_FAILED


class _Redact(logging.Filter):
    """Replaces known secret values in log records (a second line of defence:
    cfauth's own records hold none)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [value for value in secrets if len(value) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for value in self.secrets:
            text = text.replace(value, "<hidden>")
        record.msg, record.args = text, None
        return True


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            value = file.read().strip()
    except OSError as error:
        raise UsageProblem(
            f"{what}: cannot read {path!r} ({error.strerror or error}); give a readable file "
            "holding only the secret"
        ) from None
    if not value:
        raise UsageProblem(f"{what}: {path!r} is empty; put the secret in it")
    return value


def _resolve_map(values: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values or ():
        parts = value.rsplit(":", 3) if value.count(":") >= 3 else value.split(":")
        if value.count(":") == 2:
            host, port, addr = value.split(":")
            target = f"{addr}:{port}"
        elif value.count(":") == 3:
            host, port, addr, addr_port = parts
            target = f"{addr}:{addr_port}"
        else:
            raise UsageProblem(
                f"--resolve {value!r}: use HOST:PORT:ADDR (as curl), or HOST:PORT:ADDR:ADDR_PORT "
                "to reach another port, e.g. acme.checkfront.com:443:127.0.0.1:8443"
            )
        if not port.isdigit():
            raise UsageProblem(f"--resolve {value!r}: PORT must be a number")
        result[f"{host}:{port}"] = target
    return result


class _Context:
    """What the global options and the environment say."""

    def __init__(self, args: argparse.Namespace, say: Callable[[str], None]) -> None:
        self.args = args
        self.say = say
        self.json = bool(args.json)
        self.resolve = _resolve_map(args.resolve)
        self.cacert = args.cacert or _env("CFAUTH_CACERT")
        self._secrets: list[str] = []
        self.redact = _Redact(self._secrets)

    def secret(self, value: str) -> str:
        self._secrets.append(value)
        self.redact.secrets.append(value)
        return value

    def store(self) -> GrantStore:
        from .stores import open_store  # noqa: PLC0415

        return open_store(self.args.store or None)

    def account(self) -> str:
        account = getattr(self.args, "account", None) or _env("CFAUTH_ACCOUNT")
        if not account:
            raise UsageProblem(
                "which account? pass --account NAME (acme for acme.checkfront.com) or set "
                "CFAUTH_ACCOUNT"
            )
        return str(account)

    def client_id(self, required: bool = True) -> str | None:
        value = getattr(self.args, "client_id", None) or _env("CFAUTH_CLIENT_ID")
        if value is None and required:
            raise UsageProblem(
                "no OAuth2 client id: pass --client-id or set CFAUTH_CLIENT_ID (Manage > "
                "Developer in Checkfront)"
            )
        return value

    def oauth_app(self) -> OAuth2App:
        client_id = self.client_id()
        assert client_id is not None
        path = getattr(self.args, "client_secret_file", None)
        secret = _read_secret_file(path, "--client-secret-file") if path else None
        secret = secret or _env("CFAUTH_CLIENT_SECRET")
        if secret is None:
            raise UsageProblem(
                "no OAuth2 client secret: pass --client-secret-file PATH or set "
                "CFAUTH_CLIENT_SECRET (never on the command line, where shell history keeps it)"
            )
        redirect = (
            getattr(self.args, "redirect_uri", None)
            or _env("CFAUTH_REDIRECT_URI")
            or _DEFAULT_REDIRECT
        )
        return OAuth2App(client_id, self.secret(secret), redirect)

    def api_key(self) -> ApiKey | None:
        key, secret = _env("CFAUTH_API_KEY"), _env("CFAUTH_API_SECRET")
        if key is None or secret is None:
            return None
        return ApiKey(key, self.secret(secret))

    def client(self, credential: ApiKey | OAuth2App, config: Config | None = None) -> Client:
        from cfauth.stdlib import client  # noqa: PLC0415

        return client(
            self.account(),
            credential,
            store=self.store(),
            ca_file=self.cacert,
            resolve=self.resolve or None,
            config=config,
        )

    def emit(self, data: object, text: str) -> None:
        if self.json:
            print(json.dumps(data, sort_keys=True), flush=True)
        else:
            print(text, flush=True)


def _cmd_login(ctx: _Context) -> int:
    app = ctx.oauth_app()
    args = ctx.args
    with ctx.client(app) as client:
        interactive = sys.stderr.isatty()

        def show(url: str) -> None:
            # The URL alone on stdout (for scripts); the instruction on stderr.
            print("Open this URL in a browser to log in:", file=sys.stderr, flush=True)
            print(json.dumps({"authorize_url": url}) if ctx.json else url, flush=True)

        def countdown(remaining: float) -> None:
            if interactive:
                print(f"\rwaiting for the browser: {int(remaining):4d} s ", end="", file=sys.stderr)

        client.login(
            open_browser=not args.no_browser,
            timeout=args.timeout,
            show=show,
            countdown=countdown,
        )
        if interactive:
            print(file=sys.stderr)
        status = client.grant_status()
    ctx.emit({"logged_in": True, **status.to_dict()}, f"logged in\n{status.describe()}")
    return EXIT_OK


def _cmd_status(ctx: _Context) -> int:
    from .login import GrantStatus  # noqa: PLC0415

    with ctx.store() as store:
        wanted = getattr(ctx.args, "account", None) or _env("CFAUTH_ACCOUNT")
        rows = []
        for key in store.grants():
            if wanted and key.account != Account.parse(wanted).name and key.account != wanted:
                continue
            record = store.load(key)
            if record is None:
                continue
            status = GrantStatus.of(record.origin, record.tokens, time.time(), Config())
            rows.append((key, record, status))
    if ctx.json:
        for key, record, status in rows:
            print(
                json.dumps(
                    {
                        "account": key.account,
                        "client_id": key.client_id,
                        "grant": key.grant,
                        "credential": record.credential,
                        **status.to_dict(),
                    },
                    sort_keys=True,
                ),
                flush=True,
            )
    elif not rows:
        print("no stored grants (log in with: cfauth login --account NAME)")
    for key, _record, status in [] if ctx.json else rows:
        print(f"{key}\n  {status.describe()}")
    if not rows or not any(status.logged_in for _k, _r, status in rows):
        return EXIT_LOGIN
    return EXIT_OK


def _cmd_refresh(ctx: _Context) -> int:
    app = ctx.oauth_app()
    with ctx.client(app) as client:
        tokens = client.driver.machine.tokens
        if tokens is None:
            raise _login_needed(ctx)
    # Refresh now: a keep-alive window that opened just after the last update.
    now = time.time()
    opened = tokens.updated_at + max(now - tokens.updated_at, 0.002) / 2
    config = Config(keep_alive_before=max(tokens.refresh_expires_at - opened, 0.0))
    with ctx.client(app, config) as client:
        before = tokens.updated_at
        client.driver.tick()
        after = client.driver.machine.tokens
        if after is None or after.updated_at == before:
            raise _login_needed(ctx)
        status = client.grant_status()
    ctx.emit({"refreshed": True, **status.to_dict()}, f"refreshed\n{status.describe()}")
    return EXIT_OK


def _login_needed(ctx: _Context) -> CfauthError:
    from cfauth_core import ReauthorizationRequired  # noqa: PLC0415

    return ReauthorizationRequired(
        f"no usable grant for {ctx.account()!r} in the store: run cfauth login --account "
        f"{ctx.account()}"
    )


def _cmd_logout(ctx: _Context) -> int:
    from .stores import GrantKey  # noqa: PLC0415

    account = ctx.account()
    client_id = ctx.client_id(required=False)
    removed = []
    with ctx.store() as store:
        name = GrantKey.for_account(account, "x").account
        for key in store.grants():
            if key.account == name and client_id in (None, key.client_id) and store.delete(key):
                removed.append(str(key))
    ctx.emit(
        {"removed": removed},
        "\n".join(f"forgot {key}" for key in removed) or f"no stored grant for {account!r}",
    )
    return EXIT_OK


def _params(pairs: list[str]) -> list[tuple[str, str]]:
    result = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageProblem(f"parameter {pair!r}: write NAME=VALUE, e.g. status_id=PAID")
        result.append((name, value))
    return result


def _cmd_call(ctx: _Context) -> int:
    args = ctx.args
    method = args.method.upper()
    params = _params(args.params)
    credential: ApiKey | OAuth2App | None = ctx.api_key()
    if credential is None:
        credential = ctx.oauth_app()
    with ctx.client(credential) as client:
        if isinstance(credential, OAuth2App) and client.driver.machine.tokens is None:
            raise _login_needed(ctx)
        if method in ("GET", "DELETE"):
            response = client.request(method, args.path, params=params or None, check=False)
        else:
            response = client.request(method, args.path, data=params, check=False)
    try:
        body: object = response.json()
        text = json.dumps(body, indent=2, sort_keys=True)
    except ValueError:
        body, text = response.text, response.text
    if ctx.json:
        print(json.dumps({"status": response.status, "body": body}, sort_keys=True))
    else:
        print(text)
    from ._http import check_api_response  # noqa: PLC0415

    check_api_response(response)
    return EXIT_OK


def _cmd_demo(ctx: _Context) -> int:
    return EXIT_FAILED if demo() else EXIT_OK


def _cmd_sandbox(ctx: _Context) -> int:
    from cfauth.sandbox.__main__ import main as sandbox_main  # noqa: PLC0415

    rest = list(ctx.args.rest)
    if ctx.json and "--json" not in rest:
        rest.append("--json")
    return sandbox_main(rest)


_EPILOG = """\
exit codes: 0 ok, 1 failed, 2 usage or configuration, 3 login needed,
4 Checkfront answered an error, 5 network error (connect, TLS, timeout).

environment: CFAUTH_ACCOUNT, CFAUTH_CLIENT_ID, CFAUTH_CLIENT_SECRET,
CFAUTH_REDIRECT_URI, CFAUTH_API_KEY, CFAUTH_API_SECRET, CFAUTH_STORE, CFAUTH_CACERT.

try: cfauth demo     (every flow against a local sandbox, in seconds)
"""


def _parser() -> argparse.ArgumentParser:
    from cfauth_core import __version__  # noqa: PLC0415

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help="grant store: a file path (SQLite; .json for a JSON file) or a postgresql:// URL "
        "(default: $CFAUTH_STORE, else the SQLite store in your data folder)",
    )
    common.add_argument(
        "--cacert", default=argparse.SUPPRESS, metavar="FILE", help="trust this CA (PEM)"
    )
    common.add_argument(
        "--resolve",
        action="append",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT:ADDR",
        help="connect to ADDR for HOST:PORT, keeping the name for TLS (as curl; repeatable; "
        "HOST:PORT:ADDR:ADDR_PORT for another port)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logs on stderr (secrets redacted)",
    )
    parser = argparse.ArgumentParser(
        prog="cfauth",
        description="Authenticate with the Checkfront API and call it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        allow_abbrev=False,  # --client-secret must not be taken for --client-secret-file
    )
    parser.add_argument("--version", action="version", version=f"cfauth {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=help, parents=[common], allow_abbrev=False
        )

    def oauth_options(sub: argparse.ArgumentParser, secret: bool = True) -> None:
        sub.add_argument("--account", help="account name (acme) or origin; or $CFAUTH_ACCOUNT")
        sub.add_argument("--client-id", help="OAuth2 client id; or $CFAUTH_CLIENT_ID")
        if secret:
            sub.add_argument(
                "--client-secret-file",
                metavar="PATH",
                help="file holding the OAuth2 client secret; or $CFAUTH_CLIENT_SECRET",
            )
            sub.add_argument(
                "--redirect-uri",
                help=f"the app's registered redirect URI (default {_DEFAULT_REDIRECT}); "
                "or $CFAUTH_REDIRECT_URI",
            )

    login = command("login", "log in with a browser and store the grant")
    oauth_options(login)
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    login.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    status = command("status", "show the stored grants (never a token)")
    status.add_argument("--account", help="only this account")
    oauth_options(command("refresh", "refresh the stored grant now"))
    oauth_options(command("logout", "forget the stored grant(s) of an account"), secret=False)
    call = command(
        "call",
        "call the API: OAuth2 from the store, or a token pair from "
        "$CFAUTH_API_KEY/$CFAUTH_API_SECRET",
    )
    oauth_options(call)
    call.add_argument("method", help="GET, POST, PUT, PATCH or DELETE")
    call.add_argument("path", help="path under /api/3.0/, e.g. booking/index")
    call.add_argument("params", nargs="*", metavar="NAME=VALUE", help="query or form parameters")
    command("demo", "run every flow against a built-in sandbox and print what happened")
    serve = commands.add_parser(
        "sandbox",
        help="serve the sandbox (takes python -m cfauth.sandbox's options; ctl drives one)",
        add_help=False,
    )
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


_COMMANDS: dict[str, Callable[[_Context], int]] = {
    "login": _cmd_login,
    "status": _cmd_status,
    "refresh": _cmd_refresh,
    "logout": _cmd_logout,
    "call": _cmd_call,
    "demo": _cmd_demo,
    "sandbox": _cmd_sandbox,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "sandbox" in argv:  # everything after it is the sandbox's (argparse's REMAINDER
        at = argv.index("sandbox")  # does not take leading options in a subcommand)
        argv, rest = argv[: at + 1], argv[at + 1 :]
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        args.rest = rest
    for name, default in (("store", None), ("cacert", None), ("resolve", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    args.json = getattr(args, "json", False)
    args.verbose = getattr(args, "verbose", False)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        ctx = _Context(args, lambda text: print(text, file=sys.stderr))
        if args.verbose:
            handler = logging.StreamHandler(sys.stderr)
            handler.addFilter(ctx.redact)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger = logging.getLogger("cfauth")
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        return _COMMANDS[args.command](ctx)
    except MissingExtra as error:  # one line that says what to install, no traceback
        print(f"cfauth {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CfauthError as error:
        code = _exit_code(error)
        if args.json:
            print(
                json.dumps({"error": type(error).__name__, "message": str(error), "exit": code}),
                file=sys.stderr,
            )
        else:
            print(f"cfauth {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"cfauth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
