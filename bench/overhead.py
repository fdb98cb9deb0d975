"""What the engine adds on top of a raw diffusers call doing the same work.

Both sides run the same loaded weights, the same scheduler class and settings, steps, size, CFG
and seed, and return decoded pictures (the engine without saving, which raw diffusers does not do):
  raw     Pipeline.from_pipe(loaded, scheduler=<same>)(prompt=..., generator=cpu(seed), output_type="pil"),
          called on the engine's compute thread, where the engine runs its jobs
  engine  Engine.generate(GenerationRequest(...)) with saving off
Runs alternate (raw, engine, raw, engine, ...) after one warm-up each; the ratio is of medians.
Models: the tiny test model, and a full-size SD1.5 layout with random fp16 weights written once to
--dir (on CPU use a small --size and few --steps; on a GPU use 512 and 20).
Usage: python bench/overhead.py [--models tiny,sd15] [--size 256] [--steps 4] [--reps 3] [--device cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import alternate, run_ratio  # noqa: E402


def prepare(model: str, folder: Path) -> Path:
    from bench.load import make_random_checkpoint
    from webui.models.convert import save_single_file
    from webui.models.tiny import tiny_pipeline

    ckpts = folder / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    path = ckpts / f"bench-{model}.safetensors"
    if model == "tiny" and not path.exists():
        save_single_file(tiny_pipeline("sd1", seed=0), path)
    elif model == "sd15":
        make_random_checkpoint("sd1", path)
    return path


def measure(model: str, args) -> tuple[float, float]:
    import diffusers

    from webui.generation.engine import Engine, EngineOptions
    from webui.generation.request import GenerationRequest
    from webui.generation.samplers import build_scheduler
    from webui.models.manager import ModelManager
    from webui.settings import Paths, RuntimeSettings

    manager = ModelManager(Paths.from_flags(data_dir=args.dir), RuntimeSettings(device=args.device, dtype=args.dtype))
    engine = Engine(manager, EngineOptions(save_images=False))
    # All torch work on the engine's compute thread, raw diffusers too: a second thread running torch keeps
    # a second OpenMP team, which slows both sides (webui/generation/compute.py).
    path = engine.compute.run(lambda: prepare(model, Path(args.dir)))
    entry = manager.find(path.name)
    loaded = engine.run_exclusive(lambda: manager.load(entry))
    request = GenerationRequest(checkpoint=entry, prompt="a photo of a cat", negative_prompt="blurry", steps=args.steps,
                                width=args.size, height=args.size, seed=1, sampler=args.sampler, cfg_scale=7.0)

    def raw_call() -> None:
        scheduler = build_scheduler(loaded.pipeline.scheduler.config, args.sampler, "Automatic")
        pipe = diffusers.StableDiffusionPipeline.from_pipe(loaded.pipeline, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=args.steps,
             guidance_scale=7.0, width=args.size, height=args.size,
             generator=torch.Generator("cpu").manual_seed(1), output_type="pil")

    def raw() -> None:
        engine.compute.run(raw_call)

    def ours() -> None:
        engine.generate(request)

    raw()  # warm-up: first-call allocations
    ours()  # and the hash of the model file for the infotext
    med = alternate({"raw": raw, "engine": ours}, args.reps, args.device)
    return med["raw"], med["engine"]


if __name__ == "__main__":
    run_ratio(__doc__, 3, measure, ("raw", "engine"))
