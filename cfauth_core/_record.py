"""The base of the core's immutable value types.

Events, actions, accounts, credentials and token sets are small frozen,
slotted records: compared and hashed by their fields, shown by ``repr``
(secret fields as ``<hidden>``), matched by position in ``match`` statements,
copyable and picklable, and immutable after construction.

They are written out by hand rather than generated with ``@dataclass``:
``dataclasses`` builds each class by compiling source text at import time,
about half a millisecond a class, which for the core's thirty-odd classes
would be the whole import budget (see the README's figures).
"""

from __future__ import annotations

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Record"]

_set = object.__setattr__


def _rebuild(cls: type[Record], state: tuple[Any, ...]) -> Record:
    record = object.__new__(cls)
    for name, value in zip(cls._slots, state, strict=True):
        _set(record, name, value)
    return record


class Record:
    """A frozen, slotted value: equal when its type and fields are equal."""

    __slots__ = ()

    #: The public fields, in order: the slots not starting with ``_``.
    _fields: ClassVar[tuple[str, ...]] = ()
    #: Every slot, private ones included (what a copy must carry).
    _slots: ClassVar[tuple[str, ...]] = ()
    #: Fields shown as ``<hidden>`` by ``repr``.
    _hidden: ClassVar[frozenset[str]] = frozenset()
    #: The fields, for positional patterns in ``match`` statements.
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        slots: list[str] = []
        for klass in reversed(cls.__mro__):
            slots.extend(klass.__dict__.get("__slots__", ()))
        cls._slots = tuple(slots)
        cls._fields = tuple(name for name in slots if not name.startswith("_"))
        setattr(cls, "__match_args__", cls._fields)  # noqa: B010 - mypy: declared ClassVar

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: build a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: build a new one instead")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        hidden = self._hidden
        shown = ", ".join(
            f"{name}=<hidden>" if name in hidden else f"{name}={getattr(self, name)!r}"
            for name in self._fields
        )
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(getattr(self, name) for name in self._slots)))
