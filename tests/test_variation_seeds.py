"""A1111's variation seeds and "resize seed from" in img2img and inpaint jobs (noise streams through
`webui.generation.noise_pipelines`), on real tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import make_engine, picture, pixels, square_mask
from webui import hookimpl
from webui.generation.request import GenerationRequest, Mode, RequestError
from webui.generation.seeds import NoiseStream

FAMILIES = ("sd1", "sdxl-base")


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory):
    links = {f"tiny-{family}.safetensors": tiny_checkpoint(family) for family in FAMILIES}
    return make_engine(tmp_path_factory.mktemp("variation-data"), links, save_images=False)


def request(family: str, mode: Mode, **kw) -> GenerationRequest:
    base = dict(prompt="a red cube", checkpoint=f"tiny-{family}", steps=3, width=64, height=64, seed=5,
                sampler="Euler", mode=mode, init_image=picture(), denoising_strength=0.6)
    if mode is Mode.INPAINT:
        base["mask"] = square_mask()
    base.update(kw)
    return GenerationRequest(**base)


def image(engine, family: str, mode: Mode, **kw) -> np.ndarray:
    return pixels(engine.generate(request(family, mode, **kw)).images[0].image)


@pytest.mark.parametrize("mode", [Mode.IMG2IMG, Mode.INPAINT])
@pytest.mark.parametrize("family", FAMILIES)
def test_variation_seed_moves_from_the_seed_to_the_variation_seed(engine, family, mode):
    base = image(engine, family, mode, seed=5)
    other = image(engine, family, mode, seed=9)
    assert (base != other).any()
    assert (image(engine, family, mode, seed=5, subseed=9, subseed_strength=0.0) == base).all()
    # full strength is the variation seed's own start: init-image encoding draws and noise alike
    assert (image(engine, family, mode, seed=5, subseed=9, subseed_strength=1.0) == other).all()
    small = image(engine, family, mode, seed=5, subseed=9, subseed_strength=0.1)
    half = engine.generate(request(family, mode, seed=5, subseed=9, subseed_strength=0.5)).images[0]
    assert (pixels(half.image) != base).any() and (pixels(half.image) != other).any()
    assert 0 < np.abs(small - base).mean() < np.abs(pixels(half.image) - base).mean()
    assert "Seed: 5, " in half.infotext and "Variation seed: 9, Variation seed strength: 0.5" in half.infotext


def test_variation_seeds_are_per_image_in_a_batch(engine):
    batch = engine.generate(request("sd1", Mode.IMG2IMG, seed=5, subseed=9, subseed_strength=0.5, batch_size=2))
    assert [i.subseed for i in batch.images] == [9, 10] and "Variation seed: 10," in batch.infotexts[1]
    single = image(engine, "sd1", Mode.IMG2IMG, seed=6, subseed=10, subseed_strength=0.5)
    assert np.abs(pixels(batch.images[1].image) - single).max() <= 1  # batched matmuls may round differently


def test_resize_seed_from_works_in_img2img(engine):
    plain = image(engine, "sd1", Mode.IMG2IMG)
    assert (image(engine, "sd1", Mode.IMG2IMG, seed_resize_from_w=64, seed_resize_from_h=64) == plain).all()
    resized = image(engine, "sd1", Mode.IMG2IMG, seed_resize_from_w=128, seed_resize_from_h=96)
    assert (resized != plain).any()
    varied = image(engine, "sd1", Mode.IMG2IMG, seed_resize_from_w=128, seed_resize_from_h=96, subseed=9,
                   subseed_strength=0.5)
    assert (varied != resized).any()


def test_a_pipeline_without_noise_streams_refuses_variation_seeds(engine):
    import diffusers

    class PlainImg2Img:
        @hookimpl
        def job_pipeline(self, pipeline):
            return diffusers.StableDiffusionImg2ImgPipeline.from_pipe(pipeline)

    engine.plugins.register(PlainImg2Img(), "plain-img2img")
    try:
        assert engine.generate(request("sd1", Mode.IMG2IMG)).images  # no variation: runs as before
        with pytest.raises(RequestError, match="variation seeds .* StableDiffusionImg2ImgPipeline"):
            engine.generate(request("sd1", Mode.IMG2IMG, subseed=9, subseed_strength=0.5))
    finally:
        engine.plugins.unregister("plain-img2img")


# ---- the pipelines themselves: plain streams must be diffusers' own draws, bit for bit ----------------

CASES = [("sd1", "img2img", 0.6), ("sd1", "inpaint", 0.6), ("sd1", "inpaint", 1.0), ("sd1-inpaint", "inpaint", 0.6),
         ("sdxl-base", "img2img", 0.6), ("sdxl-base", "inpaint", 1.0), ("sdxl-inpaint", "inpaint", 0.6),
         ("sdxl-refiner", "img2img", 1.0)]


@pytest.fixture(scope="module")
def tiny():
    from webui.models.tiny import tiny_pipeline

    made: dict = {}
    return lambda family: made.setdefault(family, tiny_pipeline(family, seed=0))


@pytest.mark.parametrize("family,mode,strength", CASES)
def test_plain_noise_streams_reproduce_diffusers_exactly(tiny, family, mode, strength):
    """The overrides re-implement diffusers 0.42.1's draws; with strength 0 they must change nothing."""
    from webui.generation.pipelines import job_pipeline
    from webui.models.families import FAMILIES as ALL

    base = tiny(family)
    pipe = job_pipeline(base, ALL[family], mode, base.scheduler)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red cube", image=picture(), strength=strength, num_inference_steps=3, output_type="latent",
              num_images_per_prompt=2)
    if mode == "inpaint":
        kw.update(mask_image=square_mask(), height=64, width=64)
    own = pipe(generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)], **kw).images
    pipe.noise_streams = [NoiseStream(3), NoiseStream(4)]
    streamed = pipe(generator=[s.generator for s in pipe.noise_streams], **kw).images
    assert torch.equal(own, streamed)
    pipe.noise_streams = [NoiseStream(3, 9, 0.5), NoiseStream(4, 10, 0.5)]
    varied = pipe(generator=[s.generator for s in pipe.noise_streams], **kw).images
    assert not torch.equal(own, varied)
    with pytest.raises(ValueError, match="noise_streams must be the streams"):
        pipe(generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)], **kw)
