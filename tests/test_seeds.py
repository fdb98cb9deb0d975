"""Seeds and noise as A1111 draws them with its CPU RNG: the same numbers on any device."""

from __future__ import annotations

import torch

from webui.generation.seeds import NoiseStream, cpu_generator, image_noise, job_seeds, slerp


def test_noise_is_the_cpu_generators_first_draw_and_the_generator_continues():
    noise, gen = image_noise((4, 8, 8), seed=1234)
    reference = torch.Generator("cpu").manual_seed(1234)
    assert torch.equal(noise, torch.randn((4, 8, 8), generator=reference))
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=reference))  # ancestral noise goes on


def test_known_values_pin_the_rng():
    """If torch ever changes its CPU normal sampler, every seed's picture changes: this test says so."""
    noise, _ = image_noise((4, 8, 8), seed=0)
    expected = torch.tensor([-1.1258398294448853, -1.152360200881958, -0.2505785822868347])
    assert torch.allclose(noise.flatten()[:3], expected)


def test_batch_and_random_seeds():
    assert job_seeds(10, 20, 3).seeds == [10, 11, 12] and job_seeds(10, 20, 3).subseeds == [20, 21, 22]
    assert job_seeds(2**32 - 1, 0, 2).seeds == [2**32 - 1, 0]  # wraps like a uint32
    drawn = job_seeds(-1, -1, 2)
    assert 0 <= drawn.seeds[0] < 2**32 and drawn.seeds[1] == (drawn.seeds[0] + 1) % 2**32


def test_variation_strength_interpolates_between_the_two_noises():
    base, _ = image_noise((4, 8, 8), seed=5)
    other, _ = image_noise((4, 8, 8), seed=9)
    assert torch.equal(image_noise((4, 8, 8), 5, 9, 0.0)[0], base)
    assert torch.allclose(image_noise((4, 8, 8), 5, 9, 1.0)[0], other, atol=1e-5)
    half = image_noise((4, 8, 8), 5, 9, 0.5)[0]
    assert torch.allclose(half, slerp(0.5, base, other))
    assert 0.9 < half.std() / base.std() < 1.1  # slerp keeps the noise's scale, a lerp would shrink it


def test_resize_seed_from_keeps_the_old_composition_in_the_middle():
    small, _ = image_noise((4, 8, 8), seed=3)
    big, _ = image_noise((4, 16, 16), seed=3, resize_from=(64, 64))
    assert torch.equal(big[:, 4:12, 4:12], small)
    shrunk, _ = image_noise((4, 4, 4), seed=3, resize_from=(64, 64))
    assert torch.equal(shrunk, small[:, 2:6, 2:6])


def test_noise_stream_keeps_the_variation_seed_in_step_over_several_draws():
    """img2img draws the VAE sample before the noise: every draw mixes the same position of both seeds."""
    plain, reference = NoiseStream(5), cpu_generator(5)
    full, other = NoiseStream(5, 9, 1.0), NoiseStream(9)
    for shape in [(4, 8, 8), (4, 8, 8), (4, 4, 4)]:
        assert torch.equal(plain.randn(shape), torch.randn(shape, generator=reference))
        assert torch.equal(full.randn(shape), other.randn(shape))  # strength 1 is exactly the variation seed's
    assert torch.equal(torch.randn(3, generator=full.generator), torch.randn(3, generator=reference))
