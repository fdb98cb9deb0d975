"""What the /sdapi/v1 routes share: the engine, the extensions, the saved settings and the job board,
and the request defaults a field left out of a body takes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio

from webui.api.jobs import JobBoard
from webui.config import Config
from webui.generation.engine import Engine
from webui.models.families import FAMILIES
from webui.models.manager import LoadedModel
from webui.plugins import Plugins
from webui.styles import read_styles

log = logging.getLogger(__name__)
DEFAULTS_FROM_MODEL = ("steps", "cfg_scale", "sampler", "schedule_type")


@dataclass
class APIContext:
    engine: Engine
    plugins: Plugins
    config: Config | None
    board: JobBoard
    cmd_flags: dict[str, Any] = field(default_factory=dict)
    # generation threads waiting in the queue (not Starlette's 40-thread pool, which /progress needs too)
    workers: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(256))

    @property
    def manager(self):
        return self.engine.manager

    def styles(self):
        return read_styles(self.manager.paths.data_dir / "styles.csv")

    def request_defaults(self, override_settings: dict[str, Any] | None) -> dict[str, Any]:
        """Saved clip skip and styles, and the sampling defaults of the model the request will run on
        (Turbo: 1 step, CFG 1): the values a field the client left out takes, as the UI applies them."""
        defaults: dict[str, Any] = {"styles": self.styles()}
        if self.config is not None:
            defaults["clip_skip"] = int(self.config["CLIP_stop_at_last_layers"])
        model = self._model_without_loading((override_settings or {}).get("sd_model_checkpoint"))
        if model is not None:
            try:
                found = self.plugins.model_defaults(model)
                defaults.update({k: v for k, v in found.items() if k in DEFAULTS_FROM_MODEL})
            except Exception as e:  # an extension's model_defaults bug must not refuse the request
                log.warning("model_defaults failed for the API request: %s", e)
        return defaults

    def _model_without_loading(self, query: str | None) -> LoadedModel | None:
        """The model a request would select, described from its header (no weights loaded); None if not found
        (the job itself then reports the unknown checkpoint)."""
        try:
            entry = self.manager.find(query) if query else self.manager.default()
        except LookupError:
            return None
        family = FAMILIES.get(entry.detection.family)
        return LoadedModel(entry, family, None, None) if family else None
