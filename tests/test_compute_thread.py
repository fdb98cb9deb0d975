"""All torch work runs on the engine's one compute thread, whichever thread asks (a UI callback, an API
worker, the CLI): a second OpenMP team in the process slows every job (webui/generation/compute.py)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from engine_helpers import make_engine
from webui.generation.compute import ComputeThread
from webui.generation.engine import Engine
from webui.generation.request import GenerationRequest


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("compute-data"), {"tiny.safetensors": tiny_checkpoint("sd1")},
                       save_images=False)


def request() -> GenerationRequest:
    return GenerationRequest(prompt="a cube", steps=2, width=64, height=64, seed=3, sampler="Euler")


def threads_in_process() -> int:
    return len(os.listdir("/proc/self/task"))


class Caller(threading.Thread):
    """A long-lived thread (like an API worker) that runs what it is given and stays alive afterwards."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.work: list = []
        self.done, self.go, self.stop = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        self.go.wait()
        for fn in self.work:
            fn()
        self.done.set()
        self.stop.wait()


def test_jobs_and_loads_from_any_thread_run_on_the_compute_thread(engine):
    ran_on: list[int] = []
    listener = lambda event: ran_on.append(threading.get_ident())  # noqa: E731 - progress comes from the job's thread
    engine.generate(request(), listener=listener)  # from the test's own thread
    callers = [Caller(), Caller()]
    for caller in callers:
        caller.work = [lambda: engine.generate(request(), listener=listener),
                       lambda: ran_on.append(engine.run_exclusive(threading.get_ident))]
        caller.start()
    before = threads_in_process()
    try:
        for caller in callers:  # one after the other: each caller's job is done before the next starts
            caller.go.set()
            assert caller.done.wait(120)
        callers_alive = threads_in_process()
    finally:
        for caller in callers:
            caller.stop.set()
    assert len(ran_on) == 2 * 2 + 2 + 2  # 2 steps per job, 3 jobs, 2 loads
    assert set(ran_on) == {engine.compute.ident}
    assert engine.compute.ident not in {threading.get_ident(), *(c.ident for c in callers)}
    if torch.get_num_threads() > 1:  # a caller that ran torch itself would keep its own OpenMP workers
        assert callers_alive == before


def test_every_engine_in_a_process_shares_one_compute_thread(engine):
    assert Engine(engine.manager).compute is engine.compute is ComputeThread.for_process()


def test_run_returns_the_result_and_raises_the_error_in_the_caller():
    compute = ComputeThread("test-compute")
    assert compute.run(lambda: 6 * 7) == 42
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    assert compute.run(lambda: compute.run(threading.get_ident)) == compute.ident  # a nested call runs at once
    assert compute.ident != threading.get_ident()


def test_run_exclusive_waits_for_the_running_job(engine):
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold(event):
        started.set()
        release.wait(timeout=60)

    job = threading.Thread(target=lambda: (engine.generate(request(), listener=hold), order.append("job")))
    job.start()
    assert started.wait(60)
    loader = threading.Thread(target=lambda: engine.run_exclusive(lambda: order.append("exclusive")))
    loader.start()
    loader.join(timeout=0.5)
    assert loader.is_alive() and order == []  # waiting for the job's turn to end
    release.set()
    job.join(timeout=120)
    loader.join(timeout=120)
    assert order == ["job", "exclusive"]
