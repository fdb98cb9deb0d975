"""One long-lived thread for the engine's torch work (jobs and model loads).

torch on CPU parallelises with OpenMP, and libgomp gives every thread that runs a parallel region a team
of worker threads, kept until that thread ends. When the process holds more of those threads than it
has CPUs, every team stops spinning at its barriers and sleeps on them instead, so each of the many
small parallel regions of a UNet step waits for a wake-up. Measured on the 2-core CI machine (demo
UNet, 8 steps): 2.57 s on one thread; 2.76 s when each job gets a fresh thread while an earlier one's
team lives; 2.97 s while another idle thread holds a team. Running every job on one thread keeps one
team, whichever thread (a UI callback, an API worker, the CLI) asked for the job.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class ComputeThread:
    """`run(fn)` runs `fn` on this object's thread and returns its result (or raises its exception) in
    the caller. Calls run one at a time in the order they came; a call from the thread itself runs at once.
    The thread starts with the first call and is a daemon: it never keeps the process from exiting."""

    _process: ComputeThread | None = None  # the one `for_process()` returns
    _process_lock = threading.Lock()

    @classmethod
    def for_process(cls) -> ComputeThread:
        """The process's compute thread, shared by every engine in it: OpenMP teams are a per-process
        resource, so a second engine (a test's, a benchmark's) must not bring a second team."""
        with cls._process_lock:
            if cls._process is None:
                cls._process = cls()
            return cls._process

    def __init__(self, name: str = "easel-compute") -> None:
        self.name = name
        self._tasks: queue.SimpleQueue[tuple[Callable[[], object], Future]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        future: Future = Future()
        self._ensure_started()
        self._tasks.put((fn, future))
        return future.result()

    @property
    def ident(self) -> int | None:
        """The thread's id once started (tests and diagnostics)."""
        return self._thread.ident if self._thread is not None else None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            fn, future = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - the caller re-raises it, the thread goes on
                future.set_exception(e)
            del fn, future  # no reference to the last job's result (its images) while idle
