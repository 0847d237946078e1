"""SQL both backends build the same way, but for their placeholders: filters and replay scopes.

Only placeholders carry values; column and table names are ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from receiver.store.model import EventFilter, ReplayScope


def _same(value: str) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend writes a parameter (`?` or `%s`), a list parameter, and a text value."""

    mark: str
    array: bool = False  # `= ANY(%s)` with one list parameter, instead of `IN (?, ?, …)`
    text: Callable[[str], Any] = _same

    def equals(self, prefix: str, **columns: Any) -> tuple[list[str], list[Any]]:
        """`column = ?` for each column given a value (None: no condition)."""
        clauses, params = ["1 = 1"], []
        for column, value in columns.items():
            if value is not None:
                clauses.append(f"{prefix}{column} = {self.mark}")
                params.append(self.text(value) if isinstance(value, str) else value)
        return clauses, params

    def within(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` is one of `values` (none: false)."""
        if self.array:
            return f"{column} = ANY({self.mark})", [list(values)]
        marks = ",".join([self.mark] * len(values)) or "NULL"
        return f"{column} IN ({marks})", list(values)

    def event_where(self, where: EventFilter, table: str) -> tuple[list[str], list[Any]]:
        """Conditions on `table` (events or its alias) for `where`."""
        clauses, params = self.equals(
            f"{table}.", source=where.source, type=where.type, job_id=where.job_id
        )
        if where.since is not None:
            clauses.append(f"{table}.received_at >= {self.mark}")
            params.append(where.since)
        if where.until is not None:
            clauses.append(f"{table}.received_at < {self.mark}")
            params.append(where.until)
        return clauses, params

    def latest_where(self, scope: ReplayScope) -> tuple[str, list[Any]]:
        """Deliveries `d` (joined to events `e`) that are the latest of their (event, sink)
        pair, in the scope's status, to the scope's sinks, up to its horizon."""
        clauses, params = self.event_where(scope.filter, "e")
        sinks, sink_params = self.within("d.sink", scope.sinks)
        clauses += [
            f"d.status = {self.mark}",
            f"d.id <= {self.mark}",
            sinks,
            "NOT EXISTS (SELECT 1 FROM deliveries l"
            " WHERE l.event_id = d.event_id AND l.sink = d.sink AND l.id > d.id)",
        ]
        params += [scope.delivery_status, scope.upto, *sink_params]
        return " AND ".join(clauses), params
