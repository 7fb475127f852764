"""Value types the sandbox exchanges with its callers: requests, responses, records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Credential",
    "RequestRecord",
    "SandboxAccount",
    "SandboxRequest",
    "SandboxResponse",
]

Credential = Literal[
    "none",  # no credential at all
    "basic-pair",  # Basic whose user name is an account's API key (token pair)
    "basic-client",  # Basic whose user name is an OAuth2 client id (client credentials)
    "basic-other",  # any other Basic header, including a malformed one
    "bearer",  # an Authorization: Bearer header (any case), valid or not
    "token-param",  # access_token= in the query string or the form body
    "other",  # an Authorization header with any other scheme
]
"""How a request tried to authenticate, as recorded in :class:`RequestRecord`."""


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """One HTTP request as the sandbox sees it (sans-IO: no socket attached).

    ``target`` is the request target as sent (path and query). ``host`` is the ``Host``
    header, ``sni`` the TLS server name the client sent (``None`` without TLS or SNI).
    Headers and body may carry secrets, so they are left out of the repr.
    """

    method: str
    host: str
    target: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: bytes = field(default=b"", repr=False)
    sni: str | None = None

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (any case), or ``None``."""
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class SandboxResponse:
    """The sandbox's answer. The body may carry tokens, so it is left out of the repr."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (any case), or ``None``."""
        return _header(self.headers, name)

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the sandbox remembers of one request. It never holds a secret value.

    ``query`` keeps the query parameters with the values of credential-like names
    (``access_token``, ``code``, ``client_secret``...) and of any value containing a
    secret the sandbox issued replaced by ``"[redacted]"``. Of the body only the form
    field names are kept; of the headers only the names (lower case). ``grant_type`` is
    the form's ``grant_type`` on ``/oauth/token/`` requests (not a secret).
    """

    time: float
    host: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    credential: Credential
    header_names: tuple[str, ...]
    form_fields: tuple[str, ...]
    status: int
    account: str | None = None
    grant_type: str | None = None
    sni: str | None = None

    def param(self, name: str) -> str | None:
        """Return the (possibly redacted) value of query parameter ``name``, or ``None``."""
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    """A snapshot of one sandbox account and its default OAuth2 client.

    Secrets are readable attributes (these are throwaway sandbox credentials) but are kept
    out of the repr so a failing test never prints them.
    """

    name: str
    account_id: int
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    redirect_uri: str
    origin: str
    region: str | None = None
    """The region the account was migrated to with ``Sandbox.migrate``, else ``None``."""
