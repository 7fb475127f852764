"""The sandbox's behaviour, without sockets: ``SandboxApp.handle(request) -> response``.

Everything here runs under one lock, so the HTTPS server may call :meth:`SandboxApp.handle`
from any number of threads (and a test may call it directly, with no network at all).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from cfauth_core import CfauthError, InvalidInput

from ._clock import Clock, SandboxClock
from ._model import Credential, RequestRecord, SandboxAccount, SandboxRequest, SandboxResponse

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "CODE_LIFETIME",
    "DEFAULT_REDIRECT_URI",
    "EVIL_HOST",
    "REFRESH_TOKEN_LIFETIME",
    "REGIONS",
    "SandboxApp",
]

ACCESS_TOKEN_LIFETIME = 14000
"""Seconds an access token lives (Checkfront: 14000)."""
REFRESH_TOKEN_LIFETIME = 14 * 24 * 3600
"""Seconds a refresh token lives from issue (Checkfront: 14 days)."""
CODE_LIFETIME = 60
"""Seconds an authorization code may wait before it is exchanged (Checkfront: 60)."""
REGIONS = ("na1", "eu1")
"""Regions an account may be migrated to (``NAME.manage.REGION.bookingplatform.app``)."""
EVIL_HOST = "evil.example"
"""An untrusted host the sandbox also serves (and records) so redirects to it can be tested."""
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8976/callback"
CONTROL_PREFIX = "/_sandbox/"
"""The control path (off unless :meth:`SandboxApp.enable_control` was called)."""
"""The redirect URI of each account's default OAuth2 client."""

REALM = "Service"
REDACTED = "[redacted]"
SENSITIVE_NAMES = frozenset(
    {
        "access_token",
        "api_key",
        "api_secret",
        "client_secret",
        "code",
        "code_verifier",
        "id_token",
        "password",
        "refresh_token",
        "secret",
        "token",
    }
)
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_API_RE = re.compile(r"/api/(3\.0|4\.0)(?:/(.*))?")
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"

_STATUS_NAMES = {
    "PAID": "Paid",
    "PEND": "Pending",
    "HOLD": "On Hold",
    "STOP": "Cancelled",
}


# ---------------------------------------------------------------------------
# Internal state
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Client:
    account: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str


@dataclass(slots=True)
class _Code:
    account: str
    client_id: str
    redirect_uri: str
    challenge: str | None
    issued_at: float


@dataclass(slots=True)
class _AccessToken:
    account: str
    client_id: str
    expires_at: float


@dataclass(slots=True)
class _RefreshToken:
    account: str
    client_id: str
    expires_at: float
    access_token: str = field(repr=False)


@dataclass(slots=True)
class _Account:
    name: str
    account_id: int
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    default_client: str = field(repr=False)
    clients: dict[str, _Client] = field(default_factory=dict, repr=False)
    region: str | None = None
    bare_location: bool = False
    bookings: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Injection:
    remaining: int
    path_prefix: str | None
    make: Callable[[], SandboxResponse]


@dataclass(slots=True)
class _Auth:
    """The credential a request carried, parsed."""

    kind: Credential
    header_present: bool
    param_present: bool
    malformed: bool = False
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)


@dataclass(slots=True)
class _Parsed:
    request: SandboxRequest
    host: str
    sni: str | None
    path: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]]
    is_form: bool
    auth: _Auth
    account: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def method(self) -> str:
        return self.request.method.upper()

    def q(self, name: str) -> str | None:
        return _first(self.query, name)

    def f(self, name: str) -> str | None:
        return _first(self.form, name)


def _first(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def _normalise_host(value: str | None) -> str:
    if not value:
        return ""
    host = value.strip().lower()
    if host.startswith("["):  # IPv6 literal, with or without a port
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def _seed_data(name: str) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    prefix = name[:4].upper()
    items = {
        1: {"item_id": 1, "sku": "kayak", "name": "Kayak Tour", "price": "120.00"},
        2: {"item_id": 2, "sku": "bike", "name": "Bike Rental", "price": "45.00"},
        3: {"item_id": 3, "sku": "zip", "name": "Zipline", "price": "80.00"},
    }
    customers = {
        1: {"customer_id": 1, "customer_name": "Ada Lovelace", "customer_email": "ada@example.com"},
        2: {"customer_id": 2, "customer_name": "Alan Turing", "customer_email": "alan@example.com"},
    }
    rows = [
        (1, "PAID", 1, 1, "120.00"),
        (2, "PEND", 2, 2, "45.00"),
        (3, "PAID", 2, 3, "80.00"),
        (4, "HOLD", 1, 2, "90.00"),
        (5, "STOP", 1, 3, "80.00"),
    ]
    bookings: dict[int, Any] = {}
    for booking_id, status, customer, item, total in rows:
        bookings[booking_id] = {
            "booking_id": booking_id,
            "code": f"{prefix}-{100000 + booking_id}",
            "status_id": status,
            "status_name": _STATUS_NAMES[status],
            "created_date": 1_700_000_000 + booking_id * 86400,
            "total": total,
            "customer_id": customers[customer]["customer_id"],
            "customer_name": customers[customer]["customer_name"],
            "customer_email": customers[customer]["customer_email"],
            "summary": items[item]["name"],
        }
    return bookings, items, customers


def _json_response(
    status: int, payload: object, headers: Iterable[tuple[str, str]] = ()
) -> SandboxResponse:
    body = json.dumps(payload).encode()
    return SandboxResponse(status, (("Content-Type", JSON_TYPE), *headers), body)


def _error(
    status: int, error: str, description: str, headers: Iterable[tuple[str, str]] = ()
) -> SandboxResponse:
    return _json_response(status, {"error": error, "error_description": description}, headers)


def _html(status: int, title: str, body_html: str) -> SandboxResponse:
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body_html}\n</body></html>\n"
    )
    return SandboxResponse(status, (("Content-Type", HTML_TYPE),), page.encode())


def _redirect(
    status: int, location: str, headers: Iterable[tuple[str, str]] = ()
) -> SandboxResponse:
    body = f"<html><body>Moved to <a href='{html.escape(location)}'>here</a>.</body></html>"
    return SandboxResponse(
        status,
        (("Location", location), ("Content-Type", HTML_TYPE), *headers),
        body.encode(),
    )


def _add_query(uri: str, params: Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(uri)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _bearer_challenge(error: str, description: str) -> tuple[str, str]:
    return (
        "WWW-Authenticate",
        f'Bearer realm="{REALM}", error="{error}", error_description="{description}"',
    )


# ---------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------


class UnknownAccount(InvalidInput, KeyError):
    """No sandbox account by that name (a ``KeyError`` too, for lookups)."""

    def __str__(self) -> str:
        return self.message


class SandboxApp:
    """A Checkfront-compatible API server, sans-IO.

    ``handle(SandboxRequest) -> SandboxResponse`` is the whole protocol; :class:`Sandbox`
    puts it behind HTTPS on 127.0.0.1. All state sits behind one lock.
    """

    def __init__(
        self,
        accounts: Sequence[str] = ("acme",),
        clock: Clock | None = None,
        *,
        on_request: Callable[[RequestRecord], None] | None = None,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
    ) -> None:
        if isinstance(accounts, str):
            accounts = (accounts,)
        if not accounts:
            raise InvalidInput(
                "a sandbox needs at least one account name; pass e.g. accounts=('acme',)"
            )
        self._lock = threading.RLock()
        self.clock: Clock = clock if clock is not None else SandboxClock()
        self.auto_consent: bool = True
        """Answer ``GET /oauth/`` with an immediate redirect (True) or a consent page."""
        self.deny_next: bool = False
        """Deny the next authorization decision (``error=access_denied``), then reset."""
        self.client_credentials: str = "form"
        """How ``/oauth/token/`` reads the Basic client id and secret, as real servers
        differ: ``"form"`` form-decodes them (RFC 6749 2.3.1: ``+`` and ``%20`` are a
        space), ``"percent"`` only percent-decodes them (``+`` stays ``+``), ``"raw"``
        compares them as sent, without decoding."""
        self.access_token_lifetime: int = ACCESS_TOKEN_LIFETIME
        self.refresh_token_lifetime: int = REFRESH_TOKEN_LIFETIME
        self.code_lifetime: int = CODE_LIFETIME
        self.control_token: str | None = None
        """The token the control path (``/_sandbox/...``) requires in the
        ``X-Sandbox-Control`` header; ``None`` (the default) turns the path off."""
        self._on_request = on_request
        self._accounts: dict[str, _Account] = {}
        self._hosts: dict[str, tuple[str, str | None]] = {}
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._injections: list[_Injection] = []
        self._records: list[RequestRecord] = []
        self._secrets: set[str] = set()
        for index, raw in enumerate(accounts, start=1):
            name = raw.lower()
            if not _NAME_RE.fullmatch(name) or name in self._accounts:
                raise InvalidInput(
                    f"account names must be distinct DNS labels, got {raw!r}; pass lower-case "
                    "names of letters, digits and hyphens such as 'acme'"
                )
            bookings, items, customers = _seed_data(name)
            account = _Account(
                name=name,
                account_id=index,
                api_key=self._new_secret(),
                api_secret=self._new_secret(),
                default_client="",
                bookings=bookings,
                items=items,
                customers=customers,
            )
            self._accounts[name] = account
            self._hosts[f"{name}.checkfront.com"] = (name, None)
            for region in REGIONS:
                self._hosts[f"{name}.manage.{region}.bookingplatform.app"] = (name, region)
            client_id, _ = self.register_client(name, redirect_uri)
            account.default_client = client_id

    # -- configuration and inspection -------------------------------------------------

    @property
    def accounts(self) -> tuple[str, ...]:
        """The account names, in order."""
        return tuple(self._accounts)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host name the sandbox serves (its certificate covers all of them)."""
        return (*self._hosts, EVIL_HOST)

    def origin(self, name: str) -> str:
        """``https://NAME.checkfront.com``: the account's original origin."""
        return f"https://{self._get_account(name).name}.checkfront.com"

    def new_origin(self, name: str, region: str = "na1") -> str:
        """``https://NAME.manage.REGION.bookingplatform.app``: where a migrated account lives."""
        if region not in REGIONS:
            raise InvalidInput(f"region must be one of {REGIONS}, got {region!r}")
        return f"https://{self._get_account(name).name}.manage.{region}.bookingplatform.app"

    def account(self, name: str) -> SandboxAccount:
        """A snapshot of account ``name``: its token pair and its default OAuth2 client."""
        with self._lock:
            account = self._get_account(name)
            client = account.clients[account.default_client]
            origin = (
                self.new_origin(account.name, account.region)
                if account.region
                else self.origin(account.name)
            )
            return SandboxAccount(
                name=account.name,
                account_id=account.account_id,
                api_key=account.api_key,
                api_secret=account.api_secret,
                client_id=client.client_id,
                client_secret=client.client_secret,
                redirect_uri=client.redirect_uri,
                origin=origin,
                region=account.region,
            )

    def register_client(
        self,
        name: str,
        redirect_uri: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> tuple[str, str]:
        """Register an OAuth2 client for account ``name``; return ``(client_id, client_secret)``.

        ``client_id``/``client_secret`` default to fresh random hex; pass your own (for
        example with ``:`` or ``+`` in them) to test RFC 6749 2.3.1 form-encoding.
        """
        if not redirect_uri:
            raise InvalidInput(
                "register_client needs the exact redirect_uri the client will send; pass "
                "e.g. redirect_uri='http://127.0.0.1:8765/callback'"
            )
        with self._lock:
            account = self._get_account(name)
            cid = client_id if client_id is not None else self._new_secret()
            secret = client_secret if client_secret is not None else self._new_secret()
            if not cid or not secret:
                raise InvalidInput(
                    "client_id and client_secret must not be empty; leave them out to have "
                    "the sandbox make them"
                )
            if cid in self._clients:
                raise InvalidInput(
                    f"client_id {cid!r} is already registered; pass another or leave it out"
                )
            if len(secret) >= 8:  # scrubbed from records; a shorter one would scrub noise
                self._secrets.add(secret)
            client = _Client(account.name, cid, secret, redirect_uri)
            self._clients[cid] = client
            account.clients[cid] = client
            return cid, secret

    def issue_tokens(self, name: str, client_id: str | None = None) -> dict[str, Any]:
        """Mint a token pair for ``name`` directly (no login dance) and return the token response.

        Handy for starting a driver test from a stored ``TokenSet``.
        """
        with self._lock:
            account = self._get_account(name)
            cid = client_id if client_id is not None else account.default_client
            if cid not in account.clients:
                raise InvalidInput(
                    f"no client {cid!r} for account {account.name!r}; register it first "
                    "with register_client(...)"
                )
            return self._issue(account.name, cid)

    def revoke_access_token(self, name: str) -> int:
        """Make every current access token of account ``name`` stop working.

        Refresh tokens stay valid, so a client can recover by refreshing. Returns the count.
        """
        with self._lock:
            account = self._get_account(name).name
            doomed = [t for t, a in self._access.items() if a.account == account]
            for token in doomed:
                del self._access[token]
            return len(doomed)

    def revoke_grants(self, name: str) -> int:
        """Revoke every access AND refresh token of ``name`` (the user must log in again)."""
        with self._lock:
            account = self._get_account(name).name
            count = self.revoke_access_token(account)
            doomed = [t for t, r in self._refresh.items() if r.account == account]
            for token in doomed:
                del self._refresh[token]
            return count + len(doomed)

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: str | None = "1",
        *,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (to account hosts, optionally only under
        ``path_prefix``) with ``status`` (429, 500, 503...) and ``Retry-After`` if given."""
        if status < 400:
            raise InvalidInput(f"fail_next takes an error status (>= 400), got {status!r}")
        errors = {
            429: ("rate_limited", "Too many requests; slow down and retry later."),
            503: ("temporarily_unavailable", "The service is temporarily unavailable."),
        }
        error, description = errors.get(status, ("server_error", "Injected sandbox failure."))
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        self._inject(n, path_prefix, lambda: _error(status, error, description, headers))

    def respond_next(
        self,
        n: int,
        status: int,
        body: bytes | str | Mapping[str, Any] = b"",
        headers: Sequence[tuple[str, str]] = (),
        *,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with exactly this response (a dict body
        is sent as JSON): for malformed token responses and other odd servers."""
        if isinstance(body, Mapping):
            raw = json.dumps(dict(body)).encode()
            all_headers = (("Content-Type", JSON_TYPE), *headers)
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
            all_headers = tuple(headers)
        self._inject(n, path_prefix, lambda: SandboxResponse(status, all_headers, raw))

    def redirect_next(
        self,
        n: int,
        location: str,
        status: int = 302,
        *,
        path_prefix: str | None = "/api/",
    ) -> None:
        """Answer the next ``n`` requests under ``path_prefix`` (default: API calls) with
        a ``status`` redirect to ``location`` (e.g. ``https://evil.example/steal``)."""
        if status not in (301, 302, 303, 307, 308):
            raise InvalidInput(
                f"redirect_next takes a redirect status (301/302/303/307/308), got {status!r}"
            )
        self._inject(n, path_prefix, lambda: _redirect(status, location))

    def migrate(self, name: str, region: str = "na1", *, bare_location: bool = False) -> None:
        """From now on every request to ``NAME.checkfront.com`` answers 301 with ``Location:
        https://NAME.manage.REGION.bookingplatform.app`` + the same path and query (or just
        the origin with ``bare_location=True``, as Checkfront's page shows). The new host
        serves the same account, tokens and data (it always does, migrated or not)."""
        if region not in REGIONS:
            raise InvalidInput(f"region must be one of {REGIONS}, got {region!r}")
        with self._lock:
            account = self._get_account(name)
            account.region = region
            account.bare_location = bare_location

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot (a new list) of the records of every request received so far."""
        with self._lock:
            return list(self._records)

    def token_requests(self, grant_type: str | None = None) -> list[RequestRecord]:
        """Records of ``/oauth/token/`` requests, optionally only those with ``grant_type``."""
        return [
            r
            for r in self.requests
            if r.path.rstrip("/") == "/oauth/token"
            and (grant_type is None or r.grant_type == grant_type)
        ]

    def issued_secrets(self) -> frozenset[str]:
        """Every secret value the sandbox has made: API and client secrets, codes,
        access and refresh tokens (for tests that scan output or logs for leaks)."""
        with self._lock:
            return frozenset(self._secrets)

    def evil_requests(self) -> list[RequestRecord]:
        """Records of requests that reached ``evil.example``."""
        return [r for r in self.requests if r.host == EVIL_HOST]

    def clear_requests(self) -> None:
        """Forget the records collected so far."""
        with self._lock:
            self._records.clear()

    # -- the protocol -------------------------------------------------------------------

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        """Answer one request, record it, and return the response."""
        callback = self._on_request
        with self._lock:
            parsed = self._parse(request)
            try:
                if parsed.path.startswith(CONTROL_PREFIX):
                    response = self._control(parsed)
                else:
                    response = self._route(parsed)
            except Exception as exc:  # a sandbox bug: answer 500 rather than hang the client
                response = _error(500, "server_error", f"sandbox error: {type(exc).__name__}")
            record = self._record(parsed, response)
            self._records.append(record)
        if callback is not None:
            callback(record)
        return response

    # -- internals --------------------------------------------------------------------

    def enable_control(self) -> str:
        """Turn on the control path with a fresh token; return the token."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.control_token = token
            self._secrets.add(token)
        return token

    def _control(self, rq: _Parsed) -> SandboxResponse:
        """``POST /_sandbox/ACTION`` with ``X-Sandbox-Control: TOKEN`` and form fields:
        ``advance`` (seconds), ``migrate`` (account, region), ``revoke`` (account: every
        grant), ``revoke-access`` (account: access tokens only), ``fail-next`` (status,
        n, retry_after)."""
        token = self.control_token
        given = rq.request.header("X-Sandbox-Control") or ""
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return _error(
                403,
                "forbidden",
                "the control path needs the token the sandbox printed at start, in the "
                "X-Sandbox-Control header",
            )
        if rq.request.method != "POST":
            return _error(405, "invalid_request", "use POST for the control path")
        action = rq.path[len(CONTROL_PREFIX) :]
        fields = dict(rq.form)
        try:
            if action == "advance":
                self.clock.advance(float(fields["seconds"]))
            elif action == "migrate":
                self.migrate(fields["account"], fields.get("region") or "na1")
            elif action == "revoke":
                self.revoke_grants(fields["account"])
            elif action == "revoke-access":
                self.revoke_access_token(fields["account"])
            elif action == "fail-next":
                self.fail_next(
                    int(fields.get("n") or "1"),
                    status=int(fields["status"]),
                    retry_after=fields.get("retry_after") or None,
                )
            elif action != "ping":
                return _error(
                    404,
                    "invalid_request",
                    f"no control action {action!r}; use advance, migrate, revoke, "
                    "revoke-access, fail-next or ping",
                )
        except KeyError as missing:
            return _error(400, "invalid_request", f"control {action}: field {missing} missing")
        except (ValueError, CfauthError) as error:
            return _error(400, "invalid_request", f"control {action}: {error}")
        return _json_response(200, {"ok": True, "action": action, "now": self.clock.now()})

    def _new_secret(self) -> str:
        value = secrets.token_hex(20)
        self._secrets.add(value)
        return value

    def _get_account(self, name: str) -> _Account:
        try:
            return self._accounts[name.lower()]
        except KeyError:
            raise UnknownAccount(
                f"no sandbox account {name!r}; have {list(self._accounts)} (name more with "
                "Sandbox(accounts=(...)))"
            ) from None

    def _inject(self, n: int, path_prefix: str | None, make: Callable[[], SandboxResponse]) -> None:
        if n < 1:
            raise InvalidInput(f"n must be at least 1, got {n!r}")
        with self._lock:
            self._injections.append(_Injection(n, path_prefix, make))

    def _parse(self, request: SandboxRequest) -> _Parsed:
        parts = urlsplit(request.target)
        path = parts.path or "/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        is_form = content_type == FORM_TYPE
        form: list[tuple[str, str]] = []
        if is_form and request.body:
            form = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        sni = _normalise_host(request.sni) or None
        return _Parsed(
            request=request,
            host=_normalise_host(request.header("Host") or request.host),
            sni=sni,
            path=path,
            query=query,
            form=form,
            is_form=is_form,
            auth=self._parse_auth(request, query, form),
        )

    def _parse_auth(
        self,
        request: SandboxRequest,
        query: Sequence[tuple[str, str]],
        form: Sequence[tuple[str, str]],
    ) -> _Auth:
        header = request.header("Authorization")
        param = _first(query, "access_token")
        if param is None:
            param = _first(form, "access_token")
        param_present = param is not None
        if header is None:
            if param is not None:
                return _Auth("token-param", False, True, token=param.strip())
            return _Auth("none", False, False)
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return _Auth("bearer", True, param_present, malformed=not value, token=value)
        if scheme.lower() != "basic":
            return _Auth("other", True, param_present, malformed=True)
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return _Auth("basic-other", True, param_present, malformed=True)
        user, colon, password = decoded.partition(":")
        if not colon:
            return _Auth("basic-other", True, param_present, malformed=True)
        kind: Credential = "basic-other"
        if any(hmac.compare_digest(user, a.api_key) for a in self._accounts.values()):
            kind = "basic-pair"
        elif user in self._clients or self._client_text(user) in self._clients:
            kind = "basic-client"
        return _Auth(kind, True, param_present, user=user, password=password)

    def _redact(self, value: str) -> str:
        for secret in self._secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def _record(self, parsed: _Parsed, response: SandboxResponse) -> RequestRecord:
        query = tuple(
            (self._redact(k), REDACTED if k.lower() in SENSITIVE_NAMES else self._redact(v))
            for k, v in parsed.query
        )
        grant_type = None
        if parsed.path.rstrip("/") == "/oauth/token":
            grant_type = parsed.f("grant_type")
            grant_type = self._redact(grant_type) if grant_type is not None else None
        return RequestRecord(
            time=self.clock.now(),
            host=parsed.host,
            method=parsed.method,
            path=self._redact(parsed.path),
            query=query,
            credential=parsed.auth.kind,
            header_names=tuple(k.lower() for k, _ in parsed.request.headers),
            form_fields=tuple(self._redact(k) for k, _ in parsed.form),
            status=response.status,
            account=parsed.account,
            grant_type=grant_type,
            sni=parsed.sni,
        )

    def _route(self, rq: _Parsed) -> SandboxResponse:
        if not rq.host:
            return _error(400, "invalid_request", "The request has no Host header.")
        if rq.sni is not None and rq.sni != rq.host:
            return _error(
                421,
                "misdirected_request",
                f"TLS server name {rq.sni!r} does not match Host {rq.host!r}; "
                "open a new connection per host.",
            )
        if rq.host == EVIL_HOST:
            return _json_response(200, {"evil": True})
        target = self._hosts.get(rq.host)
        if target is None:
            return _error(421, "misdirected_request", f"This sandbox does not serve {rq.host!r}.")
        name, region = target
        account = self._accounts[name]
        rq.account = name
        for injection in self._injections:
            if injection.path_prefix is None or rq.path.startswith(injection.path_prefix):
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return injection.make()
        if account.region is not None and region is None:
            location = self.new_origin(name, account.region)
            if not account.bare_location:
                target_parts = urlsplit(rq.request.target)
                location += target_parts.path or "/"
                if target_parts.query:
                    location += "?" + target_parts.query
            return _redirect(301, location)
        path = rq.path
        if path in ("/oauth", "/oauth/"):
            return self._authorize(rq, account)
        if path in ("/oauth/token", "/oauth/token/"):
            return self._token(rq, account)
        match = _API_RE.fullmatch(path)
        if match:
            return self._api(rq, account, match.group(1), (match.group(2) or "").strip("/"))
        return _error(404, "not_found", f"Nothing lives at {path!r} on this host.")

    # -- /oauth/ ----------------------------------------------------------------------

    def _authorize(self, rq: _Parsed, account: _Account) -> SandboxResponse:
        if rq.method == "GET":
            params = rq.query
        elif rq.method == "POST":
            params = rq.form
        else:
            return _html(
                405, "Method not allowed", "<p>Use GET (or POST from the consent page).</p>"
            )
        client_id = _first(params, "client_id") or ""
        client = account.clients.get(client_id)
        if client is None:
            return _html(400, "Unknown application", "<p>No application has that client_id.</p>")
        redirect_uri = _first(params, "redirect_uri")
        if redirect_uri != client.redirect_uri:
            return _html(
                400,
                "Redirect URI mismatch",
                "<p>The redirect_uri is missing or differs from the registered one.</p>",
            )
        state = _first(params, "state")
        tail = [("state", state)] if state is not None else []

        def error(code: str, description: str) -> SandboxResponse:
            location = _add_query(
                redirect_uri, [("error", code), ("error_description", description), *tail]
            )
            return _redirect(302, location)

        if _first(params, "response_type") != "code":
            return error("unsupported_response_type", "response_type must be code")
        challenge = _first(params, "code_challenge")
        method = _first(params, "code_challenge_method")
        if challenge is not None:
            if method != "S256":
                return error("invalid_request", "code_challenge_method must be S256")
            if not _CHALLENGE_RE.fullmatch(challenge):
                return error("invalid_request", "code_challenge must be 43 base64url characters")
        elif method is not None:
            return error("invalid_request", "code_challenge_method without code_challenge")
        if rq.method == "GET" and not self.auto_consent:
            return self._consent_page(account, params)
        if rq.method == "POST":
            decision = _first(params, "decision")
            if decision not in ("allow", "deny"):
                return _html(400, "No decision", "<p>Choose Allow or Deny.</p>")
            allow = decision == "allow"
        else:
            allow = True
        if self.deny_next:
            self.deny_next = False
            allow = False
        if not allow:
            return error("access_denied", "The user denied access to your application")
        code = self._new_secret()
        self._codes[code] = _Code(
            account.name, client.client_id, redirect_uri, challenge, self.clock.now()
        )
        return _redirect(302, _add_query(redirect_uri, [("code", code), *tail]))

    def _consent_page(
        self, account: _Account, params: Sequence[tuple[str, str]]
    ) -> SandboxResponse:
        keep = (
            "client_id",
            "response_type",
            "redirect_uri",
            "state",
            "code_challenge",
            "code_challenge_method",
        )
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">\n'
            for k, v in params
            if k in keep
        )
        body = (
            f"<p>An application wants to access the <b>{html.escape(account.name)}</b> "
            "Checkfront sandbox account on your behalf.</p>\n"
            f'<form method="post" action="/oauth/">\n{hidden}'
            '<button type="submit" name="decision" value="allow">Allow</button>\n'
            '<button type="submit" name="decision" value="deny">Deny</button>\n'
            "</form>"
        )
        return _html(200, "Authorize application", body)

    # -- /oauth/token/ ----------------------------------------------------------------

    def _token(self, rq: _Parsed, account: _Account) -> SandboxResponse:
        if rq.method != "POST":
            return _error(
                405,
                "invalid_request",
                "The request method must be POST when requesting an access token",
                [("Allow", "POST")],
            )
        if not rq.is_form:
            return _error(
                400,
                "invalid_request",
                'The content type for POST requests must be "application/x-www-form-urlencoded"',
            )
        basic_challenge = [("WWW-Authenticate", f'Basic realm="{REALM}"')]
        auth = rq.auth
        is_basic = auth.kind.startswith("basic-")
        if rq.f("client_secret") is not None or (rq.f("client_id") is not None and not is_basic):
            return _error(
                401,
                "invalid_client",
                "Client credentials must be sent as HTTP Basic (RFC 6749 section 2.3.1), "
                "not in the request body",
                basic_challenge,
            )
        if not is_basic:
            return _error(
                401,
                "invalid_client",
                "Client credentials were not found in the headers or body",
                basic_challenge,
            )
        if auth.malformed:
            return _error(401, "invalid_client", "Malformed auth header.", basic_challenge)
        client_id = self._client_text(auth.user)
        client = account.clients.get(client_id)
        if client is None or not hmac.compare_digest(
            self._client_text(auth.password).encode(), client.client_secret.encode()
        ):
            return _error(
                401, "invalid_client", "The client credentials are invalid", basic_challenge
            )
        body_id = rq.f("client_id")
        if body_id is not None and body_id != client_id:
            return _error(
                401, "invalid_client", "client_id in the body differs from the Basic credentials"
            )
        grant_type = rq.f("grant_type")
        if not grant_type:
            return _error(400, "invalid_request", "The grant type was not specified in the request")
        if grant_type == "authorization_code":
            return self._exchange_code(rq, client)
        if grant_type == "refresh_token":
            return self._refresh_grant(rq, client)
        return _error(400, "unsupported_grant_type", f'Grant type "{grant_type}" not supported')

    def _client_text(self, text: str) -> str:
        """A Basic client id or secret as this server reads it (``client_credentials``)."""
        if self.client_credentials == "raw":
            return text
        if self.client_credentials == "percent":
            return unquote(text)
        return unquote_plus(text)

    def _exchange_code(self, rq: _Parsed, client: _Client) -> SandboxResponse:
        code = rq.f("code")
        if not code:
            return _error(400, "invalid_request", 'Missing parameter: "code" is required')
        grant = self._codes.get(code)
        if grant is None or grant.client_id != client.client_id:
            return _error(
                400,
                "invalid_grant",
                "Authorization code doesn't exist or is invalid for the client",
            )
        del self._codes[code]  # single use, whatever happens next
        if self.clock.now() - grant.issued_at > self.code_lifetime:
            return _error(400, "invalid_grant", "The authorization code has expired")
        if rq.f("redirect_uri") != grant.redirect_uri:
            return _error(400, "invalid_grant", "The redirect URI is missing or does not match")
        verifier = rq.f("code_verifier")
        if grant.challenge is not None:
            if not verifier:
                return _error(
                    400, "invalid_grant", 'Missing parameter: "code_verifier" is required'
                )
            if not _VERIFIER_RE.fullmatch(verifier):
                return _error(
                    400,
                    "invalid_grant",
                    'The "code_verifier" must be 43 to 128 unreserved characters (RFC 7636)',
                )
            digest = hashlib.sha256(verifier.encode("ascii")).digest()
            computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            if not hmac.compare_digest(computed, grant.challenge):
                return _error(400, "invalid_grant", 'Failed to verify "code_verifier"')
        elif verifier is not None:
            return _error(
                400,
                "invalid_grant",
                'A "code_verifier" was sent but the authorization request had no code_challenge',
            )
        return _json_response(200, self._issue(grant.account, client.client_id), _NO_STORE)

    def _refresh_grant(self, rq: _Parsed, client: _Client) -> SandboxResponse:
        token = rq.f("refresh_token")
        if not token:
            return _error(400, "invalid_request", 'Missing parameter: "refresh_token" is required')
        entry = self._refresh.get(token)
        if entry is None or entry.client_id != client.client_id:
            return _error(400, "invalid_grant", "Invalid refresh token")
        if self.clock.now() >= entry.expires_at:
            del self._refresh[token]
            self._access.pop(entry.access_token, None)
            return _error(400, "invalid_grant", "Refresh token has expired")
        del self._refresh[token]  # rotation: the old pair dies with this refresh
        self._access.pop(entry.access_token, None)
        return _json_response(200, self._issue(entry.account, client.client_id), _NO_STORE)

    def _issue(self, account: str, client_id: str) -> dict[str, Any]:
        now = self.clock.now()
        access, refresh = self._new_secret(), self._new_secret()
        self._access[access] = _AccessToken(account, client_id, now + self.access_token_lifetime)
        self._refresh[refresh] = _RefreshToken(
            account, client_id, now + self.refresh_token_lifetime, access
        )
        return {
            "access_token": access,
            "expires_in": self.access_token_lifetime,
            "token_type": "Bearer",
            "scope": None,
            "refresh_token": refresh,
        }

    # -- /api/ ------------------------------------------------------------------------

    def _check_api_auth(self, rq: _Parsed, account: _Account) -> SandboxResponse | None:
        auth = rq.auth
        if auth.header_present and auth.param_present:
            return _error(
                400,
                "invalid_request",
                "Only one method may be used to authenticate at a time (Auth header, GET or POST)",
            )
        if auth.kind == "none":
            return _error(
                401,
                "invalid_request",
                "The access token was not found.",
                [("WWW-Authenticate", f'Bearer realm="{REALM}"')],
            )
        if auth.malformed:
            return _error(400, "invalid_request", "Malformed auth header.")
        if auth.kind in ("bearer", "token-param"):
            entry = self._access.get(auth.token)
            if entry is None or entry.account != account.name:
                description = "The access token provided is invalid"
            elif self.clock.now() >= entry.expires_at:
                description = "The access token provided has expired"
            else:
                return None
            return _error(
                401, "invalid_token", description, [_bearer_challenge("invalid_token", description)]
            )
        if auth.kind == "basic-client":
            return _error(
                403,
                "access_denied",
                "You do not have access to this resource. Client credentials (consumer "
                "key/secret) are accepted only at /oauth/token/; call /api/ with the access token.",
            )
        if hmac.compare_digest(auth.user, account.api_key) and hmac.compare_digest(
            auth.password, account.api_secret
        ):
            return None
        return _error(
            401,
            "invalid_client",
            "The client credentials are invalid",
            [("WWW-Authenticate", f'Basic realm="{REALM}"')],
        )

    def _api(self, rq: _Parsed, account: _Account, version: str, resource: str) -> SandboxResponse:
        refusal = self._check_api_auth(rq, account)
        if refusal is not None:
            return refusal
        method = rq.method
        parts = resource.split("/") if resource else []

        def envelope(name: str, records: int, data: Mapping[str, Any]) -> SandboxResponse:
            try:
                limit = int(rq.q("limit") or 100)
            except ValueError:
                limit = 100
            payload: dict[str, Any] = {
                "version": version,
                "account_id": account.account_id,
                "host_id": rq.host,
                "name": f"{account.name.capitalize()} Adventures (sandbox)",
                "locale": {"id": "en_US", "lang": "en", "currency": "USD"},
                "request": {
                    "status": "OK",
                    "resource": name,
                    "records": records,
                    "limit": limit,
                    "page": 1,
                    "pages": 1,
                    "time": round(time.perf_counter() - rq.started, 6),
                    "method": method.lower(),
                },
            }
            payload.update(data)
            return _json_response(200, payload)

        def wrong_method(allowed: str) -> SandboxResponse:
            return _error(
                405,
                "invalid_request",
                f"{method} is not allowed on {resource!r}; use {allowed}",
                [("Allow", allowed)],
            )

        def form_fields() -> dict[str, str] | SandboxResponse:
            if not rq.is_form and rq.request.body:
                return _error(400, "invalid_request", f"POST bodies must be {FORM_TYPE}")
            return {k: v for k, v in rq.form if k != "access_token"}

        if parts in (["booking", "index"], ["booking"]):
            if method != "GET":
                return wrong_method("GET")
            status = rq.q("status_id")
            rows = {
                str(i): b
                for i, b in account.bookings.items()
                if status is None or b["status_id"] in status.split(",")
            }
            return envelope("booking/index", len(rows), {"booking/index": rows})
        if parts == ["booking", "create"]:
            if method != "POST":
                return wrong_method("POST")
            fields = form_fields()
            if isinstance(fields, SandboxResponse):
                return fields
            new_id = max(account.bookings, default=0) + 1
            booking = {
                **fields,
                "booking_id": new_id,
                "code": f"{account.name[:4].upper()}-{100000 + new_id}",
                "status_id": fields.get("status_id", "PEND"),
                "status_name": _STATUS_NAMES.get(fields.get("status_id", "PEND"), "Pending"),
            }
            account.bookings[new_id] = booking
            return envelope("booking/create", 1, {"booking": booking})
        if len(parts) == 2 and parts[0] == "booking":
            if method != "GET":
                return wrong_method("GET")
            found = next(
                (b for i, b in account.bookings.items() if parts[1] in (str(i), b["code"])), None
            )
            if found is None:
                return _error(404, "not_found", f"Booking {parts[1]!r} was not found.")
            return envelope("booking", 1, {"booking": found})
        if parts == ["item"]:
            if method != "GET":
                return wrong_method("GET")
            items = {str(i): item for i, item in account.items.items()}
            return envelope("item", len(items), {"items": items})
        if len(parts) == 2 and parts[0] == "item":
            if method != "GET":
                return wrong_method("GET")
            item = account.items.get(int(parts[1])) if parts[1].isdigit() else None
            if item is None:
                return _error(404, "not_found", f"Item {parts[1]!r} was not found.")
            return envelope("item", 1, {"item": item})
        if parts == ["customer"]:
            if method == "GET":
                rows = {str(i): c for i, c in account.customers.items()}
                return envelope("customer", len(rows), {"customers": rows})
            if method != "POST":
                return wrong_method("GET, POST")
            fields = form_fields()
            if isinstance(fields, SandboxResponse):
                return fields
            new_id = max(account.customers, default=0) + 1
            customer = {**fields, "customer_id": new_id}
            account.customers[new_id] = customer
            return envelope("customer", 1, {"customer": customer})
        return _error(404, "not_found", f"Unknown API resource {resource!r}.")


_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
