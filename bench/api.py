"""What the A1111 API adds on top of calling the engine directly with the same request.

Both sides run one engine (one loaded model, saving off, no live previews):
  direct  Engine.generate(GenerationRequest(...)) in this process
  api     POST /sdapi/v1/txt2img with the same fields, through a real uvicorn server on 127.0.0.1 and
          `requests`, including what a client gets and the direct call does not: the PNG with its
          infotext, base64 in JSON, and the `info` object
Same seed, size, steps and sampler; the pixels are checked equal once. Runs alternate after one warm-up
each; the ratio is of medians. Models: the tiny test model and a full-size SD1.5 layout with random fp16
weights (written once to --dir; on CPU use a small --size and few --steps, on a GPU 512 and 20).
Usage: python bench/api.py [--models tiny,sd15] [--size 256] [--steps 4] [--reps 5] [--device cpu]
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.common import alternate, run_ratio  # noqa: E402


def measure(model: str, args) -> tuple[float, float]:
    import requests
    from PIL import Image

    from api_helpers import serving
    from bench.overhead import prepare
    from webui.api import create_app
    from webui.generation.engine import Engine, EngineOptions
    from webui.generation.request import GenerationRequest
    from webui.models.manager import ModelManager
    from webui.plugins import Plugins
    from webui.settings import Paths, RuntimeSettings

    path = prepare(model, Path(args.dir))
    plugins = Plugins.builtin()
    manager = ModelManager(Paths.from_flags(data_dir=args.dir), RuntimeSettings(device=args.device, dtype=args.dtype),
                           plugins)
    manager.default_checkpoint = path.name
    engine = Engine(manager, EngineOptions(save_images=False), plugins)
    fields = {"prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": args.steps, "width": args.size,
              "height": args.size, "seed": 1, "cfg_scale": 7.0}
    request = GenerationRequest(checkpoint=path.name, sampler=args.sampler, **fields)
    body = {**fields, "sampler_name": args.sampler, "override_settings": {"sd_model_checkpoint": path.name}}
    session = requests.Session()
    session.trust_env = False

    with serving(create_app(engine, plugins)) as base:
        def api() -> Image.Image:
            response = session.post(f"{base}/sdapi/v1/txt2img", json=body, timeout=3600)
            response.raise_for_status()
            return Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))

        def direct() -> Image.Image:
            return engine.generate(request).images[0].image

        same = np.array_equal(np.asarray(api().convert("RGB")), np.asarray(direct().convert("RGB")))  # + warm-up
        assert same, "the API and the engine gave different pixels for the same request"
        med = alternate({"direct": direct, "api": api}, args.reps, args.device)
    return med["direct"], med["api"]


if __name__ == "__main__":
    run_ratio(__doc__, 5, measure, ("direct", "api"))
