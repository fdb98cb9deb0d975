"""`easel generate`: the engine from a terminal. Flags follow A1111's API field names where they can
(`--cfg-scale`, `--denoising-strength`, `--batch-count` = n_iter), so scripts translate one to one.

Exit status: 0 done, 1 the model or the run failed, 2 a bad request (message on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from webui.settings import Paths, RuntimeSettings


def add_generate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default="", help="A1111 syntax: (word:1.2), [word], BREAK, <lora:name:0.8>")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--model", help="checkpoint title, name, hash or file path (default: the first one found)")
    p.add_argument("--vae", default="Automatic", help="VAE file name in models/VAE, Automatic or None")
    p.add_argument("--sampler", default="DPM++ 2M", help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M SDE'")
    p.add_argument("--scheduler", default="Automatic", help="schedule type: Automatic, Uniform, Karras, ...")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--width", type=int, help="default: the model's native size")
    p.add_argument("--height", type=int)
    p.add_argument("--seed", type=int, default=-1, help="-1 = random; image i of the job uses seed + i")
    p.add_argument("--subseed", type=int, default=-1, help="variation seed")
    p.add_argument("--subseed-strength", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=1, help="images per run")
    p.add_argument("--batch-count", type=int, default=1, help="runs (A1111's n_iter)")
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--init-image", type=Path, help="img2img (or inpaint with --mask)")
    p.add_argument("--mask", type=Path, help="inpaint: white = repaint")
    p.add_argument("--denoising-strength", type=float, default=0.75)
    p.add_argument("--resize-mode", type=int, default=0, choices=(0, 1, 2),
                   help="0 just resize, 1 crop and resize, 2 resize and fill")
    p.add_argument("--mask-blur", type=int, default=4)
    p.add_argument("--inpainting-fill", type=int, default=1, choices=(0, 1, 2, 3),
                   help="masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing")
    p.add_argument("--inpaint-full-res", action="store_true", help="inpaint area: only masked")
    p.add_argument("--inpaint-full-res-padding", type=int, default=32)
    p.add_argument("--invert-mask", action="store_true", help="inpaint what is NOT masked")
    p.add_argument("--outdir", type=Path, help="save here instead of outputs/<mode>-images/<date>/")
    p.add_argument("--format", default="png", choices=("png", "jpg", "webp"))
    p.add_argument("--no-save", action="store_true", help="do not save (with --json nothing is written)")
    p.add_argument("--json", action="store_true",
                   help='print {"images": [paths], "seeds": [...], "infotexts": [...]} on stdout')
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _open_image(path: Path, flag: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{flag} {path}: not an image ({e})") from None


def build_request(args: argparse.Namespace):
    from webui.generation.request import GenerationRequest, InpaintOptions, Mode

    init = _open_image(args.init_image, "--init-image") if args.init_image else None
    mask = _open_image(args.mask, "--mask") if args.mask else None
    if mask is not None and init is None:
        raise ValueError("--mask needs --init-image (the picture to inpaint)")
    mode = Mode.INPAINT if mask is not None else Mode.IMG2IMG if init is not None else Mode.TXT2IMG
    return GenerationRequest(
        mode=mode, prompt=args.prompt, negative_prompt=args.negative_prompt, checkpoint=args.model,
        sampler=args.sampler, schedule_type=args.scheduler, steps=args.steps, cfg_scale=args.cfg_scale,
        width=args.width, height=args.height, seed=args.seed, subseed=args.subseed,
        subseed_strength=args.subseed_strength, batch_count=args.batch_count, batch_size=args.batch_size,
        clip_skip=args.clip_skip, denoising_strength=args.denoising_strength, init_image=init, mask=mask,
        resize_mode=args.resize_mode,
        inpaint=InpaintOptions(mask_blur=args.mask_blur, invert_mask=args.invert_mask,
                               masked_content=args.inpainting_fill, only_masked=args.inpaint_full_res,
                               only_masked_padding=args.inpaint_full_res_padding),
        override_settings={"sd_vae": args.vae},
    )


def run_generate(args: argparse.Namespace, paths: Paths, runtime: RuntimeSettings, plugins) -> int:
    from tqdm import tqdm

    from webui.generation.engine import Engine, EngineOptions
    from webui.models.header import CheckpointError
    from webui.models.manager import ModelManager

    for failure in plugins.failures:
        print(f"easel generate: extension {failure.name!r} failed to load and is disabled: {failure.error}",
              file=sys.stderr)
    manager = ModelManager(paths, runtime, plugins)
    try:
        request = build_request(args)
    except ValueError as e:
        return _fail(e, 2)
    try:
        if args.model and Path(args.model).expanduser().exists():  # a file path, not a name
            request.checkpoint = manager.entry_for_path(Path(args.model))
    except CheckpointError as e:
        return _fail(e, 1)
    options = EngineOptions(save_images=not args.no_save, samples_format=args.format, outdir=args.outdir)
    engine = Engine(manager, options)
    bar = None if args.quiet else tqdm(total=request.steps * request.batch_count, unit="step", file=sys.stderr)

    def on_progress(event) -> None:
        if bar is not None:
            bar.total = event.job_steps
            bar.n = event.job_step
            bar.set_postfix_str(f"batch {event.batch + 1}/{event.batches}", refresh=True)

    try:
        result = engine.generate(request, listener=on_progress)
    except (CheckpointError, LookupError) as e:
        return _fail(e, 1)
    except ValueError as e:  # RequestError, SamplerError, PromptError: the request is at fault
        return _fail(e, 2)
    except RuntimeError as e:  # NansException, ExtensionError and diffusers failures
        return _fail(e, 1)
    finally:
        if bar is not None:
            bar.close()
    for notice in result.notices:
        print(f"easel generate: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps({"images": [str(p) for p in result.paths], "seeds": result.seeds,
                          "infotexts": result.infotexts, "notices": result.notices}, indent=1))
        return 0
    print(f"model: {result.model.entry.title} ({result.model.family.name})")
    for item in result.images:
        print(item.path if item.path else f"(not saved) seed {item.seed}")
    if result.images:
        print(result.images[0].infotext)
    if result.interrupted:
        print("interrupted", file=sys.stderr)
    return 0


def _fail(error: Exception, status: int) -> int:
    print(f"easel generate: {error}", file=sys.stderr)
    return status
