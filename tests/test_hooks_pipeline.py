"""Hooks that shape the job's pipeline: job_pipeline, the wrapper rule for prepare_pipeline, and which
extension wins model defaults and pipeline arguments."""

from __future__ import annotations

import pytest

from engine_helpers import pixels
from test_hooks import baseline, engine, request, run, use  # noqa: F401 (fixtures)
from webui import hookimpl
from webui.generation.job import ExtensionConflict


def test_job_pipeline_swaps_the_pipeline_class_over_the_same_weights(engine, use, baseline):
    import diffusers

    class Marked(diffusers.StableDiffusionPipeline):
        """A subclass standing in for e.g. a ControlNet pipeline."""

    seen = []

    class Swap:
        @hookimpl
        def job_pipeline(self, pipeline, request, model):
            assert pipeline.unet is model.pipeline.unet  # the engine's pipeline shares the cached weights
            return Marked.from_pipe(pipeline)

        @hookimpl
        def step_end(self, state):
            seen.append(type(state.pipeline))

    use(Swap())
    result = run(engine)
    assert seen and set(seen) == {Marked}
    assert (pixels(result.images[0].image) == baseline).all()  # same weights, same scheduler, same picture


def test_a_plain_prepare_pipeline_is_refused_at_load(engine):
    import pluggy

    class NotAWrapper:
        @hookimpl
        def prepare_pipeline(self, pipeline):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="wrapper=True"):
        engine.plugins.register(NotAWrapper(), "not-a-wrapper")
    assert "not-a-wrapper" not in dict(engine.plugins.pm.list_name_plugin())


def test_model_defaults_of_a_later_extension_override_the_builtin(engine, use):
    class Small:
        @hookimpl
        def model_defaults(self, model):
            return {"width": 64, "height": 64}

    use(Small())
    assert run(engine, width=None, height=None).images[0].image.size == (64, 64)


def test_pipeline_kwargs_may_not_override_what_easel_sets_from_the_request(engine, use):
    class Sneaky:
        @hookimpl
        def pipeline_kwargs(self):
            return {"num_inference_steps": 3}

    use(Sneaky())
    with pytest.raises(ExtensionConflict, match="num_inference_steps.*Sneaky"):
        run(engine)


def test_after_denoising_is_not_called_for_an_interrupted_batch(engine, use):
    from webui.generation.progress import JobControl

    calls = []

    class Second:
        @hookimpl
        def after_denoising(self, latents):
            calls.append(latents.shape)

    use(Second())
    run(engine)
    assert len(calls) == 1
    control = JobControl()
    result = engine.generate(request(), listener=lambda event: control.interrupt(), control=control)
    assert result.interrupted and len(result.images) == 1 and len(calls) == 1


def test_a_second_pass_given_the_step_callback_counts_on_and_reaches_step_end(engine, use):
    import diffusers
    import torch

    seen = []

    class SecondPass:  # docs/extensions.md's example: an img2img pass over the latents
        @hookimpl
        def after_denoising(self, latents, request, model, seeds, step_callback):
            euler = diffusers.EulerDiscreteScheduler.from_config(model.pipeline.scheduler.config)
            pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pipe(model.pipeline, scheduler=euler)
            pipe.set_progress_bar_config(disable=True)
            return pipe(prompt=request.prompt, image=latents, strength=0.5, num_inference_steps=4,
                        generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent",
                        callback_on_step_end=step_callback, callback_on_step_end_tensor_inputs=["latents"]).images

        @hookimpl
        def step_end(self, state):
            seen.append((state.step, state.steps))

    use(SecondPass())
    events = []
    result = engine.generate(request(), listener=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and len(result.images) == 1  # 2 base steps, then 2 more
    assert seen == [(1, 2), (2, 2), (3, 4), (4, 4)]
