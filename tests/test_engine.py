"""The engine on real tiny checkpoints: every mode x family, seeds, batches, saving and infotext."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from engine_helpers import FAMILIES, picture, pixels, square_mask
from webui import hookimpl
from webui.generation.engine import Engine, EngineOptions
from webui.hooktypes import ExtraNetworkType
from webui.generation.infotext import read_infotext
from webui.generation.request import GenerationRequest, MaskedContent, Mode, ResizeMode
from webui.models.manager import ModelManager
from webui.settings import Paths


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Engine:
    paths = Paths.from_flags(data_dir=tmp_path_factory.mktemp("engine-data"))
    folder = paths.folder("checkpoints")
    folder.mkdir(parents=True)
    for family in FAMILIES:
        os.symlink(tiny_checkpoint(family), folder / f"tiny-{family}.safetensors")
    return Engine(ModelManager(paths), EngineOptions())


def request(family: str = "sd1", **kw) -> GenerationRequest:
    base = dict(prompt="a red cube", checkpoint=f"tiny-{family}", steps=2, width=64, height=64, seed=7,
                sampler="Euler")
    base.update(kw)
    return GenerationRequest(**base)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_on_every_family(engine, family, mode):
    kw = {}
    if mode is not Mode.TXT2IMG:
        kw.update(init_image=picture(), denoising_strength=0.6, steps=3)
    if mode is Mode.INPAINT:
        kw.update(mask=square_mask())
    result = engine.generate(request(family, mode=mode, **kw))
    (item,) = result.images
    assert item.image.size == (64, 64)
    assert item.path.is_file() and item.path.parent.parent.name == f"{mode.value}-images"
    assert read_infotext(Image.open(item.path)).startswith("a red cube\nSteps: ")
    assert np.isfinite(pixels(item.image)).all()
    if mode is Mode.INPAINT:  # outside the blurred mask the original picture comes back exactly
        assert (pixels(item.image)[:4, :4] == pixels(picture())[:4, :4]).all()
        assert (pixels(item.image)[24:40, 24:40] != pixels(picture())[24:40, 24:40]).any()


def test_same_request_same_pixels_and_seed_changes_them(engine):
    a = engine.generate(request(seed=11, sampler="Euler a")).images[0]
    b = engine.generate(request(seed=11, sampler="Euler a")).images[0]
    c = engine.generate(request(seed=12, sampler="Euler a")).images[0]
    assert (pixels(a.image) == pixels(b.image)).all()
    assert (pixels(a.image) != pixels(c.image)).any()


def test_batch_images_use_seed_plus_index_and_match_single_runs(engine):
    result = engine.generate(request(seed=100, batch_size=2, batch_count=2, sampler="Euler a"))
    assert result.seeds == [100, 101, 102, 103]
    assert [re.search(r"Seed: (\d+)", t).group(1) for t in result.infotexts] == ["100", "101", "102", "103"]
    single = engine.generate(request(seed=102, sampler="Euler a")).images[0]
    assert np.abs(pixels(single.image) - pixels(result.images[2].image)).max() <= 1  # batched matmuls may round differently


def test_random_seed_is_resolved_and_recorded(engine):
    result = engine.generate(request(seed=-1))
    assert result.request.seed == result.seeds[0] >= 0
    assert f"Seed: {result.seeds[0]}," in result.infotexts[0]


def test_variation_seed_moves_the_image_gradually(engine):
    base = pixels(engine.generate(request(seed=5)).images[0].image)
    small = pixels(engine.generate(request(seed=5, subseed=9, subseed_strength=0.1)).images[0].image)
    full = pixels(engine.generate(request(seed=5, subseed=9, subseed_strength=1.0)).images[0].image)
    other = pixels(engine.generate(request(seed=9)).images[0].image)
    assert 0 < np.abs(small - base).mean() < np.abs(full - base).mean()
    assert np.abs(full - other).max() <= 2  # strength 1 is the variation seed's own noise
    info = engine.generate(request(seed=5, subseed=9, subseed_strength=0.1)).infotexts[0]
    assert "Variation seed: 9, Variation seed strength: 0.1" in info


def test_sizes_are_rounded_to_multiples_of_8_with_a_notice(engine):
    result = engine.generate(request(width=70, height=64))
    assert result.images[0].image.size == (64, 64)
    assert any("width 70 rounded down to 64" in n for n in result.notices)


class LoraTags:
    """A stand-in for the LoRA extension: it only declares the <lora:...> tag."""

    @hookimpl
    def register_extra_networks(self, register):
        register(ExtraNetworkType("lora", "LoRA"))


def test_prompt_emphasis_and_extra_network_tags(engine):
    engine.plugins.register(LoraTags(), "lora-tags")
    try:
        plain = engine.generate(request(prompt="a red cube"))
        tagged = engine.generate(request(prompt="a red cube<lora:someLora:0.8><hypernet:x:1>"))
        weighted = engine.generate(request(prompt="a (red:1.6) cube"))
    finally:
        engine.plugins.unregister("lora-tags")
    assert (pixels(plain.images[0].image) == pixels(tagged.images[0].image)).all()  # the tags are not text
    assert [(c.name, c.args) for c in tagged.extra_networks] == [("lora", ("someLora", "0.8"))]
    assert tagged.request.extra_networks == {"lora": tagged.extra_networks}
    assert "unknown extra network <hypernet:...>: no extension handles it; ignored" in tagged.notices
    assert tagged.infotexts[0].startswith("a red cube<lora:someLora:0.8><hypernet:x:1>\n")  # infotext keeps tags
    assert (pixels(plain.images[0].image) != pixels(weighted.images[0].image)).any()


def test_clip_skip_changes_the_image_and_is_recorded(engine):
    one = engine.generate(request(clip_skip=1)).images[0]
    two = engine.generate(request(clip_skip=2)).images[0]
    assert (pixels(one.image) != pixels(two.image)).any()
    assert "Clip skip: 2" in two.infotext and "Clip skip" not in one.infotext


def test_resize_modes_frame_the_init_image_differently(engine):
    wide = picture(64).resize((128, 64))
    outs = [pixels(engine.generate(request(mode=Mode.IMG2IMG, init_image=wide, resize_mode=m, denoising_strength=0.3,
                                           steps=4)).images[0].image) for m in ResizeMode]
    assert all((outs[i] != outs[j]).any() for i in range(3) for j in range(i + 1, 3))


@pytest.mark.parametrize("content", list(MaskedContent))
def test_masked_content_options(engine, content):
    req = request("sd1", mode=Mode.INPAINT, init_image=picture(), mask=square_mask(), steps=4,
                  denoising_strength=0.75)
    req.inpaint.masked_content = content
    result = engine.generate(req)
    assert f"Masked content: {content.label}" in result.infotexts[0]
    base = engine.generate(request("sd1", mode=Mode.INPAINT, init_image=picture(), mask=square_mask(), steps=4,
                                   denoising_strength=0.75))
    if content is not MaskedContent.ORIGINAL:
        assert (pixels(result.images[0].image)[24:40, 24:40] != pixels(base.images[0].image)[24:40, 24:40]).any()


def test_inpaint_only_masked_keeps_everything_outside_the_crop(engine):
    big = picture(128)
    mask = square_mask(128, 80, 96)
    req = request("sd1", mode=Mode.INPAINT, init_image=big, mask=mask, steps=3, width=64, height=64)
    req.inpaint.only_masked, req.inpaint.only_masked_padding, req.inpaint.mask_blur = True, 8, 2
    out = engine.generate(req).images[0]
    assert out.image.size == (128, 128)  # the whole picture comes back, not the crop
    assert (pixels(out.image)[:60, :60] == pixels(big)[:60, :60]).all()
    assert (pixels(out.image)[84:92, 84:92] != pixels(big)[84:92, 84:92]).any()
    assert "Inpaint area: Only masked, Masked area padding: 8" in out.infotext


def test_invert_mask_repaints_the_outside(engine):
    req = request("sd1", mode=Mode.INPAINT, init_image=picture(), mask=square_mask(), steps=3)
    req.inpaint.invert_mask, req.inpaint.mask_blur = True, 0
    out = engine.generate(req).images[0]
    assert (pixels(out.image)[20:44, 20:44] == pixels(picture())[20:44, 20:44]).all()
    assert (pixels(out.image)[:8, :8] != pixels(picture())[:8, :8]).any()
    assert "Mask mode: Inpaint not masked" in out.infotext


def test_sdxl_micro_conditioning_reaches_the_model(engine):
    a = engine.generate(request("sdxl-base")).images[0]
    req = request("sdxl-base")
    req.sdxl.original_size = (256, 256)
    b = engine.generate(req).images[0]
    assert (pixels(a.image) != pixels(b.image)).any()
    assert "Original size: 256x256" in b.infotext


def test_outdir_and_formats(engine, tmp_path):
    from dataclasses import replace

    for fmt in ("jpg", "webp"):
        e = Engine(engine.manager, replace(engine.options, outdir=tmp_path, samples_format=fmt))
        item = e.generate(request()).images[0]
        assert item.path.parent == tmp_path and item.path.suffix == f".{fmt}"
        assert read_infotext(Image.open(item.path)) == item.infotext


def test_unwritable_output_folder_still_returns_the_image(engine, tmp_path):
    from dataclasses import replace

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    e = Engine(engine.manager, replace(engine.options, outdir=blocker / "sub"))
    result = e.generate(request())
    assert len(result.images) == 1 and result.images[0].path is None
    assert any("could not save" in n for n in result.notices)
