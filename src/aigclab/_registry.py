"""One generic registry for detectors, backbones, backends, scorers, generators and transforms.

Example:
    >>> from aigclab._registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float = 1.0) -> float:
    ...     return side * side
    >>> shapes.create("square", side=3.0)
    9.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aigclab.errors import UnknownNameError

T = TypeVar("T")

_ALL: dict[str, Registry[Any]] = {}


class Registry(Generic[T]):
    """Maps names to factories. `create(name, **overrides)` builds an entry."""

    def __init__(self, kind: str):
        if kind in _ALL:
            raise ValueError(f"a registry of kind {kind!r} already exists")
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        _ALL[kind] = self

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory under `name` (default: the function name, `_` -> `-`)."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__.replace("_", "-")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **overrides: Any) -> T:
        return self.get(name)(**overrides)

    def list(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def all_registries() -> dict[str, Registry[Any]]:
    """Every registry created so far, by kind (import the parts first to fill them)."""
    return dict(_ALL)
