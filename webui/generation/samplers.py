"""A1111 sampler names and schedule types, mapped to diffusers schedulers built fresh per request.

A1111 splits a sampler ("DPM++ 2M") from its schedule type ("Karras"); diffusers folds both into one
scheduler class plus flags. `SAMPLERS` is that mapping as data. Only the model's own facts are taken
from the loaded pipeline's scheduler config (betas, prediction type, zero terminal SNR, and whether it
asks for trailing timesteps); everything else comes from the table, so a model that ships, say,
"DPM++ 2M SDE Karras" as its default config cannot leak `algorithm_type` into a plain "DPM++ 2M".

"Automatic" is A1111 1.10's per-sampler default (`scheduler` option in `sd_samplers_kdiffusion.py`):
Karras for DPM++ 2M / SDE / 2S a and DPM2 / DPM2 a, Exponential for DPM++ 2M SDE (Heun), the model's
uniform sigmas (diffusers `timestep_spacing="linspace"`) for Euler, Euler a, LMS, Heun and UniPC, and
the CompVis `range(0, 1000, 1000 // steps) + 1` timesteps (diffusers "leading", A1111's "DDIM" schedule
type) for DDIM and PLMS. One deliberate difference: a model whose scheduler config asks for
`timestep_spacing="trailing"` (SDXL Turbo / Lightning configs) or has `rescale_betas_zero_snr` gets SGM
Uniform (trailing) under Automatic wherever the sampler supports it; in A1111 the user must pick it.

Zero terminal SNR: classes with `rescale_betas_zero_snr` keep the flag. The others (DPM++ SDE, DPM++ 2S a,
DPM2, DPM2 a, Heun, LMS, PLMS) get the same rescaled betas as `trained_betas`, with the last
alphas_cumprod clamped to 2**-24 as diffusers' zero-SNR Euler does (A1111 clamps to 4.9e-8), so that
sigma_max stays finite.

Not offered, because diffusers 0.42 has no faithful equivalent: DPM fast, DPM adaptive, Restart,
DDIM CFG++, and DPM++ 3M SDE (diffusers' third-order `sde-dpmsolver++` update has the opposite sign on
the constant of its second-derivative term compared with k-diffusion's `sample_dpmpp_3m_sde` and the
exact integral; diffusers documents its SDE solvers for orders 1-2 only). Schedule types Polyexponential,
KL Optimal, Align Your Steps, Simple and Normal have no diffusers flag and are refused likewise.
One approximation is kept because the issue requires the name: DPM++ 2S a (see its `note`). Every
`Sampler.note` says where the diffusers class differs from A1111, for the UI to show."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch
from diffusers import DDPMScheduler, SchedulerMixin


class SamplerError(ValueError):
    """An unknown sampler or schedule type, or a pair diffusers cannot run faithfully."""


@dataclass(frozen=True)
class ScheduleType:
    name: str  # A1111's internal name: "karras", "sgm_uniform"
    label: str  # what the UI and the infotext show: "Karras", "SGM Uniform"
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sampler:
    name: str  # A1111's label, written to the infotext as "Sampler: <name>"
    aliases: tuple[str, ...]  # A1111's aliases (API clients send these)
    scheduler: str  # diffusers class name
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)  # fixed class kwargs
    schedule_types: tuple[str, ...] = ()  # supported besides "automatic"
    default: str = "uniform"  # what "Automatic" means for this sampler (A1111 1.10)
    note: str = ""  # where the diffusers class differs from A1111's sampler

    @property
    def scheduler_class(self) -> type[SchedulerMixin]:
        return getattr(diffusers, self.scheduler)


SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform"),
    ScheduleType("karras", "Karras"),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    ScheduleType("ddim", "DDIM"),
    ScheduleType("beta", "Beta"),  # alpha = beta = 0.6, A1111's defaults; diffusers needs scipy (torchsde pulls it in)
)
_NO_SCHEDULE_EQUIVALENT = ("Polyexponential", "KL Optimal", "Align Your Steps", "Simple", "Normal")

# diffusers kwargs per schedule type. Sigma schedules start from the model's sigma_max, which Euler-like
# classes only reach with "linspace" spacing (under "leading" the first sigma is that of t=951 at 20 steps).
_SIGMA_FLAGS = {"karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas", "beta": "use_beta_sigmas"}
_SPACINGS: dict[str, dict[str, Any]] = {
    "uniform": {"timestep_spacing": "linspace"},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "ddim": {"timestep_spacing": "leading"},  # A1111's ddim_scheduler: the CompVis timesteps, +1 (steps_offset)
}
_SIGMAS = ("uniform", "karras", "exponential", "sgm_uniform", "ddim", "beta")  # classes with both kinds of flag
_SPACING_ONLY = ("uniform", "sgm_uniform", "ddim")  # classes with timestep_spacing but no sigma flags
_NO_CLIP = {"clip_sample": False, "set_alpha_to_one": False}  # latent models: never clip x0 (A1111 doesn't)
_SDE_2M = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, _SIGMAS, "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", {}, _SIGMAS, "karras",
            "Brownian-tree noise seeded from the request seed(s), as A1111 does"),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
            {**_SDE_2M, "solver_type": "midpoint"}, _SIGMAS, "exponential",
            "noise drawn per step from the pipeline generator, not from a Brownian tree"),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
            {**_SDE_2M, "solver_type": "heun"}, _SIGMAS, "exponential",
            "noise drawn per step from the pipeline generator, not from a Brownian tree"),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), "DPMSolverSinglestepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, ("uniform", "karras", "exponential", "beta"),
            "karras",
            "approximation: diffusers has no ancestral DPM-Solver++(2S); this is its stochastic second-order "
            "singlestep solver, one model call per step where A1111 makes two"),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", {}, _SPACING_ONLY),
    Sampler("Euler", ("k_euler",), "EulerDiscreteScheduler", {}, _SIGMAS),
    Sampler("LMS", ("k_lms",), "LMSDiscreteScheduler", {}, _SIGMAS),
    Sampler("Heun", ("k_heun",), "HeunDiscreteScheduler", {}, _SIGMAS),
    Sampler("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", {}, _SIGMAS, "karras",
            "A1111 also discards the next-to-last sigma; diffusers keeps it"),
    Sampler("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", {}, _SIGMAS, "karras",
            "A1111 also discards the next-to-last sigma; diffusers keeps it"),
    Sampler("DDIM", ("ddim",), "DDIMScheduler", _NO_CLIP, _SPACING_ONLY, "ddim"),
    Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False},
            _SPACING_ONLY, "ddim"),
    # A1111's UniPC: variant bh1, order 3, time-uniform steps ending at t=1/N (sigma_min, not 0: diffusers'
    # bh1 is NaN on a last step to sigma 0). A1111 ignores the schedule type here; sigma schedules would end
    # on a zero-length step at sigma_min, so only the spacings are offered.
    Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler",
            {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "predict_x0": True,
             "final_sigmas_type": "sigma_min"}, _SPACING_ONLY),
    Sampler("LCM", ("k_lcm",), "LCMScheduler", {"clip_sample": False}, (), "automatic",
            "diffusers' LCM picks its own timesteps from 50 distillation steps; no schedule types"),
    Sampler("DDPM", (), "DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"},
            _SPACING_ONLY, "ddim", "not an A1111 sampler (Forge/ComfyUI have one); Automatic is diffusers' leading"),
)  # fmt: skip

_NO_SAMPLER_EQUIVALENT = ("DPM fast", "DPM adaptive", "DPM++ 3M SDE", "Restart", "DDIM CFG++")

# The model's own facts; every other key comes from the table so base-config solver settings cannot leak in.
_MODEL_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


_SAMPLER_INDEX = {_key(n): s for s in SAMPLERS for n in (s.name, *s.aliases)}
_SCHEDULE_INDEX = {_key(n): t for t in SCHEDULE_TYPES for n in (t.name, t.label, *t.aliases)}


def find_sampler(name: str) -> Sampler:
    """By A1111 name or alias, any case ("Euler a", "euler a", "k_euler_a")."""
    found = _SAMPLER_INDEX.get(_key(name))
    if found is not None:
        return found
    if _key(name) in map(_key, _NO_SAMPLER_EQUIVALENT):
        raise SamplerError(f"Sampler {name!r} has no faithful diffusers equivalent; known: {_names(SAMPLERS)}")
    raise SamplerError(f"Unknown sampler {name!r}; known: {_names(SAMPLERS)}")


def find_schedule_type(name: str) -> ScheduleType:
    """By A1111 name, label or alias, any case ("karras", "Karras", "SGMUniform")."""
    found = _SCHEDULE_INDEX.get(_key(name))
    if found is not None:
        return found
    labels = ", ".join(t.label for t in SCHEDULE_TYPES)
    if _key(name).replace("_", " ") in map(_key, _NO_SCHEDULE_EQUIVALENT):
        raise SamplerError(f"Schedule type {name!r} has no diffusers equivalent; known: {labels}")
    raise SamplerError(f"Unknown schedule type {name!r}; known: {labels}")


def split_sampler_name(name: str) -> tuple[Sampler, ScheduleType | None]:
    """A sampler name, or a pre-1.9 combined one ("DPM++ 2M Karras") split as A1111's API still does."""
    key = _key(name)
    if key in _SAMPLER_INDEX:
        return _SAMPLER_INDEX[key], None
    for schedule in SCHEDULE_TYPES[1:]:
        for suffix in (schedule.label, *schedule.aliases):
            head = key.removesuffix(" " + _key(suffix))
            if head != key and head in _SAMPLER_INDEX:
                return _SAMPLER_INDEX[head], schedule
    return find_sampler(name), None  # raises with the known names


def model_wants_trailing(base_config: Mapping[str, Any]) -> bool:
    """Distilled (Turbo / Lightning) configs and zero-terminal-SNR models need the last timestep, t=999."""
    return base_config.get("timestep_spacing") == "trailing" or bool(base_config.get("rescale_betas_zero_snr"))


def resolve_schedule_type(
    base_config: Mapping[str, Any], sampler: str | Sampler, schedule_type: str = "Automatic"
) -> ScheduleType:
    """The concrete schedule type a request runs with ("Automatic" resolved), for the infotext too.

    Automatic resolves to the sampler's own class schedule only for LCM; there the label stays "Automatic"."""
    s, suffix = split_sampler_name(sampler) if isinstance(sampler, str) else (sampler, None)
    chosen = suffix or find_schedule_type(schedule_type)  # a legacy suffix wins, as in A1111
    if chosen.name == "automatic":
        wanted = "sgm_uniform" if model_wants_trailing(base_config) and "sgm_uniform" in s.schedule_types else s.default
        return find_schedule_type(wanted)
    if chosen.name not in s.schedule_types:
        supported = ", ".join(["Automatic", *(find_schedule_type(n).label for n in s.schedule_types)])
        raise SamplerError(
            f"Sampler {s.name!r} does not support schedule type {chosen.label!r}; supported: {supported}"
        )
    return chosen


def build_scheduler(
    base_config: Mapping[str, Any],
    sampler: str | Sampler,
    schedule_type: str = "Automatic",
    *,
    seed: int | Sequence[int] | None = None,
    steps: int | None = None,
) -> SchedulerMixin:
    """A new scheduler for one job; `base_config` (the loaded pipeline's scheduler config) is only read.

    `seed` makes DPM++ SDE's Brownian-tree noise reproducible: pass the request seed, or one seed per
    image of the batch (A1111 seeds one tree per image). Without it diffusers draws a random tree seed.
    Every other stochastic sampler takes its noise from the generator the pipeline call passes to `step`.
    `steps` (when known) corrects the one-step uniform schedule to A1111's t=999."""
    s, _ = split_sampler_name(sampler) if isinstance(sampler, str) else (sampler, None)
    schedule = resolve_schedule_type(base_config, sampler, schedule_type)
    cls = s.scheduler_class
    params = inspect.signature(cls.__init__).parameters
    config = {k: base_config[k] for k in _MODEL_KEYS if k in base_config}
    if base_config.get("rescale_betas_zero_snr"):
        if "rescale_betas_zero_snr" in params:
            config["rescale_betas_zero_snr"] = True
        else:
            config["trained_betas"] = _zero_snr_betas(base_config)
    if "steps_offset" in params:
        config["steps_offset"] = 1  # A1111's +1; diffusers' SD pipelines force it anyway (with a warning)
    config.update(s.options)
    config.update(_schedule_kwargs(schedule, params))
    if steps == 1 and config.get("timestep_spacing") == "linspace":
        # k-diffusion's uniform schedule for one step is t=999; diffusers' linspace gives t=0 (a no-op
        # step, noise out). Trailing is the same as A1111 there: one-step SDXL Turbo with Euler a works.
        config["timestep_spacing"] = "trailing"
    if "noise_sampler_seed" in params:
        config["noise_sampler_seed"] = list(seed) if isinstance(seed, Sequence) else seed
    unknown = set(config) - set(params)
    if unknown:  # a table error, not a user error: fail loudly rather than let diffusers ignore it
        raise SamplerError(f"{cls.__name__} takes no {', '.join(sorted(unknown))} (sampler {s.name!r})")
    return cls.from_config(config)


def _schedule_kwargs(schedule: ScheduleType, params: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {flag: False for flag in _SIGMA_FLAGS.values() if flag in params}
    if schedule.name in _SIGMA_FLAGS:
        kwargs[_SIGMA_FLAGS[schedule.name]] = True
        if "timestep_spacing" in params:
            kwargs["timestep_spacing"] = "linspace"
    elif schedule.name in _SPACINGS and "timestep_spacing" in params:
        kwargs.update(_SPACINGS[schedule.name])
    return kwargs


def _zero_snr_betas(base_config: Mapping[str, Any]) -> list[float]:
    """Zero-terminal-SNR betas with the last alphas_cumprod at 2**-24, as diffusers' Euler sets it."""
    plain = DDPMScheduler.from_config(
        {k: base_config[k] for k in _MODEL_KEYS if k in base_config and k != "prediction_type"},
        rescale_betas_zero_snr=True,
    )
    alphas_cumprod = plain.alphas_cumprod.to(torch.float64).clone()
    alphas_cumprod[-1] = 2**-24
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return (1 - alphas_cumprod / previous).tolist()


def _names(items: Sequence[Sampler]) -> str:
    return ", ".join(item.name for item in items)
