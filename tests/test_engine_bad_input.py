"""Bad requests get a clear error naming the problem, and the engine keeps serving afterwards."""

from __future__ import annotations

import math

import pytest
import torch

from engine_helpers import make_engine, picture, pixels
from webui.generation.engine import Engine, NansException
from webui.generation.prompt_parser import PromptError
from webui.generation.request import GenerationRequest, Mode, RequestError
from webui.generation.samplers import SamplerError


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("bad-data"), {"tiny.safetensors": tiny_checkpoint("sd1")}, save_images=False)


def request(**kw) -> GenerationRequest:
    base = dict(prompt="a cube", checkpoint="tiny", steps=2, width=64, height=64, seed=3, sampler="Euler")
    base.update(kw)
    return GenerationRequest(**base)


@pytest.mark.parametrize(
    "changes, error, words",
    [
        (dict(width=100000), RequestError, "width 100000 is out of range"),
        (dict(height=8), RequestError, "height 8 is out of range"),
        (dict(steps=0), RequestError, "steps must be an integer in 1..500"),
        (dict(steps=10000), RequestError, "steps must be an integer in 1..500"),
        (dict(batch_size=1000), RequestError, "batch_size must be an integer in 1..64"),
        (dict(batch_count=900, batch_size=2), RequestError, "1800 images"),
        (dict(cfg_scale=math.nan), RequestError, "cfg_scale must be a finite number"),
        (dict(seed=2**40), RequestError, "seed must be -1"),
        (dict(sampler="Euler z"), SamplerError, "Euler z"),
        (dict(sampler="DDIM", schedule_type="Karras"), SamplerError, "Karras"),
        (dict(schedule_type="Wobbly"), SamplerError, "Wobbly"),
        (dict(mode=Mode.IMG2IMG, init_image="not-an-image.png"), RequestError, "needs an init image"),
        (dict(mode=Mode.INPAINT, init_image=picture()), RequestError, "needs a mask"),
        (dict(mode="outpaint"), RequestError, "unknown mode 'outpaint'"),
        (dict(mode=Mode.IMG2IMG, init_image=picture(), denoising_strength=0.1), RequestError, "no step to run"),
        (dict(prompt="cube " * 10000), PromptError, "at most 2400 tokens"),
        (dict(checkpoint="no-such-model"), LookupError, "no-such-model"),
    ],
)
def test_bad_request_is_refused_clearly_and_the_engine_keeps_working(engine, changes, error, words):
    with pytest.raises(error) as info:
        engine.generate(request(**changes))
    assert words in str(info.value)
    assert engine.queue.pending == 0
    assert len(engine.generate(request()).images) == 1


def test_mask_of_another_size_is_resized_with_a_notice(engine):
    from PIL import Image

    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    result = engine.generate(request(mode=Mode.INPAINT, init_image=picture(), mask=mask, steps=3))
    assert any("mask 32x32 resized" in n for n in result.notices)
    assert result.images[0].image.size == (64, 64)


def test_nan_from_the_vae_is_reported_like_a1111(engine, tmp_path):
    """A VAE that yields NaN (as SDXL's does in fp16) fails the job with advice, not a black image."""
    from webui.models.convert import save_single_file
    from webui.models.tiny import tiny_pipeline

    pipe = tiny_pipeline("sd1", seed=0)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias.fill_(math.nan)
    save_single_file(pipe, engine.manager.paths.folder("checkpoints") / "nan-vae.safetensors")
    with pytest.raises(NansException, match="NaNs was produced in the VAE.*--precision float32"):
        engine.generate(request(checkpoint="nan-vae"))
    good = engine.generate(request())
    assert pixels(good.images[0].image).std() > 0
