"""Family of a diffusers-format folder, from its configs (model_index.json, unet/config.json).

The same structural facts as detect.py, read from config values instead of tensor keys."""

from __future__ import annotations

import json
from pathlib import Path

from webui.models.detect import REFINER_DEPTHS, SD_DEPTHS, SDXL_DEPTHS, Detection, read_override
from webui.models.families import FAMILIES, VARIANTS


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path.parent.name}/{path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.parent.name}/{path.name} is unreadable ({e})") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{path.parent.name}/{path.name} is not a JSON object")
    return doc


def ldm_depths(unet: dict) -> tuple[int, ...]:
    """The transformer depth of every resnet input block, as the LDM layout would show it.

    `transformer_layers_per_block` is an int, one int per level, or (SSD-1B) one list per level."""
    per_level = unet.get("transformer_layers_per_block", 1)
    layers = unet.get("layers_per_block", 2)
    out: list[int] = []
    for i, block_type in enumerate(unet.get("down_block_types", [])):
        n = layers[i] if isinstance(layers, list) else layers
        depth = per_level[i] if isinstance(per_level, list) else per_level
        per_layer = depth if isinstance(depth, list) else [depth] * n
        out += [per_layer[j] if "CrossAttn" in block_type else 0 for j in range(n)]
    return tuple(out)


def detect_folder(folder: Path) -> Detection:
    try:
        index = _json(folder / "model_index.json")
        unet = _json(folder / "unet" / "config.json")
        sched = _json(folder / "scheduler" / "scheduler_config.json") if (folder / "scheduler").is_dir() else {}
    except ValueError as e:
        return Detection("error", reason=f"{folder}: {e}")
    depths = ldm_depths(unet)
    cls = str(index.get("_class_name", ""))
    in_ch = unet.get("in_channels")
    name, why = "unknown", f"{cls} with transformer depths {list(depths)}, in_channels={in_ch}"
    if unet.get("addition_embed_type") == "text_time":
        if depths == REFINER_DEPTHS or index.get("requires_aesthetics_score"):
            name = "sdxl-refiner" if in_ch == 4 else "unknown"
        elif depths in SDXL_DEPTHS:
            name = SDXL_DEPTHS[depths]
            name = {4: name, 9: "sdxl-inpaint" if name == "sdxl-base" else "unknown"}.get(in_ch, "unknown")
    elif depths == SD_DEPTHS and unet.get("class_embed_type") is None:
        arch = "sd2" if unet.get("use_linear_projection") else "sd1"
        name = {4: arch, 9: f"{arch}-inpaint"}.get(in_ch, "unknown")
    override = read_override(folder)
    if override.get("family") in FAMILIES:
        name, why = override["family"], f"family set in easel.json ({why})"
    if name not in FAMILIES:
        return Detection("unknown", reason=f"unsupported diffusers model: {why}")
    pred = {"v_prediction": "v", "epsilon": "eps"}.get(sched.get("prediction_type", ""), FAMILIES[name].default_prediction)
    if override.get("prediction") in ("v", "eps"):
        pred = override["prediction"]
    variant = override.get("variant") or next((v for v in VARIANTS if v in folder.name.lower()), None)
    return Detection(name, pred, variant if name == "sdxl-base" else None, f"diffusers folder: {why}")
