"""What a LoRA stack costs on a full-size SD1.5 UNet (random weights, built from Easel's shipped configs).

Each LoRA is a kohya file with LDM names, rank --rank, on every attention projection, proj_in/proj_out and
feed-forward layer of the UNet and every attention/MLP layer of the text encoder; it goes through the
extension's own code (library entry -> adapters.load -> StackSession), as in a job. UNet calls are batch 2
(cond + uncond); the configurations alternate rep by rep, and each rep is the faster of two steps after a
warm-up step (the first step after a switch faults in freshly allocated memory); medians over --reps:
  base                  no LoRA
  1 / 3 unfused         PEFT adapters active (set_adapters), per-step LoRA matmuls
  1 / 3 fused           the same stack fused into the weights for the job (setting `lora_fuse`)
  load                  first use of one file on the model (read + load_lora_weights), once per file
  weights change        set_adapters with new weights for the 3 loaded LoRAs (what a changed stack costs)
  switch unfused/fused  a whole job's apply + undo (enable, set weights, [fuse], restore, disable)
Speed ratio = base step / step (goals: fused >= 0.98, unfused >= 0.85); switch ratio = time / base step
(goal: a weight change < 1). drift = max |fused - unfused| / max |unfused| of the UNet output.
Usage: python bench/lora.py [--latent 32] [--rank 32] [--reps 3] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    from extensions.lora import adapters
    from extensions.lora.library import LoraLibrary
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
    results: dict[str, float] = {"load (per file)": (time.perf_counter() - start) / 3}
    configs = {"base": (0, False), "1 unfused": (1, False), "1 fused": (1, True), "3 unfused": (3, False),
               "3 fused": (3, True)}
    steps: dict[str, list[float]] = {name: [] for name in configs}
    outputs = {}
    for _ in range(args.reps):  # configurations interleaved, so a noisy neighbour hits them all alike
        for name, (n, fuse) in configs.items():
            session = adapters.StackSession(pipe, state)
            session.apply([adapters.Active(lo, 1.0, 0.8) for lo in loaded[:n]], fuse)
            outputs[name] = step().float()  # warm-up: the first step after a switch faults in fresh memory
            steps[name].append(min(_once(step, sync), _once(step, sync)))
            session.undo()
    for name in configs:
        results[name] = statistics.median(steps[name])
    names = [lo.adapter for lo in loaded]
    session = adapters.StackSession(pipe, state)
    session.apply([adapters.Active(lo, 1.0, 1.0) for lo in loaded], fuse=False)
    weights = iter([0.5, 0.9] * 50)
    results["weights change"] = timed(lambda: pipe.set_adapters(names, [next(weights)] * 3), args.reps, sync)
    session.undo()
    for fuse in (False, True):
        def switch(fuse=fuse):
            s = adapters.StackSession(pipe, state)
            s.apply([adapters.Active(lo, 0.7, 0.7) for lo in loaded], fuse)
            s.undo()
        results[f"switch {'fused' if fuse else 'unfused'}"] = timed(switch, args.reps, sync)

    base = results["base"]
    print(f"{'measure':18} {'seconds':>9} {'ratio':>7}")
    for name, seconds in results.items():
        if name.startswith(("1 ", "3 ")):
            ratio = f"{base / seconds:7.3f}"  # speed relative to the base step
        elif name.startswith(("weights", "switch", "load")):
            ratio = f"{seconds / base:7.3f}"  # cost in base steps
        else:
            ratio = ""
        print(f"{name:18} {seconds:9.4f} {ratio}", flush=True)
    for n in (1, 3):
        unfused, fused = outputs[f"{n} unfused"], outputs[f"{n} fused"]
        print(f"drift {n} LoRA(s): {((fused - unfused).abs().max() / unfused.abs().max()).item():.2e}")


if __name__ == "__main__":
    main()
