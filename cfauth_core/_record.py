"""The base of the core's immutable value types.

Events, actions, accounts, credentials and token sets are small frozen,
slotted records: compared and hashed by their fields, shown by ``repr``
(secret fields as ``<hidden>``), matched by position in ``match`` statements,
copyable and picklable, and immutable after construction.

They are written out by hand rather than generated with ``@dataclass``:
``dataclasses`` builds each class by compiling source text at import time,
about half a millisecond a class, which for the core's thirty-odd classes
would be the whole import budget.

Construction is on the hot path (every call builds at least four records), so
it avoids the usual price of immutability.  A frozen class must refuse
``setattr``, which makes every assignment in its constructor a slow
``object.__setattr__`` call.  Instead each record class has a private *twin*
with the same slots and no such guard: the constructor fills a twin with
plain attribute stores, then switches the instance's class to the frozen
one (legal because the layouts are identical).  That halves the cost of
building a record.

Records are final: subclassing one raises :exc:`TypeError` (as h11 says of
its events, "don't subclass these").  Wrap a record in your own class instead.
"""

from __future__ import annotations

# ``typing`` costs about 3 ms to import; the core needs it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Record"]

_new = object.__new__


def _rebuild(cls: type[Record], state: tuple[Any, ...]) -> Record:
    record: Record = _new(cls._fast)
    for name, value in zip(cls._slots, state, strict=True):
        setattr(record, name, value)
    record.__class__ = cls
    return record


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable: build a new one instead")


def _frozen_delattr(self: object, name: str) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable: build a new one instead")


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
    #: The unguarded twin the constructor fills (see the module docstring).
    _fast: ClassVar[type[Any]]
    _is_twin: ClassVar[bool] = False

    def __init_subclass__(cls) -> None:
        if cls.__dict__.get("_is_twin"):
            return
        for base in cls.__bases__:
            if base.__dict__.get("__slots__") and issubclass(base, Record):
                # A leaf record is final: its twin has its exact layout, its
                # equality compares exact types, and the core matches on them.
                raise TypeError(
                    f"{base.__name__} cannot be subclassed: cfauth's records are final "
                    f"(the core compares and dispatches on their exact type); wrap a "
                    f"{base.__name__} in your own class instead"
                )
        slots: list[str] = []
        for klass in reversed(cls.__mro__):
            slots.extend(klass.__dict__.get("__slots__", ()))
        cls._slots = tuple(slots)
        cls._fields = tuple(name for name in slots if not name.startswith("_"))
        setattr(cls, "__match_args__", cls._fields)  # noqa: B010 - mypy: declared ClassVar
        own = cls.__dict__.get("__slots__", ())
        if own:
            # A leaf record: give it a twin, then freeze it.  (Bases such as
            # Event and Action have no slots of their own and stay unguarded,
            # so the twins, which derive from them, are unguarded too.)
            namespace = {"__slots__": own, "_is_twin": True, "__module__": cls.__module__}
            cls._fast = type(f"_{cls.__name__}Twin", cls.__bases__, namespace)
            setattr(cls, "__setattr__", _frozen_setattr)  # noqa: B010
            setattr(cls, "__delattr__", _frozen_delattr)  # noqa: B010
        else:
            cls._fast = cls  # nothing to assign: no slots of its own

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
