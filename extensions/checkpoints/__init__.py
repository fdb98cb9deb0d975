"""Built-in extension: which checkpoint and VAE a job runs on, family-aware defaults, the SDXL refiner,
and the model keys of the infotext. It uses only the public hooks, like any third-party extension.

Per-request options live in `request.extensions["checkpoints"]`:
    {"checkpoint": "<name>", "vae": "Automatic" | "None" | "<file in models/VAE>", "refiner": "<checkpoint>",
     "switch_at": 0.8}
`override_settings` keys `sd_model_checkpoint` and `sd_vae` (A1111's names) win over the request fields;
`request.checkpoint` wins over the "checkpoint" option (which the UI's top bar sets)."""

from __future__ import annotations

import logging
import re
from typing import Any

from extensions.checkpoints.refiner import DEFAULT_SWITCH_AT, check_refiner, refine, refiner_kwargs, switch_at
from webui import hookimpl
from webui.hooktypes import APIScript, UISection

log = logging.getLogger(__name__)

NAME = "checkpoints"
__version__ = "1.0"

# Distilled SDXL variants want few steps and little or no CFG (their model cards' settings).
VARIANT_DEFAULTS = {
    "turbo": {"steps": 1, "cfg_scale": 1.0, "sampler": "Euler a", "schedule_type": "Automatic"},
    "lightning": {"steps": 4, "cfg_scale": 1.0, "sampler": "Euler", "schedule_type": "SGM Uniform"},
}


HASH_QUERY = re.compile(r"[0-9a-fA-F]{8,64}")


def options(request) -> dict[str, Any]:
    return request.extensions.get(NAME) or {}


def vae_choice(request, manager) -> str:
    return request.override_settings.get("sd_vae") or options(request).get("vae") or manager.default_vae


@hookimpl
def select_model(request, manager):
    name = request.override_settings.get("sd_model_checkpoint") or request.checkpoint or options(request).get("checkpoint")
    model = manager.load(_by_hash(name, manager), vae=vae_choice(request, manager))
    check_refiner(options(request), model, manager)  # before the base run, not after it
    return model


def _by_hash(query, manager):
    """A hash nobody has computed here yet (an A1111 infotext, an API client) is found by hashing the
    files whose hash is still pending, once (hashes are cached by path, size and mtime)."""
    if not isinstance(query, str) or not HASH_QUERY.fullmatch(query.strip()):
        return query
    try:
        return manager.find(query)
    except LookupError:
        pending = [e for e in manager.checkpoints() if e.sha256 is None and e.format != "diffusers"]
        if not pending:
            raise
        log.info("checkpoint hash %s not known yet: hashing %d file(s)", query, len(pending))
        for entry in pending:
            manager.registry.with_hash(entry)
        return manager.find(query)


@hookimpl
def register_api_scripts(register):
    register(APIScript("Refiner", apply_refiner_script))


def apply_refiner_script(args: list, request) -> None:
    """A1111's built-in "Refiner" script: args [enabled, checkpoint, switch_at]."""
    if not args or not args[0]:
        return
    if len(args) < 2 or not isinstance(args[1], str) or not args[1]:
        raise ValueError("Refiner args are [enabled, checkpoint name, switch at 0..1]")
    opts = request.extensions.setdefault(NAME, {})
    opts["refiner"] = args[1]
    if len(args) > 2:
        opts["switch_at"] = float(args[2])


@hookimpl
def ui_top_bar(register, engine):
    def build():
        from extensions.checkpoints.top_bar import build as build_top_bar  # gradio only when a UI is built

        return build_top_bar(engine)

    register(UISection(NAME, "Checkpoint", build, open=True))


@hookimpl
def model_defaults(model):
    size = model.family.default_size
    defaults: dict[str, Any] = {"width": size, "height": size}
    defaults.update(VARIANT_DEFAULTS.get(model.entry.detection.variant or "", {}))
    return defaults


@hookimpl
def pipeline_kwargs(pipeline, request):
    return refiner_kwargs(pipeline, options(request))


@hookimpl
def after_denoising(latents, request, model, manager, seeds, step_callback):
    opts = options(request)
    if not opts.get("refiner"):
        return None
    return refine(latents, request, model, manager, seeds, opts, vae_choice(request, manager), step_callback)


@hookimpl
def infotext_params(request, model, manager):
    entry = model.entry
    if entry.format != "diffusers" and entry.sha256 is None:
        entry = manager.registry.with_hash(entry)
    params: dict[str, Any] = {"Model hash": entry.hash10, "Model": entry.model_name}
    if model.vae:
        from pathlib import Path

        vae = Path(model.vae)
        params.update({"VAE hash": manager.hashes.compute(vae)[:10], "VAE": vae.name})
    opts = options(request)
    if opts.get("refiner"):
        refiner = manager.find(opts["refiner"])
        params["Refiner"] = f"{refiner.model_name} [{manager.registry.with_hash(refiner).hash10}]"
        params["Refiner switch at"] = switch_at(opts)
    return params


@hookimpl
def infotext_pasted(params, request):
    model_hash, model = params.pop("Model hash", None), params.pop("Model", None)
    if model or model_hash:
        request.checkpoint = model or model_hash
    params.pop("VAE hash", None)
    opts = request.extensions.setdefault(NAME, {})
    if "VAE" in params:
        opts["vae"] = params.pop("VAE")
    if "Refiner" in params:
        opts["refiner"] = params.pop("Refiner").rsplit(" [", 1)[0]
        opts["switch_at"] = float(params.pop("Refiner switch at", DEFAULT_SWITCH_AT))
