"""The core stays pure and its public surface stays deliberate.

(a) No I/O, clocks, randomness, concurrency or logging in ``cfauth_core``: the
    checks of ``/work/shared/tools/core_purity.py``, repeated here with ``ast``,
    and the tool itself when it is present.
(b) ``import cfauth_core`` pulls in nothing third-party but typing_extensions.
(c) ``cfauth_core.__all__`` is exactly the public API (after trio's test_exports).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import cfauth_core

CORE = Path(cfauth_core.__file__).resolve().parent
PROJECT = CORE.parent
SHARED_TOOL = Path("/work/shared/tools/core_purity.py")

# The same lists as the shared tool.
FORBIDDEN_MODULES = {
    "asyncio", "concurrent", "ctypes", "fcntl", "h11", "http", "httpx", "io", "logging",
    "multiprocessing", "os", "pathlib", "random", "requests", "secrets", "select",
    "selectors", "shutil", "signal", "socket", "sqlite3", "ssl", "subprocess", "sys",
    "tempfile", "threading", "time", "trio", "urllib3", "uuid", "warnings",
}  # fmt: skip
ALLOWED_SUBMODULES = {"urllib.parse"}
FORBIDDEN_SUBMODULES = {"urllib.request", "urllib.error"}
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
FORBIDDEN_BUILTINS = {"open", "print", "input", "breakpoint"}


def problems_in(source: str, filename: str) -> list[str]:
    problems = []
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if name in ALLOWED_SUBMODULES:
                continue
            if (
                top in FORBIDDEN_MODULES
                or name in FORBIDDEN_SUBMODULES
                or (top == "urllib" and name != "urllib")
            ):
                problems.append(f"{filename}:{line}: imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
                problems.append(f"{filename}:{line}: calls {func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in FORBIDDEN_CALLS
            ):
                problems.append(f"{filename}:{line}: calls {func.value.id}.{func.attr}()")
    return problems


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_the_core_has_files() -> None:
    assert CORE.name == "cfauth_core"
    assert {"__init__.py", "_machine.py", "_state.py"} <= {p.name for p in CORE_FILES}


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_file_is_pure(path: Path) -> None:
    assert problems_in(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import os", "imports os"),
        ("import os.path", "imports os.path"),
        ("from time import time", "imports time"),
        ("import urllib.request", "imports urllib.request"),
        ("from urllib.error import URLError", "imports urllib.error"),
        ("import urllib.robotparser", "imports urllib.robotparser"),
        ("import logging.handlers", "imports logging.handlers"),
        ("from concurrent.futures import Future", "imports concurrent.futures"),
        ("x = datetime.now()", "calls datetime.now()"),
        ("x = date.today()", "calls date.today()"),
        ("open('f')", "calls open()"),
        ("print(1)", "calls print()"),
    ],
)
def test_the_checker_finds_what_it_should(source: str, found: str) -> None:
    """The purity check is not vacuous."""
    assert problems_in(source, "x.py") == [f"x.py:1: {found}"]


@pytest.mark.parametrize(
    "source",
    [
        "from urllib.parse import urlsplit",
        "import urllib.parse",
        "import json, re, math, hmac, hashlib, base64",
        "from . import _state",
        "from .time import x",  # a relative import is the package's own module
        "x = obj.now()",
    ],
)
def test_the_checker_allows_what_it_should(source: str) -> None:
    assert problems_in(source, "x.py") == []


@pytest.mark.skipif(not SHARED_TOOL.exists(), reason="the shared purity tool is not here")
def test_shared_purity_tool_passes() -> None:
    result = subprocess.run(  # noqa: S603  (our own interpreter, our own tool)
        [sys.executable, str(SHARED_TOOL), str(PROJECT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout


# -- (b) what importing the core drags in -------------------------------------------------

_PROBE = """
import json, sys
before = set(sys.modules)
import cfauth_core
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_import_pulls_in_no_third_party_module() -> None:
    result = subprocess.run(  # noqa: S603  (our own interpreter)
        [sys.executable, "-I", "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=str(PROJECT),
        env=None,
    )
    loaded: list[str] = json.loads(result.stdout)
    tops = {name.split(".")[0] for name in loaded}
    assert "cfauth_core" in tops  # the probe really imported it
    allowed = set(sys.stdlib_module_names) | {"cfauth_core", "typing_extensions"}
    assert sorted(tops - allowed) == []


# -- (c) the exports -------------------------------------------------------------------------

#: Public-looking names in the submodules that are deliberately internal.
INTERNAL = {
    "basic_authorization",
    "HEADER_VALUE",
    "detach",
    "encode_params",
    "is_unicode",
    "hide",
    "secret_forms",
    "is_oauth_path",
    "load_json",
    "next_state",
    "parse_oauth_error",
    "parse_token_response",
    "refuse_redirect",
    "scrub",
    "shown",
    "Record",
    "MAX_EXPIRES_IN",
    "MAX_LOCATION_LENGTH",
    "MAX_TOKEN_BODY",
    "METHODS",
    "RECORD_VERSION",
    "RESERVED_HEADERS",
    "TYPE_CHECKING",
}


def _submodules() -> list[str]:
    return sorted(
        f"cfauth_core.{info.name}"
        for info in pkgutil.iter_modules([str(CORE)])
        if info.name.startswith("_")
    )


def test_all_has_no_duplicates_and_every_name_exists() -> None:
    names = cfauth_core.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(cfauth_core, name), name


def test_every_public_definition_is_exported() -> None:
    """Each public class or function defined in a submodule (and each name in a
    submodule's ``__all__``) is in ``cfauth_core.__all__`` or listed as internal."""
    exported = set(cfauth_core.__all__)
    missing = []
    seen = set()
    for module_name in _submodules():
        module = importlib.import_module(module_name)
        candidates = set(getattr(module, "__all__", ()))
        for name, obj in vars(module).items():
            if name.startswith("_"):
                continue
            defined_here = getattr(obj, "__module__", None) == module_name
            # A definition, not a local alias of one (``S, T = State, Trigger``).
            named_so = getattr(obj, "__name__", None) == name
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and defined_here and named_so:
                candidates.add(name)
        for name in candidates:
            seen.add(name)
            if name not in exported and name not in INTERNAL:
                missing.append(f"{module_name}.{name}")
            if name in exported:
                # The package exports the very object the submodule defines.
                assert getattr(cfauth_core, name) is getattr(module, name), name
    assert sorted(missing) == []
    # Everything exported comes from a submodule (or is the version).
    assert exported - seen <= {"__version__"}


def test_exported_classes_claim_the_package() -> None:
    """Public classes are defined in cfauth_core's own modules, not re-exported
    from elsewhere (a stray ``from x import Y`` would otherwise become API)."""
    for name in cfauth_core.__all__:
        obj = getattr(cfauth_core, name)
        if isinstance(obj, types.GenericAlias | types.UnionType):
            continue  # type aliases (Python 3.10 calls them classes)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("cfauth_core."), (name, obj.__module__)


def test_version_is_a_string() -> None:
    assert isinstance(cfauth_core.__version__, str)
    assert cfauth_core.__version__.count(".") >= 1


def test_no_assert_statements_in_the_core() -> None:
    """``python -O`` strips ``assert``: a core that relied on one would behave
    differently there, so the core states its invariants in code or types."""
    found = [
        f"{path.name}:{node.lineno}"
        for path in sorted(CORE.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []
