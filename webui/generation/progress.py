"""Jobs as the outside sees them: progress events, interrupt/skip, and the queue that runs one job at a
time per device (in arrival order, with a position users can be shown)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from PIL import Image


@dataclass(frozen=True)
class ProgressEvent:
    job_id: str
    step: int  # steps done in the current batch (1-based once a step finished)
    steps: int  # denoising steps per batch (after denoising strength)
    batch: int  # 0-based index of the current batch (of batch_count)
    batches: int
    job_step: int  # steps done over the whole job
    job_steps: int
    elapsed: float  # seconds since the job started running
    eta: float | None  # seconds left, from the mean step time so far
    preview: Image.Image | None = None  # a live preview when one was made for this step

    @property
    def fraction(self) -> float:
        return self.job_step / self.job_steps if self.job_steps else 0.0


Listener = Callable[[ProgressEvent], None]


@dataclass
class JobControl:
    """Interrupt (stop after this step and keep what is done) or skip (drop the current batch, go on)."""

    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def skipped(self) -> bool:
        return self._skip.is_set()

    def clear_skip(self) -> None:
        self._skip.clear()


class JobQueue:
    """A FIFO lock: jobs run one at a time in the order they arrived (the head of `_line` runs)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._line: list[str] = []  # job ids in arrival order
        self.current: JobControl | None = None

    def position(self, job_id: str) -> int | None:
        """0 = running now, n = n jobs ahead, None = not queued."""
        with self._cond:
            return self._line.index(job_id) if job_id in self._line else None

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._line)

    def reserve(self, control: JobControl) -> None:
        """Take the job's place in line now, without waiting (`slot` then waits for this place): keeps
        arrival order when the job is handed to a worker thread that may start late. A reserved job that
        will not run must be `release`d."""
        with self._cond:
            if control.job_id not in self._line:
                self._line.append(control.job_id)

    def release(self, control: JobControl) -> None:
        """Leave the line without running (a reserved job whose client went away)."""
        with self._cond:
            if control.job_id in self._line and self.current is not control:
                self._line.remove(control.job_id)
                self._cond.notify_all()

    @contextmanager
    def slot(self, control: JobControl) -> Iterator[None]:
        with self._cond:
            if control.job_id not in self._line:
                self._line.append(control.job_id)
            while self._line[0] != control.job_id:
                self._cond.wait()
            self.current = control
        try:
            yield
        finally:
            with self._cond:
                self._line.remove(control.job_id)
                self.current = None
                self._cond.notify_all()


class StepClock:
    """Counts steps over a job and estimates the time left from the mean step time."""

    def __init__(self, job_steps: int) -> None:
        self.job_steps = job_steps
        self.done = 0
        self.start = time.perf_counter()

    def tick(self) -> tuple[float, float | None]:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.job_steps - self.done) if self.done else None
        return elapsed, eta
