"""Credentials: a token pair (:class:`ApiKey`) or an OAuth2 client (:class:`OAuth2App`).

Both compute their ``Authorization`` header once, at construction.  Neither
shows its secret in ``repr``.
"""

from __future__ import annotations

from base64 import b64encode
from urllib.parse import quote, urlsplit

from ._errors import InvalidInput
from ._record import Record, _new

__all__ = ["CLIENT_AUTH_FORMS", "ApiKey", "Credential", "OAuth2App", "basic_authorization"]

#: The forms in which the client id and secret can go as HTTP Basic to the token URL:
#: ``"rfc6749"`` percent-encoded first (RFC 6749 section 2.3.1), ``"raw"`` as they are.
CLIENT_AUTH_FORMS = ("rfc6749", "raw")

_LOOPBACK = ("127.0.0.1", "[::1]", "localhost")


def basic_authorization(user: str, password: str) -> str:
    """``Basic base64(user:password)`` in UTF-8 (RFC 7617)."""
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode("ascii")


def _check_text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what}: pass a non-empty string")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"{what}: control characters (CR, LF, ...) are not allowed")
    return value


def _hint(value: str) -> str:
    """The start of an identifier, for reprs: enough to tell two apart."""
    return value[:6] + "..." if len(value) > 6 else value


class ApiKey(Record):
    """A Checkfront token pair: the API key and secret, sent as HTTP Basic on every call."""

    __slots__ = ("key", "secret", "_authorization")
    key: str
    secret: str
    _authorization: str

    def __new__(cls, key: str, secret: str) -> ApiKey:
        self: ApiKey = _new(cls._fast)
        _check_text("ApiKey key", key)
        _check_text("ApiKey secret", secret)
        if ":" in key:
            raise InvalidInput("ApiKey key: a key cannot contain ':'; check what you copied")
        self.key = key
        self.secret = secret
        self._authorization = basic_authorization(key, secret)
        self.__class__ = cls
        return self

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value for every API call."""
        return self._authorization

    def __repr__(self) -> str:
        return f"ApiKey(key={_hint(self.key)!r}, secret=<hidden>)"


class OAuth2App(Record):
    """An OAuth2 client registered on the account (Manage > Developer).

    ``redirect_uri`` must be https, or http to 127.0.0.1 / [::1] / localhost
    (a loopback receiver, RFC 8252 section 7.3).  The client credentials are
    sent as HTTP Basic to the token URL only, form-encoded first as RFC 6749
    section 2.3.1 requires (or raw, for servers that do not decode them: see
    ``Config.client_auth``).
    """

    __slots__ = (
        "client_id",
        "client_secret",
        "redirect_uri",
        "_token_authorization",
        "_raw_authorization",
    )
    client_id: str
    client_secret: str
    redirect_uri: str
    _token_authorization: str
    _raw_authorization: str

    def __new__(cls, client_id: str, client_secret: str, redirect_uri: str) -> OAuth2App:
        self: OAuth2App = _new(cls._fast)
        _check_text("OAuth2App client_id", client_id)
        _check_text("OAuth2App client_secret", client_secret)
        _check_text("OAuth2App redirect_uri", redirect_uri)
        try:
            parts = urlsplit(redirect_uri)
            host = parts.hostname
        except ValueError:
            raise InvalidInput("OAuth2App redirect_uri: not a valid URL") from None
        netloc = parts.netloc.lower()
        netloc_host = netloc.rpartition(":")[0] if parts.port else netloc
        if parts.scheme not in ("https", "http") or not host:
            raise InvalidInput(
                "OAuth2App redirect_uri: pass an absolute https URL, "
                "or http://127.0.0.1:PORT/... for a loopback receiver"
            )
        if parts.scheme == "http" and netloc_host not in _LOOPBACK:
            raise InvalidInput(
                "OAuth2App redirect_uri: plain http is allowed only to 127.0.0.1, [::1] "
                "or localhost; use https"
            )
        if "@" in parts.netloc or parts.fragment or "#" in redirect_uri:
            raise InvalidInput(
                "OAuth2App redirect_uri: no user information or fragment is allowed "
                "(RFC 6749 section 3.1.2)"
            )
        # RFC 6749 section 2.3.1: "the client identifier is encoded using the
        # application/x-www-form-urlencoded encoding algorithm ... and the
        # encoded value is used as the username; the client password is
        # encoded using the same algorithm and used as the password."
        #
        # Every byte outside the unreserved set is percent-encoded, the space as
        # %20 rather than '+': a form decoder reads %20 back as a space too, and
        # so do servers that percent-decode without form rules (they would read
        # '+' as '+').  Unreserved characters (letters, digits, '-._~') are sent
        # as they are, so hex and alphanumeric secrets look the same in every form.
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self._token_authorization = basic_authorization(
            quote(client_id, safe=""), quote(client_secret, safe="")
        )
        # Some servers compare the Basic credentials without decoding them.
        self._raw_authorization = basic_authorization(client_id, client_secret)
        self.__class__ = cls
        return self

    @property
    def token_authorization(self) -> str:
        """The ``Authorization`` header value for the token URL (and nowhere else)."""
        return self._token_authorization

    def token_authorization_in(self, form: str) -> str:
        """The ``Authorization`` value for the token URL in ``form``
        (``"rfc6749"``, percent-encoded, or ``"raw"``)."""
        return self._raw_authorization if form == "raw" else self._token_authorization

    @property
    def encoding_changes(self) -> bool:
        """Whether encoding changes the client id or secret (the two forms differ)."""
        return self._raw_authorization != self._token_authorization

    def __repr__(self) -> str:
        return (
            f"OAuth2App(client_id={_hint(self.client_id)!r}, client_secret=<hidden>, "
            f"redirect_uri={self.redirect_uri!r})"
        )


Credential = ApiKey | OAuth2App
