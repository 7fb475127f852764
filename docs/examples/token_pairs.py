"""Token pairs (API key + secret, HTTP Basic) with each driver.

Run it: python docs/examples/token_pairs.py
"""

import trio

import cfauth.stdlib
import cfauth.trio
import cfauth.urllib3
from cfauth import ApiError
from cfauth.sandbox import Sandbox
from cfauth_core import ApiKey, CredentialsRejected

with Sandbox() as sandbox:
    acme = sandbox.account("acme")
    pair = ApiKey(acme.api_key, acme.api_secret)
    options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}

    # The standard library only (http.client): no third-party dependency.
    with cfauth.stdlib.client("acme", pair, **options) as api:
        print("stdlib ", api.get("item").status)

    # urllib3.
    with cfauth.urllib3.client("acme", pair, **options) as api:
        print("urllib3", api.post("customer", data={"customer_name": "Ada"}).status)

    # trio: the client is an async context manager.
    async def main() -> None:
        async with cfauth.trio.client("acme", pair, **options) as api:
            response = await api.get("item")
            print("trio   ", response.status)

    trio.run(main)

    # A wrong secret: a clear error, never retried.
    with cfauth.stdlib.client("acme", ApiKey(acme.api_key, "wrong"), **options) as api:
        try:
            api.get("item")
        except CredentialsRejected as error:
            print("refused:", type(error).__name__)

    # A Checkfront error answer raises ApiError (check=False returns it instead).
    with cfauth.stdlib.client("acme", pair, **options) as api:
        try:
            api.get("no/such/thing")
        except ApiError as error:
            print("ApiError", error.status)
