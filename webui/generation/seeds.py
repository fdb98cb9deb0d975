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


def image_noise(
    shape: tuple[int, int, int],
    seed: int,
    subseed: int = 0,
    subseed_strength: float = 0.0,
    resize_from: tuple[int, int] = (0, 0),
) -> tuple[torch.Tensor, torch.Generator]:
    """Initial latent noise (C, H, W) for one image and the generator to continue sampling with.

    `resize_from` is A1111's "resize seed from" (width, height) in pixels; (0, 0) is off."""
    generator = cpu_generator(seed)
    from_w, from_h = resize_from
    noise_shape = shape if from_w <= 0 or from_h <= 0 else (shape[0], from_h // 8, from_w // 8)
    subnoise = torch.randn(noise_shape, generator=cpu_generator(subseed)) if subseed_strength != 0 else None
    if noise_shape != shape:
        noise = torch.randn(noise_shape, generator=cpu_generator(seed))
    else:
        noise = torch.randn(shape, generator=generator)
    if subnoise is not None:
        noise = slerp(subseed_strength, noise, subnoise)
    if noise_shape != shape:
        x = torch.randn(shape, generator=generator)
        dx, dy = (shape[2] - noise_shape[2]) // 2, (shape[1] - noise_shape[1]) // 2
        w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
        h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
        tx, ty = max(dx, 0), max(dy, 0)
        dx, dy = max(-dx, 0), max(-dy, 0)
        x[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
        noise = x
    return noise, generator
