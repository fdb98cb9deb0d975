"""Progress events, interrupt, skip, live previews and the one-job-at-a-time queue, on a real tiny model."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from engine_helpers import make_engine
from webui.generation.engine import Engine
from webui.generation.progress import JobControl
from webui.generation.request import GenerationRequest


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("control-data"), {"tiny.safetensors": tiny_checkpoint("sd1")}, save_images=False)


def request(**kw) -> GenerationRequest:
    base = dict(prompt="a cube", steps=6, width=64, height=64, seed=3, sampler="Euler")
    base.update(kw)
    return GenerationRequest(**base)


def test_progress_events_count_every_step_of_every_batch(engine):
    events = []
    engine.generate(request(batch_count=2), listener=events.append)
    assert [(e.batch, e.step) for e in events] == [(b, s) for b in range(2) for s in range(1, 7)]
    assert [e.job_step for e in events] == list(range(1, 13))
    assert events[-1].job_steps == 12 and events[-1].fraction == 1.0
    assert all(e.eta is not None and e.eta >= 0 for e in events) and events[-1].eta == 0
    assert len({e.job_id for e in events}) == 1


def test_interrupt_stops_after_the_current_step_and_keeps_the_image(engine):
    control = JobControl()
    events = []

    def listener(event):
        events.append(event)
        if event.step == 2:
            control.interrupt()

    result = engine.generate(request(batch_count=3), listener=listener, control=control)
    assert result.interrupted
    assert len(events) == 2  # no step ran after the interrupt, and no later batch started
    assert len(result.images) == 1 and result.images[0].image.size == (64, 64)
    full = engine.generate(request()).images[0].image
    assert list(full.getdata()) != list(result.images[0].image.getdata())  # a partly denoised picture


def test_skip_drops_the_current_batch_and_goes_on(engine):
    control = JobControl()

    def listener(event):
        if event.batch == 1 and event.step == 1:
            control.skip()

    result = engine.generate(request(batch_count=3, seed=50), listener=listener, control=control)
    assert not result.interrupted
    assert result.seeds == [50, 52]


def test_cheap_live_previews_every_n_steps(engine):
    from dataclasses import replace

    e = Engine(engine.manager, replace(engine.options, preview_every=2))
    events = []
    e.generate(request(), listener=events.append)
    previews = [(ev.step, ev.preview) for ev in events if ev.preview is not None]
    assert [s for s, _ in previews] == [2, 4, 6]
    assert all(isinstance(p, Image.Image) and p.size == (8, 8) for _, p in previews)


def test_taesd_previews_when_present(engine, tmp_path):
    from dataclasses import replace

    from diffusers import AutoencoderTiny
    from safetensors.torch import save_file

    folder = engine.manager.paths.folder("vae_approx")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(AutoencoderTiny().state_dict(), folder / "taesd.safetensors")
    try:
        e = Engine(engine.manager, replace(engine.options, preview_every=3))
        events = []
        e.generate(request(), listener=events.append)
        assert [ev.preview.size for ev in events if ev.preview is not None] == [(64, 64), (64, 64)]
    finally:
        (folder / "taesd.safetensors").unlink()


def test_jobs_run_one_at_a_time_in_arrival_order(engine):
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    first, second = JobControl(), JobControl()

    def hold(event):
        started.set()
        release.wait(timeout=60)

    def run(control, listener, name):
        engine.generate(request(steps=2), listener=listener, control=control)
        order.append(name)

    a = threading.Thread(target=run, args=(first, hold, "first"))
    a.start()
    assert started.wait(timeout=60)
    b = threading.Thread(target=run, args=(second, lambda e: None, "second"))
    b.start()
    for _ in range(600):
        if engine.queue.position(second.job_id) == 1:
            break
        threading.Event().wait(0.05)
    assert engine.queue.position(first.job_id) == 0
    assert engine.queue.position(second.job_id) == 1
    release.set()
    a.join(timeout=120)
    b.join(timeout=120)
    assert order == ["first", "second"]
    assert engine.queue.pending == 0
