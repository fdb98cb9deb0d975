"""Seeds and initial noise exactly as A1111 draws them with its "CPU" RNG source.

Noise comes from a `torch.Generator("cpu")` per image, so a seed gives the same image on CPU and
GPU. The generator is then handed on to the pipeline, so ancestral/SDE noise continues the same
stream, like A1111's `ImageRNG`. Variation seeds mix two noises by slerp (A1111's formula,
including its normalisation over dim 1 of a (C, H, W) tensor), and "resize seed from" draws noise
at the old size and pastes it centred."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

SEED_MAX = 2**32 - 1


def resolve_seed(seed: int) -> int:
    """-1 (or any negative) means a fresh random seed, as in A1111."""
    return random.randrange(SEED_MAX) if seed is None or seed < 0 else int(seed)


@dataclass(frozen=True)
class JobSeeds:
    seeds: list[int]  # image i of the job uses seed + i
    subseeds: list[int]


def job_seeds(seed: int, subseed: int, images: int) -> JobSeeds:
    seed, subseed = resolve_seed(seed), resolve_seed(subseed)
    return JobSeeds([(seed + i) % (SEED_MAX + 1) for i in range(images)],
                    [(subseed + i) % (SEED_MAX + 1) for i in range(images)])


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two noise tensors (C, H, W)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class NoiseStream:
    """One image's random draws while its start latents are made, each taken as A1111 takes its first noise.

    `randn` draws from the seed's `generator` (which the pipeline keeps sampling with afterwards) and
    slerps in the same draw from the variation seed's own generator, kept in step. With "resize seed
    from" (width, height in pixels; (0, 0) is off) the draw is made at the old latent size from fresh
    seed/variation generators kept in step, and pasted centred into a full-size draw from `generator`.
    With strength 0 and no resize, every draw is exactly the plain generator's."""

    def __init__(self, seed: int, subseed: int = 0, strength: float = 0.0, resize_from: tuple[int, int] = (0, 0)):
        self.generator = cpu_generator(seed)
        self.strength = strength
        self.resize_from = resize_from if resize_from[0] > 0 and resize_from[1] > 0 else None
        self._sub = cpu_generator(subseed) if strength != 0 else None
        self._old = cpu_generator(seed) if self.resize_from else None  # the seed's draws at the old size

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """The next (C, H, W) draw, on the CPU."""
        old = shape if self.resize_from is None else (shape[0], self.resize_from[1] // 8, self.resize_from[0] // 8)
        if old == tuple(shape):
            return self._mix(torch.randn(shape, generator=self.generator, dtype=dtype))
        noise = self._mix(torch.randn(old, generator=self._old, dtype=dtype))
        x = torch.randn(shape, generator=self.generator, dtype=dtype)
        dx, dy = (shape[2] - old[2]) // 2, (shape[1] - old[1]) // 2
        w = old[2] if dx >= 0 else old[2] + 2 * dx
        h = old[1] if dy >= 0 else old[1] + 2 * dy
        tx, ty = max(dx, 0), max(dy, 0)
        dx, dy = max(-dx, 0), max(-dy, 0)
        x[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
        return x

    def _mix(self, noise: torch.Tensor) -> torch.Tensor:
        if self._sub is None:
            return noise
        sub = torch.randn(noise.shape, generator=self._sub, dtype=noise.dtype)
        return slerp(self.strength, noise.float(), sub.float()).to(noise.dtype)


def image_noise(
    shape: tuple[int, int, int],
    seed: int,
    subseed: int = 0,
    subseed_strength: float = 0.0,
    resize_from: tuple[int, int] = (0, 0),
) -> tuple[torch.Tensor, torch.Generator]:
    """Initial latent noise (C, H, W) for one image and the generator to continue sampling with."""
    stream = NoiseStream(seed, subseed, subseed_strength, resize_from)
    return stream.randn(shape), stream.generator
