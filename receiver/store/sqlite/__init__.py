"""The SQLite store: one file, WAL, a writer connection and a reader connection.

Durability: `synchronous = FULL` in WAL mode fsyncs the log at every commit, so an event whose
200 went out survives a killed process and a lost machine alike. Commits are shared by batches
(see receiver.ingest), which is what keeps that affordable.

One module per role of receiver.store.model, each a mixin on `SqliteBase` (base.py: the
connections, `_write` and `_read`) with the role's statements beside it: events.py (EventLog),
deliveries.py (DeliveryQueue), jobs.py (JobTable), replay.py (ReplayLog), retention.py
(Retention), coordination.py (Coordination). What both backends do alike comes from
receiver.store.base; schema.py holds the migrations, connection.py the thread and transaction
plumbing.
"""

from __future__ import annotations

from receiver.store.model import SchemaTooNew
from receiver.store.sqlite.coordination import SqliteCoordination
from receiver.store.sqlite.deliveries import SqliteDeliveries
from receiver.store.sqlite.events import SqliteEvents
from receiver.store.sqlite.jobs import SqliteJobs
from receiver.store.sqlite.replay import SqliteReplay
from receiver.store.sqlite.retention import SqliteRetention
from receiver.store.sqlite.schema import SCHEMA_VERSION, check_file

__all__ = ["SCHEMA_VERSION", "SchemaTooNew", "SqliteStore", "check_file"]


class SqliteStore(
    SqliteEvents,
    SqliteDeliveries,
    SqliteJobs,
    SqliteReplay,
    SqliteRetention,
    SqliteCoordination,
):
    """Store on one SQLite file: every role, on one set of connections (SqliteBase)."""
