"""A minimal component registry: one decorator to register, one lookup to build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Registry:
    """Maps a name to a component class (a neck, a head, a loss, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = cls
            return cls

        return add

    def get(self, name: str) -> type:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)


NECKS = Registry("neck")
HEADS = Registry("head")
REFINEMENTS = Registry("refinement")
POSTPROCESS = Registry("postprocess")
LOSSES = Registry("loss")
