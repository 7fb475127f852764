"""docs/make_state_diagram.py draws the machine's own tables; the committed files are current."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

from cfauth_core import EVENTS_ALLOWED, TRANSITIONS, Account, ApiKey, Machine, State, Trigger

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCRIPT = DOCS / "make_state_diagram.py"

_DOT_NODE = re.compile(r'^    (?P<name>[A-Z_]+) \[label="(?P<label>[^"]*)"\];$', re.MULTILINE)
_DOT_EDGE = re.compile(
    r'^    (?P<source>[A-Z_]+) -> (?P<target>[A-Z_]+) \[label="(?P<label>[^"]*)"\];$', re.MULTILINE
)
_DOT_ENTRY = re.compile(r"^    start -> (?P<target>[A-Z_]+);$", re.MULTILINE)
_MERMAID_NODE = re.compile(r"^    (?P<name>[A-Z_]+) : (?P<label>.*)$", re.MULTILINE)
_MERMAID_EDGE = re.compile(
    r"^    (?P<source>[A-Z_]+) --> (?P<target>[A-Z_]+) : (?P<label>.*)$", re.MULTILINE
)
_MERMAID_ENTRY = re.compile(r"^    \[\*\] --> (?P<target>[A-Z_]+)$", re.MULTILINE)

Edge = tuple[str, str, str]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_state_diagram", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


script = _load_script()
render_dot = cast("Callable[[], str]", script.render_dot)
render_mermaid = cast("Callable[[], str]", script.render_mermaid)
main = cast("Callable[[list[str]], int]", script.main)
DOT_NAME = cast("str", script.DOT_NAME)
MERMAID_NAME = cast("str", script.MERMAID_NAME)


def _expected_edges() -> list[Edge]:
    return [
        (source.name, target.name, trigger.value)
        for (source, trigger), target in TRANSITIONS.items()
    ]


def _edges(pattern: re.Pattern[str], text: str) -> list[Edge]:
    return [(m["source"], m["target"], m["label"]) for m in pattern.finditer(text)]


# -- DOT --------------------------------------------------------------------------------------


def test_dot_has_one_node_per_state() -> None:
    nodes = {m["name"]: m["label"] for m in _DOT_NODE.finditer(render_dot())}
    assert set(nodes) == {state.name for state in State}
    for state in State:
        assert nodes[state.name].split("\\n")[0] == state.value


def test_dot_has_one_labelled_edge_per_transition() -> None:
    edges = _edges(_DOT_EDGE, render_dot())
    assert sorted(edges) == sorted(_expected_edges())
    assert len(edges) == len(TRANSITIONS)


def test_dot_nodes_list_the_events_only_some_states_accept() -> None:
    nodes = {m["name"]: m["label"] for m in _DOT_NODE.finditer(render_dot())}
    # LEASING alone answers AcquireLease with LeaseFailed; EXCHANGING accepts only the common ones.
    assert "LeaseFailed" in nodes[State.LEASING.name]
    assert "LeaseFailed" not in nodes[State.READY.name]
    assert "CallbackReceived" in nodes[State.AUTHORIZING.name]
    assert nodes[State.EXCHANGING.name] == State.EXCHANGING.value
    for state in State:
        for event in EVENTS_ALLOWED[state]:
            in_all = all(event in allowed for allowed in EVENTS_ALLOWED.values())
            assert (event.__name__ in nodes[state.name]) is not in_all


def test_dot_entry_edges_are_where_machines_start() -> None:
    entries = {m["target"] for m in _DOT_ENTRY.finditer(render_dot())}
    token_pair = Machine(Account.parse("acme"), ApiKey("key", "secret"))
    assert token_pair.state.name in entries
    assert entries == {State.READY.name, State.UNAUTHORIZED.name}


# -- Mermaid ----------------------------------------------------------------------------------


def test_mermaid_has_every_state_and_transition() -> None:
    text = render_mermaid()
    assert text.splitlines()[2] == "stateDiagram-v2"
    described = {m["name"] for m in _MERMAID_NODE.finditer(text)}
    assert described == {state.name for state in State}
    edges = _edges(_MERMAID_EDGE, text)
    assert sorted(edges) == sorted(_expected_edges())
    entries = {m["target"] for m in _MERMAID_ENTRY.finditer(text)}
    assert entries == {State.READY.name, State.UNAUTHORIZED.name}


def test_every_trigger_used_by_a_transition_is_drawn() -> None:
    used = {trigger for (_, trigger) in TRANSITIONS}
    labels = {label for _, _, label in _edges(_DOT_EDGE, render_dot())}
    assert labels == {trigger.value for trigger in used}
    assert used == set(Trigger)


# -- the committed files ----------------------------------------------------------------------


def test_check_passes_against_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""
    assert (DOCS / DOT_NAME).read_text(encoding="utf-8") == render_dot()
    assert (DOCS / MERMAID_NAME).read_text(encoding="utf-8") == render_mermaid()


def test_check_fails_on_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / DOT_NAME).write_text(render_dot().replace("refresh due", "refresh"), "utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert DOT_NAME in err
    assert MERMAID_NAME in err  # missing
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / DOT_NAME).read_text(encoding="utf-8") == render_dot()
