"""Sphinx configuration for the cfauth documentation.

Build with warnings as errors, output outside the source tree::

    sphinx-build -W -b html docs /tmp/cfauth-docs

Needs ``pip install -e '.[docs]'`` (Sphinx and furo).  No network access: intersphinx is
off, so the few standard-library names that appear in signatures are listed in
``nitpick_ignore`` instead of being linked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # import cfauth_core from this checkout even when not installed

import cfauth_core  # noqa: E402  (after the path set-up above)

project = "cfauth"
author = "the cfauth authors"
copyright = "the cfauth authors"
release = cfauth_core.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

html_theme = "furo"
html_title = f"cfauth {release}"
templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# Generated and example files are included by literalinclude, never read as pages.
source_suffix = {".rst": "restructuredtext"}

# Every cross-reference must resolve.
nitpicky = True
nitpick_ignore = [
    # Standard-library types in signatures; intersphinx is off (no network at build time).
    ("py:class", "collections.abc.Iterable"),
    ("py:class", "collections.abc.Mapping"),
    ("py:class", "collections.abc.Sequence"),
    ("py:class", "enum.Enum"),
]
nitpick_ignore_regex = [
    # More standard-library names in the adapters' signatures.
    ("py:.*", r"(collections\.abc|ssl|os)\.\w+|secrets"),
    # httpx's own classes in cfauth.httpx's signatures (httpx documents them).
    ("py:.*", r"httpx\.\w+"),
    # Adapter classes the guide names but the reference does not document one by one
    # (transports, drivers, the store implementations; see docs/stores.rst).
    (
        "py:.*",
        r"(cfauth\.(sync|trio|stores|stdlib|urllib3)\.)?"
        r"(Driver|H11Transport|HttpClientTransport|Urllib3Transport|TokenStore|GrantRecord"
        r"|Grant|ClosingTransport|SqliteStore|FileStore|PostgresStore|default_store_path"
        r"|close|aclose|_update|_release|_acquire)",
    ),
]

default_role = "py:obj"
primary_domain = "py"
add_module_names = False
python_use_unqualified_type_names = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# Spelled out in type hints, this alias would fill a line.  ``Params`` is not listed:
# it appears as ``Params | None``, which Sphinx < 9.1 cannot evaluate with an alias
# (sphinx-doc/sphinx#14004), so it is shown expanded.
autodoc_type_aliases = {"Headers": "Headers"}

# cfauth_core's names are defined in private modules (cfauth_core._events, ...) and
# re-exported from the package.  Autodoc's annotations point at the private homes;
# resolve them to the public, documented names instead.
PUBLIC = frozenset(cfauth_core.__all__)


def _resolve_private(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("cfauth_core._"):
        return None
    name = target.rsplit(".", 1)[1]
    if name not in PUBLIC:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env,
        node.get("refdoc", ""),
        app.builder,
        node.get("reftype", "obj"),
        f"cfauth_core.{name}",
        node,
        contnode,
    )


def _drop_private_bases(app: Any, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show public bases only (``Action``, ``Event``), not the private ``Record``."""
    bases[:] = [
        base
        for base in bases
        if not base.__module__.startswith("cfauth_core._") or base.__name__ in PUBLIC
    ]


def _drop_type_docstrings(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """A constant has no docstring of its own: do not show its type's (``int``, ``dict``)."""
    if what == "data" and obj.__doc__ == type(obj).__doc__:
        del lines[:]


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_private)
    app.connect("autodoc-process-bases", _drop_private_bases)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
