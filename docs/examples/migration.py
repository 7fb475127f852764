"""The domain migration: NAME.checkfront.com -> NAME.manage.na1.bookingplatform.app.

After the move the old host answers every request with 301.  cfauth follows it
with the credentials (same NAME, https, a Checkfront region host: trusted),
keeps the method and body, and from then on uses the new origin, which the
store keeps for the next run.  A redirect anywhere else is refused and nothing
is sent there.

Run it: python docs/examples/migration.py
"""

import os
import tempfile

from cfauth.sandbox import Sandbox
from cfauth.stdlib import client
from cfauth.stores import open_store
from cfauth_core import ApiKey, UntrustedRedirect

with Sandbox() as sandbox, tempfile.TemporaryDirectory() as folder:
    acme = sandbox.account("acme")
    pair = ApiKey(acme.api_key, acme.api_secret)
    options = {"ca_file": sandbox.ca_file, "resolve": sandbox.resolve}
    store = open_store(os.path.join(folder, "grants.sqlite3"))

    def moved(old: str, new: str) -> None:
        print(f"moved: {old} -> {new}")

    with client("acme", pair, store=store, on_account_moved=moved, **options) as api:
        print("before:", api.account)
        sandbox.migrate("acme")  # Checkfront moves the account
        response = api.post("customer", data={"customer_name": "Ada"})  # POST kept
        print("after: ", api.account, response.status)

    with client("acme", pair, store=store, **options) as api:  # the next run
        print("next run starts at", api.account)

    with client("acme", pair, **options) as api:
        sandbox.redirect_next(1, "https://evil.example/steal")
        try:
            api.get("item")
        except UntrustedRedirect as error:
            print("refused:", error.location)
    print("requests that reached evil.example:", len(sandbox.evil_requests()))
    store.close()
