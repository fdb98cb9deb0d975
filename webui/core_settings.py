"""Easel's own settings (A1111's keys), and how saved settings reach the engine without a restart.

Extensions declare theirs with `register_settings`; all of them live in one `Config` (`config.json`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from webui.config import Config
from webui.hooktypes import Setting

REFRESH_MS = 1000  # A1111's `live_preview_refresh_period` default: the UI's progress updates at most this often

CORE_SETTINGS = (
    Setting("samples_save", True, "Always save all generated images", section="Saving images"),
    Setting("samples_format", "png", "File format for images", section="Saving images", choices=("png", "jpg", "webp")),
    Setting("CLIP_stop_at_last_layers", 1, "Clip skip", section="Stable Diffusion", minimum=1, maximum=12, step=1,
            help="Use the output of an earlier text encoder layer (2 suits many anime models); SD1 only"),
    Setting("sd_model_checkpoint", "", "Default checkpoint (title, name or hash; empty: the first one)",
            section="Stable Diffusion", help="What jobs run on when they name no checkpoint (the API's default model)"),
    Setting("sd_vae", "Automatic", "Default VAE (Automatic, None or a file in models/VAE)", section="Stable Diffusion"),
    Setting("show_progress_every_n_steps", 2, "Live preview every N sampling steps (0: no previews)",
            section="Live previews", minimum=0, maximum=32, step=1),
    Setting("live_preview_refresh_period", REFRESH_MS, "Progress bar and preview update period (ms)",
            section="Live previews", minimum=100, maximum=5000, step=50,
            help="How often the browser gets a running job's progress and newest preview (A1111's default: 1000). "
                 "Each update costs server work that a fast job feels."),
)
CORE_KEYS = frozenset(s.key for s in CORE_SETTINGS)


def apply_to_engine(config: Config, engine) -> None:
    """Put the saved values where jobs read them: engine options (saving, previews) and
    `engine.settings` (extension settings, which jobs see in `request.override_settings`)."""
    engine.options = replace(
        engine.options,
        save_images=bool(config["samples_save"]),
        samples_format=config["samples_format"],
        preview_every=int(config["show_progress_every_n_steps"]),
    )
    engine.settings = {k: v for k, v in config.values.items() if k not in CORE_KEYS}
    engine.manager.default_checkpoint = config["sd_model_checkpoint"]
    engine.manager.default_vae = config["sd_vae"] or "Automatic"


def request_defaults(config: Config) -> dict[str, Any]:
    """Request fields the UI takes from settings (A1111 keeps clip skip among its settings)."""
    return {"clip_skip": int(config["CLIP_stop_at_last_layers"])}
