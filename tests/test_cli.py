"""The `easel` command as a user runs it: a real subprocess, real files, no network."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def easel(*args, env=None, check=True):
    return subprocess.run(
        [sys.executable, "-m", "webui.cli", *args],
        capture_output=True, text=True, cwd=ROOT, check=check, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_serve_without_checkpoints_uses_the_demo_model(tmp_path):
    import httpx

    from tests.ui_server import Server

    server = Server(tmp_path)
    try:
        assert server.wait_for("Model ready: easel-demo-sd1.safetensors"), server.output
        assert "draw noise" in server.output
        assert httpx.get(server.url + "/", timeout=30).status_code == 200
    finally:
        assert server.stop() == 0
    assert not (tmp_path / "models" / "Stable-diffusion").exists() or not any((tmp_path / "models" / "Stable-diffusion").iterdir())


def test_models_table_lists_a_checkpoint_with_its_hash(tmp_path, tiny_checkpoint):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_checkpoint("sdxl-base"), ckpts / "my-xl.safetensors")
    out = easel("models", "--hash", "--data-dir", str(tmp_path)).stdout
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "FAMILY", "PRED", "HASH", "SIZE", "FORMAT"]
    name, family, pred, hash10 = row.split()[:4]
    assert (name, family, pred, len(hash10)) == ("my-xl.safetensors", "sdxl-base", "eps", 10)


def test_download_offline_fails_fast_with_a_clear_message(tmp_path):
    out = easel("download", "sd15", "--data-dir", str(tmp_path), check=False)
    assert out.returncode == 1 and "offline" in out.stderr and "HF_HUB_OFFLINE" in out.stderr
    assert not any(tmp_path.rglob("*.safetensors*"))


def test_models_json_includes_an_extra_ckpt_dir(tmp_path, tiny_checkpoint):
    import json

    extra = tmp_path / "elsewhere" / "deep"
    extra.mkdir(parents=True)
    shutil.copy(tiny_checkpoint("sd2"), extra / "two.safetensors")
    rows = json.loads(easel("models", "--json", "--data-dir", str(tmp_path / "data"), "--ckpt-dir", str(tmp_path / "elsewhere")).stdout)
    assert [(r["name"], r["family"], r["prediction"]) for r in rows] == [("deep/two.safetensors", "sd2", "v")]
