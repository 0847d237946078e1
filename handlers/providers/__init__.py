"""The provider registry: every provider module, listed by hand (no import-time magic)."""

from __future__ import annotations

from handlers.providers import generic, genly, renderful, rendergrid, rendernet, revid
from handlers.providers.base import Provider

PROVIDERS: dict[str, Provider] = {
    "rendergrid": rendergrid.PROVIDER,
    "renderful": renderful.PROVIDER,
    "rendernet": rendernet.PROVIDER,  # polling only
    "revid": revid.PROVIDER,  # polling only
    "genly": genly.PROVIDER,  # polling only
    "generic": generic.PROVIDER,
}


def get(name: str) -> Provider:
    """The provider called `name`; KeyError naming the known ones for any other name."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise KeyError(f"unknown provider {name!r} (known: {known})") from None
