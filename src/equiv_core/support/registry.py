"""A small name -> object registry that refuses duplicates and answers unknown names with suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from equiv_core.support.errors import UserInputError

T = TypeVar("T")


def check_name(kind: str, name: str, valid: tuple[str, ...]) -> str:
    """``name`` if it is one of ``valid``; else :class:`UserInputError` naming the valid ones (and the closest)."""
    if name not in valid:
        close = difflib.get_close_matches(name, [str(option) for option in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserInputError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")
    return name


class Registry(Generic[T]):
    """Stable ids to entries, in registration order.

    ``declared``: the ids this registry may hold, listed where they can be read without importing the entries
    (:mod:`equiv_core.config.catalog`, so argument checks need no torch); any other id is refused at registration.
    """

    def __init__(self, kind: str, declared: tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.declared = declared
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.declared is not None and name not in self.declared:
            raise ValueError(f"{self.kind} {name!r} is not declared in equiv_core.config.catalog")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        return self._entries[check_name(self.kind, name, self.names())]

    @contextmanager
    def override(self, name: str, entry: T) -> Iterator[T]:
        """Replace the registered entry ``name`` until the block ends, then restore it.

        For tests that swap one implementation for a deliberately broken one (an arm that ignores its edit);
        raises :class:`UserInputError` for a name that is not registered, like :meth:`get`.
        """
        original = self.get(name)
        self._entries[name] = entry
        try:
            yield entry
        finally:
            self._entries[name] = original

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
