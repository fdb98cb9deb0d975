"""A1111's settings and listing routes: options, models, VAEs, samplers, schedulers, LoRAs, styles,
scripts, extensions, memory, command-line flags, and the refresh / unload / reload actions.

No route takes a filesystem path from the client: checkpoints and VAEs are chosen by name among what
the model folders hold, and `outdir_samples` is read-only over HTTP."""

from __future__ import annotations

import logging
from typing import Any

import fastapi
import torch

from webui.api.context import APIContext
from webui.api.sdapi import APIError
from webui.config import SettingsError
from webui.generation.samplers import SAMPLERS, SCHEDULE_TYPES
from webui.models.memory import available_ram, rss, total_ram
from webui.models.vae import AUTOMATIC, NONE, list_vaes

log = logging.getLogger(__name__)
READ_ONLY_OPTIONS = {"outdir_samples": "the output folder is set on the server (config.json or --data-dir), not over HTTP"}


def add_info_routes(app: fastapi.FastAPI, ctx: APIContext) -> None:
    manager, plugins = ctx.manager, ctx.plugins

    def get_options() -> dict[str, Any]:
        """Saved settings by A1111's keys, with the current checkpoint and VAE."""
        values: dict[str, Any] = dict(ctx.config.values) if ctx.config is not None else {}
        try:
            entry = manager.default()
            values["sd_model_checkpoint"], values["sd_checkpoint_hash"] = entry.title, entry.sha256
        except LookupError:
            values["sd_model_checkpoint"], values["sd_checkpoint_hash"] = None, None
        values["sd_vae"] = manager.default_vae
        values["outdir_samples"] = str(ctx.engine.options.outdir or "")
        values.setdefault("CLIP_stop_at_last_layers", 1)
        values.setdefault("samples_format", ctx.engine.options.samples_format)
        return values

    def set_options(body: dict[str, Any]) -> None:
        """Change settings; `sd_model_checkpoint` loads that model now (in the job queue's turn)."""
        changes = dict(body)
        current = {"outdir_samples": str(ctx.engine.options.outdir or "")}  # what GET options reports
        for key, why in READ_ONLY_OPTIONS.items():
            if key in changes and changes[key] != current[key]:
                raise APIError(422, f"{key}: {why}", "SettingsError")
        checkpoint = changes.pop("sd_model_checkpoint", None)
        if checkpoint:
            try:
                entry = manager.find(str(checkpoint))
            except LookupError as e:
                raise APIError(422, f"sd_model_checkpoint: {e}", "LookupError") from None
            ctx.engine.run_exclusive(lambda: manager.load(entry, vae=changes.get("sd_vae") or manager.default_vae))
            changes["sd_model_checkpoint"] = entry.title
        vae = changes.get("sd_vae")
        if vae is not None and vae not in (AUTOMATIC, NONE, *(v.name for v in list_vaes(manager.paths.vae_dirs))):
            raise APIError(422, f"sd_vae: no VAE named {vae!r} in models/VAE (or Automatic, None)", "LookupError")
        known = {k: v for k, v in changes.items() if ctx.config is not None and k in ctx.config.settings}
        unknown = sorted(set(changes) - set(known) - set(READ_ONLY_OPTIONS))
        if unknown:
            log.info("options ignored (not Easel settings): %s", ", ".join(unknown))
        if ctx.config is None:  # no saved settings (a library user's app): change the running defaults only
            manager.default_checkpoint = changes.get("sd_model_checkpoint", manager.default_checkpoint)
            manager.default_vae = changes.get("sd_vae", manager.default_vae)
        elif known:
            try:
                ctx.config.update(known)
            except SettingsError as e:
                raise APIError(422, str(e), "SettingsError") from None

    def sd_models() -> list[dict[str, Any]]:
        """Checkpoints in A1111's shape (title, model_name, hash, sha256, filename, config)."""
        return [{"title": e.title, "model_name": e.model_name, "hash": e.hash10, "sha256": e.sha256,
                 "filename": str(e.path), "config": None, "family": e.detection.family}
                for e in manager.checkpoints() if e.detection.known]

    def sd_vae() -> list[dict[str, Any]]:
        return [{"model_name": v.name, "filename": str(v.path)} for v in list_vaes(manager.paths.vae_dirs)]

    def samplers() -> list[dict[str, Any]]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]

    def schedulers() -> list[dict[str, Any]]:
        return [{"name": t.name, "label": t.label, "aliases": list(t.aliases) or None, "default_rho": -1,
                 "need_inner_model": False} for t in SCHEDULE_TYPES]

    def upscalers() -> list[dict[str, Any]]:
        """Only "None": Easel has no upscalers yet (no hires fix, no extras tab)."""
        return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]

    def latent_upscale_modes() -> list[dict[str, Any]]:
        return []

    def loras() -> list[dict[str, Any]]:
        """LoRAs as the LoRA extension lists them (A1111's name, alias, path, metadata, and more)."""
        network = plugins.extra_networks().get("lora")
        return list(network.items(manager)) if network is not None and network.items is not None else []

    def refresh_loras() -> None:
        network = plugins.extra_networks().get("lora")
        if network is not None and network.refresh is not None:
            network.refresh(manager)

    def embeddings() -> dict[str, Any]:
        """Textual inversion is not supported yet: nothing loaded."""
        return {"loaded": {}, "skipped": {}}

    def prompt_styles() -> list[dict[str, str]]:
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in ctx.styles().values()]

    def scripts() -> dict[str, list[str]]:
        """Always-on scripts extensions accept in `alwayson_scripts`; no selectable scripts."""
        known = plugins.api_scripts().values()
        return {mode: [s.title.lower() for s in known if mode in s.modes] for mode in ("txt2img", "img2img")}

    def extensions() -> list[dict[str, Any]]:
        return [{"name": i.name, "remote": None, "branch": None, "commit_hash": None, "version": i.version,
                 "commit_date": None, "enabled": True, "source": i.source} for i in plugins.infos()]

    def memory() -> dict[str, Any]:
        total, available = total_ram(), available_ram()
        out: dict[str, Any] = {"ram": {"free": available, "used": total - available, "total": total, "process": rss()}}
        if torch.cuda.is_available():
            free, total_vram = torch.cuda.mem_get_info()
            out["cuda"] = {"system": {"free": free, "used": total_vram - free, "total": total_vram},
                           "active": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()}}
        else:
            out["cuda"] = {"error": "no CUDA device"}
        return out

    def cmd_flags() -> dict[str, Any]:
        return dict(ctx.cmd_flags)

    def refresh_checkpoints() -> None:
        manager.checkpoints()

    def refresh_vae() -> None:
        """VAEs are listed fresh on every request; nothing to do."""

    def unload_checkpoint() -> None:
        """Free every loaded model (in the queue's turn); the next job loads what it needs."""
        ctx.engine.run_exclusive(manager.cache.clear)

    def reload_checkpoint() -> None:
        ctx.engine.run_exclusive(lambda: manager.load(None, vae=manager.default_vae))

    add = app.add_api_route
    add("/sdapi/v1/options", get_options, methods=["GET"])
    add("/sdapi/v1/options", set_options, methods=["POST"])
    for path, endpoint in (("sd-models", sd_models), ("sd-vae", sd_vae), ("samplers", samplers),
                           ("schedulers", schedulers), ("upscalers", upscalers),
                           ("latent-upscale-modes", latent_upscale_modes), ("loras", loras),
                           ("embeddings", embeddings), ("prompt-styles", prompt_styles), ("scripts", scripts),
                           ("extensions", extensions), ("memory", memory), ("cmd-flags", cmd_flags)):
        add(f"/sdapi/v1/{path}", endpoint, methods=["GET"])
    for path, endpoint in (("refresh-checkpoints", refresh_checkpoints), ("refresh-vae", refresh_vae),
                           ("refresh-loras", refresh_loras), ("unload-checkpoint", unload_checkpoint),
                           ("reload-checkpoint", reload_checkpoint)):
        add(f"/sdapi/v1/{path}", endpoint, methods=["POST"])

