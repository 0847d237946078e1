"""What the HTTP surfaces (admin API, web UI) use of the running service.

A Protocol, so those modules depend on the parts they use, not on the assembly that builds
them (receiver.app), which imports them in turn.
"""

from __future__ import annotations

from typing import Protocol

from receiver.delivery import Delivery
from receiver.poller import Poller
from receiver.replay import Replayer
from receiver.settings import Settings
from receiver.store import Store


class Service(Protocol):
    """The parts of one running hookyard that its admin API and UI act on."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def delivery(self) -> Delivery:
        """Sink runners: their breaker state, and `wake(sinks)` after adding rows."""

    @property
    def poller(self) -> Poller:
        """`watch(source, job_id, …)` registers a job (in the store)."""

    @property
    def replayer(self) -> Replayer: ...
