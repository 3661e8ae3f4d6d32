"""Name → builder registries, one per kind of thing (models, optimisers, schedules, datasets).

Modelled on timm's `_registry.py`: a decorator registers, one lookup builds, and an unknown name
is an error that lists the close matches. Each registry is an instance owned by its module, so
there is no global mutable state shared across kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from yingshe.errors import YingsheError, close_matches

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to entries with helpful errors for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise YingsheError(f"unknown {self.kind} {name!r}", close_matches(name, self._entries)) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
