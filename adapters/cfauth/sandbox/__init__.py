"""A local Checkfront-compatible HTTPS server for demos, tests and your own tests.

``Sandbox`` serves ``NAME.checkfront.com`` and ``NAME.manage.REGION.bookingplatform.app``
for each account (plus ``evil.example``, an untrusted host that records what reaches it)
over real TLS on 127.0.0.1, with one throwaway CA (trustme)::

    from cfauth.sandbox import Sandbox

    with Sandbox() as sandbox:
        account = sandbox.account("acme")      # api_key/api_secret, client_id/client_secret
        sandbox.resolve                        # {"acme.checkfront.com:443": "127.0.0.1:PORT"}
        sandbox.ca.configure_trust(ssl_ctx)    # or sandbox.ca_file / sandbox.ssl_context()
        sandbox.clock.advance(14001)           # expire the access tokens
        sandbox.migrate("acme")                # 301 to acme.manage.na1.bookingplatform.app
        sandbox.fail_next(1, status=429, retry_after="2")
        sandbox.token_requests("refresh_token")  # secret-free records of what arrived

In pytest, enable the fixture with ``pytest_plugins = ["cfauth.sandbox.pytest_plugin"]``
in your top-level ``conftest.py`` and take ``cfauth_sandbox`` as an argument.
From a shell: ``python -m cfauth.sandbox`` (needs the ``cfauth[sandbox]`` extra).
"""

from ._app import (
    ACCESS_TOKEN_LIFETIME,
    CODE_LIFETIME,
    DEFAULT_REDIRECT_URI,
    EVIL_HOST,
    REFRESH_TOKEN_LIFETIME,
    REGIONS,
    SandboxApp,
)
from ._clock import Clock, SandboxClock
from ._model import Credential, RequestRecord, SandboxAccount, SandboxRequest, SandboxResponse
from ._sandbox import Sandbox

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "CODE_LIFETIME",
    "DEFAULT_REDIRECT_URI",
    "EVIL_HOST",
    "REFRESH_TOKEN_LIFETIME",
    "REGIONS",
    "Clock",
    "Credential",
    "RequestRecord",
    "Sandbox",
    "SandboxAccount",
    "SandboxApp",
    "SandboxClock",
    "SandboxRequest",
    "SandboxResponse",
]
