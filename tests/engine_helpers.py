"""Shared helpers for engine tests: pixel access and simple test pictures."""

from __future__ import annotations

import numpy as np
from PIL import Image

FAMILIES = ("sd1", "sd1-inpaint", "sd2", "sd2-inpaint", "sdxl-base", "sdxl-inpaint", "sdxl-refiner", "ssd-1b", "vega")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def picture(size: int = 64, seed: int = 0) -> Image.Image:
    """A smooth random picture (noise would make every img2img look alike)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def square_mask(size: int = 64, lo: int = 16, hi: int = 48) -> Image.Image:
    arr = np.zeros((size, size), dtype=np.uint8)
    arr[lo:hi, lo:hi] = 255
    return Image.fromarray(arr)


def linked_paths(data_dir, checkpoints: dict):
    """A data dir whose checkpoint folder links `{file name: checkpoint path}`."""
    from webui.settings import Paths

    paths = Paths.from_flags(data_dir=data_dir)
    folder = paths.folder("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in checkpoints.items():
        (folder / name).symlink_to(path)
    return paths


def make_engine(data_dir, checkpoints: dict, **options):
    """An Engine (built-in extensions) over a data dir whose checkpoint folder links `{name: file}`."""
    from webui.generation.engine import Engine, EngineOptions
    from webui.models.manager import ModelManager

    return Engine(ModelManager(linked_paths(data_dir, checkpoints)), EngineOptions(**options))
