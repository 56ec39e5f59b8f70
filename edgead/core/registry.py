"""One table per extension point: methods, backends, sources, sinks, score rules, metrics.

An entry is a name and where its implementation lives (``"module:attribute"``), so a table lists
what exists without importing it: the runtime's table names TensorRT without loading it, and the
methods' table names trainers without loading PyTorch. Entries come from the built-in table,
``register()`` at run time, or the package entry-point group ``edgead.<kind>`` of an installed
plugin. Adding one is a file plus one entry.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def load_target(where: str) -> object:
    """The object named by ``"package.module:attribute"``."""
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Name -> implementation, loaded on first use."""

    def __init__(self, kind: str, builtin: dict[str, str], item_type: type | None = None):
        """``item_type``: what an entry must be (an instance whose ``name`` is its key); None: a function."""
        self.kind = kind
        self.group = f"edgead.{kind.replace(' ', '_')}s"
        self._builtin = dict(builtin)
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._plugins: dict[str, str] | None = None
        self._type = item_type

    def _valid(self, name: str, item: object) -> bool:
        if self._type is None:
            return callable(item)
        return isinstance(item, self._type) and getattr(item, "name", name) == name

    def register(self, name: str, item: T) -> T:
        """Add an entry at run time (a name that is taken is an error)."""
        if name in self.names() and self._registered.get(name) is not item:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered")
        self._registered[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)

    def _entry_points(self) -> dict[str, str]:
        """Installed plugins' entries, read once (scanning the installed packages is the slow part)."""
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep.value for ep in entry_points(group=self.group)}
        return self._plugins

    def names(self) -> list[str]:
        return sorted({*self._builtin, *self._registered, *self._entry_points()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._registered or name in self._builtin or name in self._entry_points()
        )

    def get(self, name: str) -> T:
        if name in self._registered:
            return self._registered[name]
        if name not in self._loaded:
            where = self._builtin.get(name) or self._entry_points().get(name)
            if where is None:
                raise ConfigError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}")
            item = load_target(where)
            if not self._valid(name, item):
                raise ConfigError(f"{where} is not a {self.kind} named {name!r}")
            self._loaded[name] = item  # type: ignore[assignment]
        return self._loaded[name]

    def all(self) -> list[T]:
        return [self.get(n) for n in self.names()]
