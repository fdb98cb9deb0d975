"""Detection from the header alone: real-size layout files of every family (sparse, so no disk or
time cost), the hints for prediction type and variants, and the `easel models` listing."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from webui.models.convert.layout import write_layout_file
from webui.models.detect import detect
from webui.models.families import FAMILIES
from webui.models.header import read_header


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    """`layout(family)` -> a real-size A1111-layout file of that family with a sparse data region."""
    folder = tmp_path_factory.mktemp("layouts")
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = folder / f"{family}.safetensors"
            write_layout_file(FAMILIES[family].config_dir, made[family], dtype=torch.float16)
        return made[family]

    return make


def copy_with_metadata(src: Path, dst: Path, metadata: dict[str, str]) -> Path:
    """The same header (offsets unchanged) with safetensors metadata added; data stays sparse."""
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        doc = json.loads(f.read(n))
    data_size = src.stat().st_size - 8 - n
    doc["__metadata__"] = {**doc.get("__metadata__", {}), **metadata}
    raw = json.dumps(doc).encode()
    raw += b" " * (-len(raw) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + data_size)
    return dst


@pytest.mark.parametrize("family", list(FAMILIES))
def test_real_size_layout_is_detected(family, layout):
    path = layout(family)
    assert path.stat().st_size > 1_000_000_000  # real size on paper...
    assert path.stat().st_blocks * 512 < 50_000_000  # ...but a sparse hole on disk
    det = detect(read_header(path))
    assert det.family == family, det.reason
    assert det.prediction == FAMILIES[family].default_prediction


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_models_are_detected_like_real_ones(family, tiny_checkpoint):
    assert detect(read_header(tiny_checkpoint(family))).family == family


def test_sd2_prediction_hints(layout, tmp_path):
    base = layout("sd2")
    det = detect(read_header(base))
    assert det.prediction == "v" and "guessed" in det.reason
    yaml_model = tmp_path / "a.safetensors"
    os.link(base, yaml_model)
    (tmp_path / "a.yaml").write_text("model:\n  params:\n    parameterization: eps\n")
    assert detect(read_header(yaml_model)).prediction == "eps"
    (tmp_path / "a.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect(read_header(yaml_model)).prediction == "v"
    meta = copy_with_metadata(base, tmp_path / "b.safetensors", {"modelspec.prediction_type": "epsilon"})
    assert detect(read_header(meta)).prediction == "eps"
    kohya = copy_with_metadata(base, tmp_path / "c.safetensors", {"ss_v_parameterization": "False"})
    assert detect(read_header(kohya)).prediction == "eps"
    (tmp_path / "c.json").write_text(json.dumps({"prediction": "v", "description": "A1111 user metadata is kept"}))
    assert detect(read_header(kohya)).prediction == "v"  # the override file wins


def test_sdxl_variants_and_family_override(layout, tmp_path):
    turbo = tmp_path / "sd_xl_turbo_1.0_fp16.safetensors"
    os.link(layout("sdxl-base"), turbo)
    assert detect(read_header(turbo)).variant == "turbo"
    light = copy_with_metadata(layout("sdxl-base"), tmp_path / "x.safetensors", {"modelspec.title": "SDXL-Lightning 4-step"})
    assert detect(read_header(light)).variant == "lightning"
    plain = tmp_path / "y.safetensors"
    os.link(layout("sdxl-base"), plain)
    assert detect(read_header(plain)).variant is None
    (tmp_path / "y.json").write_text(json.dumps({"variant": "lightning"}))
    assert detect(read_header(plain)).variant == "lightning"
    ssd = tmp_path / "z.safetensors"
    os.link(layout("ssd-1b"), ssd)
    (tmp_path / "z.json").write_text(json.dumps({"family": "vega"}))
    det = detect(read_header(ssd))
    assert det.family == "vega" and "z.json" in det.reason


def test_v_pred_marker_key_on_sdxl(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(tiny_checkpoint("sdxl-base"))
    sd["v_pred"] = torch.zeros(0)
    save_file(sd, str(tmp_path / "vpred.safetensors"))
    assert detect(read_header(tmp_path / "vpred.safetensors")).prediction == "v"


def test_ckpt_is_detected_like_safetensors(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": load_file(tiny_checkpoint("sd1-inpaint")), "global_step": 1}, path)
    h = read_header(path)
    assert h.format == "ckpt" and detect(h).family == "sd1-inpaint"


def test_easel_models_json_lists_every_family(layout, tmp_path):
    data = tmp_path / "a1111"
    ckpts = data / "models" / "Stable-diffusion"
    (ckpts / "sub").mkdir(parents=True)
    for family in FAMILIES:
        os.link(layout(family), ckpts / "sub" / f"{family}.safetensors")
    (ckpts / "junk.safetensors").write_bytes(b"not a model")
    out = subprocess.run(
        [sys.executable, "-m", "webui.cli", "models", "--json", "--data-dir", str(data)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {f"sub/{f}.safetensors" for f in FAMILIES} | {"junk.safetensors"} == set(rows)
    for family in FAMILIES:
        row = rows[f"sub/{family}.safetensors"]
        assert set(row) == {"name", "path", "family", "prediction", "hash", "size", "format"}
        assert (row["family"], row["hash"], row["format"]) == (family, "pending", "safetensors")
    assert rows["junk.safetensors"]["family"] == "error" and "junk.safetensors" in rows["junk.safetensors"]["reason"]
