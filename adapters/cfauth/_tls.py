"""What every transport shares about TLS and its options: the one rule a TLS
context must meet, the context made from ``ca_file``, the ``resolve`` override
and the failure a certificate that is not trusted turns into.

The rule (the same for :mod:`cfauth.stdlib`, :mod:`cfauth.urllib3` and
:mod:`cfauth.trio`): credentials go only over a connection whose server proved
it holds a certificate for the real host name, issued by a CA the context
trusts, over TLS 1.2 or later.  A context that could skip any of that is
refused when the transport is made, before any connection, with an
:class:`~cfauth_core.InsecureTransport` that says which setting is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping

from cfauth_core import InsecureTransport, InvalidInput

from ._http import TransportFailure

__all__ = [
    "CertificateNotTrusted",
    "check_options",
    "check_tls_context",
    "is_loopback_address",
    "parse_resolve",
    "tls_context",
    "untrusted_certificate",
]

#: Host names that are loopback whatever the resolver says.
_LOOPBACK_NAMES = frozenset({"localhost"})


def check_tls_context(context: object) -> ssl.SSLContext:
    """Return ``context`` if it verifies certificates and host names with TLS
    1.2 or later; raise :class:`~cfauth_core.InsecureTransport` saying why not."""
    if not isinstance(context, ssl.SSLContext):
        raise InvalidInput(
            f"ssl_context: expected an ssl.SSLContext, got {type(context).__name__}; "
            "make one with ssl.create_default_context() (or pass ca_file=)"
        )
    fix = (
        "make the context with ssl.create_default_context() and, to trust a private CA, "
        "pass ca_file= or call context.load_verify_locations(...) on it"
    )
    if context.verify_mode != ssl.CERT_REQUIRED:
        mode = ssl.VerifyMode(context.verify_mode).name
        raise InsecureTransport(
            f"ssl_context is refused: it does not require a trusted certificate "
            f"(verify_mode is {mode}, not CERT_REQUIRED), so credentials could go to "
            f"anyone; {fix}"
        )
    if not context.check_hostname:
        raise InsecureTransport(
            "ssl_context is refused: it does not check the host name (check_hostname is "
            "False), so another site's certificate would be accepted and credentials sent "
            f"there; {fix}"
        )
    minimum = context.minimum_version
    if minimum == ssl.TLSVersion.MINIMUM_SUPPORTED or (
        minimum != ssl.TLSVersion.MAXIMUM_SUPPORTED and minimum < ssl.TLSVersion.TLSv1_2
    ):
        allowed = (
            "every protocol version the TLS library supports"
            if minimum == ssl.TLSVersion.MINIMUM_SUPPORTED
            else ssl.TLSVersion(minimum).name
        )
        raise InsecureTransport(
            f"ssl_context is refused: it allows {allowed}, older than TLS 1.2 included; set "
            "context.minimum_version = ssl.TLSVersion.TLSv1_2 (the default of "
            "ssl.create_default_context())"
        )
    return context


def tls_context(
    ssl_context: ssl.SSLContext | None,
    ca_file: str | os.PathLike[str] | None,
    *,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """The context to verify servers with: ``ssl_context`` (checked), or a new
    default one trusting the system's CAs, or those of ``ca_file`` instead.
    ``alpn`` is set on a context made here, never on the caller's."""
    if ssl_context is not None and ca_file is not None:
        raise InvalidInput(
            "pass ssl_context or ca_file, not both: load the CA file into your context "
            "with ssl_context.load_verify_locations(ca_file)"
        )
    if ssl_context is not None:
        return check_tls_context(ssl_context)
    cafile: str | None = None
    if ca_file is not None:
        try:
            cafile = os.fspath(ca_file)
        except TypeError:
            raise InvalidInput(
                f"ca_file: expected the path of a PEM file, got {type(ca_file).__name__}"
            ) from None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise InvalidInput(_ca_file_problem(cafile, error)) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def _ca_file_problem(path: str | None, error: BaseException) -> str:
    """Why ``ca_file`` could not be used, naming it and what to pass instead."""
    fix = "pass the path of a PEM file holding the CA certificate(s) to trust"
    if isinstance(error, FileNotFoundError):
        why = "does not exist"
    elif isinstance(error, IsADirectoryError):
        why = "is a directory, not a file"
    elif isinstance(error, PermissionError):
        why = "cannot be read (permission denied)"
        fix = "make it readable by this process, or " + fix
    elif isinstance(error, ssl.SSLError):
        why = "holds no usable PEM certificate"
    else:
        why = f"cannot be used ({type(error).__name__})"
    return f"ca_file {path!r} {why}; {fix}"


def check_options(
    connect_timeout: object, read_timeout: object, pool_size: object, *, pool: str, least: int
) -> None:
    """Refuse timeouts that are not positive numbers of seconds and a pool
    size (the option named ``pool``) below ``least``, naming the value."""
    for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidInput(
                f"{name}={value!r} is not a positive number of seconds; pass e.g. {name}=10"
            )
        if value == float("inf"):
            raise InvalidInput(f"{name}={value!r}: pass a finite number of seconds, e.g. 60")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < least:
        raise InvalidInput(f"{pool}={pool_size!r}: pass a whole number, {least} or more")


# -- resolve ------------------------------------------------------------------------


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal) is this machine's loopback."""
    host = host.lower().strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(text: object, what: str, key: object) -> tuple[str, int]:
    example = "{'acme.checkfront.com:443': '127.0.0.1:8443'}"
    if not isinstance(text, str):
        raise InvalidInput(
            f"resolve: {what} {text!r} is not a string; map 'host:port' to "
            f"'address:port', e.g. {example}"
        )
    host, colon, port = text.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 literal must be bracketed
    valid = bool(colon and host and port.isascii() and port.isdigit())
    if not valid or not 0 < int(port) < 65536 or any(c in host for c in " /@?#[]"):
        raise InvalidInput(
            f"resolve: {key!r}: {what} {text!r} is not 'host:port' (IPv6 addresses in "
            f"brackets, port 1-65535); e.g. {example}"
        )
    return host.lower(), int(port)


def parse_resolve(resolve: Mapping[str, str] | None) -> dict[tuple[str, int], tuple[str, int]]:
    """``{"acme.checkfront.com:443": "127.0.0.1:8443"}`` -> ``{(host, port): (addr, port)}``.

    Like curl's ``--resolve``: the connection goes to the address, while the
    host name is kept for SNI, the certificate check and the ``Host`` header.
    A loopback host (``localhost``, 127.0.0.1, ::1: the only hosts plain http
    may reach, with ``insecure_loopback``) may only be mapped to a loopback
    address, so no credential ever leaves the machine unencrypted.
    """
    if resolve is None:
        return {}
    if not isinstance(resolve, Mapping):
        raise InvalidInput(
            f"resolve: expected a mapping of 'host:port' to 'address:port', got "
            f"{type(resolve).__name__}; e.g. {{'acme.checkfront.com:443': '127.0.0.1:8443'}}"
        )
    result: dict[tuple[str, int], tuple[str, int]] = {}
    for key, value in resolve.items():
        host, port = _host_port(key, "host", key)
        addr, addr_port = _host_port(value, "address", key)
        if is_loopback_address(host) and not is_loopback_address(addr):
            raise InsecureTransport(
                f"resolve: {key!r} -> {value!r} is refused: a loopback host (reachable over "
                "plain http with insecure_loopback) may only be mapped to a loopback address "
                "(127.0.0.1, ::1), or credentials could leave this machine unencrypted; use "
                "the server's real https name as the key instead"
            )
        result[host, port] = (addr, addr_port)
    return result


# -- certificate failures -------------------------------------------------------------


class CertificateNotTrusted(TransportFailure):
    """The server's certificate was not trusted; nothing was sent to it.

    Not retryable (``retryable`` is ``False``): the same request fails the
    same way until the trust changes.
    """

    retryable = False


def untrusted_certificate(host: str, error: BaseException) -> CertificateNotTrusted | None:
    """The failure for a handshake that failed on certificate verification
    (``error`` or what it wraps), or ``None`` for any other failure."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            detail = current.verify_message or "certificate verify failed"
            # The variable part last: if a message is shortened, the fix survives.
            return CertificateNotTrusted(
                f"the TLS certificate of {host} was not trusted, so nothing was sent; if "
                "this is the right server, pass ca_file= (the PEM file of the CA that "
                f"issued it) or an ssl_context= that trusts it ({detail})"
            )
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None
