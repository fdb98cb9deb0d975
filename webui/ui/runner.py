"""Runs a generation for the browser: the engine in a worker thread, progress streamed as it comes.

`GenerationRunner.stream` is a generator of `Update`s (progress line, live preview, then the images);
the Gradio layer turns each into component updates. Interrupt and skip reach the job of the browser
session that pressed them, not whichever job happens to run."""

from __future__ import annotations

import html
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from webui.config import Config
from webui.core_settings import REFRESH_MS
from webui.fileio import atomic_write_bytes
from webui.generation.engine import Engine
from webui.generation.infotext import image_bytes
from webui.generation.progress import JobControl, ProgressEvent
from webui.generation.request import GenerationRequest
from webui.generation.results import GenerationResult
from webui.ui.form import refusal

POLL_SECONDS = 0.1
STARTING_SECONDS = 0.3  # "Starting…" shows only for a job that has no step done (or queue place) by then


@dataclass
class Update:
    """One step of a run as the UI shows it. `images` is set once, at the end."""

    progress: str  # HTML: the bar with step, ETA, queue position; or the outcome
    preview: Image.Image | None = None
    images: list[Path] | None = None  # PNGs with their infotext, for the gallery
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    done: bool = False


def progress_html(fraction: float, text: str, *, kind: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="easel-progress {kind}"><div class="easel-progress-bar" style="width:{pct:.1f}%"></div>'
            f'<span class="easel-progress-text">{html.escape(text)}</span></div>')


def message_html(text: str, *, kind: str = "error") -> str:
    return f'<div class="easel-message {kind}">{html.escape(text)}</div>'


def describe(event: ProgressEvent) -> str:
    parts = [f"Step {event.step}/{event.steps}"]
    if event.batches > 1:
        parts.append(f"batch {event.batch + 1}/{event.batches}")
    parts.append(f"{event.elapsed:.1f}s")
    if event.eta is not None:
        parts.append(f"ETA {event.eta:.0f}s")
    return " · ".join(parts)


class GenerationRunner:
    def __init__(self, engine: Engine, temp_dir: Path, config: Config | None = None):
        self.engine = engine
        self.temp_dir = temp_dir  # unsaved images are written here (PNG + infotext) for the gallery
        self.config = config  # read at each job: `live_preview_refresh_period`
        self._controls: dict[str, JobControl] = {}
        self._lock = threading.Lock()

    def interrupt(self, session: str) -> None:
        """Stop this browser session's job after the current step (its finished images are kept)."""
        if (control := self._control(session)) is not None:
            control.interrupt()

    def skip(self, session: str) -> None:
        """Drop the current batch of this session's job and go on with the next."""
        if (control := self._control(session)) is not None:
            control.skip()

    def _control(self, session: str) -> JobControl | None:
        with self._lock:
            return self._controls.get(session)

    def stream(self, request: GenerationRequest, session: str) -> Iterator[Update]:
        control = JobControl()
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["result"] = self.engine.generate(request, events.put, control)
            except Exception as e:  # every failure becomes a message; the server keeps serving
                outcome["error"] = e
            finally:
                events.put(None)

        with self._lock:
            self._controls[session] = control
        try:
            threading.Thread(target=work, name=f"easel-job-{control.job_id[:8]}", daemon=True).start()
            yield from self._progress(events, control)
        finally:
            with self._lock:
                if self._controls.get(session) is control:
                    del self._controls[session]
        if "error" in outcome:
            yield Update(message_html(refusal(outcome["error"])), done=True)
            return
        yield self._finished(outcome["result"])

    def _progress(self, events: queue.Queue, control: JobControl) -> Iterator[Update]:
        """One update per step, but not more often than the refresh period: each update costs Gradio work
        (and on a fast model, CPU the job needs); events in between are merged, the newest preview shown."""
        period = (self.config["live_preview_refresh_period"] if self.config else REFRESH_MS) / 1000
        shown = ""  # the waiting line on screen: the queue place, or "Starting…"
        pending: ProgressEvent | None = None
        preview: Image.Image | None = None  # the newest one so far: every update shows it
        last = 0.0
        starting = time.monotonic() + STARTING_SECONDS  # a warm job's first step comes sooner: no update spent
        while True:
            wait = POLL_SECONDS if pending is None else max(0.0, last + period - time.monotonic())
            try:
                event = events.get(timeout=wait)
            except queue.Empty:
                if pending is not None:
                    yield Update(progress_html(pending.fraction, describe(pending)), preview=preview)
                    pending, last = None, time.monotonic()
                    continue
                ahead = self.engine.queue.position(control.job_id)
                text = f"Waiting: {ahead} job{'s' if ahead > 1 else ''} ahead in the queue" if ahead else "Starting…"
                if not last and text != shown and (ahead or time.monotonic() >= starting):  # queued, or loading
                    shown = text
                    yield Update(progress_html(0, text, kind="waiting"))
                continue
            if event is None:
                return
            pending, preview = event, event.preview or preview
            if time.monotonic() - last >= period:
                yield Update(progress_html(pending.fraction, describe(pending)), preview=preview)
                pending, last = None, time.monotonic()

    def _finished(self, result: GenerationResult) -> Update:
        paths = [item.path or self._temp_png(item.image, item.infotext) for item in result.images]
        notes = list(result.notices)
        if result.interrupted:
            notes.insert(0, "Interrupted")
        text = f"{len(paths)} image{'s' if len(paths) != 1 else ''}" + (f" · {' · '.join(notes)}" if notes else "")
        return Update(message_html(text, kind="done"), images=paths, infotexts=result.infotexts,
                      seeds=[i.seed for i in result.images], subseeds=[i.subseed for i in result.images], done=True)

    def _temp_png(self, image: Image.Image, infotext: str) -> Path:
        path = self.temp_dir / f"{uuid.uuid4().hex}.png"
        atomic_write_bytes(path, image_bytes(image, infotext, "png"))
        return path
