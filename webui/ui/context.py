"""What the UI's event handlers share: the engine, extensions, saved settings and the job runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.config import Config
from webui.core_settings import request_defaults
from webui.generation.engine import Engine
from webui.plugins import PluginFailure, Plugins
from webui.ui.runner import GenerationRunner


@dataclass
class UIContext:
    engine: Engine
    plugins: Plugins
    config: Config
    runner: GenerationRunner
    local: bool = True  # served on localhost only: local conveniences (open the output folder) are offered
    route_failures: tuple[PluginFailure, ...] = ()

    @property
    def manager(self):
        return self.engine.manager

    def request_defaults(self) -> dict[str, Any]:
        return request_defaults(self.config)

    def outputs_dir(self, tab: str) -> Path:
        return self.engine.options.outdir or self.manager.paths.outputs_dir / f"{tab}-images"
