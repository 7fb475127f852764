"""The machine's settings (:class:`Config`): leeways, limits and switches."""

from __future__ import annotations

from ._credentials import CLIENT_AUTH_FORMS
from ._errors import InvalidInput
from ._events import check_header_value
from ._record import Record, _new

__all__ = ["Config", "__version__"]

__version__ = "0.1.0"

_INF = float("inf")


class Config(Record):
    """Tunable behaviour; the defaults suit Checkfront.

    ``refresh_leeway``: refresh when the access token has this many seconds
    left (300), capped at half the token's lifetime (from ``updated_at`` to
    ``expires_at``) so that short-lived tokens do not refresh on every call.
    ``keep_alive_before``: refresh when the refresh token has this many
    seconds left (1 day).  ``max_redirects``: redirect hops followed per
    request (5).  ``max_rate_limit_retries``: retries of a call answered 429,
    or 503 with Retry-After (3).  ``max_retry_wait``: the longest wait
    honoured; a longer Retry-After fails the call at once (300).
    ``default_retry_wait``: the wait for a 429 without a usable Retry-After
    (1).  ``pkce``: use PKCE S256 in logins (on).  ``exchange_window``: seconds
    within which an authorization code must be exchanged (Checkfront: 60).
    ``user_agent``: sent with every request.  ``client_auth``: how the OAuth2
    client id and secret go to the token URL as HTTP Basic: ``"auto"`` (the
    default) sends them percent-encoded (RFC 6749 section 2.3.1) and, when a
    server answers ``invalid_client`` and encoding changed them, once more raw,
    then keeps the form that worked (``Machine.client_auth``, ``Store.client_auth``);
    ``"rfc6749"`` or ``"raw"`` pins one form.
    """

    __slots__ = (
        "refresh_leeway",
        "keep_alive_before",
        "max_redirects",
        "max_rate_limit_retries",
        "max_retry_wait",
        "default_retry_wait",
        "pkce",
        "exchange_window",
        "user_agent",
        "client_auth",
    )
    refresh_leeway: float
    keep_alive_before: float
    max_redirects: int
    max_rate_limit_retries: int
    max_retry_wait: float
    default_retry_wait: float
    pkce: bool
    exchange_window: float
    user_agent: str
    client_auth: str

    def __new__(
        cls,
        *,
        refresh_leeway: float = 300.0,
        keep_alive_before: float = 86400.0,
        max_redirects: int = 5,
        max_rate_limit_retries: int = 3,
        max_retry_wait: float = 300.0,
        default_retry_wait: float = 1.0,
        pkce: bool = True,
        exchange_window: float = 60.0,
        user_agent: str = f"cfauth/{__version__}",
        client_auth: str = "auto",
    ) -> Config:
        self: Config = _new(cls._fast)
        self.refresh_leeway = refresh_leeway
        self.keep_alive_before = keep_alive_before
        self.max_redirects = max_redirects
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_retry_wait = max_retry_wait
        self.default_retry_wait = default_retry_wait
        self.pkce = pkce
        self.exchange_window = exchange_window
        self.user_agent = user_agent
        self.client_auth = client_auth
        for name in (
            "refresh_leeway",
            "keep_alive_before",
            "max_retry_wait",
            "default_retry_wait",
            "exchange_window",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidInput(f"Config.{name}: pass a non-negative number of seconds")
        for name in ("max_redirects", "max_rate_limit_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
                raise InvalidInput(f"Config.{name}: pass a whole number from 0 to 20")
        check_header_value("Config.user_agent", self.user_agent)
        if not isinstance(self.pkce, bool):
            raise InvalidInput("Config.pkce: pass True or False")
        if client_auth not in ("auto", *CLIENT_AUTH_FORMS):
            raise InvalidInput("Config.client_auth: pass 'auto' (the default), 'rfc6749' or 'raw'")
        self.__class__ = cls
        return self


#: Methods whose request may be sent again without changing the outcome (RFC 9110 9.2.2).
