"""Every family loads offline from an A1111-layout single file (and from a diffusers folder) and draws."""

import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_generate
from webui.models.families import FAMILIES
from webui.models.header import read_header
from webui.models.manager import ModelManager
from webui.models.tiny import tiny_pipeline


@pytest.mark.parametrize("family", list(FAMILIES))
def test_single_file_is_detected_loaded_offline_and_generates(family, tiny_checkpoint, paths, no_network):
    shutil.copy(tiny_checkpoint(family), paths.folder("checkpoints") / f"my-{family}.safetensors")
    manager = ModelManager(paths)
    (entry,) = manager.checkpoints()
    assert (entry.detection.family, entry.format) == (family, "safetensors")
    loaded = manager.load(entry)
    image = tiny_generate(loaded.pipeline, family)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 0
    assert no_network == []


@pytest.mark.parametrize("family", ["sd1", "sdxl-base"])
def test_loaded_single_file_draws_exactly_what_the_original_draws(family, tiny_checkpoint, paths):
    shutil.copy(tiny_checkpoint(family), paths.folder("checkpoints") / "m.safetensors")
    loaded = ModelManager(paths).load("m.safetensors")
    expected = tiny_generate(tiny_pipeline(family, seed=0), family)
    assert np.array_equal(tiny_generate(loaded.pipeline, family), expected)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_diffusers_folder_loads_offline_even_without_tokenizer_files(family, paths, no_network):
    folder = paths.folder("checkpoints") / f"{family}-diffusers"
    pipe = tiny_pipeline(family, seed=0)
    pipe.save_pretrained(folder)
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / name, ignore_errors=True)  # diffusers would build a 2-token tokenizer
    manager = ModelManager(paths)
    (entry,) = manager.checkpoints()
    assert (entry.detection.family, entry.format) == (family, "diffusers")
    loaded = manager.load(entry)
    for name in ("tokenizer", "tokenizer_2"):
        assert getattr(loaded.pipeline, name, None) is None or len(getattr(loaded.pipeline, name)) == 49408
    assert np.array_equal(tiny_generate(loaded.pipeline, family), tiny_generate(pipe, family))
    assert no_network == []


def test_demo_models_when_no_checkpoint(paths, caplog):
    manager = ModelManager(paths)
    entries = manager.checkpoints()
    assert manager.using_demo and {e.detection.family for e in entries} == {"sd1", "sdxl-base"}
    assert "draw noise" in caplog.text and "easel download sd15" in caplog.text
    loaded = manager.load()
    assert tiny_generate(loaded.pipeline, loaded.family.name).shape == (64, 64, 3)
    # Deterministic: a second data dir builds the same demo models (same tensors and metadata; the raw
    # bytes may differ because safetensors writes metadata keys in hash-map order).
    again = ModelManager(type(paths).from_flags(data_dir=paths.data_dir.parent / "other")).checkpoints()
    for a, b in zip(entries, again, strict=True):
        ta, tb = load_file(a.path), load_file(b.path)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
        assert read_header(a.path).metadata == read_header(b.path).metadata


def test_cached_reload_returns_the_same_pipeline(tiny_checkpoint, paths):
    shutil.copy(tiny_checkpoint("sd1"), paths.folder("checkpoints") / "a.safetensors")
    manager = ModelManager(paths)
    first = manager.load("a")
    assert manager.load("a.safetensors").pipeline is first.pipeline
    manager.unload(first.entry)
    assert manager.load("a").pipeline is not first.pipeline


def test_fp16_request_is_honoured(tiny_checkpoint, paths):
    from webui.settings import RuntimeSettings

    shutil.copy(tiny_checkpoint("sd1"), paths.folder("checkpoints") / "a.safetensors")
    loaded = ModelManager(paths, RuntimeSettings(dtype="float16")).load("a")
    assert loaded.pipeline.unet.dtype == torch.float16 and loaded.pipeline.text_encoder.dtype == torch.float16


def test_a_replaced_file_is_loaded_again_not_served_from_cache(tiny_checkpoint, paths):
    target = paths.folder("checkpoints") / "model.safetensors"
    shutil.copy(tiny_checkpoint("sd1"), target)
    manager = ModelManager(paths)
    assert manager.load("model").family.name == "sd1"
    shutil.copy(tiny_checkpoint("sdxl-base"), target)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    assert manager.load("model").family.name == "sdxl-base"


def test_first_start_writes_the_demo_models_once_while_another_thread_loads(paths):
    """`easel serve` on a fresh install: the preload thread loads the default model while the UI, built
    at the same time, lists the checkpoints. A diffusers load puts every new module of the process on
    the meta device while it runs (accelerate's `init_empty_weights`), so a demo model built meanwhile
    in another thread came out with meta tensors and the server died on its first start."""
    import threading

    manager = ModelManager(paths)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run(fn):
        start.wait()
        try:
            fn()
        except BaseException as e:  # reported below, with the thread's own error
            errors.append(e)

    jobs = (manager.load, manager.checkpoints, manager.checkpoints)  # preload, UI build, an API request
    threads = [threading.Thread(target=run, args=(fn,)) for fn in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for entry in manager.checkpoints():
        assert not any(t.is_meta for t in load_file(entry.path).values())


def test_the_config_folder_of_a_file_is_never_read_half_written(tiny_checkpoint, paths):
    """Two processes (`easel serve` and `easel generate`) or threads materialise a file's embedded configs
    at once: each gets a complete folder."""
    import json
    import threading

    from webui.models.loader import embedded_config_dir

    seen: list = []
    start = threading.Barrier(6)

    def read():
        start.wait()
        try:
            folder = embedded_config_dir(tiny_checkpoint("sdxl-base"), paths.cache_dir)
            seen.append(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.json")))
            for f in folder.rglob("*.json"):
                json.loads(f.read_text())
        except Exception as e:  # a half-written folder: a missing or empty file
            seen.append(e)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == seen[0] for s in seen) and "unet/config.json" in seen[0], seen
    (only,) = paths.cache_dir.joinpath("configs").iterdir()  # no temp folder left behind
    assert not only.name.startswith(".")


def test_an_incomplete_config_folder_is_replaced(tiny_checkpoint, paths):
    """An older Easel wrote the folder in place; stopped midway, it left model_index.json alone."""
    from webui.models.loader import embedded_config_dir

    folder = embedded_config_dir(tiny_checkpoint("sd1"), paths.cache_dir)
    for sub in [p for p in folder.iterdir() if p.is_dir()]:
        shutil.rmtree(sub)
    assert embedded_config_dir(tiny_checkpoint("sd1"), paths.cache_dir) == folder
    assert (folder / "unet" / "config.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
    assert [p.name for p in paths.cache_dir.joinpath("configs").iterdir()] == [folder.name]
