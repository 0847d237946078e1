"""The PostgreSQL job table (JobTable): registering, saving and deleting watched jobs. The
reads both backends share are receiver.store.base.JobTableBase's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from receiver.store.base import JobTableBase
from receiver.store.model import Job
from receiver.store.postgres.base import PostgresBase, storable_row, storable_text
from receiver.store.rows import job_from_row, job_row
from receiver.store.sql import JOB_COLUMNS


class PostgresJobs(JobTableBase, PostgresBase):
    async def watch_job(self, job: Job) -> tuple[Job, bool]:
        async with self._transaction(notify=True) as conn:
            cur = await conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES"  # noqa: S608
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (source, job_id) DO NOTHING RETURNING 1",
                storable_row(job_row(job)),
            )
            if await cur.fetchone() is not None:
                return job, True
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE source = %s AND job_id = %s",  # noqa: S608
                (job.source, storable_text(job.job_id)),
            )
            return job_from_row(cast(tuple[Any, ...], await cur.fetchone())), False

    async def save_jobs(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        async with self._transaction() as conn, conn.cursor() as cur:
            await cur.executemany(
                "UPDATE jobs SET state = %s, metadata_json = %s, created_at = %s,"
                " deadline_at = %s, next_poll_at = %s, interval_s = %s, polls = %s,"
                " not_found = %s, last_status = %s, last_error = %s, updated_at = %s"
                " WHERE source = %s AND job_id = %s AND state = 'watching'",
                [
                    (*storable_row(job_row(job))[2:], job.source, storable_text(job.job_id))
                    for job in jobs
                ],
            )

    async def delete_job(self, source: str, job_id: str) -> bool:
        rows = await self._all(
            "DELETE FROM jobs WHERE source = %s AND job_id = %s RETURNING 1",
            (source, storable_text(job_id)),
        )
        return bool(rows)
