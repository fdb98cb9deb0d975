"""API jobs on a real server: progress of the running job with a live preview, interrupt and skip, job
ids and their states, and twenty clients at once served in arrival order with their own images.

A test extension slows the steps down for the client that asks (through an always-on script, as an
API client would drive ControlNet), so a job runs long enough to be watched without timing guesses."""

from __future__ import annotations

import threading
import time

import pytest

from api_helpers import Client, decode, info_of, serving
from engine_helpers import linked_paths
from webui import hookimpl
from webui.api import create_app
from webui.generation.engine import Engine, EngineOptions
from webui.generation.infotext import read_infotext
from webui.hooktypes import APIScript
from webui.models.manager import ModelManager
from webui.plugins import Plugins

SMALL = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}


class SlowSteps:
    """`alwayson_scripts: {"Slow steps": {"args": [seconds]}}` sleeps after every step; records run order."""

    def __init__(self):
        self.started: list[int] = []

    @hookimpl
    def register_api_scripts(self, register):
        register(APIScript("Slow steps", self.apply, modes=("txt2img",)))

    def apply(self, args, request):
        if not args or not isinstance(args[0], (int, float)) or args[0] < 0:
            raise ValueError("Slow steps args are [seconds per step]")
        request.extensions["slow"] = {"seconds": float(args[0])}

    @hookimpl
    def before_generate(self, request):
        self.started.append(request.seed)

    @hookimpl
    def step_end(self, state):
        time.sleep((state.request.extensions.get("slow") or {}).get("seconds", 0))


def slow(seconds: float) -> dict:
    return {"alwayson_scripts": {"slow steps": {"args": [seconds]}}}


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    paths = linked_paths(tmp_path_factory.mktemp("api-jobs"), {"tiny.safetensors": tiny_checkpoint("sd1")})
    plugins = Plugins.builtin()
    recorder = SlowSteps()
    plugins.register(recorder, "slow-steps")
    engine = Engine(ModelManager(paths, plugins=plugins), EngineOptions(preview_every=1, save_images=False), plugins)
    with serving(create_app(engine, plugins)) as base:
        yield Client(base), engine, recorder


def in_background(client: Client, path: str, body: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("response", client.post(path, body)), daemon=True)
    thread.start()
    return thread, out


def wait_until(check, what: str, limit: float = 60.0):
    deadline = time.monotonic() + limit  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def test_progress_reports_the_running_job_with_a_preview_then_interrupt_keeps_what_is_done(served):
    client, _, _ = served
    idle = client.get("progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    thread, out = in_background(client, "txt2img", {"prompt": "a cube", "n_iter": 2, **SMALL, "steps": 4,
                                                    **slow(0.25)})
    progress = wait_until(lambda: (p := client.get("progress").json())["state"]["sampling_step"] >= 1 and p,
                          "a step reported")
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 4
    assert progress["state"]["job_count"] == 2 and progress["textinfo"].startswith("Step ")
    assert decode(progress["current_image"]).size[0] > 0 and progress["current_task"]
    assert client.get("progress", params={"skip_current_image": "true"}).json()["current_image"] is None
    assert client.post("interrupt").status_code == 200
    thread.join(60)
    info = info_of(out["response"])
    assert info["easel_interrupted"] and len(out["response"].json()["images"]) == 1  # the first batch, cut short
    assert client.get("progress").json()["progress"] == 0  # idle again


def test_skip_drops_the_current_batch_and_goes_on(served):
    client, _, _ = served
    thread, out = in_background(client, "txt2img", {"prompt": "a cube", "n_iter": 2, "seed": 40, **SMALL,
                                                    "steps": 4, **slow(0.25)})
    wait_until(lambda: client.get("progress").json()["state"]["sampling_step"] >= 1, "the first step")
    client.post("skip")
    thread.join(60)
    info = info_of(out["response"])
    assert not info["easel_interrupted"] and info["all_seeds"] == [41]  # batch 1 (seed 40) skipped


def test_job_ids_states_and_positions(served):
    client, _, _ = served
    first, out1 = in_background(client, "txt2img", {"prompt": "a", "force_task_id": "job-a", **SMALL, **slow(0.3)})
    wait_until(lambda: client.get("/easel/v1/jobs/job-a").json()["state"] == "running"
               if client.get("/easel/v1/jobs/job-a").status_code == 200 else False, "job-a running")
    second, out2 = in_background(client, "txt2img", {"prompt": "b", "force_task_id": "job-b", **SMALL})
    queued = wait_until(lambda: (r := client.get("/easel/v1/jobs/job-b")).status_code == 200 and r.json(), "job-b known")
    assert queued["state"] == "queued" and queued["position"] == 1
    duplicate = client.post("txt2img", {"prompt": "c", "force_task_id": "job-b", **SMALL})
    assert duplicate.status_code == 409 and "job-b" in duplicate.json()["detail"]
    assert client.get("progress").json()["current_task"] == "job-a"
    first.join(60), second.join(60)
    assert info_of(out1["response"])["easel_job_id"] == "job-a"
    done = client.get("/easel/v1/jobs/job-b").json()
    assert done["state"] == "done" and done["images"] == 1 and done["progress"] == 1 and done["position"] is None
    assert client.get("/easel/v1/jobs/no-such-job").status_code == 404


def test_twenty_clients_at_once_get_their_own_images_in_arrival_order(served):
    client, _, recorder = served
    recorder.started.clear()
    seeds = list(range(100, 120))
    threads, outs = [], []
    for seed in seeds:  # one after another, so "arrival order" is defined; all twenty wait together
        thread, out = in_background(Client(client.base), "txt2img", {"prompt": "a cube", "seed": seed, **SMALL})
        threads.append(thread), outs.append(out)
        time.sleep(0.02)
    for thread in threads:
        thread.join(120)
    for seed, out in zip(seeds, outs):
        info = info_of(out["response"])
        image = decode(out["response"].json()["images"][0])
        assert info["seed"] == seed and f"Seed: {seed}," in read_infotext(image)
    assert recorder.started == seeds  # run in the order they arrived
    assert client.get("progress").json()["state"]["job_count"] == 0


def test_a_bad_script_argument_is_a_422_naming_the_script(served):
    client, _, _ = served
    response = client.post("txt2img", {"prompt": "x", **SMALL, "alwayson_scripts": {"Slow steps": {"args": ["no"]}}})
    assert response.status_code == 422 and "Slow steps args" in response.json()["detail"]
    assert client.get("scripts").json() == {"txt2img": ["slow steps", "refiner"], "img2img": ["refiner"]}
