"""Shared fixtures: real tiny checkpoints written once per session, an A1111 data folder, no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from webui.settings import Paths


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """`tiny_checkpoint(family)` -> path of an A1111-layout .safetensors of that family (built once)."""
    from webui.models.convert import save_single_file
    from webui.models.tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-checkpoints")
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            path = folder / f"tiny-{family}.safetensors"
            save_single_file(tiny_pipeline(family, seed=0), path)
            made[family] = path
        return made[family]

    return make


@pytest.fixture
def paths(tmp_path) -> Paths:
    """An empty data dir with A1111's folder names."""
    p = Paths.from_flags(data_dir=tmp_path / "data")
    for kind in ("checkpoints", "vae", "lora"):
        p.folder(kind).mkdir(parents=True)
    return p


@pytest.fixture
def no_network(monkeypatch):
    """Offline for real: Hub offline flags plus a socket guard that refuses any non-loopback connect."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    attempts: list = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")):
            return real_connect(self, address)
        attempts.append(address)
        raise OSError(f"network disabled in this test: connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def tiny_generate(pipe, family: str, seed: int = 1, prompt: str = "a red cube"):
    """A 2-step 64x64 image (numpy, HWC in [0, 1]) from any family's pipeline, deterministic on CPU."""
    import numpy as np
    import torch
    from PIL import Image

    from webui.models.families import FAMILIES

    fam = FAMILIES[family]
    kw = dict(num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
    if not fam.refiner:
        kw.update(prompt=prompt, height=64, width=64)
    else:
        kw.update(prompt=prompt, strength=0.6, num_inference_steps=4)
    if fam.inpaint or fam.refiner:
        rng = np.random.default_rng(seed)
        kw["image"] = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if fam.inpaint:
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        kw.update(mask_image=Image.fromarray(mask), strength=1.0)
    return pipe(**kw).images[0]
