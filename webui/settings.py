"""Typed settings: where things live and how models run, built from command-line flags.

Folder names follow AUTOMATIC1111 so `--data-dir` can point at an existing A1111 install."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_FOLDERS = {
    "checkpoints": "models/Stable-diffusion",
    "vae": "models/VAE",
    "vae_approx": "models/VAE-approx",
    "lora": "models/Lora",
    "controlnet": "models/ControlNet",
    "ipadapter": "models/ipadapter",
    "embeddings": "embeddings",
}


def default_data_dir() -> Path:
    """EASEL_DATA_DIR, else the source checkout (like A1111, data sits beside the code), else cwd."""
    env = os.environ.get("EASEL_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "launch.py").is_file():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class Paths:
    """Every folder Easel reads or writes. Extra `--ckpt-dir`/`--lora-dir` folders are searched too."""

    data_dir: Path
    extra_ckpt_dirs: tuple[Path, ...] = ()
    extra_lora_dirs: tuple[Path, ...] = ()
    extra_vae_dirs: tuple[Path, ...] = ()

    def folder(self, kind: str) -> Path:
        return self.data_dir / MODEL_FOLDERS[kind]

    @property
    def ckpt_dirs(self) -> tuple[Path, ...]:
        return (self.folder("checkpoints"), *self.extra_ckpt_dirs)

    @property
    def vae_dirs(self) -> tuple[Path, ...]:
        return (self.folder("vae"), *self.extra_vae_dirs)

    @property
    def lora_dirs(self) -> tuple[Path, ...]:
        return (self.folder("lora"), *self.extra_lora_dirs)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @classmethod
    def from_flags(
        cls,
        data_dir: str | Path | None = None,
        ckpt_dir: str | Path | None = None,
        lora_dir: str | Path | None = None,
        vae_dir: str | Path | None = None,
    ) -> "Paths":
        def extra(p: str | Path | None) -> tuple[Path, ...]:
            return (Path(p).expanduser().resolve(),) if p else ()

        root = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
        return cls(root, extra(ckpt_dir), extra(lora_dir), extra(vae_dir))


@dataclass(frozen=True)
class RuntimeSettings:
    """How models are placed: device, dtype, offload and the RAM/VRAM cache budgets (bytes)."""

    device: str = "cpu"
    dtype: str = "float32"  # float32 | float16 | bfloat16
    offload: str = "none"  # none | model (--medvram) | sequential (--lowvram)
    ram_budget: int = 0  # 0 = sized from the machine when the cache is created
    vram_budget: int = 0
