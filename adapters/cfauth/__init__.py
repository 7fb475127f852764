"""cfauth: the adapters that bind cfauth_core to real I/O.

- :mod:`cfauth.sync`: the blocking driver and client, for any transport.
- :mod:`cfauth.stdlib`: an ``http.client`` transport (no third-party dependencies).
- :mod:`cfauth.urllib3`: a urllib3 transport.
- :mod:`cfauth.trio`: the async driver and an h11 transport on trio.
- :mod:`cfauth.httpx`: an ``httpx.Auth`` for httpx's clients (sync, asyncio and trio).
- :mod:`cfauth.stores`: token stores and their refresh lease.
- :mod:`cfauth.sandbox`: a local Checkfront-compatible HTTPS server.
"""

import logging

from cfauth_core import __version__

from ._extras import MissingExtra
from ._http import (
    ApiError,
    OutcomeUnknown,
    Response,
    Transport,
    TransportFailure,
    check_api_response,
)

# A library logs, the application decides where records go: without this, a
# warning would reach the stderr of a program that configured no logging.
logging.getLogger("cfauth").addHandler(logging.NullHandler())

__all__ = [
    "ApiError",
    "MissingExtra",
    "OutcomeUnknown",
    "Response",
    "Transport",
    "TransportFailure",
    "__version__",
    "check_api_response",
]
