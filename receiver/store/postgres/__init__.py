"""The PostgreSQL store: the same Store as SQLite, for several processes or hosts at once.

psycopg 3 (async) with a connection pool. Prepared statements are off (`prepare_threshold=None`)
so the store works behind PgBouncer in transaction mode. The schema is versioned like SQLite's
and migrated at start-up under an advisory lock, so replicas starting together migrate once.
No transaction is held open across anything but the database's own round trips.

One module per role of receiver.store.model, each a mixin on `PostgresBase` (base.py: the
pool, transactions, error translation) with the role's statements beside it: events.py,
deliveries.py, jobs.py, replay.py, retention.py, coordination.py; schema.py holds the
migrations. What both backends do alike comes from receiver.store.base.
"""

from __future__ import annotations

from receiver.store.postgres.base import storable_row, storable_text
from receiver.store.postgres.base import translated as _translated
from receiver.store.postgres.coordination import PostgresCoordination
from receiver.store.postgres.deliveries import PostgresDeliveries
from receiver.store.postgres.events import PostgresEvents
from receiver.store.postgres.jobs import PostgresJobs
from receiver.store.postgres.replay import PostgresReplay
from receiver.store.postgres.retention import PostgresRetention
from receiver.store.postgres.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "PostgresStore", "_translated", "storable_row", "storable_text"]


class PostgresStore(
    PostgresEvents,
    PostgresDeliveries,
    PostgresJobs,
    PostgresReplay,
    PostgresRetention,
    PostgresCoordination,
):
    """Store on a PostgreSQL database, shared safely by any number of processes.

    `owner` names this process in the claims it writes (a fresh uuid4 hex by default);
    `lease_s` is how long a claim holds when its owner neither finishes nor releases it
    (longer than any send takes). `pool_size` connections at most are opened.
    """
