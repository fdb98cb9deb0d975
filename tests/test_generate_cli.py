"""`easel generate` as scripts run it: a real subprocess, real files, JSON on stdout."""

from __future__ import annotations

import json

from PIL import Image

from engine_helpers import picture, square_mask
from test_cli import easel
from webui.generation.infotext import read_infotext

SMALL = ("--width", "64", "--height", "64", "--steps", "2")


def test_demo_model_out_of_the_box(tmp_path):
    out = easel("generate", "--data-dir", str(tmp_path), "--prompt", "a cat", "--steps", "2", "--seed", "42")
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("model: easel-demo-sd1")
    path = tmp_path / "outputs" / "txt2img-images"
    (saved,) = path.glob("*/00000-42.png")
    assert lines[1] == str(saved)
    assert lines[2] == "a cat" and lines[3].startswith("Steps: 2, Sampler: DPM++ 2M, CFG scale: 7, Seed: 42, Size: 512x512")
    assert read_infotext(Image.open(saved)) == "\n".join(lines[2:])


def test_a1111_file_by_path_with_json_batch_img2img_and_inpaint(tmp_path, tiny_checkpoint):
    model = str(tiny_checkpoint("sdxl-base"))
    out = easel("generate", "--data-dir", str(tmp_path), "--model", model, "--prompt", "a (red:1.2) cube",
                "--sampler", "dpm++ 2m", "--scheduler", "karras", "--seed", "5", "--batch-size", "2", "--json",
                "--quiet", *SMALL)
    data = json.loads(out.stdout)
    assert data["seeds"] == [5, 6] and len(data["images"]) == 2
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in data["infotexts"][0]
    assert "Model: tiny-sdxl-base" in data["infotexts"][0]
    picture().save(tmp_path / "in.png")
    square_mask().save(tmp_path / "mask.png")
    img = json.loads(easel("generate", "--data-dir", str(tmp_path), "--model", model, "--init-image",
                           str(tmp_path / "in.png"), "--denoising-strength", "0.5", "--json", "--quiet", "--outdir",
                           str(tmp_path / "out"), *SMALL[:4], "--steps", "4").stdout)
    assert img["images"][0].startswith(str(tmp_path / "out")) and "Denoising strength: 0.5" in img["infotexts"][0]
    inp = json.loads(easel("generate", "--data-dir", str(tmp_path), "--model", model, "--init-image",
                           str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--json", "--quiet",
                           *SMALL).stdout)
    assert "/inpaint-images/" in inp["images"][0] and "Mask blur: 4" in inp["infotexts"][0]


def test_bad_input_exits_2_with_a_message(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    cases = [
        (("--steps", "0"), "steps must be an integer"),
        (("--init-image", str(tmp_path / "notes.png")), "not an image"),
        (("--sampler", "Euler z"), "Euler z"),
    ]
    for args, words in cases:
        out = easel("generate", "--data-dir", str(tmp_path), "--prompt", "x", "--quiet", *args, check=False)
        assert out.returncode == 2 and words in out.stderr, out.stderr
        assert not (tmp_path / "outputs").exists()
