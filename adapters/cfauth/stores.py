"""Grant stores: where grants live between runs, and the refresh lease.

A *grant* is one account's authorization for one client: the account's
current origin (after a migration, the new one), the credential kind and
client id (never the client secret), the :class:`~cfauth_core.TokenSet`, when
it was last written, and the client-authentication form the token endpoint
accepted.  A store holds any number of grants, each a :class:`GrantRecord`
filed under a :class:`GrantKey` (account name, client id, grant name).

The drivers work with one grant at a time through a :class:`Grant` handle
(``store.grant(key)``), which is what :class:`TokenStore` describes: load,
save, save the new origin, and the refresh *lease*.  The lease is the lock that
makes refreshing single-flight across everything sharing the store (threads,
tasks, processes, machines): the drivers take it when the machine emits
``AcquireLease``, reload, and release it after the new tokens are saved.  A lease
that cannot be taken within its timeout (30 s by default) raises
:class:`LeaseTimeout`; a holder that dies releases it (the operating system
for the file lock, the transaction for SQLite, the session for PostgreSQL).

The stores:

* :class:`MemoryStore`: one process, lost at exit; the lease is a lock.
* :class:`FileStore`: one JSON file, replaced atomically and fsynced, mode
  0600; an ``fcntl`` lock file gives the lease.
* :class:`SqliteStore`: the default (:func:`open_store`); WAL mode; the lease
  is a ``BEGIN IMMEDIATE`` transaction.
* :class:`PostgresStore`: many processes on many machines, many grants;
  the lease is a session-level ``pg_advisory_lock`` (extra ``postgres``).

A record that cannot be read (corrupt, of an unknown version, filed under
another client id) raises a :class:`StoreError` naming the store and the
grant: it is never taken for "not logged in", and never overwritten (delete it
with :meth:`GrantStore.delete` to start again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from typing_extensions import Self

from cfauth_core import (
    Account,
    CfauthError,
    Credential,
    InvalidTokenRecord,
    OAuth2App,
    TokenSet,
    UntrustedRedirect,
)

if TYPE_CHECKING:
    from psycopg import Connection as PgConnection

__all__ = [
    "CLIENT_AUTH_FORMS",
    "RECORD_VERSION",
    "SCHEMA_VERSION",
    "CorruptRecord",
    "FileStore",
    "Grant",
    "GrantKey",
    "GrantMismatch",
    "GrantRecord",
    "GrantStore",
    "InsecureStore",
    "LeaseTimeout",
    "MemoryGrant",
    "MemoryStore",
    "PostgresStore",
    "SqliteStore",
    "StoreError",
    "TokenStore",
    "UnknownSchemaVersion",
    "default_store_path",
    "open_grant",
    "open_store",
]

#: The version of the grant record format :meth:`GrantRecord.to_dict` writes.
RECORD_VERSION = 1
#: The database schema version the SQLite and PostgreSQL stores create and read.
SCHEMA_VERSION = 1
#: The client-authentication forms a record may remember (``None``: not learnt yet).
CLIENT_AUTH_FORMS = frozenset({"rfc6749", "raw"})
#: The credential kinds a record may hold.
CREDENTIAL_KINDS = frozenset({"oauth2", "api_key"})
#: Seconds to wait for a lease (and for a busy database) before giving up.
DEFAULT_LEASE_TIMEOUT = 30.0


# -- errors ------------------------------------------------------------------------


class StoreError(CfauthError):
    """A store could not be used as asked; nothing stored was changed.

    ``store`` describes the store (no password), ``key`` is the grant concerned
    (``None`` when the whole store is affected).
    """

    def __init__(self, message: str, *, store: str, key: GrantKey | None = None) -> None:
        super().__init__(message)
        self.store = store
        self.key = key


class CorruptRecord(StoreError):
    """A stored grant (or the whole store) cannot be read back.

    It is never taken for "not logged in" and never overwritten: delete the
    grant (``store.delete(key)``) and log in again, or restore a backup.
    """


class UnknownSchemaVersion(CorruptRecord):
    """The record or the database was written by a newer cfauth: upgrade cfauth."""


class GrantMismatch(CorruptRecord):
    """The record filed under this key belongs to another account, client id or grant."""


class InsecureStore(StoreError):
    """A store file or folder that other users can read or write; ``chmod`` fixes it."""


class LeaseTimeout(StoreError):
    """The refresh lease was not free within the timeout: another process is refreshing
    (or hung while holding it).  The call may be tried again."""

    retryable = True


# -- keys and records --------------------------------------------------------------


def _check_name(what: str, value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 255
        or not value.isprintable()
        or value != value.strip()
    ):
        raise StoreError(
            f"grant key: {what} must be a non-empty printable string of at most 255 "
            f"characters without surrounding spaces, got {value!r}",
            store="(no store)",
        )
    return value


@dataclass(frozen=True, slots=True, order=True)
class GrantKey:
    """Where a grant is filed: the account name (``"acme"``, lower case), the
    OAuth2 client id (or the API key, for a token pair) and a grant name, for
    more than one grant per account and client."""

    account: str
    client_id: str
    grant: str = "default"

    def __post_init__(self) -> None:
        _check_name("account", self.account)
        _check_name("client_id", self.client_id)
        _check_name("grant", self.grant)
        if self.account != self.account.lower():
            object.__setattr__(self, "account", self.account.lower())

    @classmethod
    def for_account(
        cls, account: Account | str, client_id: str, grant: str = "default"
    ) -> GrantKey:
        """The key of ``account`` (an :class:`~cfauth_core.Account` or what
        :meth:`Account.parse <cfauth_core.Account.parse>` takes): its NAME when
        the host is a Checkfront one, else its host."""
        if isinstance(account, str):
            account = Account.parse(account)
        return cls(account.name or account.host, client_id, grant)

    def __str__(self) -> str:
        return f"{self.account}/{self.client_id}/{self.grant}"


def _is_time(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _check_origin(value: object) -> bool:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return (
        parts.scheme in ("https", "http")
        and bool(parts.hostname)
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
    )


_RECORD_KEYS = frozenset(
    {
        "version",
        "account",
        "client_id",
        "grant",
        "origin",
        "credential",
        "tokens",
        "updated_at",
        "client_auth",
    }
)


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """One stored grant.  Never holds a client secret; ``repr`` hides the tokens.

    ``origin`` is the account's current origin (a migration replaces it);
    ``credential`` is ``"oauth2"`` or ``"api_key"``; ``client_auth`` the form
    of client authentication the token endpoint accepted (``"rfc6749"``,
    ``"raw"``, or ``None`` while not learnt).
    """

    key: GrantKey
    origin: str
    credential: str = "oauth2"
    tokens: TokenSet | None = None
    updated_at: float = 0.0
    client_auth: str | None = field(default=None)

    @property
    def client_id(self) -> str:
        return self.key.client_id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, versioned (``"version": 1``)."""
        return {
            "version": RECORD_VERSION,
            "account": self.key.account,
            "client_id": self.key.client_id,
            "grant": self.key.grant,
            "origin": self.origin,
            "credential": self.credential,
            "tokens": None if self.tokens is None else self.tokens.to_dict(),
            "updated_at": self.updated_at,
            "client_auth": self.client_auth,
        }

    @classmethod
    def from_dict(cls, data: object, *, key: GrantKey, store: str) -> GrantRecord:
        """Read a dict written by :meth:`to_dict` for ``key``; anything else
        raises :class:`CorruptRecord` (or a subclass) naming ``store`` and ``key``
        and never quoting a token."""

        def corrupt(problem: str, kind: type[CorruptRecord] = CorruptRecord) -> CorruptRecord:
            fix = (
                "upgrade cfauth to read it"
                if kind is UnknownSchemaVersion
                else f"delete the grant (store.delete({key!r})) and log in again, "
                "or restore the store from a backup"
            )
            return kind(f"{store}: the grant {key} {problem}; {fix}", store=store, key=key)

        if not isinstance(data, Mapping):
            raise corrupt(f"is not a JSON object but {type(data).__name__}")
        version = data.get("version")
        if type(version) is not int:
            raise corrupt("has no record version")
        if version != RECORD_VERSION:
            raise corrupt(
                f"was written in record version {version} (this cfauth reads {RECORD_VERSION})",
                UnknownSchemaVersion if version > RECORD_VERSION else CorruptRecord,
            )
        unknown = set(data) - _RECORD_KEYS
        if unknown:
            raise corrupt(f"has unexpected fields {sorted(unknown)!r}")
        for name, expected in (
            ("account", key.account),
            ("client_id", key.client_id),
            ("grant", key.grant),
        ):
            value = data.get(name)
            if not isinstance(value, str):
                raise corrupt(f"has no {name} string")
            if value != expected:
                raise corrupt(
                    f"is filed under {name} {expected!r} but its record is for {value!r}",
                    GrantMismatch,
                )
        origin = data.get("origin")
        if not _check_origin(origin):
            raise corrupt("has no usable origin (an http(s) URL without a path)")
        assert isinstance(origin, str)
        credential = data.get("credential")
        if not isinstance(credential, str) or credential not in CREDENTIAL_KINDS:
            raise corrupt(f"has an unknown credential kind {credential!r}")
        updated_at = data.get("updated_at")
        if not _is_time(updated_at):
            raise corrupt("has no valid updated_at")
        client_auth = data.get("client_auth")
        if client_auth is not None and (
            not isinstance(client_auth, str) or client_auth not in CLIENT_AUTH_FORMS
        ):
            raise corrupt(f"has an unknown client_auth {client_auth!r}")
        raw_tokens = data.get("tokens")
        tokens = None
        if raw_tokens is not None:
            try:
                tokens = TokenSet.from_dict(raw_tokens)
            except InvalidTokenRecord as error:
                raise corrupt(f"holds tokens that cannot be read ({error.message})") from None
        return cls(
            key=key,
            origin=origin,
            credential=str(credential),
            tokens=tokens,
            updated_at=float(updated_at),  # type: ignore[arg-type]
            client_auth=client_auth,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, key: GrantKey, store: str) -> GrantRecord:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise CorruptRecord(
                f"{store}: the grant {key} is not valid JSON (truncated or overwritten); "
                f"delete the grant (store.delete({key!r})) and log in again, "
                "or restore the store from a backup",
                store=store,
                key=key,
            ) from None
        return cls.from_dict(data, key=key, store=store)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


# -- the protocol the drivers use ----------------------------------------------------


class TokenStore(Protocol):
    """What the drivers need of a store: one grant (a :class:`Grant` is one)."""

    def load(self) -> TokenSet | None:
        """The stored tokens, or ``None``; an unreadable record raises :class:`StoreError`."""

    def load_record(self) -> GrantRecord | None:
        """The whole stored record, or ``None``."""

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        """Persist ``tokens`` durably before returning, with the client
        authentication form that worked (``Store.client_auth``) when given."""

    def save_origin(self, origin: str) -> None:
        """Persist the account's new origin (it migrated)."""

    def acquire_lease(self) -> None:
        """Take the refresh lease, waiting up to the store's timeout
        (:class:`LeaseTimeout` when it stays taken)."""

    def release_lease(self) -> None:
        """Release the refresh lease taken by :meth:`acquire_lease`."""

    def delete(self) -> object:
        """Delete the stored grant (the program logged out)."""


Update = Callable[["GrantRecord | None"], GrantRecord]


class _KeyLocks:
    """In-process locks per grant key: a lease is exclusive between the threads
    of one process too (``fcntl`` and advisory locks are per process/session)."""

    def __init__(self) -> None:
        self._locks: dict[object, threading.Lock] = {}
        self._guard = threading.Lock()

    def acquire(self, key: object, timeout: float) -> bool:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        return lock.acquire(timeout=max(timeout, 0.0))

    def release(self, key: object) -> None:
        self._locks[key].release()


class GrantStore:
    """What every store offers: records by key, the lease, and per-grant handles.

    Subclasses implement :meth:`load`, :meth:`_update`, :meth:`delete`,
    :meth:`grants`, :meth:`_acquire` and :meth:`_release`.
    """

    #: Seconds :meth:`acquire_lease` waits before raising :class:`LeaseTimeout`.
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT

    def __init__(self) -> None:
        self._key_locks = _KeyLocks()

    def describe(self) -> str:
        """How errors name this store (never with a password)."""
        return type(self).__name__

    def load(self, key: GrantKey) -> GrantRecord | None:
        """The record filed under ``key``, or ``None`` if there is none."""
        raise NotImplementedError

    def save(self, record: GrantRecord) -> None:
        """Store ``record`` under its key, durably.  Refuses to replace a record
        that cannot be read (delete it first)."""
        self._update(record.key, lambda _old: record)

    def update(self, key: GrantKey, change: Update) -> GrantRecord:
        """Atomically read the record under ``key`` (``None`` if absent), pass it
        to ``change`` and store what it returns.  An unreadable record raises
        before ``change`` is called."""
        return self._update(key, change)

    def _update(self, key: GrantKey, change: Update) -> GrantRecord:
        raise NotImplementedError

    def delete(self, key: GrantKey) -> bool:
        """Remove the grant (readable or not); ``True`` if there was one."""
        raise NotImplementedError

    def grants(self) -> list[GrantKey]:
        """The keys of every stored grant, sorted."""
        raise NotImplementedError

    def acquire_lease(self, key: GrantKey, timeout: float | None = None) -> None:
        """Take the refresh lease of ``key``, waiting at most ``timeout`` seconds
        (default :attr:`lease_timeout`); raise :class:`LeaseTimeout` if it stays taken."""
        wait = self.lease_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        if not self._key_locks.acquire(key, wait):
            raise self._lease_timeout(key, wait)
        try:
            self._acquire(key, deadline, wait)
        except BaseException:
            self._key_locks.release(key)
            raise

    def release_lease(self, key: GrantKey) -> None:
        """Release the lease of ``key`` taken by :meth:`acquire_lease`."""
        try:
            self._release(key)
        finally:
            self._key_locks.release(key)

    @contextmanager
    def lease(self, key: GrantKey, timeout: float | None = None) -> Iterator[None]:
        """``with store.lease(key):`` the lease, released on every outcome."""
        self.acquire_lease(key, timeout)
        try:
            yield
        finally:
            self.release_lease(key)

    def _acquire(self, key: GrantKey, deadline: float, wait: float) -> None:
        """Take the cross-process part of the lease (the in-process lock is held)."""

    def _release(self, key: GrantKey) -> None:
        """Release the cross-process part of the lease."""

    def _lease_timeout(self, key: GrantKey, wait: float) -> LeaseTimeout:
        return LeaseTimeout(
            f"{self.describe()}: the refresh lease of grant {key} was not free within "
            f"{wait:g} s (another process is refreshing it, or hung holding it); "
            "try the call again, or raise lease_timeout",
            store=self.describe(),
            key=key,
        )

    def grant(
        self,
        key: GrantKey | str,
        client_id: str | None = None,
        grant: str = "default",
        *,
        origin: str | None = None,
        credential: str = "oauth2",
    ) -> Grant:
        """A handle on one grant for the drivers: ``store.grant(GrantKey(...))``
        or ``store.grant("acme", client_id)``.  ``origin`` is the account's
        origin to record when the grant is first saved (default
        ``https://ACCOUNT.checkfront.com``)."""
        if isinstance(key, str):
            if client_id is None:
                raise StoreError(
                    "store.grant(account, client_id): pass the client id too, or a GrantKey",
                    store=self.describe(),
                )
            key = GrantKey(key, client_id, grant)
        return Grant(self, key, origin=origin, credential=credential)

    def close(self) -> None:
        """Release connections and files.  The store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


class Grant:
    """One grant of a :class:`GrantStore`: what the drivers use (:class:`TokenStore`)."""

    def __init__(
        self,
        store: GrantStore,
        key: GrantKey,
        *,
        origin: str | None = None,
        credential: str = "oauth2",
    ) -> None:
        if not isinstance(credential, str) or credential not in CREDENTIAL_KINDS:
            raise StoreError(
                f"credential must be one of {sorted(CREDENTIAL_KINDS)}, got {credential!r}",
                store=store.describe(),
                key=key,
            )
        self.store = store
        self.key = key
        self.origin = origin if origin is not None else f"https://{key.account}.checkfront.com"
        self.credential = credential

    def _new(self) -> GrantRecord:
        return GrantRecord(self.key, self.origin, self.credential, None, time.time())

    def load_record(self) -> GrantRecord | None:
        return self.store.load(self.key)

    def load(self) -> TokenSet | None:
        record = self.store.load(self.key)
        return None if record is None else record.tokens

    def save(self, tokens: TokenSet, client_auth: str | None = None) -> None:
        """Store ``tokens`` (and ``client_auth``, ``Store.client_auth``, if given)."""
        if client_auth is not None and client_auth not in CLIENT_AUTH_FORMS:
            raise StoreError(
                f"client_auth must be one of {sorted(CLIENT_AUTH_FORMS)} or None, "
                f"got {client_auth!r}",
                store=self.store.describe(),
                key=self.key,
            )

        def change(old: GrantRecord | None) -> GrantRecord:
            record = replace(old or self._new(), tokens=tokens, updated_at=time.time())
            return record if client_auth is None else replace(record, client_auth=client_auth)

        self.store.update(self.key, change)

    def save_origin(self, origin: str) -> None:
        if not _check_origin(origin):
            raise StoreError(
                f"origin {origin!r} is not an http(s) origin", store=self.store.describe()
            )
        self.origin = origin
        self.store.update(
            self.key,
            lambda old: replace(old or self._new(), origin=origin, updated_at=time.time()),
        )

    def save_client_auth(self, form: str | None) -> None:
        """Remember which client-authentication form the token endpoint accepted."""
        if form is not None and form not in CLIENT_AUTH_FORMS:
            raise StoreError(
                f"client_auth must be one of {sorted(CLIENT_AUTH_FORMS)} or None, got {form!r}",
                store=self.store.describe(),
                key=self.key,
            )
        self.store.update(
            self.key,
            lambda old: replace(old or self._new(), client_auth=form, updated_at=time.time()),
        )

    def delete(self) -> bool:
        return self.store.delete(self.key)

    def acquire_lease(self, timeout: float | None = None) -> None:
        self.store.acquire_lease(self.key, timeout)

    def release_lease(self) -> None:
        self.store.release_lease(self.key)

    def __repr__(self) -> str:
        return f"<Grant {self.key} in {self.store.describe()}>"


# -- memory ------------------------------------------------------------------------


class MemoryStore(GrantStore):
    """Grants in memory: shared by the clients of one process, lost at exit."""

    def __init__(self, *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT) -> None:
        super().__init__()
        self.lease_timeout = lease_timeout
        self._records: dict[GrantKey, str] = {}
        self._guard = threading.Lock()

    def load(self, key: GrantKey) -> GrantRecord | None:
        with self._guard:
            text = self._records.get(key)
        return None if text is None else GrantRecord.from_json(text, key=key, store=self.describe())

    def _update(self, key: GrantKey, change: Update) -> GrantRecord:
        with self._guard:
            text = self._records.get(key)
            old = (
                None if text is None else GrantRecord.from_json(text, key=key, store="MemoryStore")
            )
            record = change(old)
            self._records[key] = record.to_json()
            return record

    def put_raw(self, key: GrantKey, text: str) -> None:
        """Store ``text`` as the record of ``key`` as it is (for tests of corrupt records)."""
        with self._guard:
            self._records[key] = text

    def delete(self, key: GrantKey) -> bool:
        with self._guard:
            return self._records.pop(key, None) is not None

    def grants(self) -> list[GrantKey]:
        with self._guard:
            return sorted(self._records)

    def __repr__(self) -> str:
        return f"<MemoryStore with {len(self._records)} grants>"


class MemoryGrant(Grant):
    """One grant in a :class:`MemoryStore` of its own, holding ``tokens`` if
    given: the simplest store to hand a driver."""

    def __init__(
        self,
        tokens: TokenSet | None = None,
        *,
        key: GrantKey | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(MemoryStore(), key or GrantKey("acme", "memory"), origin=origin)
        if tokens is not None:
            Grant.save(self, tokens)


# -- shared file checks --------------------------------------------------------------


def _private_folder(folder: str, store: str) -> None:
    """Create ``folder`` (mode 0700) if missing; refuse one others can read or write."""
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.name != "posix":  # pragma: no cover - no POSIX modes to check
        return
    mode = os.stat(folder).st_mode
    if mode & 0o066:
        raise InsecureStore(
            f"{store}: the folder {folder} is readable or writable by other users "
            f"(mode {stat.S_IMODE(mode):o}); fix it with: chmod go-rwx {folder}",
            store=store,
        )


def _private_file(path: str, store: str) -> None:
    """Create ``path`` empty with mode 0600 if missing; refuse one others can read or write."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    if os.name != "posix":  # pragma: no cover
        return
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise InsecureStore(
            f"{store}: the file {path} is readable or writable by other users "
            f"(mode {stat.S_IMODE(mode):o}); fix it with: chmod 600 {path}",
            store=store,
        )


def _fsync_folder(folder: str) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lease_slot(key: GrantKey) -> int:
    """A 63-bit number for ``key`` (sha256): the lock byte of the file store and
    the advisory lock id of PostgreSQL.  A collision only serializes two grants."""
    digest = hashlib.sha256(
        "\0".join(("cfauth-grant", key.account, key.client_id, key.grant)).encode()
    ).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# -- JSON file ------------------------------------------------------------------------


class _LockFile:
    """One open lock file per path and process (closing any descriptor of a file
    drops every ``fcntl`` lock the process holds on it, so it is shared)."""

    registry: ClassVar[dict[str, _LockFile]] = {}
    registry_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.users = 0
        self.key_locks = _KeyLocks()  # shared by every FileStore of this file
        self.write_guard = threading.Lock()

    @classmethod
    def open(cls, path: str) -> _LockFile:
        with cls.registry_guard:
            lock = cls.registry.get(path)
            if lock is None:
                lock = cls.registry[path] = _LockFile(path)
            lock.users += 1
            return lock

    def close(self) -> None:
        with self.registry_guard:
            self.users -= 1
            if self.users == 0:
                del self.registry[self.path]
                os.close(self.fd)

    def lock(self, offset: int, deadline: float | None) -> bool:
        """Lock one byte at ``offset``, polling until ``deadline`` (``None``: wait)."""
        import fcntl  # noqa: PLC0415 - POSIX only

        if deadline is None:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, offset)
            return True
        pause = 0.001
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return True
            except OSError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.02)

    def unlock(self, offset: int) -> None:
        import fcntl  # noqa: PLC0415

        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)


#: The lock file's byte 0 guards writes of the whole file; grant leases use
#: bytes 1 and up.
_WRITE_SLOT = 0
_FILE_FORMAT = 1


class FileStore(GrantStore):
    """All grants in one JSON file, for one machine.

    Every write goes to a temporary file that is fsynced, renamed over the
    store and followed by an fsync of the folder, so a crash leaves the old
    file or the new one, never a torn one.  The file is created with mode 0600
    and a file or folder that other users can read or write is refused.  The
    lease is an ``fcntl`` lock on a byte of ``PATH.lock`` chosen by the grant
    key (the operating system drops it when the holder dies); byte 0 of that
    file serializes writers.
    """

    def __init__(self, path: str | os.PathLike[str], *, lease_timeout: float = 30.0) -> None:
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.lease_timeout = lease_timeout
        self._folder = os.path.dirname(self.path)
        _private_folder(self._folder, self.describe())
        _private_file(self.path + ".lock", self.describe())
        if os.path.exists(self.path):
            _private_file(self.path, self.describe())
        self._lockfile = _LockFile.open(self.path + ".lock")
        self._key_locks = self._lockfile.key_locks
        self._write_guard = self._lockfile.write_guard
        self._closed = False

    def describe(self) -> str:
        return f"FileStore({self.path!r})"

    def _read(self, key: GrantKey | None) -> dict[GrantKey, object]:
        """Every record, by key (raw dicts).  A file that is not a valid store
        raises :class:`CorruptRecord` naming ``key``."""
        try:
            with open(self.path, "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            return {}
        if not raw:  # created by the permission check, never written: empty
            return {}
        where = f"the grant {key}" if key is not None else "the store"

        def corrupt(problem: str) -> CorruptRecord:
            return CorruptRecord(
                f"{self.describe()}: the file {problem} (while reading {where}); restore it "
                f"from a backup, or move it aside and log in again",
                store=self.describe(),
                key=key,
            )

        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise corrupt("is not valid JSON (truncated or overwritten)") from None
        if not isinstance(data, dict) or not isinstance(data.get("grants"), list):
            raise corrupt("is not a cfauth grant store (no 'grants' list)")
        version = data.get("cfauth_grants")
        if type(version) is not int:
            raise corrupt("has no format version")
        if version > _FILE_FORMAT:
            raise UnknownSchemaVersion(
                f"{self.describe()}: the file was written in format {version} by a newer "
                f"cfauth (this one reads {_FILE_FORMAT}); upgrade cfauth",
                store=self.describe(),
                key=key,
            )
        records: dict[GrantKey, object] = {}
        for item in data["grants"]:
            try:
                item_key = GrantKey(item["account"], item["client_id"], item["grant"])
            except (TypeError, KeyError, StoreError):
                raise corrupt(
                    "holds a grant without a valid account, client_id and grant"
                ) from None
            records[item_key] = item.get("record")
        return records

    def load(self, key: GrantKey) -> GrantRecord | None:
        raw = self._read(key).get(key)
        return None if raw is None else GrantRecord.from_dict(raw, key=key, store=self.describe())

    def grants(self) -> list[GrantKey]:
        return sorted(self._read(None))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_guard:
            self._lockfile.lock(_WRITE_SLOT, None)
            try:
                yield
            finally:
                self._lockfile.unlock(_WRITE_SLOT)

    def _write(self, records: Mapping[GrantKey, object]) -> None:
        data = {
            "cfauth_grants": _FILE_FORMAT,
            "grants": [
                {"account": k.account, "client_id": k.client_id, "grant": k.grant, "record": v}
                for k, v in sorted(records.items())
            ],
        }
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        temporary = self.path + ".tmp"
        with suppress(FileNotFoundError):
            os.unlink(temporary)  # left by a crash: never write through what is there
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _fsync_folder(self._folder)

    def _update(self, key: GrantKey, change: Update) -> GrantRecord:
        with self._writing():
            records = self._read(key)
            raw = records.get(key)
            old = (
                None if raw is None else GrantRecord.from_dict(raw, key=key, store=self.describe())
            )
            record = change(old)
            records[key] = record.to_dict()
            self._write(records)
            return record

    def delete(self, key: GrantKey) -> bool:
        with self._writing():
            try:
                records = self._read(key)
            except CorruptRecord:
                raise
            if key not in records:
                return False
            del records[key]
            self._write(records)
            return True

    def _acquire(self, key: GrantKey, deadline: float, wait: float) -> None:
        if not self._lockfile.lock(1 + _lease_slot(key) % (2**62), deadline):
            raise self._lease_timeout(key, wait)

    def _release(self, key: GrantKey) -> None:
        self._lockfile.unlock(1 + _lease_slot(key) % (2**62))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._lockfile.close()


# -- SQLite ------------------------------------------------------------------------

#: Each schema version's statements, applied in order from the database's version.
SQLITE_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE grants (
            account    TEXT NOT NULL,
            client_id  TEXT NOT NULL,
            grant_name TEXT NOT NULL,
            record     TEXT NOT NULL,   -- GrantRecord.to_json()
            updated_at REAL NOT NULL,   -- seconds since the epoch, as in the record
            PRIMARY KEY (account, client_id, grant_name)
        )""",
    ),
}


class SqliteStore(GrantStore):
    """Grants in an SQLite database: the default store, for one machine.

    WAL mode (readers never wait for writers), ``synchronous=FULL`` (a saved
    grant survives a power cut), a busy timeout equal to the lease timeout, and
    a ``schema_version`` table with migrations from version 1 on.  The lease
    of a grant is a ``BEGIN IMMEDIATE`` transaction held on a connection of
    its own: SQLite's write lock, which dies with its process.  It is
    database-wide, so refreshes of different grants take turns (use
    :class:`PostgresStore` for many grants refreshed at once).  A save under
    the lease commits (durable at once) and takes the write lock again.
    """

    def __init__(self, path: str | os.PathLike[str], *, lease_timeout: float = 30.0) -> None:
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.lease_timeout = lease_timeout
        _private_folder(os.path.dirname(self.path), self.describe())
        _private_file(self.path, self.describe())
        self._idle: list[sqlite3.Connection] = []
        self._leases: dict[GrantKey, sqlite3.Connection | None] = {}
        self._pool_guard = threading.Lock()
        self._closed = False
        with self._connection() as conn:
            self._migrate(conn)

    def describe(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _broken(self, error: sqlite3.Error, key: GrantKey | None = None) -> StoreError:
        text = str(error)
        if "not a database" in text or "malformed" in text:
            return CorruptRecord(
                f"{self.describe()}: the file is not a readable SQLite database ({text}); "
                "restore it from a backup, or move it aside and log in again",
                store=self.describe(),
                key=key,
            )
        if "locked" in text or "busy" in text:
            return LeaseTimeout(
                f"{self.describe()}: the database stayed locked for {self.lease_timeout:g} s "
                "(another process holds it); try again, or raise lease_timeout",
                store=self.describe(),
                key=key,
            )
        return StoreError(
            f"{self.describe()}: {type(error).__name__}: {text}; check the file and its folder",
            store=self.describe(),
            key=key,
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.lease_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            conn.close()
            raise self._broken(error) from None
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError(f"{self.describe()} is closed; open a new one", store=self.describe())
        with self._pool_guard:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        with self._pool_guard:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if exists:  # the usual case: read, without waiting for a lease holder
                (current,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                if current == SCHEMA_VERSION:
                    return
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            (current,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_version"
            ).fetchone()
            if current > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise UnknownSchemaVersion(
                    f"{self.describe()}: the database has schema version {current}, written by "
                    f"a newer cfauth (this one reads {SCHEMA_VERSION}); upgrade cfauth",
                    store=self.describe(),
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in SQLITE_MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            raise self._broken(error) from None

    def schema_version(self) -> int:
        with self._connection() as conn:
            return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    _SELECT = "SELECT record FROM grants WHERE account = ? AND client_id = ? AND grant_name = ?"

    def load(self, key: GrantKey) -> GrantRecord | None:
        try:
            with self._connection() as conn:
                row = conn.execute(self._SELECT, (key.account, key.client_id, key.grant)).fetchone()
        except sqlite3.Error as error:
            raise self._broken(error, key) from None
        if row is None:
            return None
        return GrantRecord.from_json(row[0], key=key, store=self.describe())

    def _write(self, conn: sqlite3.Connection, key: GrantKey, change: Update) -> GrantRecord:
        row = conn.execute(self._SELECT, (key.account, key.client_id, key.grant)).fetchone()
        old = None if row is None else GrantRecord.from_json(row[0], key=key, store=self.describe())
        record = change(old)
        conn.execute(
            "INSERT INTO grants (account, client_id, grant_name, record, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, client_id, grant_name) "
            "DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
            (key.account, key.client_id, key.grant, record.to_json(), record.updated_at),
        )
        return record

    def _update(self, key: GrantKey, change: Update) -> GrantRecord:
        lease = self._leases.get(key)
        try:
            if lease is not None:
                # Under the lease: write in its transaction, commit (durable now),
                # and take the write lock again for the rest of the lease.
                try:
                    record = self._write(lease, key, change)
                except BaseException:
                    lease.execute("ROLLBACK")
                    lease.execute("BEGIN IMMEDIATE")
                    raise
                lease.execute("COMMIT")
                try:
                    lease.execute("BEGIN IMMEDIATE")
                except sqlite3.Error:
                    self._leases[key] = None  # saved; the rest of the lease is lost
                    raise
                return record
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                record = self._write(conn, key, change)
                conn.execute("COMMIT")
                return record
        except sqlite3.Error as error:
            raise self._broken(error, key) from None

    def put_raw(self, key: GrantKey, text: str) -> None:
        """Store ``text`` as the record of ``key`` as it is (for tests of corrupt records)."""
        with self._connection() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, 0)",
                (key.account, key.client_id, key.grant, text),
            )

    def delete(self, key: GrantKey) -> bool:
        try:
            with self._connection() as conn:
                cursor = conn.execute(
                    "DELETE FROM grants WHERE account = ? AND client_id = ? AND grant_name = ?",
                    (key.account, key.client_id, key.grant),
                )
                return cursor.rowcount > 0
        except sqlite3.Error as error:
            raise self._broken(error, key) from None

    def grants(self) -> list[GrantKey]:
        try:
            with self._connection() as conn:
                rows = conn.execute("SELECT account, client_id, grant_name FROM grants").fetchall()
        except sqlite3.Error as error:
            raise self._broken(error) from None
        return sorted(GrantKey(*row) for row in rows)

    def _acquire(self, key: GrantKey, deadline: float, wait: float) -> None:
        with self._pool_guard:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        left = max(deadline - time.monotonic(), 0.0)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            conn.execute(f"PRAGMA busy_timeout = {int(self.lease_timeout * 1000)}")
            self._give_back(conn)
            if "locked" in str(error) or "busy" in str(error):
                raise self._lease_timeout(key, wait) from None
            raise self._broken(error, key) from None
        conn.execute(f"PRAGMA busy_timeout = {int(self.lease_timeout * 1000)}")
        self._leases[key] = conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._pool_guard:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    def _release(self, key: GrantKey) -> None:
        conn = self._leases.pop(key, None)
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error:
            conn.close()
            raise
        self._give_back(conn)

    def close(self) -> None:
        with self._pool_guard:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# -- PostgreSQL ------------------------------------------------------------------------

#: The advisory lock id that serializes schema creation and migrations.
_PG_SCHEMA_LOCK = 0x63666175746800  # "cfauth\0"


def _pg_migrations(table: str) -> dict[int, tuple[str, ...]]:
    return {
        1: (
            f"""CREATE TABLE IF NOT EXISTS {table} (
                account    text NOT NULL,
                client_id  text NOT NULL,
                grant_name text NOT NULL,
                record     jsonb NOT NULL,
                updated_at double precision NOT NULL,
                PRIMARY KEY (account, client_id, grant_name)
            )""",
        ),
    }


def _hide_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://..."
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = userinfo.partition(":")[0] + "@" + host
    query = "&".join(p for p in parts.query.split("&") if not p.lower().startswith("password"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PostgresStore(GrantStore):
    """Grants in PostgreSQL: for many workers on many machines and many grants.

    The table (``cfauth_grants`` by default, see ``docs/stores.rst``) and
    ``cfauth_schema_version`` are created if missing.  The lease of a grant is
    a session-level ``pg_advisory_lock`` on a 63-bit hash of its key, taken on
    a pooled connection kept for the lease, with ``lock_timeout`` as the
    timeout: it is released on ``pg_advisory_unlock``, or by the server when
    the session ends (the holder died).  It holds no transaction and no row
    lock during the refresh request, so saves commit at once and other grants
    are never blocked.  Connections come from a ``psycopg_pool.ConnectionPool``
    (``max_size``, default 4): a lease holds one for its duration.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = "cfauth_grants",
        lease_timeout: float = 30.0,
        min_size: int = 1,
        max_size: int = 4,
    ) -> None:
        super().__init__()
        try:
            import psycopg  # noqa: PLC0415
            import psycopg_pool  # noqa: PLC0415
        except ImportError:  # pragma: no cover - the test environment has the extra
            raise StoreError(
                "PostgresStore needs psycopg 3 and psycopg_pool: pip install 'cfauth[postgres]'",
                store="PostgresStore",
            ) from None
        if not table.replace("_", "").isalnum() or not table.isascii() or table[0].isdigit():
            raise StoreError(
                f"table {table!r}: use letters, digits and underscores", store="PostgresStore"
            )
        self._psycopg = psycopg
        self._url_shown = _hide_password(url)
        self.table = table
        self.lease_timeout = lease_timeout
        self._leases: dict[GrantKey, PgConnection[Any]] = {}
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            timeout=lease_timeout,
            open=False,
            name="cfauth",
        )
        try:
            self._pool.open(wait=True, timeout=lease_timeout)
            self._migrate()
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StoreError(
                f"{self.describe()}: no connection within {lease_timeout:g} s; check that the "
                "server is up and the URL (host, port, user, database) is right",
                store=self.describe(),
            ) from None
        except BaseException:
            self._pool.close()
            raise

    def describe(self) -> str:
        return f"PostgresStore({self._url_shown!r})"

    def _failed(self, error: Exception, key: GrantKey | None = None) -> StoreError:
        return StoreError(
            f"{self.describe()}: {type(error).__name__}: {str(error).strip()[:300]}; "
            "check that the server is up and the URL is right",
            store=self.describe(),
            key=key,
        )

    @contextmanager
    def _conn(self, key: GrantKey | None = None) -> Iterator[PgConnection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except (self._psycopg.Error, OSError) as error:
            raise self._failed(error, key) from None
        except Exception as error:
            if type(error).__module__.startswith("psycopg_pool"):
                raise self._failed(error, key) from None
            raise

    def _migrate(self) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table}_schema_version (version integer NOT NULL)"
            )
            row = conn.execute(
                f"SELECT coalesce(max(version), 0) FROM {self.table}_schema_version"
            ).fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise UnknownSchemaVersion(
                    f"{self.describe()}: table {self.table} has schema version {current}, "
                    f"written by a newer cfauth (this one reads {SCHEMA_VERSION}); upgrade cfauth",
                    store=self.describe(),
                )
            migrations = _pg_migrations(self.table)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in migrations[version]:
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {self.table}_schema_version (version) VALUES (%s)", (version,)
                )

    def schema_version(self) -> int:
        with self._conn() as conn:
            row = conn.execute(f"SELECT max(version) FROM {self.table}_schema_version").fetchone()
        return int(row[0]) if row else 0

    def _parse(self, raw: object, key: GrantKey) -> GrantRecord:
        if isinstance(raw, (str, bytes)):
            return GrantRecord.from_json(raw, key=key, store=self.describe())
        return GrantRecord.from_dict(raw, key=key, store=self.describe())

    def load(self, key: GrantKey) -> GrantRecord | None:
        with self._conn(key) as conn:
            row = conn.execute(
                f"SELECT record FROM {self.table} "
                "WHERE account = %s AND client_id = %s AND grant_name = %s",
                (key.account, key.client_id, key.grant),
            ).fetchone()
        return None if row is None else self._parse(row[0], key)

    def _update(self, key: GrantKey, change: Update) -> GrantRecord:
        with self._conn(key) as conn, conn.transaction():
            row = conn.execute(
                f"SELECT record FROM {self.table} "
                "WHERE account = %s AND client_id = %s AND grant_name = %s FOR UPDATE",
                (key.account, key.client_id, key.grant),
            ).fetchone()
            record = change(None if row is None else self._parse(row[0], key))
            conn.execute(
                f"INSERT INTO {self.table} (account, client_id, grant_name, record, updated_at) "
                "VALUES (%s, %s, %s, %s::jsonb, %s) "
                "ON CONFLICT (account, client_id, grant_name) "
                "DO UPDATE SET record = EXCLUDED.record, updated_at = EXCLUDED.updated_at",
                (key.account, key.client_id, key.grant, record.to_json(), record.updated_at),
            )
            return record

    def put_raw(self, key: GrantKey, value: object) -> None:
        """Store ``value`` (JSON-able) as the record of ``key`` as it is (for tests)."""
        with self._conn(key) as conn:
            conn.execute(
                f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s::jsonb, 0) "
                "ON CONFLICT (account, client_id, grant_name) "
                "DO UPDATE SET record = EXCLUDED.record",
                (key.account, key.client_id, key.grant, json.dumps(value)),
            )

    def save_many(self, records: list[GrantRecord]) -> None:
        """Store many records in one transaction (seeding, imports)."""
        with self._conn() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.table} (account, client_id, grant_name, record, updated_at) "
                "VALUES (%s, %s, %s, %s::jsonb, %s) "
                "ON CONFLICT (account, client_id, grant_name) "
                "DO UPDATE SET record = EXCLUDED.record, updated_at = EXCLUDED.updated_at",
                [
                    (r.key.account, r.key.client_id, r.key.grant, r.to_json(), r.updated_at)
                    for r in records
                ],
            )

    def delete(self, key: GrantKey) -> bool:
        with self._conn(key) as conn:
            cursor = conn.execute(
                f"DELETE FROM {self.table} "
                "WHERE account = %s AND client_id = %s AND grant_name = %s",
                (key.account, key.client_id, key.grant),
            )
            return cursor.rowcount > 0

    def grants(self) -> list[GrantKey]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT account, client_id, grant_name FROM {self.table}"
            ).fetchall()
        return sorted(GrantKey(*row) for row in rows)

    def _acquire(self, key: GrantKey, deadline: float, wait: float) -> None:
        psycopg = self._psycopg
        left = max(deadline - time.monotonic(), 0.001)
        try:
            conn = self._pool.getconn(timeout=left)
        except Exception as error:
            if type(error).__name__ == "PoolTimeout":
                raise self._lease_timeout(key, wait) from None
            raise self._failed(error, key) from None
        try:
            left = max(deadline - time.monotonic(), 0.001)
            conn.execute(f"SET lock_timeout = {max(int(left * 1000), 1)}")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (_lease_slot(key) - 2**62,))
            finally:
                conn.execute("SET lock_timeout = 0")
        except psycopg.errors.LockNotAvailable:
            self._pool.putconn(conn)
            raise self._lease_timeout(key, wait) from None
        except (psycopg.Error, OSError) as error:
            self._pool.putconn(conn)
            raise self._failed(error, key) from None
        self._leases[key] = conn

    def _release(self, key: GrantKey) -> None:
        conn = self._leases.pop(key, None)
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lease_slot(key) - 2**62,))
        except (self._psycopg.Error, OSError):
            conn.close()  # the session ends, and the server drops its lock
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        self._pool.close()


def open_grant(
    account: str | Account,
    credential: Credential,
    store: TokenStore | GrantStore | None,
    tokens: TokenSet | None,
) -> tuple[Account, TokenStore | None, TokenSet | None, str | None]:
    """The account (at its stored origin), the grant handle, the tokens and the
    client authentication form that worked (``None``: not learnt yet) to start
    a machine with; shared by the blocking and trio factories."""
    if isinstance(account, str):
        account = Account.parse(account)
    if store is None:
        return account, None, tokens, None
    client_id = credential.client_id if isinstance(credential, OAuth2App) else credential.key
    if isinstance(store, GrantStore):
        store = store.grant(
            GrantKey.for_account(account, client_id),
            origin=account.origin,
            credential="oauth2" if isinstance(credential, OAuth2App) else "api_key",
        )
    record = store.load_record()
    if record is not None:
        if record.origin != account.origin:
            # Only where credentials may follow a redirect (a migration target).
            try:
                account.judge_redirect(account.origin + "/", record.origin + "/")
                account = account.moved_to(record.origin)
            except UntrustedRedirect:
                # The account's own pre-migration host, stored before the caller
                # configured the new one: the configured origin wins.  Anything
                # else is refused (credentials never go to it).
                if account.name is None or (
                    urlsplit(record.origin).hostname != f"{account.name}.checkfront.com"
                ):
                    raise
        if tokens is None and isinstance(credential, OAuth2App):
            tokens = record.tokens
        if isinstance(credential, OAuth2App):
            return account, store, tokens, record.client_auth
    return account, store, tokens, None


# -- choosing a store ------------------------------------------------------------------


def default_store_path() -> str:
    """Where :func:`open_store` keeps grants when nothing is configured:
    ``$XDG_DATA_HOME/cfauth/grants.sqlite3`` (``~/.local/share/...``), on macOS
    ``~/Library/Application Support/cfauth/...``, on Windows
    ``%LOCALAPPDATA%\\cfauth\\...``."""
    if sys.platform == "win32":  # pragma: no cover
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":  # pragma: no cover
        base = os.path.expanduser("~/Library/Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        if not os.path.isabs(base):  # the XDG spec: relative values are ignored
            base = os.path.expanduser("~/.local/share")
    return os.path.join(base, "cfauth", "grants.sqlite3")


def open_store(url: str | os.PathLike[str] | None = None, **options: Any) -> GrantStore:
    """Open the grant store at ``url``, else ``$CFAUTH_STORE``, else the default.

    A ``postgresql://`` URL opens a :class:`PostgresStore`; a path ending in
    ``.json`` a :class:`FileStore`; any other path a :class:`SqliteStore`.
    With nothing configured: an SQLite file at :func:`default_store_path`.
    ``options`` go to the store (``lease_timeout``, ...).
    """
    where = os.fspath(url) if url is not None else os.environ.get("CFAUTH_STORE") or ""
    where = where.strip() or default_store_path()
    if where.startswith(("postgresql://", "postgres://")):
        return PostgresStore(where, **options)
    if "://" in where:
        raise StoreError(
            f"store {_hide_password(where)!r}: use a postgresql:// URL, a .json file path "
            "or an SQLite file path",
            store="open_store",
        )
    if where.endswith(".json"):
        return FileStore(where, **options)
    return SqliteStore(where, **options)
