"""API jobs: an id each (`force_task_id` honoured), their state for `GET /easel/v1/jobs/{id}`, and the
running job's progress for `GET /sdapi/v1/progress`, whichever client (UI or API) started it.

Jobs run in the engine's one FIFO queue, so API calls and UI clicks take turns in arrival order."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from webui.generation.progress import JobControl
from webui.generation.request import GenerationRequest
from webui.generation.results import GenerationResult

KEEP_FINISHED = 1000  # finished jobs remembered for /easel/v1/jobs/{id}


class DuplicateJobId(Exception):
    """A `force_task_id` that names a job still queued or running."""


@dataclass
class JobRecord:
    control: JobControl
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    state: str = "queued"  # queued | running | done | failed | interrupted
    error: str | None = None
    images: int = 0
    fraction: float = 0.0
    eta: float | None = None

    @property
    def id(self) -> str:
        return self.control.job_id


class JobBoard:
    def __init__(self, engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()

    def open(self, job_id: str | None = None) -> JobRecord:
        """Register a job and take its place in the queue now (arrival order); then `run` or `abandon` it."""
        control = JobControl(job_id=job_id) if job_id else JobControl()
        record = JobRecord(control)
        with self._lock:
            old = self._jobs.get(control.job_id)
            if old is not None and old.state in ("queued", "running"):
                raise DuplicateJobId(f"force_task_id {control.job_id!r} is already queued or running")
            self._jobs[control.job_id] = record
            self._jobs.move_to_end(control.job_id)
            self._trim()
        self.engine.queue.reserve(control)
        return record

    def abandon(self, record: JobRecord, why: str) -> None:
        self.engine.queue.release(record.control)
        if record.state == "queued":
            record.state, record.error, record.finished_at = "failed", why, time.time()

    def run(self, record: JobRecord, request: GenerationRequest) -> GenerationResult:
        """Run the job when its turn comes (blocking) and keep its state up to date."""

        def listen(event) -> None:
            if record.started_at is None:
                record.started_at, record.state = time.time() - event.elapsed, "running"
            record.fraction, record.eta = event.fraction, event.eta

        try:
            result = self.engine.generate(request, listen, record.control)
        except BaseException as e:
            record.state, record.error = "failed", f"{type(e).__name__}: {e}"
            self.engine.queue.release(record.control)  # failed before its turn came: leave the line
            raise
        finally:
            record.finished_at = time.time()
            record.started_at = record.started_at or record.finished_at
        record.images = len(result.images)
        record.state = "interrupted" if result.interrupted else "done"
        record.fraction = 1.0 if record.state == "done" else record.fraction
        return result

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            record = self._jobs.get(job_id)
        if record is not None and record.state == "queued" and self.engine.queue.current is record.control:
            record.state, record.started_at = "running", record.started_at or time.time()
        return record

    def position(self, record: JobRecord) -> int | None:
        return self.engine.queue.position(record.id) if record.state in ("queued", "running") else None

    def _trim(self) -> None:
        finished = [k for k, r in self._jobs.items() if r.state not in ("queued", "running")]
        for key in finished[: max(0, len(self._jobs) - KEEP_FINISHED)]:
            del self._jobs[key]
