"""Built-in demo checkpoints for a fresh install: tiny SD1 and SDXL models with random weights.

They go through the same files and loader as a real checkpoint (written once, A1111 layout, to the
cache folder) so the app works end to end before the user adds a model. They draw noise."""

from __future__ import annotations

from pathlib import Path

DEMO_FAMILIES = ("sd1", "sdxl-base")
DEMO_NOTICE = (
    "No checkpoint found in {folder}. Using Easel's built-in demo models, which have random weights "
    "and draw noise. Put a .safetensors checkpoint in that folder, or run `easel download sd15`."
)


def demo_folder(cache_dir: Path) -> Path:
    return cache_dir / "demo-models"


def ensure_demo_checkpoints(cache_dir: Path) -> Path:
    """Write any missing demo checkpoint (deterministic weights) and return their folder."""
    from webui.models.convert import save_single_file
    from webui.models.tiny import tiny_pipeline

    folder = demo_folder(cache_dir)
    for name in DEMO_FAMILIES:
        path = folder / f"easel-demo-{name}.safetensors"
        if not path.is_file():
            save_single_file(tiny_pipeline(name, seed=0), path, metadata={"easel.family": name})
    return folder
