"""What the adapters share: the response type, the transport protocol, API
errors."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from cfauth_core import CfauthError, InvalidInput, Request

__all__ = [
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_TOTAL_TIMEOUT",
    "TOKEN_RESPONSE_CAP",
    "ApiError",
    "OutcomeUnknown",
    "Response",
    "Transport",
    "TransportFailure",
    "call_headers",
    "check_api_response",
    "check_limits",
    "failure_reason",
    "iso_time",
    "iso_times",
    "replayable",
    "request_failure",
    "response_cap",
    "send_retryable",
    "shorten",
]

#: The largest response body a transport accepts by default (Checkfront's
#: answers are far smaller); ``max_response_size`` changes it.
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
#: The token endpoint's answers are refused beyond this many bytes (the core's
#: limit), before they are buffered.
TOKEN_RESPONSE_CAP = 64 * 1024
#: The default ``total_timeout``: the longest a request may take once connected.
DEFAULT_TOTAL_TIMEOUT = 60.0
#: Methods whose request may be sent again without changing the outcome
#: (RFC 9110 9.2.2); any other request only with an ``Idempotency-Key`` header.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class TransportFailure(Exception):
    """A transport could not complete a request (connect, TLS, timeout, reset).

    Transports raise this (or let ``OSError`` through); the drivers report it
    to the machine as ``SendFailed``.  The message must not contain secrets.
    ``unsent`` is ``True`` when nothing of the request was written, so the
    server cannot have processed it.
    """

    def __init__(self, message: str, *, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


class OutcomeUnknown(TransportFailure):
    """A request that is not safe to repeat (a ``POST`` or ``PATCH`` without an
    ``Idempotency-Key`` header) failed after some or all of it was written:
    the server may have processed it.  ``fully_written`` says whether the
    whole request went out.  It is never sent again automatically: check
    whether it took effect before sending it again.
    """

    def __init__(self, message: str, *, fully_written: bool) -> None:
        written = "fully" if fully_written else "partly"
        super().__init__(
            f"{message}; the request was {written} written, so the server may have "
            "processed it: check whether it took effect before sending it again"
        )
        self.fully_written = fully_written


def replayable(request: Request) -> bool:
    """Whether ``request`` may be sent again after a failure that may have let
    the server process it: an idempotent method, or an ``Idempotency-Key``."""
    return request.method in _IDEMPOTENT or any(
        name.lower() == "idempotency-key" for name, _ in request.headers
    )


def request_failure(
    message: str, request: Request, *, written: int, complete: bool
) -> TransportFailure:
    """The failure to raise after ``written`` bytes of ``request`` went out
    (``complete``: all of them): unsent, plain, or :class:`OutcomeUnknown`."""
    if written == 0:
        return TransportFailure(message, unsent=True)
    if replayable(request):
        return TransportFailure(message)
    return OutcomeUnknown(message, fully_written=complete)


def check_limits(total_timeout: object, max_response_size: object) -> None:
    """Refuse a ``total_timeout`` that is not a positive number of seconds (or
    ``None``) and a ``max_response_size`` that is not a positive whole number."""
    if total_timeout is not None and (
        isinstance(total_timeout, bool)
        or not isinstance(total_timeout, (int, float))
        or not 0 < total_timeout < float("inf")
    ):
        raise InvalidInput(
            f"total_timeout={total_timeout!r} is not a positive number of seconds; pass e.g. "
            "total_timeout=60, or None for no limit"
        )
    if (
        isinstance(max_response_size, bool)
        or not isinstance(max_response_size, int)
        or max_response_size < 1
    ):
        raise InvalidInput(
            f"max_response_size={max_response_size!r}: pass a positive whole number of bytes, "
            "e.g. 64 * 1024 * 1024"
        )


def response_cap(path: str, max_response_size: int) -> int:
    """The largest body accepted for a request to ``path``: the token
    endpoint's answers are held to :data:`TOKEN_RESPONSE_CAP`."""
    if path.startswith("/oauth/token/"):
        return min(max_response_size, TOKEN_RESPONSE_CAP)
    return max_response_size


class Response:
    """An HTTP response as a transport returns it and a client hands it back."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, url: str = ""
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """The body decoded as text (the charset of ``Content-Type``, else UTF-8;
        undecodable bytes replaced)."""
        charset = "utf-8"
        for part in (self.header("content-type") or "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    def raise_for_status(self) -> Response:
        """Return the response if its status is below 400, else raise
        :class:`ApiError` (with the Checkfront error object when the body has one)."""
        if self.status < 400:
            return self
        return check_api_response(self)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url} {len(self.body)} bytes>"


#: A blocking transport: send the request exactly as given (no redirects, no
#: retries) and return the response, or raise ``TransportFailure``/``OSError``.
Transport = Callable[[Request], Response]


def shorten(text: str, limit: int) -> str:
    """``text``, or its start up to the last word that fits and an explicit
    ``...``, at most ``limit`` characters in all (cut mid-word only when the
    first word alone does not fit)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)]
    space = cut.rfind(" ")
    if space > 0 and not text[len(cut)].isspace():
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "..."


#: How long a transport failure's description may be (the TLS failure, which
#: names the host, what went wrong and the fix, fits whole).
_REASON_LIMIT = 500


def failure_reason(error: BaseException) -> str:
    """A short description of a transport failure, for ``SendFailed``.

    Only the exception's type and message: transports put no secrets there
    (and the machine scrubs the ones it knows anyway).
    """
    text = str(error).strip()
    name = type(error).__name__
    return shorten(f"{name}: {text}", _REASON_LIMIT) if text else name


def _utc(timestamp: float) -> str | None:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return None


def iso_time(timestamp: float) -> str:
    """A wall-clock time (seconds since the epoch) as ISO 8601 UTC,
    ``2026-12-06T03:24:47Z``, for people reading logs and output (a time
    beyond the calendar's range is shown as the number it is)."""
    return _utc(timestamp) or repr(timestamp)


def _iso_field(match: re.Match[str]) -> str:
    shown = _utc(float(match[2]))
    return match[0] if shown is None else f"{match[1]}={shown}"


#: ``name=<epoch seconds>`` in the repr of an event, action or token set.
_TIME_FIELD = re.compile(
    r"\b(now|at|deadline|expires_at|refresh_expires_at|updated_at|redirected_at)"
    r"=(\d+(?:\.\d+)?)(?![\w.])"
)


def iso_times(text: str) -> str:
    """``text`` (a record's repr) with every time field shown as ISO 8601 UTC."""
    return _TIME_FIELD.sub(_iso_field, text)


def send_retryable(error: BaseException) -> bool:
    """Whether a transport failure may succeed if simply sent again: not when
    the exception says ``retryable = False`` (an untrusted certificate)."""
    return getattr(error, "retryable", True) is not False


def call_headers(
    headers: Sequence[tuple[str, str]], on_behalf: str | None, forwarded_for: str | None
) -> list[tuple[str, str]]:
    """A call's extra headers with ``X-On-Behalf`` and ``X-Forwarded-For`` added."""
    extra = list(headers)
    if on_behalf is not None:
        extra.append(("X-On-Behalf", on_behalf))
    if forwarded_for is not None:
        extra.append(("X-Forwarded-For", forwarded_for))
    return extra


class ApiError(CfauthError):
    """Checkfront answered with an error object, or a ``request.status`` other than ``OK``.

    ``status`` is the HTTP status; ``error`` the error object or request
    section from the body (a dict, possibly empty; its text values scrubbed of
    the secrets the client knows, like the message); ``response`` the response
    as received.
    """

    def __init__(self, message: str, *, status: int, error: dict[str, Any], response: Response):
        super().__init__(message)
        self.status = status
        self.error = error
        self.response = response


def _printable(text: str, limit: int = 300) -> str:
    """The default scrub: no secrets known, control characters dropped, bounded."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def check_api_response(response: Response, scrub: Callable[[str], str] = _printable) -> Response:
    """Return ``response`` if it is a successful Checkfront answer, else raise :class:`ApiError`.

    Checkfront answers JSON with a ``request`` section whose ``status`` is
    ``"OK"`` on success; on critical errors the envelope is replaced by an
    ``error`` object.  A non-JSON body with a 2xx status is returned as it is.
    ``scrub`` makes the server's text fit for the error's message (the
    clients pass their driver's, which hides every secret the machine knows).
    """
    # Built in a helper: its frame, which holds the raw body, is gone by the
    # time the error is raised (error reporters upload the locals of every
    # frame in a traceback).
    error = _api_error(response, scrub)
    if error is not None:
        raise error
    return response


def _api_error(response: Response, scrub: Callable[[str], str]) -> ApiError | None:
    payload: Any = None
    try:
        payload = response.json()
    except ValueError:
        if 200 <= response.status < 300:
            return None
    details: dict[str, Any] = {}
    if isinstance(payload, dict):
        error = payload.get("error")
        request = payload.get("request")
        if isinstance(error, dict):
            details = error
        elif isinstance(error, str):
            details = {"error": error, "error_description": payload.get("error_description")}
        elif isinstance(request, dict) and request.get("status", "OK") != "OK":
            details = request
        elif 200 <= response.status < 300:
            return None
    elif 200 <= response.status < 300:
        return None
    details = {
        (scrub(key) if isinstance(key, str) else key): scrub(value)
        if isinstance(value, str)
        else value
        for key, value in details.items()
    }
    summary = ", ".join(f"{k}={v!r}" for k, v in details.items() if isinstance(v, (str, int)))
    return ApiError(
        f"Checkfront answered HTTP {response.status} for {response.url}"
        + (f": {shorten(summary, 300)}" if summary else "")
        + "; see .error for the details",
        status=response.status,
        error=details,
        response=response,
    )
