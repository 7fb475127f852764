"""Quick start: a first authenticated call, against the built-in sandbox.

Run it: python docs/examples/quickstart.py
With your own account, drop ``ca_file`` and ``resolve`` and use your own key and secret.
"""

from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth_core import ApiKey

with Sandbox() as sandbox:  # a local Checkfront over real TLS, gone at exit
    acme = sandbox.account("acme")  # throwaway credentials
    with client(
        "acme",  # https://acme.checkfront.com
        ApiKey(acme.api_key, acme.api_secret),
        ca_file=sandbox.ca_file,  # trust the sandbox's CA
        resolve=sandbox.resolve,  # acme.checkfront.com:443 -> 127.0.0.1:PORT
    ) as api:
        response = api.get("booking/index", params={"status_id": "PAID"})
        print(response.status, len(response.json()["booking/index"]), "bookings")
