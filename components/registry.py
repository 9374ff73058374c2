"""One small registry type for every family of named things (models, presets, importers, objectives, ...)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from components.errors import ConfigError, SkinDualGenError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one family; `create(name)` returns the entry or raises an error that lists the names.

        CLASSIFIERS = Registry[ClassifierSpec]("classifier", hint="set classify.architectures")
        CLASSIFIERS.register("resnet34", spec)      # or CLASSIFIERS.add(spec) for entries with a .name
        CLASSIFIERS.create("resnet34")
    """

    def __init__(self, kind: str, hint: str = "", error: type[SkinDualGenError] = ConfigError):
        self.kind = kind
        self.hint = hint        # how to fix an unknown name, appended to the error
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under a new `name`; returns the entry (usable as a decorator through `decorator`)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def add(self, entry: T) -> T:
        """Add an entry under its own `.name`."""
        return self.register(getattr(entry, "name"), entry)

    def decorator(self, name: str) -> Callable[[T], T]:
        """`@REGISTRY.decorator("name")` registers the decorated object under `name`."""
        return lambda entry: self.register(name, entry)

    def create(self, name: str) -> T:
        """The entry called `name`; an unknown name raises `error` listing the known ones."""
        if name not in self._entries:
            hint = f" ({self.hint})" if self.hint else ""
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}{hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
