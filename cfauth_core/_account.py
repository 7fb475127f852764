"""Accounts: where a Checkfront account lives, the URLs derived from it, and
which redirect targets credentials may follow.

Every rule about *where* credentials may go lives in this module:

* :meth:`Account.parse` accepts ``acme``, ``acme.checkfront.com``,
  ``https://acme.checkfront.com`` and ``https://acme.manage.na1.bookingplatform.app``
  and refuses anything that is not a bare https origin.
* :meth:`Account.judge_redirect` decides, for one ``Location`` value, whether
  it is the same origin, a migration of this account, or somewhere
  credentials must not go.

Checkfront's own page on migrations: "When an account is migrated, all
requests to your .checkfront.com URL will receive an HTTP 301 redirect
response ... location: https://your-company-name.manage.[na1|eu1].bookingplatform.app
... Ensure any API usages can handle redirects. This includes redirecting with
any necessary authentication information."
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import Enum
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from ._errors import InsecureTransport, InvalidInput, UntrustedRedirect
from ._record import Record, _new

__all__ = [
    "Account",
    "Params",
    "RedirectKind",
    "RedirectTarget",
    "is_oauth_path",
    "refuse_redirect",
    "shown",
]

#: Query or form parameters: a mapping or a sequence of pairs.  Values that are
#: lists or tuples repeat the key (``item_id[]=1&item_id[]=2``).
Params = (
    Mapping[str, str | int | float | Sequence[str | int | float]]
    | Sequence[tuple[str, str | int | float]]
)

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ACCOUNT_NAME = re.compile(_LABEL)
_CHECKFRONT_HOST = re.compile(rf"(?P<name>{_LABEL})\.checkfront\.com")
_PLATFORM_HOST = re.compile(
    rf"(?P<name>{_LABEL})\.manage\.(?P<region>[a-z]{{2}}[0-9]{{1,2}})\.bookingplatform\.app"
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_DEFAULT_PORTS = {"https": 443, "http": 80}
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.~-]*")
#: Characters a Location value may hold: visible ASCII less the backslash.
_LOCATION_CHARS = re.compile(r"[\x21-\x5b\x5d-\x7e]+")
MAX_LOCATION_LENGTH = 2048
#: (api_base, path) -> validated path: saves the checks on every call.
_PATHS: dict[tuple[str, str], str] = {}


class RedirectKind(Enum):
    """How a trusted redirect relates to the account."""

    #: Same scheme, host and port as the account's current origin.
    SAME_ORIGIN = "same-origin"
    #: ``NAME.manage.REGION.bookingplatform.app`` for this account's NAME, or a
    #: host the user listed as trusted.
    MIGRATION = "migration"


class RedirectTarget(Record):
    """A redirect that credentials may follow: where to, and why it is trusted."""

    __slots__ = ("kind", "url", "origin")
    kind: RedirectKind
    url: str
    origin: str

    def __new__(cls, kind: RedirectKind, url: str, origin: str) -> RedirectTarget:
        self: RedirectTarget = _new(cls._fast)
        self.kind = kind
        self.url = url
        self.origin = origin
        self.__class__ = cls
        return self


def _split_hostport(netloc: str, what: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) and validate the port."""
    if netloc.startswith("["):
        end = netloc.index("]")  # urlsplit already refused an unbalanced '['
        host, rest = netloc[1:end], netloc[end + 1 :]
    else:
        host, sep, port_text = netloc.rpartition(":")
        if not sep:
            host, rest = netloc, ""
        else:
            rest = ":" + port_text
    if not rest:
        return host, None
    port_text = rest[1:]
    if not rest.startswith(":") or not port_text.isdigit() or not port_text.isascii():
        raise InvalidInput(
            f"{what}: the port must be a number, as in https://acme.checkfront.com:8443"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise InvalidInput(f"{what}: the port must be between 1 and 65535, e.g. 8443")
    return host, port


def _normalise_host(host: str) -> str:
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    return host


def _is_dns_name(host: str) -> bool:
    """A lower-case ASCII DNS name whose last label is not all digits (no IPv4 literals)."""
    return (
        len(host) <= 253
        and _DNS_NAME.fullmatch(host) is not None
        and not host.rpartition(".")[2].isdigit()
    )


class Account(Record):
    """A Checkfront account: its https origin and where it may migrate to.

    Build one with :meth:`Account.parse`.  ``name`` is the account's NAME when
    the host is ``NAME.checkfront.com`` or ``NAME.manage.REGION.bookingplatform.app``
    (it is what a migration must keep); ``None`` for any other host, which then
    migrates only to the hosts listed in ``trusted_hosts``.
    """

    __slots__ = (
        "scheme",
        "host",
        "port",
        "name",
        "trusted_hosts",
        "api_base",
        "insecure_loopback",
        "_origin",
    )
    scheme: str
    host: str
    port: int
    name: str | None
    trusted_hosts: frozenset[str]
    api_base: str
    insecure_loopback: bool
    _origin: str

    def __new__(
        cls,
        scheme: str,
        host: str,
        port: int,
        name: str | None,
        trusted_hosts: frozenset[str] = frozenset(),
        api_base: str = "/api/3.0/",
        insecure_loopback: bool = False,
    ) -> Account:
        self: Account = _new(cls._fast)
        self.scheme = scheme
        self.host = host
        self.port = port
        self.name = name
        self.trusted_hosts = trusted_hosts
        self.api_base = api_base
        self.insecure_loopback = insecure_loopback
        shown = f"[{host}]" if ":" in host else host
        default = port == _DEFAULT_PORTS[scheme]
        self._origin = f"{scheme}://{shown}" if default else f"{scheme}://{shown}:{port}"
        self.__class__ = cls
        return self

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``, the port only when it is not the default."""
        return self._origin

    # -- construction ---------------------------------------------------------

    @classmethod
    def parse(
        cls,
        value: str,
        *,
        trusted_hosts: Sequence[str] = (),
        api_base: str = "/api/3.0/",
        insecure_loopback: bool = False,
    ) -> Account:
        """Parse an account given as ``NAME``, a host name, or an https origin.

        ``insecure_loopback`` allows ``http://`` to 127.0.0.1, ::1 and localhost
        only; it exists for tests and must never be set in production.
        """
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(
                "account: pass the account name ('acme') or its https origin "
                "('https://acme.checkfront.com')"
            )
        text = value.strip()
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in text) or "\\" in text:
            raise InvalidInput(
                "account: only visible ASCII without spaces or backslashes is accepted; "
                "pass e.g. 'https://acme.checkfront.com' (IDN hosts in their xn-- form)"
            )
        if "://" not in text:
            if "/" in text or "@" in text or "?" in text or "#" in text:
                raise InvalidInput(
                    f"account {text!r}: pass the account name ('acme') or its https "
                    "origin ('https://acme.checkfront.com') with no path"
                )
            if _ACCOUNT_NAME.fullmatch(text.lower()):
                text = f"https://{text.lower()}.checkfront.com"
            else:
                text = f"https://{text}"
        try:
            parts = urlsplit(text)
        except ValueError:
            raise InvalidInput(
                f"account {text!r} is not a valid URL; pass e.g. 'https://acme.checkfront.com'"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise InvalidInput(
                f"account: scheme {parts.scheme!r} is not supported; pass an https:// origin"
            )
        if "@" in parts.netloc:
            raise InvalidInput(
                "account: credentials do not belong in the URL; pass the bare origin "
                "('https://acme.checkfront.com') and give the key and secret as "
                "ApiKey(...) or OAuth2App(...)"
            )
        if (
            parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or "?" in text
            or "#" in text
        ):
            raise InvalidInput(
                "account: pass only the origin ('https://acme.checkfront.com'); the API "
                "path goes in api_base and each call's path, parameters in its params"
            )
        raw_host, port = _split_hostport(parts.netloc, "account")
        host = _normalise_host(raw_host)
        loopback = host in _LOOPBACK_HOSTS
        if not loopback and not _is_dns_name(host):
            raise InvalidInput(
                f"account: {raw_host!r} is not a valid host name; pass e.g. "
                "'https://acme.checkfront.com'"
            )
        if loopback and not insecure_loopback:
            raise InvalidInput(
                "account: loopback hosts are for tests only; pass insecure_loopback=True "
                "in tests, or use the real host with a resolve override in the transport"
            )
        if scheme == "http" and not (insecure_loopback and loopback):
            raise InsecureTransport(
                f"account: plain http is refused; use https://{host} (http is allowed only "
                "to 127.0.0.1, ::1 or localhost with insecure_loopback=True, for tests)"
            )
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            name=_account_name(host),
            trusted_hosts=_parse_trusted(trusted_hosts),
            api_base=_parse_api_base(api_base),
            insecure_loopback=insecure_loopback,
        )

    # -- derived URLs ---------------------------------------------------------

    @property
    def authorize_url(self) -> str:
        """The OAuth2 authorization endpoint, ``/oauth/``."""
        return self.origin + "/oauth/"

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint, ``/oauth/token/``."""
        return self.origin + "/oauth/token/"

    def api_url(self, path: str, params: Params | None = None) -> str:
        """The URL of an API resource: ``api_url('booking/index')`` is
        ``https://HOST/api/3.0/booking/index``; ``params`` become the query."""
        return self.origin + self.api_path(path, params)

    def api_path(self, path: str, params: Params | None = None) -> str:
        """The path and query of an API resource, without the origin."""
        if type(path) is not str:
            raise InvalidInput("path: pass the resource as a string, e.g. 'booking/index'")
        key = (self.api_base, path)
        full = _PATHS.get(key)
        if full is None:
            full = self._resource_path(path)
            if len(_PATHS) >= 1024:  # a bounded memo: programs call a handful of resources
                _PATHS.clear()
            _PATHS[key] = full
        if params:
            full += "?" + urlencode(params, doseq=True)
        return full

    def _resource_path(self, path: str) -> str:
        if _PLAIN_PATH.fullmatch(path) is None:
            if any(c in path for c in "?#\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
                raise InvalidInput(
                    f"path {path!r}: pass the resource path alone ('booking/index'); "
                    "query parameters go in params"
                )
            path = quote(path, safe="/")
        segments = path.split("/")
        if ".." in segments or "." in segments:
            raise InvalidInput(f"path {path!r}: '.' and '..' segments are not allowed")
        path = path.lstrip("/")
        # 'api/3.0/booking/index' means 'booking/index': the base is not doubled.
        base = self.api_base.lstrip("/")
        if path.startswith(base):
            path = path[len(base) :]
        return self.api_base + path

    def moved_to(self, origin: str) -> Account:
        """This account at a new origin (after a migration)."""
        parts = urlsplit(origin)
        host, port = _split_hostport(parts.netloc, "origin")
        host = _normalise_host(host)
        scheme = parts.scheme
        return Account(
            scheme,
            host,
            port if port is not None else _DEFAULT_PORTS[scheme],
            _account_name(host) or self.name,
            self.trusted_hosts,
            self.api_base,
            self.insecure_loopback,
        )

    # -- redirects ------------------------------------------------------------

    def judge_redirect(self, current_url: str, location: str) -> RedirectTarget:
        """Decide whether credentials may follow ``location`` from ``current_url``.

        Returns the resolved target, or raises :class:`UntrustedRedirect` naming
        the location.  Trusted: the same origin; or, over https on port 443, this
        account's ``NAME.manage.REGION.bookingplatform.app`` or a host listed in
        ``trusted_hosts``.  Refused: everything else, including userinfo,
        downgrades to http, other ports, IP literals, backslashes, control
        characters, percent-encoded or non-ASCII host names.
        """
        where = shown(location)
        if not location or len(location) > MAX_LOCATION_LENGTH:
            raise refuse_redirect(where, "it is empty or longer than 2048 characters")
        if _LOCATION_CHARS.fullmatch(location) is None:
            raise refuse_redirect(
                where, "it holds spaces, control characters, backslashes or non-ASCII"
            )
        try:
            parts = urlsplit(urljoin(current_url, location))
        except ValueError:
            raise refuse_redirect(where, "it is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise refuse_redirect(where, f"the scheme {parts.scheme!r} is not https")
        if "@" in parts.netloc:
            raise refuse_redirect(where, "it carries user information")
        try:
            raw_host, port = _split_hostport(parts.netloc, "location")
        except InvalidInput:
            raise refuse_redirect(where, "its port is not valid") from None
        host = _normalise_host(raw_host)
        if port is None:
            port = _DEFAULT_PORTS[scheme]
        here = urlsplit(current_url)
        here_host, here_port = _split_hostport(here.netloc, "current URL")
        here_port = here_port or _DEFAULT_PORTS[here.scheme]
        same_as_here = (scheme, host, port) == (here.scheme, here_host, here_port)
        new_path = parts.path or "/"
        if parts.query:
            new_path += "?" + parts.query
        elif new_path == "/" and not same_as_here:
            # An origin-only Location on another host ("https://NAME.manage.na1.
            # bookingplatform.app", as Checkfront documents the migration) moves
            # the account; the resource stays the same.
            new_path = (here.path or "/") + ("?" + here.query if here.query else "")
        if (scheme, host, port) == (self.scheme, self.host, self.port):
            return RedirectTarget(RedirectKind.SAME_ORIGIN, self.origin + new_path, self.origin)
        if same_as_here:
            # The origin the request went to (trusted, or it would not have gone
            # there), e.g. the old host for a call sent before the account moved.
            origin = f"{here.scheme}://{here.netloc}"
            return RedirectTarget(RedirectKind.SAME_ORIGIN, origin + new_path, origin)
        if scheme != "https":
            raise refuse_redirect(where, "it downgrades to plain http")
        if port != 443:
            raise refuse_redirect(where, "it changes the port")
        if not _is_dns_name(host):
            raise refuse_redirect(where, "its host is not a plain DNS name")
        migration = _PLATFORM_HOST.fullmatch(host)
        if host in self.trusted_hosts or (
            migration is not None and self.name is not None and migration["name"] == self.name
        ):
            origin = "https://" + host
            return RedirectTarget(RedirectKind.MIGRATION, origin + new_path, origin)
        raise refuse_redirect(
            where, f"{host} is not this account's origin or a trusted migration target"
        )


def _account_name(host: str) -> str | None:
    match = _CHECKFRONT_HOST.fullmatch(host) or _PLATFORM_HOST.fullmatch(host)
    return match["name"] if match else None


def _parse_trusted(hosts: Sequence[str]) -> frozenset[str]:
    if isinstance(hosts, str):
        raise InvalidInput("trusted_hosts: pass a list of host names, not one string")
    result = set()
    for raw in hosts:
        host = _normalise_host(raw) if isinstance(raw, str) else ""
        if not _is_dns_name(host):
            raise InvalidInput(
                f"trusted_hosts: {raw!r} is not a host name; pass names like "
                "'acme.manage.eu1.bookingplatform.app' (no scheme, port or path)"
            )
        result.add(host)
    return frozenset(result)


def _parse_api_base(api_base: str) -> str:
    if (
        not isinstance(api_base, str)
        or re.fullmatch(r"(/[A-Za-z0-9._~-]+)+/?", api_base) is None
        or {".", ".."} & set(api_base.split("/"))
    ):
        raise InvalidInput(
            "api_base: pass an absolute path such as '/api/3.0/' (no '.' or '..' segments)"
        )
    return api_base if api_base.endswith("/") else api_base + "/"


def shown(location: str) -> str:
    """A Location value fit for a message: escaped (no raw control characters) and bounded."""
    text = repr(location)[1:-1]
    return text if len(text) <= 200 else text[:200] + "..."


_TRUST_HINT = (
    "If the account really moved there, pass the host in trusted_hosts "
    "or use the new origin as the account"
)


def refuse_redirect(shown_location: str, why: str, *, hint: str = _TRUST_HINT) -> UntrustedRedirect:
    """The error for a refused redirect; ``shown_location`` is quoted as it is.
    ``hint`` says what to do next (by default: trust the host if the account moved)."""
    return UntrustedRedirect(
        f"redirect to '{shown_location}' refused: {why}; no credentials were sent there. " + hint,
        location=shown_location,
    )


def is_oauth_path(path: str) -> bool:
    """Whether a server could read ``path`` as one of the OAuth endpoints (``/oauth*``).

    API credentials never go there.  The path is compared the way a lenient
    server may read it: percent-decoded (repeatedly, so ``%256f`` counts too),
    backslashes as slashes, dot segments removed (RFC 3986 section 5.2.4),
    empty segments dropped (``//oauth``), Unicode compatibility forms folded
    (NFKC) and case folded.  So ``/%6fauth/token/``, ``/%2e/oauth/token/``,
    ``/api/%2e%2e/oauth/`` and ``/OAUTH/`` all count.
    """
    text = path.split("?", 1)[0]
    for _ in range(5):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    if not text.isascii():
        from unicodedata import normalize  # noqa: PLC0415  (rare: imported when needed)

        text = normalize("NFKC", text)
    segments: list[str] = []
    for segment in text.replace("\\", "/").casefold().split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return bool(segments) and segments[0].startswith("oauth")
