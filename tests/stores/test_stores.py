"""Every store against the same expectations: records, corruption, permissions,
the lease and its timeout, schema versions, and choosing a store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth.stores import (
    CorruptRecord,
    FileStore,
    Grant,
    GrantKey,
    GrantMismatch,
    GrantRecord,
    GrantStore,
    InsecureStore,
    LeaseTimeout,
    MemoryStore,
    PostgresStore,
    SqliteStore,
    StoreError,
    UnknownSchemaVersion,
    default_store_path,
    open_store,
)
from cfauth_core import TokenSet

from .conftest import KINDS
from .shared import ROOT

OpenKind = Callable[..., GrantStore]
KEY = GrantKey("acme", "client-1")
TOKENS = TokenSet("access-1", "refresh-1", 2_000_000_000.0, 2_001_000_000.0, 1_700_000_000.0)


def record(key: GrantKey = KEY, **changes: Any) -> GrantRecord:
    fields: dict[str, Any] = {
        "key": key,
        "origin": "https://acme.checkfront.com",
        "credential": "oauth2",
        "tokens": TOKENS,
        "updated_at": 1_700_000_000.0,
        "client_auth": None,
    }
    fields.update(changes)
    return GrantRecord(**fields)


# -- records -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_records_round_trip_and_are_listed_and_deleted(open_kind: OpenKind, kind: str) -> None:
    store = open_kind(kind)
    assert store.load(KEY) is None
    assert store.grants() == []
    first = record(client_auth="raw")
    other = record(GrantKey("beta", "client-2", "second"), tokens=None, credential="api_key")
    store.save(first)
    store.save(other)
    again = open_kind(kind)  # another opening of the same store (another process)
    assert again.load(KEY) == first
    assert again.load(other.key) == other
    assert again.grants() == sorted([KEY, other.key])
    assert again.delete(KEY) is True
    assert again.delete(KEY) is False
    assert store.load(KEY) is None
    assert store.grants() == [other.key]


@pytest.mark.parametrize("kind", KINDS)
def test_a_grant_handle_keeps_origin_and_client_auth_when_tokens_change(
    open_kind: OpenKind, kind: str
) -> None:
    grant = open_kind(kind).grant("ACME", "client-1")
    assert grant.key == KEY  # account names are case-insensitive
    assert grant.load() is None
    assert grant.load_record() is None
    grant.save(TOKENS)
    stored = grant.load_record()
    assert stored is not None
    assert stored.origin == "https://acme.checkfront.com"
    assert stored.credential == "oauth2"
    assert stored.client_auth is None
    grant.save_origin("https://acme.manage.na1.bookingplatform.app")
    grant.save_client_auth("raw")
    grant.save(TOKENS, client_auth="rfc6749")
    grant.save(TOKENS)  # None: the learnt form is kept
    newer = TokenSet("access-2", "refresh-2", 2_000_000_100.0, 2_001_000_100.0, 1_700_000_100.0)
    grant.save(newer)
    seen = open_kind(kind).grant(KEY).load_record()
    assert seen is not None
    assert seen.tokens == newer
    assert seen.origin == "https://acme.manage.na1.bookingplatform.app"
    assert seen.client_auth == "rfc6749"
    assert seen.updated_at >= stored.updated_at
    assert "access-2" not in repr(seen)
    assert "refresh-2" not in repr(seen)
    assert grant.delete() is True
    assert grant.load() is None


def test_the_record_never_holds_the_client_secret() -> None:
    assert set(record().to_dict()) == {
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


@pytest.mark.parametrize(
    "bad",
    [
        {"account": ""},
        {"client_id": "a\nb"},
        {"grant": " padded"},
        {"account": 3},
    ],
)
def test_bad_grant_keys_are_refused(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"account": "acme", "client_id": "c", "grant": "default"}
    fields.update(bad)
    with pytest.raises(StoreError, match="grant key"):
        GrantKey(**fields)


def test_grant_handles_refuse_bad_values() -> None:
    grant = MemoryStore().grant(KEY)
    with pytest.raises(StoreError, match="client_auth must be one of"):
        grant.save_client_auth("basic")
    with pytest.raises(StoreError, match="client_auth must be one of"):
        grant.save(TOKENS, client_auth="basic")
    with pytest.raises(StoreError, match="not an http"):
        grant.save_origin("ftp://acme.checkfront.com")
    with pytest.raises(StoreError, match="credential must be one of"):
        Grant(MemoryStore(), KEY, credential="password")
    with pytest.raises(StoreError, match="pass the client id"):
        MemoryStore().grant("acme")
    assert grant.load_record() is None  # nothing was stored


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
good = record().to_dict()


@settings(max_examples=300, derandomize=True)
@given(
    field=st.sampled_from(sorted(good)),
    value=json_values,
    drop=st.booleans(),
)
def test_any_damaged_record_is_read_or_refused_with_corrupt_record(
    field: str, value: object, drop: bool
) -> None:
    damaged = dict(good)
    if drop:
        del damaged[field]
    else:
        damaged[field] = value
    refused: CorruptRecord | None = None
    try:
        loaded = GrantRecord.from_dict(damaged, key=KEY, store="S")
    except CorruptRecord as error:
        refused = error
    if refused is not None:
        assert refused.key == KEY
        assert "S: the grant acme/client-1/default" in str(refused)
        assert "access-1" not in str(refused)
        assert "refresh-1" not in str(refused)
    else:
        assert loaded.to_dict() == {**good, **({} if drop else {field: value})} or loaded == (
            GrantRecord.from_dict(loaded.to_dict(), key=KEY, store="S")
        )


# -- corruption --------------------------------------------------------------------


def put_raw(store: GrantStore, kind: str, text: str) -> None:
    """Store ``text`` as the record of KEY, bypassing every check."""
    if isinstance(store, (MemoryStore, SqliteStore)):
        store.put_raw(KEY, text)
    elif isinstance(store, PostgresStore):
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # jsonb cannot hold broken JSON: a JSON string stands for it
        store.put_raw(KEY, value)
    else:
        assert isinstance(store, FileStore)
        try:
            value = json.loads(text)
        except ValueError:
            body = '{"cfauth_grants": 1, "grants": [' + text
        else:
            entry = {"account": "acme", "client_id": "client-1", "grant": "default"}
            body = json.dumps({"cfauth_grants": 1, "grants": [{**entry, "record": value}]})
        with open(store.path, "w") as file:
            file.write(body)
        os.chmod(store.path, 0o600)


CORRUPTIONS = {
    "truncated": (json.dumps(good)[:40], CorruptRecord, "not valid JSON|not a JSON object"),
    "wrong types": (json.dumps({**good, "updated_at": "yesterday"}), CorruptRecord, "updated_at"),
    "bad tokens": (
        json.dumps({**good, "tokens": {**good["tokens"], "access_token": 5}}),
        CorruptRecord,
        "tokens that cannot be read",
    ),
    "newer version": (json.dumps({**good, "version": 2}), UnknownSchemaVersion, "upgrade cfauth"),
    "other client": (json.dumps({**good, "client_id": "client-9"}), GrantMismatch, "client-9"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_record_is_an_error_naming_store_and_grant_and_is_never_overwritten(
    open_kind: OpenKind, kind: str, case: str
) -> None:
    text, error, pattern = CORRUPTIONS[case]
    store = open_kind(kind)
    put_raw(store, kind, text)
    grant = store.grant(KEY)
    with pytest.raises(error, match=pattern) as caught:
        grant.load()
    message = str(caught.value)
    assert store.describe() in message
    assert str(KEY) in message
    assert caught.value.key == KEY
    assert "refresh-1" not in message
    snapshot = _raw(store, kind)
    writes: list[Callable[[], object]] = [
        lambda: grant.save(TOKENS),
        lambda: grant.save_origin("https://acme.manage.na1.bookingplatform.app"),
        lambda: store.save(record()),
    ]
    for write in writes:
        with pytest.raises(error):
            write()
        assert _raw(store, kind) == snapshot  # never overwritten
    if kind == "file" and case == "truncated":  # the whole file: moving it aside is the way out
        with pytest.raises(CorruptRecord):
            store.delete(KEY)
        os.rename(store.path, store.path + ".broken")  # type: ignore[attr-defined]
    else:
        assert store.delete(KEY) is True  # the way out the message names
    assert grant.load() is None
    grant.save(TOKENS)
    assert grant.load() == TOKENS


def _raw(store: GrantStore, kind: str) -> object:
    if isinstance(store, MemoryStore):
        return dict(store._records)
    if isinstance(store, FileStore):
        with open(store.path, "rb") as file:
            return file.read()
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            return conn.execute("SELECT * FROM grants").fetchall()
    assert isinstance(store, PostgresStore)
    with store._pool.connection() as conn:
        return conn.execute(f"SELECT record::text FROM {store.table}").fetchall()


def test_a_file_store_that_is_not_json_names_the_file_and_the_grant(private_dir: str) -> None:
    path = os.path.join(private_dir, "grants.json")
    for text, pattern in (
        ("[1, 2]", "not a cfauth grant store"),
        ('{"grants": []}', "no format version"),
        ('{"cfauth_grants": 1, "grants": [{"account": 1}]}', "without a valid account"),
    ):
        with open(path, "w") as file:
            file.write(text)
        os.chmod(path, 0o600)
        with pytest.raises(CorruptRecord, match=pattern) as caught:
            FileStore(path).load(KEY)
        assert path in str(caught.value)
    with open(path, "w") as file:
        file.write('{"cfauth_grants": 7, "grants": []}')
    with pytest.raises(UnknownSchemaVersion, match="format 7"):
        FileStore(path).grants()


def test_an_sqlite_file_that_is_not_a_database_is_corrupt(private_dir: str) -> None:
    path = os.path.join(private_dir, "grants.sqlite3")
    with open(path, "wb") as file:
        file.write(b"this is not a database, just some text that is long enough" * 20)
    os.chmod(path, 0o600)
    with pytest.raises(CorruptRecord, match="not a readable SQLite database") as caught:
        SqliteStore(path)
    assert path in str(caught.value)


# -- permissions ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_files_are_created_private_and_unsafe_modes_are_refused(
    open_kind: OpenKind, private_dir: str, kind: str
) -> None:
    store = open_kind(kind)
    store.grant(KEY).save(TOKENS)
    path = store.path  # type: ignore[attr-defined]
    assert os.stat(path).st_mode & 0o777 == 0o600
    if kind == "file":
        assert os.stat(path + ".lock").st_mode & 0o777 == 0o600
        assert sorted(os.listdir(private_dir)) == ["grants.json", "grants.json.lock"]
    for mode in (0o644, 0o640, 0o602, 0o660):
        os.chmod(path, mode)
        with pytest.raises(InsecureStore, match=f"chmod 600 {path}"):
            open_kind(kind)
    os.chmod(path, 0o600)
    for mode in (0o755, 0o750, 0o777, 0o703):
        os.chmod(private_dir, mode)
        with pytest.raises(InsecureStore, match=f"chmod go-rwx {private_dir}"):
            open_kind(kind)
    os.chmod(private_dir, 0o711)  # others may pass through, not list or write
    assert open_kind(kind).grant(KEY).load() == TOKENS


def test_a_missing_folder_is_created_private(private_dir: str) -> None:
    path = os.path.join(private_dir, "deeper", "cfauth", "grants.sqlite3")
    SqliteStore(path).close()
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600


# -- the lease -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_lease_times_out_with_a_typed_error_and_is_per_grant(
    open_kind: OpenKind, kind: str
) -> None:
    holder = open_kind(kind)
    other = open_kind(kind) if kind != "memory" else holder
    holder.acquire_lease(KEY)
    failures: list[BaseException] = []

    def contend() -> None:
        try:
            other.acquire_lease(KEY, timeout=0.2)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=contend)
    thread.start()
    thread.join()
    assert len(failures) == 1
    error = failures[0]
    assert isinstance(error, LeaseTimeout)
    assert error.retryable
    assert str(KEY) in str(error)
    assert other.describe() in str(error)
    if kind in ("memory", "file", "postgres"):  # SQLite's lease is database-wide
        with other.lease(GrantKey("acme", "client-1", "another"), timeout=0.2):
            pass
    holder.release_lease(KEY)
    with other.lease(KEY, timeout=5):
        assert other.load(KEY) is None


@pytest.mark.parametrize("kind", ["file", "sqlite", "postgres"])
def test_a_lease_holder_that_dies_releases_the_lease(open_kind: OpenKind, kind: str) -> None:
    store = open_kind(kind)
    if isinstance(store, PostgresStore):
        where = f"PostgresStore({store._pool.conninfo!r}, table={store.table!r})"
    else:
        where = f"{type(store).__name__}({store.path!r})"  # type: ignore[attr-defined]
    script = (
        "import sys, time\n"
        "from cfauth.stores import *\n"
        f"store = {where}\n"
        f"store.acquire_lease({KEY!r})\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LeaseTimeout):
            store.acquire_lease(KEY, timeout=0.2)
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    with store.lease(KEY, timeout=10):  # the operating system / server released it
        store.grant(KEY).save(TOKENS)
    assert store.load(KEY) is not None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_save_under_the_lease_is_durable_before_the_lease_ends(
    open_kind: OpenKind, kind: str
) -> None:
    store = open_kind(kind)
    grant = store.grant(KEY)
    grant.acquire_lease()
    grant.save(TOKENS)
    assert open_kind(kind).load(KEY) is not None  # committed, seen by another opening
    with pytest.raises(LeaseTimeout):
        open_kind(kind).acquire_lease(KEY, timeout=0.2)  # and the lease is still held
    grant.release_lease()


# -- schema versions -----------------------------------------------------------------


def test_sqlite_schema_is_created_at_version_1_and_migrated_from_an_empty_one(
    private_dir: str,
) -> None:
    path = os.path.join(private_dir, "grants.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.close()
    os.chmod(path, 0o600)
    store = SqliteStore(path)
    assert store.schema_version() == 1
    store.save(record())
    assert SqliteStore(path).load(KEY) == record()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.close()
    with pytest.raises(UnknownSchemaVersion, match=r"schema version 2.*upgrade cfauth"):
        SqliteStore(path)


def test_postgres_schema_version_is_checked(postgres_url: str, pg_table: str) -> None:
    store = PostgresStore(postgres_url, table=pg_table)
    assert store.schema_version() == 1
    with store._pool.connection() as conn:
        conn.execute(f"INSERT INTO {pg_table}_schema_version VALUES (5)")
    store.close()
    with pytest.raises(UnknownSchemaVersion, match="schema version 5"):
        PostgresStore(postgres_url, table=pg_table)


def test_postgres_errors_never_show_the_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:hunter2secret@").rpartition("/")[0]
    url += "/nosuchdb"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url, lease_timeout=0.5)
    assert "hunter2secret" not in str(caught.value)
    assert "PostgresStore('postgresql://postgres@127.0.0.1" in str(caught.value)
    with pytest.raises(StoreError, match="letters, digits and underscores"):
        PostgresStore(postgres_url, table="grants; DROP TABLE x")


# -- open_store ------------------------------------------------------------------------


def test_open_store_chooses_by_url_then_environment_then_default(
    private_dir: str, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    monkeypatch.delenv("CFAUTH_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", os.path.join(private_dir, "data"))
    expected = os.path.join(private_dir, "data", "cfauth", "grants.sqlite3")
    assert default_store_path() == expected
    store = open_store()
    assert isinstance(store, SqliteStore)
    assert store.path == expected
    store.close()
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_store_path() == os.path.expanduser("~/.local/share/cfauth/grants.sqlite3")
    monkeypatch.setenv("CFAUTH_STORE", os.path.join(private_dir, "g.json"))
    assert isinstance(open_store(), FileStore)
    assert isinstance(open_store(os.path.join(private_dir, "g.db")), SqliteStore)
    pg = open_store(postgres_url, lease_timeout=5)
    assert isinstance(pg, PostgresStore)
    pg.close()
    with pytest.raises(StoreError, match="use a postgresql:// URL"):
        open_store("mysql://user:pw@host/db")
