"""The model families Easel knows, and what each needs to load and run.

A family is decided by structure (see detect.py); everything downstream (pipeline class, config
folder, default size, LoRA compatibility) is looked up here instead of being re-derived."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_ROOT = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # "sd1" | "sd2" | "sdxl": what LoRAs, embeddings and ControlNets must match
    pipeline: str  # diffusers pipeline class for the model's native mode
    default_size: int
    default_prediction: str = "eps"  # "eps" | "v"
    inpaint: bool = False
    refiner: bool = False

    @property
    def config_dir(self) -> Path:
        return CONFIG_ROOT / self.name

    @property
    def text_encoders(self) -> tuple[str, ...]:
        """Pipeline component names of the text encoders, in order."""
        if self.refiner:
            return ("text_encoder_2",)
        return ("text_encoder", "text_encoder_2") if self.arch == "sdxl" else ("text_encoder",)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd1", "sd1", "StableDiffusionPipeline", 512),
        Family("sd1-inpaint", "sd1", "StableDiffusionInpaintPipeline", 512, inpaint=True),
        # SD 2.x 768 models are v-prediction; the 512 "base" ones are eps. Without a hint we guess v.
        Family("sd2", "sd2", "StableDiffusionPipeline", 768, default_prediction="v"),
        Family("sd2-inpaint", "sd2", "StableDiffusionInpaintPipeline", 512, inpaint=True),
        Family("sdxl-base", "sdxl", "StableDiffusionXLPipeline", 1024),
        Family("sdxl-inpaint", "sdxl", "StableDiffusionXLInpaintPipeline", 1024, inpaint=True),
        Family("sdxl-refiner", "sdxl", "StableDiffusionXLImg2ImgPipeline", 1024, refiner=True),
        Family("ssd-1b", "sdxl", "StableDiffusionXLPipeline", 1024),
        Family("vega", "sdxl", "StableDiffusionXLPipeline", 1024),
    )
}

# Distilled SDXL-base checkpoints: same weights layout, different sampling defaults.
VARIANTS = ("turbo", "lightning")


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None
