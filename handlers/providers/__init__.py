"""The provider registry: every provider module, listed by hand (no import-time magic)."""

from __future__ import annotations

from handlers.providers import generic, renderful, rendergrid
from handlers.providers.base import Provider

# Polling-only providers (rendernet, revid, genly) join this table when their modules land.
PROVIDERS: dict[str, Provider] = {
    "rendergrid": rendergrid.PROVIDER,
    "renderful": renderful.PROVIDER,
    "generic": generic.PROVIDER,
}


def get(name: str) -> Provider:
    """The provider called `name`; KeyError naming the known ones for any other name."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise KeyError(f"unknown provider {name!r} (known: {known})") from None
