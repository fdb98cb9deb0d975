"""External VAEs: chosen by name, Automatic by checkpoint name, None restores the built-in one;
and an fp16 decode that overflows is redone in fp32 instead of returning NaN/black."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_generate
from webui.models.convert.vae import vae_to_ldm
from webui.models.manager import ModelManager
from webui.models.tiny import tiny_pipeline
from webui.models.vae import decode


def write_vae(pipe_seed: int, path, ldm: bool) -> dict:
    vae = tiny_pipeline("sd1", seed=pipe_seed).vae
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(vae_to_ldm(sd, vae.config) if ldm else sd, str(path))
    return {k: v.clone() for k, v in vae.state_dict().items()}


@pytest.mark.parametrize("ldm", [True, False], ids=["ldm-keys", "diffusers-keys"])
def test_vae_by_name_and_back_to_none(ldm, tiny_checkpoint, paths):
    shutil.copy(tiny_checkpoint("sd1"), paths.folder("checkpoints") / "model.safetensors")
    expected = write_vae(7, paths.folder("vae") / "other.safetensors", ldm)
    manager = ModelManager(paths)
    base = tiny_generate(manager.load("model", vae="None").pipeline, "sd1")
    loaded = manager.load("model", vae="other.safetensors")
    assert loaded.vae.endswith("other.safetensors")
    for k, v in loaded.pipeline.vae.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert not np.array_equal(tiny_generate(loaded.pipeline, "sd1"), base)
    assert np.array_equal(tiny_generate(manager.load("model", vae="None").pipeline, "sd1"), base)


def test_automatic_vae_is_the_one_named_like_the_checkpoint(tiny_checkpoint, paths):
    shutil.copy(tiny_checkpoint("sd1"), paths.folder("checkpoints") / "model.safetensors")
    manager = ModelManager(paths)
    assert manager.load("model").vae is None  # nothing named like it yet
    write_vae(3, paths.folder("checkpoints") / "model.vae.safetensors", ldm=True)
    assert manager.load("model").vae.endswith("model.vae.safetensors")


def test_fp16_overflow_is_decoded_again_in_fp32(caplog):
    vae = tiny_pipeline("sdxl-base", seed=0).vae
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(3e4)  # activations past fp16's 65504 -> inf -> NaN
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    vae.to(torch.float16)
    with torch.no_grad():
        raw = vae.decode((latents / vae.config.scaling_factor).half()).sample
    assert not torch.isfinite(raw).all()  # the failure A1111 users see as black images
    image = decode(vae, latents)
    assert torch.isfinite(image).all() and vae.dtype == torch.float16
    assert "decoding again in float32" in caplog.text
