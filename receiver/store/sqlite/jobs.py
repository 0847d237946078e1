"""The SQLite job table (JobTable): registering, saving and deleting watched jobs, and the job
statements the event log's batch write runs (registered metadata, ending a job). The reads
both backends share are receiver.store.base.JobTableBase's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from receiver.store.base import JobTableBase
from receiver.store.model import Job
from receiver.store.rows import job_from_row, job_row
from receiver.store.sql import JOB_COLUMNS
from receiver.store.sqlite.base import SqliteBase
from receiver.store.sqlite.connection import Sql, job_chunks


class SqliteJobs(JobTableBase, SqliteBase):
    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        return await self._write(_insert_job, job)

    async def save_jobs(self, jobs: Sequence[Job]) -> None:
        await self._write(_update_jobs, jobs)

    async def delete_job(self, source: str, job_id: str) -> bool:
        return await self._write(_delete_job, source, job_id)


def _insert_job(conn: Sql, job: Job) -> tuple[Job, bool]:
    before = conn.total_changes
    conn.execute(
        f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (source, job_id) DO NOTHING",
        job_row(job),
    )
    if conn.total_changes > before:
        return job, True
    row = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = ? AND job_id = ?",  # noqa: S608
        (job.source, job.job_id),
    ).fetchone()
    return job_from_row(row), False


def _update_jobs(conn: Sql, jobs: Sequence[Job]) -> None:
    """Only jobs still watching change: a job another process (or a terminal event) ended
    stays ended, whatever an earlier reading of it said."""
    conn.executemany(
        "UPDATE jobs SET state = ?, metadata_json = ?, created_at = ?, deadline_at = ?,"
        " next_poll_at = ?, interval_s = ?, polls = ?, not_found = ?, last_status = ?,"
        " last_error = ?, updated_at = ? WHERE source = ? AND job_id = ? AND state = 'watching'",
        [(*job_row(job)[2:], job.source, job.job_id) for job in jobs],
    )


def _delete_job(conn: Sql, source: str, job_id: str) -> bool:
    cur = conn.execute("DELETE FROM jobs WHERE source = ? AND job_id = ?", (source, job_id))
    return cur.rowcount > 0


def job_metadata(conn: Sql, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(source, job id) → (metadata JSON text, state) of the watched jobs among `keys`."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for source, job_ids, marks in job_chunks(keys):
        sql = (
            "SELECT job_id, metadata_json, state FROM jobs"  # noqa: S608
            f" WHERE source = ? AND job_id IN ({marks})"
        )
        for job_id, metadata, state in conn.execute(sql, [source, *job_ids]):
            found[(source, job_id)] = (metadata, state)
    return found


def end_jobs(
    conn: Sql,
    ends: Mapping[tuple[str, str], str],
    found: Mapping[tuple[str, str], tuple[str, str]],
    now: float,
) -> None:
    """Watched jobs whose terminal event is in this transaction end with it. Only the jobs
    `found` watching get a statement: each statement step hands the GIL back and waits for the
    busy event loop to let go of it again, so a batch of events of unwatched jobs (the usual
    case) must not cost one per event."""
    rows = [
        (state, now, source, job_id)
        for (source, job_id), state in sorted(ends.items())
        if found.get((source, job_id), ("", ""))[1] == "watching"
    ]
    if rows:
        conn.executemany(
            "UPDATE jobs SET state = ?, updated_at = ? WHERE source = ? AND job_id = ?"
            " AND state = 'watching'",
            rows,
        )
