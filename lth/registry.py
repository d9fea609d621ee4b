"""Named registries: every axis an experiment varies along is one :class:`Registry`.

The axes are tasks, models, scores, allocations, sparsity schedules, branches, optimizers, LR
schedules and weight sources. Each is a ``Registry`` of entries under short names (``"snip"``,
``"global"``, ``"cubic"``), and each registry's module states in its docstring the *contract* every
entry fulfils (what it is called with, what it returns, which invariants it keeps), so a new entry is
one decorated function or class that honours it::

    SCORES = Registry("score")

    @SCORES.register("magnitude")
    def magnitude(inp): ...

    SCORES.get("magnitude")   # the entry
    SCORES.get("nope")        # ConfigError: unknown score 'nope'; choose from: magnitude

Lookups by a name that is not registered raise :class:`lth.errors.ConfigError` with one line listing
the choices, so a bad config value fails before any work starts. Registering a name twice is a bug in
the code (not the user's input) and raises ``ValueError``.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping ``name -> entry`` for one axis (``axis`` names it in error messages)."""

    def __init__(self, axis: str):
        self.axis = axis
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` stores the decorated object under ``name``."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.axis} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (a plugin or a test that registered it cleans up)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry named ``name``; a one-line ConfigError listing the choices when there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.axis} {name!r}; choose from: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.axis!r}, {self.names()})"
