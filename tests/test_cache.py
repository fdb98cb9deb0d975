"""The cache keeps loaded pipelines under its RAM budget and gives evicted memory back to the OS."""

import os
import shutil

import torch

from webui.models.convert.layout import write_layout_file
from webui.models.families import FAMILIES
from webui.models.manager import ModelManager
from webui.models.memory import rss
from webui.settings import RuntimeSettings


def test_budget_evicts_least_recently_used(tiny_checkpoint, paths):
    for name in ("a", "b", "c"):
        shutil.copy(tiny_checkpoint("sd1"), paths.folder("checkpoints") / f"{name}.safetensors")
    manager = ModelManager(paths)
    one = manager.load("a")
    size = manager.cache.total_bytes
    manager.cache.ram_budget = int(size * 2.5)
    manager.load("b")
    manager.load("a")  # a is now the most recently used
    manager.load("c")
    held = {os.path.basename(k[0]) for k in manager.cache.keys()}
    assert held == {"a.safetensors", "c.safetensors"}
    assert manager.load("a").pipeline is one.pipeline


def test_real_size_model_eviction_returns_memory(tmp_path, paths):
    """A real-size SD1 layout (fp16 zeros from a sparse file, 4.3 GB once loaded as fp32) loaded twice
    under a budget of one model. (A load at the file's own dtype keeps the weights memory-mapped.)"""
    for name in ("one", "two"):
        write_layout_file(FAMILIES["sd1"].config_dir, paths.folder("checkpoints") / f"{name}.safetensors", dtype=torch.float16)
    manager = ModelManager(paths, RuntimeSettings(dtype="float32", ram_budget=5 * 2**30))
    before = rss()
    manager.load("one")
    with_one = rss()
    model_bytes = manager.cache.total_bytes
    assert model_bytes > 4e9 and with_one - before > 0.8 * model_bytes
    manager.load("two")  # would go over budget: "one" is evicted before "two" loads
    assert [os.path.basename(k[0]) for k in manager.cache.keys()] == ["two.safetensors"]
    assert rss() < with_one + 0.3 * model_bytes  # one model's worth, not two
    manager.cache.clear()
    assert rss() < before + 0.3 * model_bytes
