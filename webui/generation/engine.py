"""The engine: runs `GenerationRequest`s on the shared model manager, one job at a time per device.

`Engine.generate` waits for the job's turn in the FIFO queue and runs it (`job.py`) on the process's one
compute thread (`compute.py` says why); progress goes to a listener, and `JobControl` interrupts or skips
from any thread. Extensions take part through
the hooks in `webui/hookspecs.py` (see `job.py` for where each one runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from webui.generation.compute import ComputeThread
from webui.generation.job import Job
from webui.generation.previews import Previewer
from webui.generation.progress import JobControl, JobQueue, Listener, ProgressEvent
from webui.generation.request import GenerationLimits, GenerationRequest
from webui.generation.results import GeneratedImage, GenerationResult, NansException
from webui.models.manager import ModelManager
from webui.plugins import Plugins

__all__ = ["Engine", "EngineOptions", "GeneratedImage", "GenerationResult", "NansException"]
T = TypeVar("T")


@dataclass(frozen=True)
class EngineOptions:
    limits: GenerationLimits = GenerationLimits()
    save_images: bool = True
    samples_format: str = "png"
    outdir: Path | None = None  # images straight into this folder instead of outputs/<mode>-images/<date>/
    preview_every: int = 0  # a live preview every N steps; 0 = none


class Engine:
    def __init__(self, manager: ModelManager, options: EngineOptions | None = None, plugins: Plugins | None = None):
        """`plugins` defaults to the manager's, else the built-in extensions only."""
        self.manager = manager
        self.options = options or EngineOptions()
        self.plugins = plugins or manager.plugins or Plugins.builtin()
        self.queue = JobQueue()
        self.compute = ComputeThread.for_process()
        self.previewer = Previewer(manager.paths.folder("vae_approx"))
        self.settings: dict[str, Any] = {}  # saved extension settings; a request's override_settings win
        self.last_event: ProgressEvent | None = None  # of the running job (the API's /progress reads it)
        self.last_preview: Image.Image | None = None  # the running job's latest live preview

    def generate(
        self,
        request: GenerationRequest,
        listener: Listener | None = None,
        control: JobControl | None = None,
    ) -> GenerationResult:
        """Run a job when its turn comes. Raises `RequestError` (bad request), `SamplerError`,
        `PromptError`, `CheckpointError`, `LookupError`, `NansException` or `ExtensionError` (naming the
        extension); the caller's request is never modified and patches are always undone."""
        control = control or JobControl()
        if self.settings:
            request = replace(request, override_settings={**self.settings, **request.override_settings})
        listener = listener or (lambda event: None)

        def watch(event: ProgressEvent) -> None:
            self.last_event = event
            if event.preview is not None:
                self.last_preview = event.preview
            listener(event)

        with self.queue.slot(control):
            self.last_event = self.last_preview = None
            try:
                return self.compute.run(Job(self, request, watch, control).run)
            except KeyboardInterrupt:  # Ctrl+C in the waiting thread (the CLI's): stop the job too
                control.interrupt()
                raise
            finally:
                self.last_event = self.last_preview = None

    def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the queue's turn on the compute thread and return its result: for torch work that
        must not overlap a job, such as loading a model."""
        with self.queue.slot(JobControl()):
            return self.compute.run(fn)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Wait for the queue and hold it, in the calling thread: for work that must not overlap a job
        but runs no torch (torch work belongs in `run_exclusive`, which runs it on the compute thread)."""
        with self.queue.slot(JobControl()):
            yield
