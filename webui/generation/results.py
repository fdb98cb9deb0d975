"""What a job returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from webui.generation.prompt_parser import ExtraNetworkCall
from webui.generation.request import GenerationRequest
from webui.models.manager import LoadedModel


class NansException(RuntimeError):
    """The UNet or the VAE produced NaN (A1111's name for the same failure)."""


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None


@dataclass
class GenerationResult:
    request: GenerationRequest  # validated, with the seeds actually used
    model: LoadedModel
    images: list[GeneratedImage] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    interrupted: bool = False
    job_id: str = ""

    @property
    def extra_networks(self) -> list[ExtraNetworkCall]:
        """The prompt's `<name:args>` calls that an extension handles, in tag-name order."""
        return [call for calls in self.request.extra_networks.values() for call in calls]

    @property
    def seeds(self) -> list[int]:
        return [g.seed for g in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [g.infotext for g in self.images]

    @property
    def paths(self) -> list[Path]:
        return [g.path for g in self.images if g.path is not None]
