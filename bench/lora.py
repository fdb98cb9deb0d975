"""What a LoRA stack costs on a full-size SD1.5 UNet (random weights, built from Easel's shipped configs).

Each LoRA is a kohya file with LDM names, rank --rank, on every attention projection, proj_in/proj_out and
feed-forward layer of the UNet and every attention/MLP layer of the text encoder; it goes through the
extension's own code (library entry -> adapters.load -> session.StackSession), as in a job. UNet calls are
batch 2 (cond + uncond); the configurations alternate and rotate rep by rep; each rep times two steps after
a warm-up step (which also counts the step's matmul/conv FLOPs):
  base                  no LoRA
  1 / 3 unfused         PEFT adapters active (set_adapters), per-step LoRA matmuls; the 3 as one adapter
  1 / 3 fused           the same stack fused into the weights (setting `lora_fuse`), fused once and kept
                        between jobs as the extension does for an unchanged stack
  load                  first use of one file on the model (read + load_lora_weights), once per file
  combine 3             first use of the 3 files together: loading them as one adapter, once per set of files
  weights change        a job's apply + undo with new weights for the 3 (their B blocks rewritten)
  switch unfused        a job's apply + undo with the same 3 and weights (set_adapters, enable, disable)
  switch fused new      the same with a stack not fused before (the GEMMs)
  switch fused same     the same stack as the previous fused job (its fused weights swapped in again)
Speed ratio = best base step / best step, the best of 2 x --reps (on a shared machine the slow outliers are
other processes; medians are printed too). Goals: fused >= 0.98, unfused >= 0.85. FLOP bound = base FLOPs /
FLOPs: the best ratio the stack's extra arithmetic allows. Switch ratio = time / base step (goal: a weight
change < 1). drift = max |fused - unfused| / max |unfused| of the UNet output.
Usage: python bench/lora.py [--latent 32] [--rank 32] [--reps 3] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui.cpu_memory import prefer_huge_pages

prefer_huge_pages()  # as `easel` does, before torch allocates anything
import torch

UNET_LAYERS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TE_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def build_pipeline(device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from webui.models.clip_tokenizer import clip_tokenizer
    from webui.models.families import FAMILIES

    folder = FAMILIES["sd1"].config_dir
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")).eval()
    text = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "text_encoder" / "config.json")).eval()
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")).eval()
    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(folder / "scheduler"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(device, dtype)


def write_lora(pipe, path: Path, rank: int, seed: int) -> None:
    """A kohya LoRA with LDM names whose change is a few percent of each weight (a trained LoRA's size)."""
    from safetensors.torch import save_file

    from webui.models.convert.unet import UNetPlan

    plan = UNetPlan.from_config(pipe.unet.config)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}

    def add(name: str, weight: torch.Tensor) -> None:
        out, inp, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, inp, *kernel, generator=gen) / inp ** 0.5
        tensors[f"{name}.lora_up.weight"] = torch.randn(out, rank, *([1, 1] if kernel else []), generator=gen) * 0.002
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))

    for path_, module in pipe.unet.named_modules():
        if path_.endswith(UNET_LAYERS) and hasattr(module, "weight"):
            ldm = plan.key(path_ + ".weight").removesuffix(".weight")
            add("lora_unet_" + ldm.replace(".", "_"), module.weight)
    for path_, module in pipe.text_encoder.named_modules():
        if path_.endswith(TE_LAYERS):
            add("lora_te_text_model_" + path_.replace(".", "_"), module.weight)
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, str(path))


def _once(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def timed(fn, reps: int, sync) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from extensions.lora import adapters
    from extensions.lora.library import LoraLibrary
    from extensions.lora.session import Active, StackSession
    from webui.cli import quiet_libraries

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latent", type=int, default=32, help="latent side (image side / 8)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    quiet_libraries()
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(f"device={args.device} dtype={args.dtype} latent={args.latent}x{args.latent} batch=2 rank={args.rank} "
          f"reps={args.reps} torch={torch.__version__} threads={torch.get_num_threads()}", flush=True)

    pipe = build_pipeline(args.device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, args.latent, args.latent, generator=gen).to(args.device, dtype)
    ctx = torch.randn(2, 77, 768, generator=gen).to(args.device, dtype)

    def step():
        with torch.no_grad():
            return pipe.unet(x, 500, ctx).sample

    folder = Path(tempfile.mkdtemp(prefix="easel-bench-lora-"))
    for i in range(3):
        write_lora(pipe, folder / f"lora{i}.safetensors", args.rank, seed=i)
    library = LoraLibrary((folder,), folder / "cache.json")
    state = adapters.state_for(pipe)
    start = time.perf_counter()
    loaded = [adapters.load(pipe, state, library.find(f"lora{i}")) for i in range(3)]
    load_s = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    first = StackSession(pipe, state)
    first.apply([Active(lo, 1.0, 0.8) for lo in loaded], fuse=False)  # the 3 files as one adapter (combined.py)
    first.undo()
    combine_s = time.perf_counter() - start
    configs = {"base": (0, False), "1 unfused": (1, False), "1 fused": (1, True), "3 unfused": (3, False),
               "3 fused": (3, True)}
    steps: dict[str, list[float]] = {name: [] for name in configs}
    flops: dict[str, int] = {}
    outputs = {}
    kept = {}
    order = list(configs)
    for rep in range(args.reps):  # interleaved and rotated: a noisy neighbour or a slot's position hits all alike
        for name in order[rep % len(order):] + order[: rep % len(order)]:
            n, fuse = configs[name]
            state.fused = kept.get(name)  # each fused stack as a job finds it: fused once, kept (one per model)
            session = StackSession(pipe, state)
            session.apply([Active(lo, 1.0, 0.8) for lo in loaded[:n]], fuse)
            kept[name] = state.fused
            with FlopCounterMode(display=False) as counter:  # warm-up: faults in freshly allocated memory
                outputs[name] = step().float()
            flops[name] = counter.get_total_flops()
            steps[name] += [_once(step, sync), _once(step, sync)]
            session.undo()
    weights = iter([0.5, 0.9] * 50)

    def switch(fuse: bool, same: bool, weight: float = 0.7) -> None:
        if not same:
            state.fused = None  # the fused weights of another stack
        s = StackSession(pipe, state)
        s.apply([Active(lo, weight, weight) for lo in loaded], fuse)
        s.undo()

    switches = {"weights change": lambda: switch(False, True, next(weights))}
    switches["switch unfused"] = lambda: switch(False, True)
    switches["switch fused new"] = lambda: switch(True, False)
    switches["switch fused same"] = lambda: switch(True, True)

    base = min(steps["base"])
    print(f"{'measure':18} {'best s':>8} {'median s':>9} {'ratio':>7} {'FLOP bound':>10}")
    print(f"{'base':18} {base:8.4f} {statistics.median(steps['base']):9.4f}")
    for name in order[1:]:  # ratio: speed relative to the base step, best against best
        print(f"{name:18} {min(steps[name]):8.4f} {statistics.median(steps[name]):9.4f} "
              f"{base / min(steps[name]):7.3f} {flops['base'] / flops[name]:10.3f}", flush=True)
    print(f"{'load (per file)':18} {load_s:8.4f} {'':9} {load_s / base:7.3f}")
    print(f"{'combine 3 (once)':18} {combine_s:8.4f} {'':9} {combine_s / base:7.3f}")
    for name, fn in switches.items():  # ratio: cost in base steps
        seconds = timed(fn, args.reps, sync)
        print(f"{name:18} {seconds:8.4f} {'':9} {seconds / base:7.3f}", flush=True)
    for n in (1, 3):
        unfused, fused = outputs[f"{n} unfused"], outputs[f"{n} fused"]
        print(f"drift {n} LoRA(s): {((fused - unfused).abs().max() / unfused.abs().max()).item():.2e}")


if __name__ == "__main__":
    main()
