"""Where each component lives in an A1111/LDM single file: the one table the converter, detection
and the loader share."""

from __future__ import annotations

from webui.models.families import Family

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."


def component_prefixes(family: Family) -> dict[str, str]:
    """Pipeline component name -> key prefix in a file of this family."""
    if family.refiner:
        te = {"text_encoder_2": REFINER_CLIP_G_PREFIX}
    elif family.arch == "sdxl":
        te = {"text_encoder": SDXL_CLIP_L_PREFIX, "text_encoder_2": SDXL_CLIP_G_PREFIX}
    else:
        te = {"text_encoder": SD1_CLIP_PREFIX if family.arch == "sd1" else SD2_CLIP_PREFIX}
    return {"unet": UNET_PREFIX, "vae": VAE_PREFIX, **te}
