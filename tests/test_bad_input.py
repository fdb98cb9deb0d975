"""Bad files give a clear error naming the file; nothing else breaks and nothing is written half-way."""

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from webui.fileio import atomic_write_bytes, safe_child
from webui.models.hashes import HashCache
from webui.models.header import CheckpointError, read_header
from webui.models.registry import CheckpointRegistry
from webui.models.vae import resolve_vae


def test_truncated_safetensors_is_reported(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(1000)}, str(path))
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(CheckpointError, match="cut.safetensors: truncated"):
        read_header(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 4) + b"{{{{" + b"\0" * 8, struct.pack("<Q", 2) + b"[]"],
)
def test_corrupt_safetensors_is_reported(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_header(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = marker
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {"model.diffusion_model.x": evil}}))
    with pytest.raises(CheckpointError, match="evil.ckpt: refused to load"):
        read_header(path)
    assert not marker.exists()


def test_plain_ckpt_is_read_with_weights_only(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}}, path)
    h = read_header(path)
    assert h.format == "ckpt" and h.shape("model.diffusion_model.input_blocks.0.0.weight") == (8, 4, 3, 3)


def test_bad_files_are_listed_with_reasons_beside_the_others(tmp_path):
    folder = tmp_path / "Stable-diffusion"
    (folder / "sub").mkdir(parents=True)
    save_file({"weight": torch.zeros(3)}, str(folder / "not-a-model.safetensors"))
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, str(folder / "sub" / "a-lora.safetensors"))
    (folder / "broken.safetensors").write_bytes(b"\x00" * 5)
    (folder / "diffusers-broken").mkdir()
    (folder / "diffusers-broken" / "model_index.json").write_text("{not json")
    entries = {e.name: e for e in CheckpointRegistry((folder,), HashCache(tmp_path / "h.json")).scan()}
    assert set(entries) == {"not-a-model.safetensors", "sub/a-lora.safetensors", "broken.safetensors", "diffusers-broken"}
    assert entries["not-a-model.safetensors"].detection.family == "unknown"
    assert "no Stable Diffusion UNet" in entries["not-a-model.safetensors"].detection.reason
    assert "LoRA" in entries["sub/a-lora.safetensors"].detection.reason
    assert entries["broken.safetensors"].detection.family == "error"
    assert "broken.safetensors" in entries["broken.safetensors"].detection.reason
    assert entries["diffusers-broken"].detection.family == "error"
    assert entries["diffusers-broken"].to_json()["reason"]


def test_names_with_path_tricks_are_refused(tmp_path):
    folder = tmp_path / "Stable-diffusion"
    folder.mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    registry = CheckpointRegistry((folder,), HashCache(tmp_path / "h.json"))
    for name in ("../secret.safetensors", "../secret", str(tmp_path / "secret.safetensors")):
        with pytest.raises(LookupError, match="no checkpoint named"):
            registry.find(name)
    for name in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError):
            safe_child(folder, name)
    assert safe_child(folder, "sub/ok.safetensors") == folder.resolve() / "sub" / "ok.safetensors"


def test_missing_vae_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="VAE 'nope.safetensors' not found"):
        resolve_vae("nope.safetensors", tmp_path / "model.safetensors", [])


def test_unreadable_hash_cache_is_replaced_not_fatal(tmp_path, caplog):
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text("{ this is not json")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"abc")
    cache = HashCache(cache_file)
    assert "unreadable" in caplog.text
    digest = cache.compute(model)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert json.loads(cache_file.read_text())["sha256"][str(model.resolve())]["sha256"] == digest


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")

    with pytest.raises(TypeError):  # the write fails half-way (here: data that cannot be written)
        atomic_write_bytes(target, object())
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left behind


def test_checkpoint_missing_a_component_fails_clearly_naming_the_file(tiny_checkpoint, paths):
    from safetensors.torch import load_file

    from webui.models.manager import ModelManager

    tensors = load_file(tiny_checkpoint("sd1"))
    kept = {k: v for k, v in tensors.items() if not k.startswith("cond_stage_model.")}
    path = paths.folder("checkpoints") / "no-text-encoder.safetensors"
    save_file(kept, str(path))
    manager = ModelManager(paths)
    with pytest.raises(CheckpointError, match="no-text-encoder.safetensors") as info:
        manager.load("no-text-encoder")
    assert "text_encoder" in str(info.value)
    assert len(manager.cache) == 0  # nothing half-loaded is kept


def test_unsupported_architecture_is_unknown_with_the_reason(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from webui.models.detect import detect

    tensors = load_file(tiny_checkpoint("sd1"))
    w = tensors["model.diffusion_model.input_blocks.0.0.weight"]
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(w.shape[0], 8, *w.shape[2:])
    save_file(tensors, str(tmp_path / "pix2pix.safetensors"))
    det = detect(read_header(tmp_path / "pix2pix.safetensors"))
    assert det.family == "unknown" and "8 input channels" in det.reason
