"""Routes → sinks: which sinks an event of a given source and type goes to."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from receiver.settings import Route


class Router:
    """Answers `sinks_for(source, type)` from the config's `[[routes]]`, in config order."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(routes)
        self.sinks_for = lru_cache(maxsize=1024)(self._sinks_for)

    def _sinks_for(self, source: str, type_: str) -> tuple[str, ...]:
        chosen: dict[str, None] = {}  # ordered set: a sink named by two routes gets one row
        for route in self._routes:
            if route.matches(source, type_):
                chosen.update(dict.fromkeys(route.sinks))
        return tuple(chosen)
