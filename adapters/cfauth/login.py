"""Interactive OAuth2 login, shared by the blocking and the trio clients.

- :func:`new_login_values`: the OAuth ``state`` and PKCE verifier, from :mod:`secrets`.
- :class:`AuthorizationStart`: what :meth:`Client.authorization_url
  <cfauth.sync.Client.authorization_url>` returns (the URL, and the values a web
  application keeps in the user's session until the callback).
- :class:`LoopbackReceiver`: a one-shot HTTP server on the redirect URI's
  loopback host and port (RFC 8252 section 7.3) that waits for the browser to
  come back, answers it with a short page, refuses a wrong ``state`` with 400
  and keeps waiting, and stops after the real callback.
- :class:`GrantStatus`: what ``cfauth status`` shows about one grant (never a token).

Nothing here talks to Checkfront: the drivers do, through the core.
"""

from __future__ import annotations

import hmac
import http.server
import logging
import secrets
import socket
import socketserver
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from cfauth_core import CfauthError, Config, InvalidInput, OAuth2App, TokenSet

from ._http import iso_time

__all__ = [
    "AuthorizationStart",
    "GrantStatus",
    "LoginError",
    "LoginTimedOut",
    "LoopbackReceiver",
    "new_login_values",
    "open_in_browser",
]

log = logging.getLogger("cfauth")

#: Hosts a loopback receiver may bind (RFC 8252 section 7.3).
LOOPBACK_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "[::1]": "::1", "::1": "::1"}


class LoginError(CfauthError):
    """A login could not run (a redirect URI the loopback receiver cannot serve)."""


class LoginTimedOut(LoginError):
    """The browser did not come back to the redirect URI in time."""


def new_login_values(pkce: bool = True) -> tuple[str, str | None]:
    """A fresh OAuth ``state`` (22 URL-safe characters, 128 bits) and PKCE
    code verifier (86 characters; ``None`` when PKCE is off)."""
    return secrets.token_urlsafe(16), (secrets.token_urlsafe(64) if pkce else None)


class AuthorizationStart(NamedTuple):
    """The start of a login: send the user to ``url``; keep ``state`` and
    ``code_verifier`` (server side, in the user's session) and give them to
    ``complete_authorization`` with the callback URL.  The repr hides the
    verifier."""

    url: str
    state: str
    code_verifier: str | None

    def __repr__(self) -> str:
        return f"AuthorizationStart(url={self.url!r}, state=<hidden>, code_verifier=<hidden>)"


def _check_values(
    state: str | None, code_verifier: str | None, pkce: bool
) -> tuple[str, str | None]:
    if state is None:
        fresh_state, fresh_verifier = new_login_values(pkce)
        return fresh_state, (code_verifier if code_verifier is not None else fresh_verifier)
    if code_verifier is None and pkce:
        raise InvalidInput(
            "state was given without code_verifier while PKCE is on: pass the verifier "
            "kept with that state, or pass neither to have both generated"
        )
    return state, code_verifier


def login_values(
    state: str | None, code_verifier: str | None, config: Config
) -> tuple[str, str | None]:
    """The values for a login: the caller's, or fresh ones from :mod:`secrets`."""
    return _check_values(state, code_verifier, config.pkce)


def open_in_browser(url: str) -> bool:
    """Open ``url`` in the user's browser if there is one; whether it worked."""
    try:
        return webbrowser.open(url, new=1, autoraise=True)
    except Exception:
        return False


_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>cfauth</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


class _Server(http.server.HTTPServer):
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: LoopbackReceiver) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.receiver = receiver
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        status, title, text = self.server.receiver._offer(self.path)
        body = _PAGE.format(title=title, text=text).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line holds the code and state: never logged


class LoopbackReceiver:
    """Waits on the redirect URI (``http://127.0.0.1:PORT/path`` or
    ``http://localhost:PORT/path``) for the browser's one callback.

    The socket is bound when the receiver is created (so the port is taken
    before the browser is sent away).  :meth:`wait` returns the callback URL
    once a request arrives on the redirect path with the expected ``state``
    (compared in constant time), with either a ``code`` or an ``error``; a
    request with another state is answered 400 and the wait goes on; other
    paths get 404.  Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, redirect_uri: str, state: str) -> None:
        parts = urlsplit(redirect_uri)
        host = parts.hostname or ""
        netloc_host = f"[{host}]" if ":" in host else host
        if parts.scheme != "http" or netloc_host not in LOOPBACK_HOSTS or not parts.port:
            raise LoginError(
                f"redirect URI {redirect_uri!r} cannot be served on this machine: login() "
                "listens on http://127.0.0.1:PORT/PATH or http://localhost:PORT/PATH with an "
                "explicit port; register such a redirect URI for the app, or use "
                "authorization_url() and complete_authorization() from your web application"
            )
        self.redirect_uri = redirect_uri
        self._path = parts.path or "/"
        self._state = state
        self._result: str | None = None
        self._done = threading.Event()
        self._cancelled = False
        try:
            self._server = _Server((LOOPBACK_HOSTS[netloc_host], parts.port), self)
        except OSError as error:
            raise LoginError(
                f"cannot listen on {parts.hostname}:{parts.port} for the redirect URI "
                f"{redirect_uri!r} ({error.strerror or error}): stop what is using that port, "
                "or register another loopback redirect URI and pass it"
            ) from None
        self._server.timeout = 0.2

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _offer(self, path: str) -> tuple[int, str, str]:
        parts = urlsplit(path)
        if parts.path != self._path or self._done.is_set():
            return 404, "Not found", "This is not the login callback."
        query = parse_qs(parts.query)
        state = (query.get("state") or [""])[0]
        if not hmac.compare_digest(state.encode(), self._state.encode()):
            return 400, "Login not accepted", "This callback is not for the login in progress."
        self._result = f"{self.redirect_uri.split('?')[0]}?{parts.query}"
        self._done.set()
        if "error" in query:
            return 200, "Login refused", "You can close this window and return to the program."
        return 200, "Logged in", "You can close this window and return to the program."

    def wait(self, timeout: float = 300.0, tick: Callable[[float], None] | None = None) -> str:
        """Serve until the real callback arrives; return its URL.  Raises
        :class:`LoginTimedOut` after ``timeout`` seconds.  ``tick(remaining)``
        is called about once a second (for a countdown)."""
        deadline = time.monotonic() + timeout
        shown = -1
        try:
            while not self._done.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._cancelled:
                    raise LoginTimedOut(
                        f"no callback on {self.redirect_uri} within {timeout:g} s: open the "
                        "authorize URL in a browser on this machine, and log in again"
                    )
                if tick is not None and int(remaining) != shown:
                    shown = int(remaining)
                    tick(remaining)
                self._server.handle_request()
        finally:
            self.close()
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Make a :meth:`wait` in another thread end (with :class:`LoginTimedOut`)."""
        self._cancelled = True

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> LoopbackReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_login_app(credential: object) -> OAuth2App:
    """The OAuth2 app of a client that is asked to log in."""
    if not isinstance(credential, OAuth2App):
        raise LoginError(
            "this client uses a token pair (ApiKey), which needs no login: create the "
            "client with an OAuth2App to log in"
        )
    return credential


class GrantStatus(NamedTuple):
    """What is known about one grant, for people and scripts (never a token).

    Times are wall-clock seconds; ``None`` when there are no tokens.
    ``refresh_due`` says whether the next call (or ``cfauth refresh``) would
    refresh first.
    """

    origin: str
    logged_in: bool
    access_expires_at: float | None
    refresh_expires_at: float | None
    updated_at: float | None
    refresh_due: bool
    now: float

    @classmethod
    def of(cls, origin: str, tokens: TokenSet | None, now: float, config: Config) -> GrantStatus:
        if tokens is None:
            return cls(origin, False, None, None, None, False, now)
        lifetime = tokens.expires_at - tokens.updated_at
        leeway = min(config.refresh_leeway, max(lifetime, 0) / 2)
        due = (
            now >= tokens.expires_at - leeway
            or now >= tokens.refresh_expires_at - config.keep_alive_before
        )
        alive = now < tokens.refresh_expires_at
        return cls(
            origin,
            alive,
            tokens.expires_at,
            tokens.refresh_expires_at,
            tokens.updated_at,
            due and alive,
            now,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 UTC and as seconds left)."""
        out: dict[str, Any] = {"origin": self.origin, "logged_in": self.logged_in}
        for name in ("access_expires_at", "refresh_expires_at", "updated_at"):
            value = getattr(self, name)
            out[name] = None if value is None else iso_time(value)
        for name, value in (
            ("access_expires_in", self.access_expires_at),
            ("refresh_expires_in", self.refresh_expires_at),
        ):
            out[name] = None if value is None else round(value - self.now)
        out["refresh_due"] = self.refresh_due
        return out

    def describe(self) -> str:
        """Lines for a person."""
        if self.access_expires_at is None:
            return f"{self.origin}: not logged in (run: cfauth login)"
        assert self.refresh_expires_at is not None
        assert self.updated_at is not None
        lines = [f"{self.origin}: {'logged in' if self.logged_in else 'login expired'}"]
        lines.append(
            f"  access token   expires {_relative(self.access_expires_at - self.now)}"
            f" ({iso_time(self.access_expires_at)})"
        )
        lines.append(
            f"  refresh token  expires {_relative(self.refresh_expires_at - self.now)}"
            f" ({iso_time(self.refresh_expires_at)})"
        )
        lines.append(
            f"  last update    {_relative(self.updated_at - self.now)}"
            f" ({iso_time(self.updated_at)})"
        )
        if not self.logged_in:
            lines.append("  the refresh token has expired: run cfauth login")
        elif self.refresh_due:
            lines.append("  a refresh is due (the next call, or cfauth refresh, does it)")
        return "\n".join(lines)


def _relative(seconds: float) -> str:
    ago = seconds < 0
    left = abs(int(seconds))
    if left >= 86400:
        text = f"{left // 86400}d {left % 86400 // 3600}h"
    elif left >= 3600:
        text = f"{left // 3600}h {left % 3600 // 60}m"
    elif left >= 60:
        text = f"{left // 60}m {left % 60}s"
    else:
        text = f"{left}s"
    return f"{text} ago" if ago else f"in {text}"


def announce_login(
    url: str, *, open_browser: bool, show: Callable[[str], None] | None = None
) -> None:
    """Show the authorize URL (``show``, default: stderr) and open a browser."""
    if show is None:

        def show(text: str) -> None:
            print(f"Open this URL in a browser to log in:\n\n    {text}\n", file=sys.stderr)

    show(url)
    if open_browser:
        open_in_browser(url)
