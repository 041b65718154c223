"""Message-log archives prepared in the background, with a progress page (I/O).

An auditor's ``POST /ui/messagelog/exports`` plans the archive as the API's ``exportMessageLogArchive`` does
(:func:`gateway.admin.handlers.messagelog.plan_archive`: the same range rules, the same refusals, beside the
form) and starts a job that writes it to a temporary file; the answer is 303 to the job's page. That page says
how many records are written of how many, refreshes itself every :data:`REFRESH_SECONDS` without script
(``<meta http-equiv="refresh">``) while the job runs, and offers the download when it is done. The start and
each download are audited as ``exportMessageLogArchive`` (with the archive's range and size); the page itself
is not (it refreshes).

A job belongs to the user who started it (another user is answered 404), lives in the admin process (the
admin port runs in worker 0 only), and is removed with its file :data:`KEEP_SECONDS` after it ended, at the
latest when the server stops. A user holds at most :data:`MAX_JOBS` jobs at once (409 beyond).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web

from gateway.admin.context import CALL
from gateway.admin.handlers.messagelog import ArchivePlan, plan_archive, stream_file, write_archive
from gateway.admin.web.ops import context
from gateway.errors import Conflict, GatewayError, NotFound

REFRESH_SECONDS = 2
KEEP_SECONDS = 3600
MAX_JOBS = 4


@dataclass(slots=True, kw_only=True)
class Job:
    id: str
    owner: str
    plan: ArchivePlan
    started: datetime
    directory: Path
    written: int = 0
    ended: datetime | None = None
    error: str | None = None
    facts: dict[str, object] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.directory / "archive.zip"

    @property
    def state(self) -> str:
        return "running" if self.ended is None else "failed" if self.error else "done"

    @property
    def percent(self) -> int:
        total = self.plan.records
        return 100 if total == 0 or self.state == "done" else min(99, self.written * 100 // total)


class Exports:
    """The jobs of one admin application."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def _sweep(self, now: datetime) -> None:
        for job in [j for j in self.jobs.values() if j.ended and now - j.ended > timedelta(seconds=KEEP_SECONDS)]:
            self._drop(job)

    def _drop(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.task is not None and not job.task.done():
            job.task.cancel()
        shutil.rmtree(job.directory, ignore_errors=True)

    async def start(self, request: web.Request, owner: str) -> Job:
        """Plan the archive of the request's query (raising its refusals) and start writing it.

        Raises:
            RequestError: as :func:`plan_archive`; Conflict (409) when ``owner`` holds :data:`MAX_JOBS` jobs.
        """
        ctx = context(request)
        now = ctx.clock()
        self._sweep(now)
        if sum(1 for j in self.jobs.values() if j.owner == owner) >= MAX_JOBS:
            raise Conflict(
                f"you hold {MAX_JOBS} archive jobs already: download them, or wait until they expire "
                f"({KEEP_SECONDS // 60} min after they end)"
            )
        plan = await plan_archive(request, ctx)
        directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="gateway-archive-job-"))
        job = Job(id=secrets.token_urlsafe(12), owner=owner, plan=plan, started=now, directory=directory)

        def progress(n: int) -> None:
            job.written = n

        async def run() -> None:
            try:
                job.facts = await write_archive(plan, ctx, job.path, progress)
            except GatewayError as e:
                job.error = e.message
            except Exception as e:  # a job must end with a state the page can show, whatever went wrong
                job.error = f"the archive could not be written: {type(e).__name__}"
            finally:
                job.ended = ctx.clock()

        job.task = asyncio.create_task(run(), name=f"archive-job-{job.id}")
        self.jobs[job.id] = job
        request[CALL].details["archive_job"] = {"id": job.id, "start": plan.start, "end": plan.end}
        return job

    def get(self, job_id: str, owner: str) -> Job:
        """The job, for its owner only.

        Raises:
            NotFound: no such job of this user (expired, or never started by this user).
        """
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner:
            raise NotFound(
                f"there is no archive job {job_id[:40]} of yours (jobs are kept {KEEP_SECONDS // 60} min "
                "after they end)"
            )
        return job

    async def download(self, request: web.Request, job: Job) -> web.StreamResponse:
        """The finished archive, audited as a download (``exportMessageLogArchive``).

        Raises:
            Conflict: the job is still running, or failed.
        """
        if job.state != "done":
            raise Conflict(
                f"archive job {job.id} is {job.state}: nothing to download" + (f" ({job.error})" if job.error else "")
            )
        request[CALL].details["archive"] = {**job.facts, "job": job.id}
        return await stream_file(request, job.path, job.plan.file_name())

    async def close(self) -> None:
        jobs = list(self.jobs.values())
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(j.task for j in jobs if j.task is not None), return_exceptions=True)
        for job in jobs:
            self._drop(job)


EXPORTS_KEY = web.AppKey("archive_exports", Exports)


def install(app: web.Application) -> None:
    """Give ``app`` its jobs, ended with it."""
    exports = Exports()
    app[EXPORTS_KEY] = exports

    async def cleanup(_: web.Application) -> None:
        await exports.close()

    app.on_cleanup.append(cleanup)


def exports_of(request: web.Request) -> Exports:
    return request.app[EXPORTS_KEY]


__all__ = ["EXPORTS_KEY", "KEEP_SECONDS", "MAX_JOBS", "REFRESH_SECONDS", "Exports", "Job", "exports_of", "install"]
