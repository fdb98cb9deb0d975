"""Every engine hook on a real tiny SD1 pipeline: called at its documented point with the documented
arguments, its result used, and an extension's failure confined to its own job.

Test plugins are classes of `@hookimpl` methods, registered on the engine's `Plugins` for one test."""

from __future__ import annotations

import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from engine_helpers import linked_paths, pixels
from webui import hookimpl
from webui.generation.engine import Engine
from webui.generation.job import ExtensionConflict
from webui.generation.progress import JobControl
from webui.generation.request import GenerationRequest
from webui.hooktypes import ExtraNetworkType
from webui.models.manager import LoadedModel, ModelManager
from webui.plugins import ExtensionError, Plugins


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Engine:
    sd1 = tiny_checkpoint("sd1")
    paths = linked_paths(tmp_path_factory.mktemp("hooks-data"), {"tiny.safetensors": sd1, "other.safetensors": sd1})
    return Engine(ModelManager(paths, plugins=Plugins.builtin()))


@pytest.fixture
def use(engine):
    """`use(plugin)` registers a test plugin (named after its class) for this test only."""
    names: list[str] = []

    def register(plugin, name: str | None = None):
        name = name or type(plugin).__name__
        engine.plugins.register(plugin, name)
        names.append(name)
        return plugin

    yield register
    for name in reversed(names):
        if engine.plugins.pm.get_plugin(name) is not None:
            engine.plugins.unregister(name)


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{**dict(prompt="a red cube", checkpoint="tiny", steps=2, width=64, height=64, seed=7,
                                       sampler="Euler"), **kw})


def run(engine, **kw):
    return engine.generate(request(**kw))


@pytest.fixture(scope="module")
def baseline(engine):
    """Pixels of `request()` with no test plugin registered."""
    return pixels(run(engine).images[0].image)


def test_before_generate_changes_this_job_only(engine, use):
    seen = {}

    class MoreSteps:
        @hookimpl
        def before_generate(self, request, model):
            seen["model"] = model
            request.steps, request.prompt = 3, request.prompt + ", blue"
            request.extensions["hello"]["greeting"] = "changed"

        @hookimpl
        def step_end(self, state):
            seen.setdefault("steps", []).append(state.step)

    use(MoreSteps())
    mine = request(extensions={"hello": {"greeting": "hi"}})
    result = engine.generate(mine)
    assert seen["steps"] == [1, 2, 3]
    assert result.infotexts[0].startswith("a red cube, blue\n") and "Steps: 3," in result.infotexts[0]
    assert isinstance(seen["model"], LoadedModel) and seen["model"].entry.name == "tiny.safetensors"
    assert result.request.extensions == {"hello": {"greeting": "changed"}}
    assert (mine.steps, mine.prompt, mine.extensions) == (2, "a red cube", {"hello": {"greeting": "hi"}})


def test_select_model_first_non_none_result_wins(engine, use):
    asked = []

    class Other:
        @hookimpl
        def select_model(self, request, manager):
            return manager.load("other")

    class Abstain:
        @hookimpl
        def select_model(self, request, manager):
            asked.append((request.checkpoint, manager))

    use(Other())
    use(Abstain())  # registered last, so asked first; None passes the choice on
    result = run(engine)  # request.checkpoint says "tiny": the built-in would choose that
    assert asked == [("tiny", engine.manager)]
    assert result.model.entry.name == "other.safetensors" and "Model: other," in result.infotexts[0]


def test_model_defaults_fill_only_the_size_the_request_leaves_out(engine):
    seen = []

    class Wide:
        @hookimpl
        def model_defaults(self, model):
            seen.append(model)
            return {"width": 96, "height": 64}

    plugins = Plugins()  # without the built-in checkpoints extension, whose defaults say 512
    plugins.register(Wide(), "wide")
    wide = Engine(engine.manager, engine.options, plugins)
    assert wide.generate(request(width=None, height=None)).images[0].image.size == (96, 64)
    assert wide.generate(request(width=None, height=72)).images[0].image.size == (96, 72)
    assert all(isinstance(m, LoadedModel) for m in seen) and len(seen) == 2


class HalfUNet:
    """A patch on the shared UNet (a torch forward hook halving its output), undone after the run."""

    def __init__(self):
        self.events: list = []

    @hookimpl
    def register_extra_networks(self, register):
        register(ExtraNetworkType("half", "Half"))

    @hookimpl(wrapper=True)
    def prepare_pipeline(self, pipeline, request):
        self.events.append(("patch", pipeline, dict(request.extra_networks)))
        handle = pipeline.unet.register_forward_hook(lambda module, args, out: (out[0] * 0.5, *out[1:]))
        try:
            return (yield)
        finally:
            handle.remove()
            self.events.append("undo")

    @hookimpl
    def step_end(self, state):
        self.events.append("step")

    def names(self) -> list[str]:
        return [e if isinstance(e, str) else e[0] for e in self.events]


def test_prepare_pipeline_wraps_the_whole_run_and_undoes_the_patch(engine, use, baseline):
    patch = use(HalfUNet())
    patched = run(engine, batch_count=2, prompt="a red cube<half:all:1>")
    assert patch.names() == ["patch", "step", "step", "step", "step", "undo"]  # one wrap around both batches
    _, pipeline, networks = patch.events[0]
    assert isinstance(pipeline, DiffusionPipeline)
    assert [(c.name, c.args) for c in networks["half"]] == [("half", ("all", "1"))]
    assert (pixels(patched.images[0].image) != baseline).any()  # the patch was active while denoising
    engine.plugins.unregister("HalfUNet")
    assert (pixels(run(engine).images[0].image) == baseline).all()  # and the shared UNet is as before


def test_prepare_pipeline_gets_the_model_the_manager_and_the_jobs_notices(engine, use):
    class Noticing:
        @hookimpl(wrapper=True)
        def prepare_pipeline(self, pipeline, model, manager, notices):
            self.seen = (pipeline.unet is model.pipeline.unet, manager is engine.manager, model.entry.name)
            notices.append("noticing: something to read")
            return (yield)

    plugin = use(Noticing())
    result = run(engine)
    assert plugin.seen == (True, True, "tiny.safetensors")
    assert "noticing: something to read" in result.notices


def test_a_failing_hook_fails_its_job_after_the_undo_and_the_next_job_works(engine, use, baseline):
    class Boom:
        @hookimpl
        def step_end(self, state):
            raise RuntimeError(f"boom at step {state.step}")

    patch = use(HalfUNet())
    use(Boom())
    with pytest.raises(ExtensionError, match=r"extension 'Boom' failed in step_end: RuntimeError: boom at step 1"):
        run(engine)
    assert patch.names() == ["patch", "undo"]
    for name in ("Boom", "HalfUNet"):
        engine.plugins.unregister(name)
    assert (pixels(run(engine).images[0].image) == baseline).all()


def test_prepare_pipeline_undo_runs_after_an_interrupt(engine, use):
    patch = use(HalfUNet())
    control = JobControl()
    result = engine.generate(request(steps=3, batch_count=2), listener=lambda event: control.interrupt(),
                             control=control)
    assert result.interrupted and len(result.images) == 1
    assert patch.names() == ["patch", "step", "undo"]


def test_an_exception_before_the_yield_is_attributed_to_the_wrapper(engine, use):
    class BadPatch:
        @hookimpl(wrapper=True)
        def prepare_pipeline(self, pipeline):
            raise RuntimeError("cannot patch this model")
            yield  # noqa: unreachable, makes this a generator

    use(BadPatch())
    with pytest.raises(ExtensionError, match="'BadPatch' failed in prepare_pipeline: RuntimeError: cannot patch"):
        run(engine)


def test_wrapper_errors_name_the_right_one_of_two_plugins_from_one_module(engine, use):
    class BadPatch:
        @hookimpl(wrapper=True)
        def prepare_pipeline(self):
            raise RuntimeError("cannot patch this model")
            yield  # noqa: unreachable

    class Innocent:
        @hookimpl
        def step_end(self):
            pass

    use(BadPatch())
    use(Innocent())
    with pytest.raises(ExtensionError, match="'BadPatch' failed in prepare_pipeline"):
        run(engine)


@pytest.mark.parametrize("hook", ["before_generate", "infotext_params", "postprocess_image", "image_saved"])
def test_runtime_errors_name_the_extension_and_the_hook(engine, use, hook):
    class Faulty:
        pass

    def fail(**kwargs):
        raise RuntimeError("a bug")

    setattr(Faulty, hook, staticmethod(hookimpl(specname=hook)(fail)))
    use(Faulty())
    with pytest.raises(ExtensionError) as info:
        run(engine)
    assert (info.value.extension, info.value.hook) == ("Faulty", hook)
    assert str(info.value) == f"extension 'Faulty' failed in {hook}: RuntimeError: a bug"


def test_request_errors_pass_through_with_a_note_naming_the_extension(engine, use):
    class Strict:
        @hookimpl
        def before_generate(self, request):
            raise ValueError("hello: greeting must not be empty")

    use(Strict())
    with pytest.raises(ValueError, match="greeting must not be empty") as info:
        run(engine)
    assert not isinstance(info.value, ExtensionError)
    assert "(raised by extension 'Strict' in before_generate)" in info.value.__notes__


def test_pipeline_kwargs_reach_diffusers_once_per_job(engine, use, baseline):
    seen = []

    class Rescale:
        @hookimpl
        def pipeline_kwargs(self, pipeline, request):
            seen.append((pipeline, request.seed))
            return {"guidance_rescale": 0.7}

    use(Rescale())
    result = run(engine, batch_count=2)
    assert len(seen) == 1 and isinstance(seen[0][0], DiffusionPipeline) and seen[0][1] == 7
    assert (pixels(result.images[0].image) != baseline).any()


def kwargs_plugin(values: dict):
    class Kwargs:
        @hookimpl
        def pipeline_kwargs(self):
            return values

    return Kwargs()


def test_two_extensions_setting_one_pipeline_argument_conflict(engine, use):
    use(kwargs_plugin({"guidance_rescale": 0.3}), "rescale-a")
    use(kwargs_plugin({"guidance_rescale": 0.5}), "rescale-b")
    with pytest.raises(ExtensionConflict, match="'rescale-b' and 'rescale-a' both set the pipeline argument "
                                                "'guidance_rescale'"):
        run(engine)


def test_reserved_pipeline_arguments_are_refused(engine, use):
    use(kwargs_plugin({"latents": torch.zeros(1, 4, 8, 8)}), "own-latents")
    with pytest.raises(ExtensionConflict, match="extension 'own-latents' may not set the pipeline argument 'latents'"):
        run(engine)


def test_step_end_sees_every_step_and_may_replace_the_latents(engine, use, baseline):
    states = []

    class Watch:
        @hookimpl
        def step_end(self, state):
            states.append(state)

    use(Watch())
    result = run(engine, batch_count=2)
    assert [(s.step, s.steps, s.batch) for s in states] == [(1, 2, 0), (2, 2, 0), (1, 2, 1), (2, 2, 1)]
    assert {s.job_id for s in states} == {result.job_id} and float(states[0].timestep) > float(states[1].timestep)
    assert all(s.latents.shape == (1, 4, 8, 8) and isinstance(s.pipeline, DiffusionPipeline) for s in states)
    assert all(s.request.seed == 7 and s.request.batch_count == 2 for s in states)
    engine.plugins.unregister("Watch")

    class Darken:
        @hookimpl
        def step_end(self, state):
            if state.step == 1:
                state.latents = state.latents * 0.2

    use(Darken())
    assert (pixels(run(engine).images[0].image) != baseline).any()


def test_after_denoising_and_postprocess_image_chain_in_pluggy_order(engine, use):
    log = []

    class Keep:  # registered first, so called last; None keeps what it was given
        @hookimpl
        def after_denoising(self, latents, request, model, manager, seeds):
            log.append(("keep", latents, seeds, model, manager))

        @hookimpl
        def postprocess_image(self, image, request):
            log.append(("keep", image, request.seed))

    class Flip:
        @hookimpl
        def after_denoising(self, latents):
            log.append(("flip", latents))
            return latents.flip(-1)

        @hookimpl
        def postprocess_image(self, image):
            log.append(("flip", image))
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    use(Keep())
    use(Flip())
    result = run(engine, batch_size=2)
    assert [entry[0] for entry in log] == ["flip", "keep", "flip", "keep", "flip", "keep"]
    flipped_latents = log[1][1]
    assert torch.equal(flipped_latents, log[0][1].flip(-1)) and flipped_latents.shape[0] == 2
    assert log[1][2] == [7, 8] and isinstance(log[1][3], LoadedModel) and log[1][4] is engine.manager
    for image_log, item in zip((log[2:4], log[4:6]), result.images):
        (_, raw), (_, handed_on, seed) = image_log
        assert pixels(handed_on).tolist() == pixels(raw)[:, ::-1].tolist()
        assert item.image is handed_on and seed == 7
