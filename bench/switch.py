"""Switching checkpoints: a cold load against a switch to a model already cached, and what idle
extensions cost per generation.

Part 1, real-size SD1.5 and SDXL-base layouts with random fp16 weights (bench/load.py's files),
loaded at float16 (the weights stay memory-mapped: ~9 GB for both), one process, files in the page
cache (read once first, 64 MB at a time), every weight page touched before a load's clock stops:
  cold SD1 / cold SDXL   ModelManager.load of a model not in the cache (SD1 stays cached meanwhile)
  cached switch          SD1 -> SDXL -> SD1 again, `manager.load(name)` of models already cached
  select_model switch    the same switches the way a job makes them: the checkpoints extension's
                         `select_model` hook (name lookup, folder scan, VAE resolution, cache hit);
                         once more with --extra checkpoint links in the folder (the scan is per job)
Part 2, tiny SD1 (the test model) in a data dir holding only it, same ModelManager and weights:
  no extensions   Engine(plugins=Plugins()): the job runs on the manager's default model
  built-ins idle  Engine(plugins=Plugins.builtin()): the checkpoints extension selects the model,
                  writes Model/Model hash (hash computed once, then cached) and adds nothing else
  Runs alternate (A B B A ...) after one warm-up each; ratios are of medians, plus the median of
  the per-rep ratios (robust to other processes' load drifting during the run). The hook calls a
  job makes are also timed alone (less noisy than the difference of two whole jobs).
Usage: python bench/switch.py [--dir /tmp/easel-bench] [--cycles 20] [--extra 200] [--reps 41] [--size 64]
       [--steps 2] [--skip-switch] [--skip-plugins]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import current_rss, fault_in, make_random_checkpoint, peak_rss  # noqa: E402
from webui.cli import quiet_libraries  # noqa: E402

GB = 1e9


def warm_page_cache(path: Path) -> float:
    """Read the whole file in 64 MB chunks (no big buffer, so RSS stays put); returns seconds."""
    buf = bytearray(64 << 20)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def touch(pipe) -> None:
    fault_in(p for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def warm_up_imports(folder: Path) -> None:
    """First-use costs that are not a load (diffusers' lazy imports, CLIP classes, tokenizers)."""
    import diffusers

    from webui.models.convert import save_single_file
    from webui.models.manager import ModelManager
    from webui.models.tiny import tiny_pipeline
    from webui.settings import Paths, RuntimeSettings

    ckpts = folder / "warmup" / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    for family in ("sd1", "sdxl-base"):
        getattr(diffusers, "StableDiffusionPipeline" if family == "sd1" else "StableDiffusionXLPipeline")
        path = ckpts / f"tiny-{family}.safetensors"
        if not path.is_file():
            save_single_file(tiny_pipeline(family, seed=0), path)
    manager = ModelManager(Paths.from_flags(data_dir=folder / "warmup"), RuntimeSettings(dtype="float16"))
    for family in ("sd1", "sdxl-base"):
        manager.load(f"tiny-{family}")
    manager.cache.clear()


def switch_part(args) -> None:
    from webui.generation.request import GenerationRequest
    from webui.models.manager import ModelManager
    from webui.models.memory import total_ram
    from webui.plugins import Plugins
    from webui.settings import Paths, RuntimeSettings

    folder = Path(args.dir)
    files = {"sd1": folder / "random-sd1.safetensors", "sdxl-base": folder / "random-sdxl-base.safetensors"}
    for family, path in files.items():
        if not path.is_file():
            print(f"writing {path} (random fp16 weights)...", flush=True)
            make_random_checkpoint(family, path)
    sizes = {f: p.stat().st_size for f, p in files.items()}
    print("\n== Part 1: cold load vs cached switch (real-size layouts, float16) ==")
    print(f"RAM {total_ram() / GB:.1f} GB; files: SD1 {sizes['sd1'] / GB:.2f} GB, "
          f"SDXL {sizes['sdxl-base'] / GB:.2f} GB")
    warm_up_imports(folder)
    data = folder / "switch-data"
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    names = {}
    for family, path in files.items():
        link = ckpts / path.name
        if not link.exists():
            link.symlink_to(path)
        names[family] = path.stem
    plugins = Plugins.builtin()
    manager = ModelManager(Paths.from_flags(data_dir=data), RuntimeSettings(dtype="float16"), plugins=plugins)
    needed = sum(sizes.values())
    if manager.cache.ram_budget < needed * 1.05:
        budget = int(needed * 1.1)
        print(f"default RAM budget {manager.cache.ram_budget / GB:.1f} GB cannot hold both; using {budget / GB:.1f} GB")
        manager = ModelManager(Paths.from_flags(data_dir=data),
                               RuntimeSettings(dtype="float16", ram_budget=budget), plugins=plugins)
    print(f"cache RAM budget {manager.cache.ram_budget / GB:.1f} GB >= both models {needed / GB:.1f} GB")
    raw = {f: warm_page_cache(p) for f, p in files.items()}
    base_rss = current_rss()

    cold = {}
    loaded = {}
    for family in ("sd1", "sdxl-base"):
        start = time.perf_counter()
        loaded[family] = manager.load(names[family])
        touch(loaded[family].pipeline)
        cold[family] = time.perf_counter() - start
    assert len(manager.cache) == 2, "both models must stay cached"
    held_rss = current_rss()

    def switch_by_load() -> None:
        for family in ("sd1", "sdxl-base", "sd1"):
            assert manager.load(names[family]).pipeline is loaded[family].pipeline

    requests = {f: GenerationRequest(checkpoint=names[f]) for f in files}

    def switch_by_hook() -> None:
        for family in ("sd1", "sdxl-base", "sd1"):
            model = plugins.first("select_model", request=requests[family], manager=manager)
            assert model.pipeline is loaded[family].pipeline

    switch_by_load()
    switch_by_hook()
    load_ms = median_ms(switch_by_load, args.cycles) / 3  # per switch
    hook_ms = median_ms(switch_by_hook, args.cycles) / 3
    print(f"first read of the files (64 MB chunks, fills the page cache): SD1 {raw['sd1']:.2f} s, "
          f"SDXL {raw['sdxl-base']:.2f} s")
    print(f"{'':34} {'time':>10} {'/ cold SD1':>11} {'/ cold SDXL':>12}")
    for label, seconds in (("cold load SD1", cold["sd1"]), ("cold load SDXL", cold["sdxl-base"]),
                           ("cached switch, manager.load", load_ms / 1000),
                           ("cached switch, select_model hook", hook_ms / 1000)):
        shown = f"{seconds:8.3f} s" if seconds >= 0.1 else f"{seconds * 1000:7.3f} ms"
        print(f"{label:34} {shown:>10} {seconds / cold['sd1']:11.5f} {seconds / cold['sdxl-base']:12.5f}")
    print(f"goal: cached / cold < 0.05 -> {'met' if hook_ms / 1000 / min(cold.values()) < 0.05 else 'NOT met'}")
    print(f"RSS: before loading {base_rss / GB:.2f} GB, both models held {held_rss / GB:.2f} GB "
          f"(+{(held_rss - base_rss) / GB:.2f} GB = {(held_rss - base_rss) / needed:.2f}x the two files), "
          f"peak {peak_rss() / GB:.2f} GB")
    if args.extra:  # a job finds its model by name: the folder is scanned (walk + stat) on every job
        tiny = folder / "warmup" / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
        links = [ckpts / f"extra-{i:04d}.safetensors" for i in range(args.extra)]
        for link in links:
            link.symlink_to(tiny)
        try:
            switch_by_hook()
            crowded_ms = median_ms(switch_by_hook, args.cycles) / 3
        finally:
            for link in links:
                link.unlink()
        print(f"cached switch, select_model hook, {args.extra + 2} checkpoints in the folder: {crowded_ms:.3f} ms "
              f"= {crowded_ms / 1000 / cold['sd1']:.5f} of cold SD1")
    manager.cache.clear()


def hook_calls(plugins, manager, request, pipe, latents, image) -> None:
    """The extension hook calls one single-batch job makes (job.py), outside the denoising work."""
    model = plugins.first("select_model", request=request, manager=manager) or manager.load(None)
    plugins.call_each("before_generate", request=request, model=model)
    plugins.hook.prepare_pipeline.call_extra([lambda pipeline, request: None], {"pipeline": pipe, "request": request})
    plugins.call_each("pipeline_kwargs", pipeline=pipe, request=request)
    plugins.call_each("infotext_params", request=request, model=model, manager=manager)
    plugins.chain("after_denoising", "latents", latents, request=request, model=model, manager=manager, seeds=[1])
    plugins.chain("postprocess_image", "image", image, request=request)


def plugins_part(args) -> None:
    from webui.generation.engine import Engine, EngineOptions
    from webui.generation.request import GenerationRequest
    from webui.models.convert import save_single_file
    from webui.models.manager import ModelManager
    from webui.models.tiny import tiny_pipeline
    from webui.plugins import Plugins
    from webui.settings import Paths

    data = Path(args.dir) / "plugins-data"
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    path = ckpts / "bench-tiny.safetensors"
    if not path.is_file():
        save_single_file(tiny_pipeline("sd1", seed=0), path)
    manager = ModelManager(Paths.from_flags(data_dir=data))  # float32, the CPU default
    options = EngineOptions(save_images=False)
    engines = {"no extensions": Engine(manager, options, Plugins()),
               "built-ins idle": Engine(manager, options, Plugins.builtin())}
    request = GenerationRequest(checkpoint="bench-tiny", prompt="a photo of a cat", negative_prompt="blurry",
                                steps=args.steps, width=args.size, height=args.size, seed=1, sampler="Euler")
    print(f"\n== Part 2: idle extensions per generation (tiny SD1, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.reps} alternating reps) ==")
    first = {name: e.generate(request) for name, e in engines.items()}  # warm-up (the model hash is computed here)
    a, b = (first[n].images[0].image for n in engines)
    assert a.tobytes() == b.tobytes(), "both engines must produce the same picture"
    times: dict[str, list[float]] = {name: [] for name in engines}
    for rep in range(args.reps):
        order = list(engines.items())
        for name, engine in order if rep % 2 == 0 else order[::-1]:  # ABBA: no first-or-second bias
            start = time.perf_counter()
            engine.generate(request)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'':16} {'median':>10} {'ratio':>7}")
    for name in engines:
        print(f"{name:16} {med[name] * 1000:8.2f} ms {med[name] / med['no extensions']:7.3f}")
    paired = statistics.median(b / a for a, b in zip(times["no extensions"], times["built-ins idle"]))
    print(f"median of the per-rep ratios (each pair run back to back): {paired:.3f}")

    loaded = manager.load("bench-tiny")
    pipe, latents, image = loaded.pipeline, torch.zeros(1, 4, args.size // 8, args.size // 8), a
    cost = {name: median_ms(lambda e=e: hook_calls(e.plugins, manager, request, pipe, latents, image), 200)
            for name, e in engines.items()}
    added = cost["built-ins idle"] - cost["no extensions"]
    print(f"hook calls of one job alone: no extensions {cost['no extensions']:.3f} ms, "
          f"built-ins {cost['built-ins idle']:.3f} ms; "
          f"added {added:.3f} ms = {added / (med['no extensions'] * 1000) * 100:.2f}% of a job (goal < 1%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/easel-bench")
    p.add_argument("--cycles", type=int, default=20, help="SD1->SDXL->SD1 cycles timed (median)")
    p.add_argument("--reps", type=int, default=41)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--extra", type=int, default=200, help="checkpoints added to the folder for one more switch timing")
    p.add_argument("--skip-switch", action="store_true")
    p.add_argument("--skip-plugins", action="store_true")
    args = p.parse_args()
    quiet_libraries()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.skip_switch:
        switch_part(args)
    if not args.skip_plugins:
        plugins_part(args)


if __name__ == "__main__":
    main()
