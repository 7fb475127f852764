"""What each error means and what to do about it, shown against the sandbox.

Run it: python docs/examples/errors.py
"""

from cfauth import ApiError
from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth_core import (
    ActionRequired,
    ApiKey,
    CfauthError,
    NetworkError,
    OAuth2App,
    RateLimited,
    ReauthorizationRequired,
)

with Sandbox() as sandbox:
    acme = sandbox.account("acme")
    options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}
    app = OAuth2App(acme.client_id, acme.client_secret, acme.redirect_uri)

    # No grant yet: log in (client.login(), or cfauth login).
    with client("acme", app, **options) as api:
        try:
            api.get("item")
        except ReauthorizationRequired:
            print("ReauthorizationRequired ->", "log in")

    with client("acme", ApiKey(acme.api_key, acme.api_secret), **options) as api:
        # Checkfront answered with an error object: read .status and .error.
        try:
            api.get("no/such/thing")
        except ApiError as error:
            print("ApiError", error.status, "-> fix the call")

        # Rate limited beyond what cfauth waits for by itself: slow down.
        sandbox.fail_next(4, status=429, retry_after="1")
        try:
            api.get("item")
        except RateLimited as error:
            print("RateLimited, retry after", error.retry_after, "s")

    # The server cannot be reached: retry later (NetworkError.retryable).
    with client(
        "acme",
        ApiKey(acme.api_key, acme.api_secret),
        ca_file=sandbox.ca_file,
        resolve={"acme.checkfront.com:443": "127.0.0.1:9"},
        connect_timeout=2,
    ) as api:
        try:
            api.get("item")
        except NetworkError as error:
            print("NetworkError, retryable:", error.retryable)

    # One handler for the rest: every cfauth error is a CfauthError, and its
    # message says what to do next.  ActionRequired: a person or the program acts.
    try:
        raise ReauthorizationRequired("example")
    except ActionRequired:
        print("ActionRequired is a CfauthError:", issubclass(ActionRequired, CfauthError))
