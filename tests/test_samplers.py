"""A1111 sampler / schedule-type names -> diffusers schedulers, run on real tiny pipelines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from webui.generation.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    SamplerError,
    build_scheduler,
    find_sampler,
    find_schedule_type,
    resolve_schedule_type,
    split_sampler_name,
)
from webui.models.tiny import tiny_pipeline

PAIRS = [(s.name, t) for s in SAMPLERS for t in ("automatic", *s.schedule_types)]
UNSUPPORTED = [(s.name, t.name) for s in SAMPLERS for t in SCHEDULE_TYPES[1:] if t.name not in s.schedule_types]
# What each resolved schedule type must leave in the scheduler's config, written out independently of the module.
EXPECTED_FLAGS = {
    "uniform": {"timestep_spacing": "linspace"},
    "karras": {"use_karras_sigmas": True, "timestep_spacing": "linspace"},  # sigma_max is the sigma of t=999
    "exponential": {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
    "beta": {"use_beta_sigmas": True, "timestep_spacing": "linspace"},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "ddim": {"timestep_spacing": "leading", "steps_offset": 1},
    "automatic": {},
}
SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
pytestmark = pytest.mark.filterwarnings("ignore:Should have ta>=t0")  # torchsde on diffusers' float32 sigma range


@pytest.fixture(scope="module")
def sd1():
    return tiny_pipeline("sd1", seed=0)


@pytest.fixture(scope="module")
def sd2():
    return tiny_pipeline("sd2", seed=0)  # prediction_type v_prediction


def generate(pipe, scheduler, seed: int = 1, **kwargs) -> np.ndarray:
    job = StableDiffusionPipeline.from_pipe(pipe, scheduler=scheduler)
    job.set_progress_bar_config(disable=True)
    return job(
        "a red cube", num_inference_steps=3, height=64, width=64, output_type="np",
        generator=torch.Generator("cpu").manual_seed(seed), **kwargs,
    ).images  # fmt: skip


@pytest.mark.parametrize(("sampler", "schedule"), PAIRS)
def test_every_supported_pair_generates_with_the_tabled_scheduler(sd1, sampler, schedule):
    s = find_sampler(sampler)
    scheduler = build_scheduler(sd1.scheduler.config, sampler, schedule, seed=7)
    resolved = resolve_schedule_type(sd1.scheduler.config, sampler, schedule)
    config = scheduler.config
    assert type(scheduler).__name__ == s.scheduler
    assert {k: config[k] for k in s.options} == dict(s.options)
    for key, value in EXPECTED_FLAGS[resolved.name].items():
        assert config.get(key, "linspace") == value, key  # DPMSolverSinglestep has no spacing option: linspace
    assert sum(bool(config.get(flag)) for flag in SIGMA_FLAGS) == (resolved.name in ("karras", "exponential", "beta"))
    assert config.prediction_type == "epsilon"
    image = generate(sd1, scheduler)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


@pytest.mark.parametrize(("sampler", "schedule"), UNSUPPORTED)
def test_unsupported_pairs_name_both(sd1, sampler, schedule):
    label = find_schedule_type(schedule).label
    with pytest.raises(SamplerError, match="does not support") as error:
        build_scheduler(sd1.scheduler.config, sampler, schedule)
    assert repr(sampler) in str(error.value) and repr(label) in str(error.value)
    assert "supported: Automatic" in str(error.value)


def test_euler_a_has_no_karras_in_diffusers(sd1):
    with pytest.raises(SamplerError, match="'Euler a' does not support schedule type 'Karras'"):
        build_scheduler(sd1.scheduler.config, "Euler a", "Karras")


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Euler a", "Euler a"), ("euler A", "Euler a"), ("k_euler_a", "Euler a"), ("K_EULER_ANCESTRAL", "Euler a"),
     ("dpm++ 2m", "DPM++ 2M"), ("k_dpmpp_2m_sde", "DPM++ 2M SDE"), ("k_dpmpp_sde", "DPM++ SDE"), ("plms", "PLMS"),
     ("  DPM++   2S a ", "DPM++ 2S a"), ("k_lcm", "LCM"), ("ddpm", "DDPM")],
)  # fmt: skip
def test_sampler_lookup_by_alias_and_case(query, expected):
    assert find_sampler(query).name == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [("karras", "Karras"), ("Karras", "Karras"), ("automatic", "Automatic"), ("SGMUniform", "SGM Uniform"),
     ("sgm_uniform", "SGM Uniform"), ("sgm uniform", "SGM Uniform"), ("BETA", "Beta"), ("ddim", "DDIM")],
)  # fmt: skip
def test_schedule_type_lookup(query, expected):
    assert find_schedule_type(query).label == expected


def test_unknown_names_list_the_known_ones():
    with pytest.raises(SamplerError, match="Unknown sampler 'Eulr'.*known: DPM\\+\\+ 2M, .*Euler a"):
        find_sampler("Eulr")
    with pytest.raises(SamplerError, match="no faithful diffusers equivalent"):
        find_sampler("DPM adaptive")
    with pytest.raises(SamplerError, match="no faithful diffusers equivalent"):
        find_sampler("DPM++ 3M SDE")
    with pytest.raises(SamplerError, match="'Align Your Steps' has no diffusers equivalent; known: Automatic"):
        find_schedule_type("Align Your Steps")
    with pytest.raises(SamplerError, match="Unknown schedule type 'fast'"):
        find_schedule_type("fast")


def test_names_and_aliases_are_unique():
    keys = [k for s in SAMPLERS for k in {n.casefold() for n in (s.name, *s.aliases)}]
    assert len(keys) == len(set(keys))
    owners: dict[str, set[str]] = {}
    for t in SCHEDULE_TYPES:
        for k in (t.name, t.label, *t.aliases):
            owners.setdefault(k.casefold(), set()).add(t.name)
    assert all(len(names) == 1 for names in owners.values())


@pytest.mark.parametrize(
    ("legacy", "sampler", "schedule"),
    [("DPM++ 2M Karras", "DPM++ 2M", "Karras"), ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras"),
     ("dpm++ 2m sde heun exponential", "DPM++ 2M SDE Heun", "Exponential"), ("LMS Karras", "LMS", "Karras"),
     ("Euler SGM Uniform", "Euler", "SGM Uniform"), ("Euler a", "Euler a", None)],
)  # fmt: skip
def test_pre_1_9_combined_names_split_like_a1111(sd1, legacy, sampler, schedule):
    s, t = split_sampler_name(legacy)
    assert (s.name, t.label if t else None) == (sampler, schedule)
    if schedule:  # the suffix wins over the separate field, as in A1111's get_sampler_and_scheduler
        assert resolve_schedule_type(sd1.scheduler.config, legacy, "Uniform").label == schedule


@pytest.mark.parametrize(
    ("sampler", "plain", "trailing"),
    [("DPM++ 2M", "karras", "sgm_uniform"), ("DPM++ SDE", "karras", "sgm_uniform"), ("DPM2 a", "karras", "sgm_uniform"),
     ("DPM++ 2M SDE", "exponential", "sgm_uniform"), ("Euler", "uniform", "sgm_uniform"),
     ("Euler a", "uniform", "sgm_uniform"), ("UniPC", "uniform", "sgm_uniform"), ("DDIM", "ddim", "sgm_uniform"),
     ("PLMS", "ddim", "sgm_uniform"), ("DPM++ 2S a", "karras", "karras"), ("LCM", "automatic", "automatic")],
)  # fmt: skip
def test_automatic_is_a1111_default_unless_the_model_asks_for_trailing(sd1, sampler, plain, trailing):
    config = dict(sd1.scheduler.config, timestep_spacing="leading")  # SD/SDXL configs say "leading": not a request
    assert resolve_schedule_type(config, sampler).name == plain
    assert resolve_schedule_type(dict(config, timestep_spacing="trailing"), sampler).name == trailing
    assert resolve_schedule_type(dict(config, rescale_betas_zero_snr=True), sampler).name == trailing


def _model_sigmas(scheduler) -> np.ndarray:
    ac = scheduler.alphas_cumprod.double().numpy()
    return ((1 - ac) / ac) ** 0.5


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "LMS"])
def test_sigma_schedules_match_k_diffusion(sd1, sampler):
    """A1111 builds these with k-diffusion's get_sigmas_karras / _exponential from the model's sigma range."""
    n = 10
    base = dict(sd1.scheduler.config, timestep_spacing="leading")  # as SDXL's config says
    karras = build_scheduler(base, sampler, "Karras")
    karras.set_timesteps(n)
    model = _model_sigmas(karras)
    lo, hi = model[0], model[-1]
    ramp = np.linspace(0, 1, n)
    expected = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    np.testing.assert_allclose(karras.sigmas[:n].numpy(), expected, rtol=1e-4)
    assert karras.sigmas[n] == 0
    exponential = build_scheduler(base, sampler, "Exponential")
    exponential.set_timesteps(n)
    expected = np.exp(np.linspace(math.log(hi), math.log(lo), n))
    np.testing.assert_allclose(exponential.sigmas[:n].numpy(), expected, rtol=1e-4)


def test_timesteps_match_a1111(sd1):
    n = 20
    base = dict(sd1.scheduler.config, timestep_spacing="leading", steps_offset=0)
    uniform = build_scheduler(base, "Euler", "Uniform")  # k-diffusion get_sigmas: t = linspace(999, 0)
    uniform.set_timesteps(n)
    np.testing.assert_allclose(uniform.timesteps.numpy(), np.linspace(999, 0, n), atol=1e-3)
    sgm = build_scheduler(base, "Euler", "SGM Uniform")  # A1111: linspace(999, 0, n + 1)[:-1]
    sgm.set_timesteps(n)
    np.testing.assert_allclose(sgm.timesteps.numpy(), np.linspace(999, 0, n + 1)[:-1], atol=1.0)
    ddim = build_scheduler(base, "DDIM")  # CompVis / A1111: range(0, 1000, 1000 // n) + 1
    ddim.set_timesteps(n)
    assert ddim.timesteps.tolist() == [t + 1 for t in range(0, 1000, 1000 // n)][::-1]


def test_v_prediction_is_kept(sd2):
    assert sd2.scheduler.config.prediction_type == "v_prediction"
    for s in SAMPLERS:
        assert build_scheduler(sd2.scheduler.config, s.name).config.prediction_type == "v_prediction", s.name
    assert np.isfinite(generate(sd2, build_scheduler(sd2.scheduler.config, "DPM++ 2M"))).all()


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_zero_terminal_snr_is_kept(sd2, sampler):
    base = dict(sd2.scheduler.config, rescale_betas_zero_snr=True)
    scheduler = build_scheduler(base, sampler, seed=3)
    reference = build_scheduler(base, "Euler")  # diffusers' own zero-SNR handling: last alphas_cumprod 2**-24
    if "rescale_betas_zero_snr" in scheduler.config:
        assert scheduler.config.rescale_betas_zero_snr is True
    else:  # the class lacks the flag: the same rescaled betas arrive as trained_betas
        assert scheduler.config.trained_betas is not None
        torch.testing.assert_close(scheduler.alphas_cumprod, reference.alphas_cumprod)
    assert scheduler.alphas_cumprod[-1] <= 2**-24 < sd2.scheduler.alphas_cumprod[-1] / 1000
    assert scheduler.config.prediction_type == "v_prediction"
    s = find_sampler(sampler)
    expected = "sgm_uniform" if "sgm_uniform" in s.schedule_types else s.default
    assert resolve_schedule_type(base, sampler).name == expected
    if expected == "sgm_uniform":
        assert scheduler.config.timestep_spacing == "trailing"
    assert np.isfinite(generate(sd2, scheduler)).all()


@pytest.mark.parametrize("sampler", ["Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ SDE", "DDPM"])
def test_stochastic_samplers_repeat_bitwise(sd1, sampler):
    first = generate(sd1, build_scheduler(sd1.scheduler.config, sampler, seed=5), seed=5)
    again = generate(sd1, build_scheduler(sd1.scheduler.config, sampler, seed=5), seed=5)
    assert np.array_equal(first, again)
    other = generate(sd1, build_scheduler(sd1.scheduler.config, sampler, seed=6), seed=6)
    assert not np.array_equal(first, other)


def test_dpmpp_sde_noise_follows_the_seed_argument(sd1):
    """The Brownian tree is seeded from `seed`, not from the pipeline generator; one tree per image."""
    base = sd1.scheduler.config
    a = generate(sd1, build_scheduler(base, "DPM++ SDE", seed=5))
    b = generate(sd1, build_scheduler(base, "DPM++ SDE", seed=6))
    assert not np.array_equal(a, b)
    pair = generate(sd1, build_scheduler(base, "DPM++ SDE", seed=[5, 6]), num_images_per_prompt=2)
    other = generate(sd1, build_scheduler(base, "DPM++ SDE", seed=[5, 7]), num_images_per_prompt=2)
    assert np.array_equal(pair[0], other[0]) and not np.array_equal(pair[1], other[1])


def test_base_config_is_only_read(sd1):
    scheduler = sd1.scheduler
    before = dict(scheduler.config)
    made = [build_scheduler(scheduler.config, *pair, seed=1) for pair in PAIRS]
    made.append(build_scheduler(dict(scheduler.config, rescale_betas_zero_snr=True), "Heun"))
    assert dict(scheduler.config) == before and sd1.scheduler is scheduler
    assert len({id(m) for m in made}) == len(made) and all(m is not scheduler for m in made)


def test_solver_settings_of_the_model_config_do_not_leak(sd1):
    """A model shipping "DPM++ 2M SDE Karras" as its scheduler must still run plain DPM++ 2M when asked."""
    base = dict(sd1.scheduler.config, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True, solver_order=3)
    config = build_scheduler(base, "DPM++ 2M", "Uniform").config
    assert (config.algorithm_type, config.use_karras_sigmas, config.solver_order) == ("dpmsolver++", False, 2)


@pytest.mark.parametrize("sampler", ["Euler a", "Euler", "LMS", "Heun"])
def test_one_step_uniform_schedule_starts_from_pure_noise_like_a1111(sd1, sampler):
    """SDXL Turbo's classic setting (Euler a, 1 step): k-diffusion samples at t=999, never at t=0."""
    sched = build_scheduler(sd1.scheduler.config, sampler, "Automatic", steps=1)
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [999]
    more = build_scheduler(sd1.scheduler.config, sampler, "Automatic", steps=4)
    more.set_timesteps(4)
    assert more.timesteps.tolist()[0] == 999 and more.config.timestep_spacing == "linspace"
