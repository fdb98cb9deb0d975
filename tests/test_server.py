"""`easel serve` as users start it: loopback by default, the next free port, logins when exposed
(generated when none is given), --share offline, Ctrl+C, and the UI's named endpoints via gradio_client."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.engine_helpers import picture
from tests.ui_server import ROOT, Server, data_dir_with, free_port
from webui.generation.infotext import read_infotext


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_checkpoint):
    return data_dir_with(tmp_path_factory.mktemp("serve-data"), {"tiny-sd1.safetensors": tiny_checkpoint("sd1")})


@pytest.fixture(scope="module")
def server(data_dir):
    s = Server(data_dir)
    yield s
    s.stop()


def other_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (none on some sandboxes)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in out.split() if "." in a and not a.startswith("127.")]


def test_serves_ui_and_api_on_loopback_only(server):
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    listed = httpx.get(server.url + "/easel/v1/extensions", timeout=30).json()
    assert [e["name"] for e in listed["extensions"]] == ["checkpoints", "lora"]
    assert httpx.get(server.url + "/sdapi/v1/options", timeout=30).status_code == 404  # A1111's API needs --api
    assert server.url == f"http://127.0.0.1:{server.port}"
    for address in other_addresses():
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((address, server.port))


def test_named_endpoints_generate_with_infotext(server, data_dir):
    client = Client(server.url, verbose=False)
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/txt2img", "/img2img", "/txt2img_interrupt", "/png_info", "/apply_settings"} <= names
    progress, _, gallery, info = client.predict(prompt="a red cube", steps=2, width=64, height=72, seed=11,
                                                api_name="/txt2img")
    assert "1 image" in progress and "Seed: 11" in info and "Size: 64x72" in info
    shown = Image.open(gallery[0]["image"])
    assert shown.size == (64, 72) and read_infotext(shown).startswith("a red cube\n")
    saved = list((data_dir / "outputs" / "txt2img-images").rglob("*-11.png"))
    assert len(saved) == 1 and read_infotext(Image.open(saved[0])) == read_infotext(shown)

    init = data_dir / "init.png"
    picture(64, seed=3).save(init)
    progress, _, gallery, info = client.predict(prompt="oil", init_image=handle_file(str(init)), steps=4,
                                                denoising_strength=0.5, width=64, height=64, seed=2, api_name="/img2img")
    assert "Denoising strength: 0.5" in info, progress


def test_bad_request_is_a_message_and_the_server_keeps_serving(server):
    client = Client(server.url, verbose=False)
    progress, *_ = client.predict(prompt="x", steps=2, width=64, height=64, sampler="No Such Sampler", api_name="/txt2img")
    assert "No Such Sampler" in progress and "error" in progress
    progress, *_ = client.predict(prompt="x", api_name="/img2img")  # no init image
    assert "Drop an image into img2img" in progress
    assert httpx.get(server.url + "/easel/v1/extensions", timeout=30).status_code == 200


def test_two_clients_get_their_images_in_queue_order(server):
    finished: list[str] = []
    lock = threading.Lock()
    jobs = []
    for name in ("first", "second"):
        client = Client(server.url, verbose=False)
        job = client.submit(prompt=name, steps=6, width=64, height=64, seed=5, api_name="/txt2img")
        job.add_done_callback(lambda _f, name=name: (lock.acquire(), finished.append(name), lock.release()))
        jobs.append(job)
        time.sleep(0.3)  # the order of arrival is the order of service
    results = [job.result(timeout=180) for job in jobs]
    assert finished == ["first", "second"]
    assert ["first\n" in r[3] and "second" not in r[3] for r in results] == [True, False]
    assert "second\n" in results[1][3]


def test_settings_apply_without_restart_and_persist(server, data_dir):
    client = Client(server.url, verbose=False)
    result = client.predict(samples_format="jpg", api_name="/apply_settings")
    assert "File format for images" in result
    assert json.loads((data_dir / "config.json").read_text())["samples_format"] == "jpg"
    client.predict(prompt="saved as jpg", steps=2, width=64, height=64, seed=77, api_name="/txt2img")
    assert list((data_dir / "outputs" / "txt2img-images").rglob("*-77.jpg"))
    with pytest.raises(Exception, match="bmp"):  # Gradio refuses a value outside the dropdown's choices
        client.predict(samples_format="bmp", api_name="/apply_settings")
    refused = client.predict(CLIP_stop_at_last_layers=2.5, api_name="/apply_settings")  # Easel checks: a whole number
    assert "error" in refused and "CLIP_stop_at_last_layers" in refused
    assert json.loads((data_dir / "config.json").read_text())["samples_format"] == "jpg"
    client.predict(samples_format="png", api_name="/apply_settings")


def test_busy_port_moves_to_the_next_free_one(data_dir):
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        s = Server(data_dir, port=port)
        try:
            assert f"Port {port} is busy; using" in s.output
            assert not s.url.endswith(f":{port}")
            assert httpx.get(s.url + "/easel/v1/extensions", timeout=30).status_code == 200
        finally:
            assert s.stop() == 0
    assert "Easel stopped." in s.output


def test_gradio_auth_guards_ui_and_api(data_dir):
    s = Server(data_dir, "--gradio-auth", "alice:s3cret,bob:pw2")
    try:
        api = s.url + "/easel/v1/extensions"
        assert httpx.get(api, timeout=30).status_code == 401
        assert httpx.get(api, auth=("alice", "wrong"), timeout=30).status_code == 401
        assert httpx.get(api, auth=("bob", "pw2"), timeout=30).status_code == 200
        assert httpx.get(s.url + "/config", timeout=30).status_code == 401  # the UI's config needs the login
        with pytest.raises(Exception):
            Client(s.url, verbose=False)
        client = Client(s.url, auth=("alice", "s3cret"), verbose=False)
        assert "Seed: 4" in client.predict(prompt="x", steps=1, width=64, height=64, seed=4, api_name="/txt2img")[3]
    finally:
        s.stop()


def test_listen_without_auth_generates_a_password(data_dir):
    s = Server(data_dir, "--listen", "--api")
    try:
        m = re.search(r"user '(\w+)', password '([^']+)'", s.output)
        assert m, s.output
        for api in (s.url + "/easel/v1/extensions", s.url + "/sdapi/v1/options"):
            assert httpx.get(api, timeout=30).status_code == 401
            assert httpx.get(api, auth=(m[1], m[2]), timeout=30).status_code == 200
        txt2img = httpx.post(s.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64},
                             timeout=120)
        assert txt2img.status_code == 401  # no open generator on the network
        assert Client(s.url, auth=(m[1], m[2]), verbose=False).view_api(print_info=False, return_format="dict")
    finally:
        s.stop()


def test_nowebui_serves_only_the_api_with_its_own_login_and_cors(data_dir):
    s = Server(data_dir, "--nowebui", "--api-auth", "script:t0ken", "--cors-allow-origins", "http://client.example")
    try:
        assert httpx.get(s.url + "/", timeout=30).status_code == 404  # no UI
        body = {"prompt": "a cube", "steps": 1, "width": 64, "height": 64, "seed": 9, "sampler_name": "Euler"}
        assert httpx.post(s.url + "/sdapi/v1/txt2img", json=body, timeout=120).status_code == 401
        done = httpx.post(s.url + "/sdapi/v1/txt2img", json=body, auth=("script", "t0ken"), timeout=120)
        assert done.status_code == 200 and json.loads(done.json()["info"])["seed"] == 9
        preflight = httpx.options(s.url + "/sdapi/v1/txt2img", timeout=30, headers={
            "Origin": "http://client.example", "Access-Control-Request-Method": "POST"})
        assert preflight.headers.get("access-control-allow-origin") == "http://client.example"
        other = httpx.options(s.url + "/sdapi/v1/txt2img", timeout=30, headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        s.stop()


def test_listen_insecure_no_auth_is_explicit_and_warned(data_dir):
    s = Server(data_dir, "--listen", "--insecure-no-auth")
    try:
        assert "--insecure-no-auth: anyone who can reach this server can generate" in s.output
        assert httpx.get(s.url + "/easel/v1/extensions", timeout=30).status_code == 200
    finally:
        s.stop()


def test_share_offline_says_why_and_keeps_serving(data_dir):
    closed = free_port()  # a share server that refuses connections stands in for no internet
    s = Server(data_dir, "--share", "--gradio-auth", "u:p", env={"GRADIO_SHARE_SERVER_ADDRESS": f"127.0.0.1:{closed}"})
    try:
        assert s.wait_for("Could not create a share link", timeout=90), s.output
        assert "keeps serving locally" in s.output
        assert httpx.get(s.url + "/easel/v1/extensions", auth=("u", "p"), timeout=30).status_code == 200
    finally:
        s.stop()


def test_unreadable_auth_file_is_a_clear_error(data_dir, tmp_path):
    missing = tmp_path / "nope.txt"
    out = subprocess.run([sys.executable, "-m", "webui.cli", "serve", "--data-dir", str(data_dir), "--port",
                          str(free_port()), "--gradio-auth-path", str(missing)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and f"cannot read {missing}" in out.stderr


def test_auth_file_with_a_user_per_line(data_dir, tmp_path):
    creds = tmp_path / "users.txt"
    creds.write_text("carol:one\ndave:two, erin:three\n")
    s = Server(data_dir, "--gradio-auth-path", str(creds))
    try:
        api = s.url + "/easel/v1/extensions"
        assert [httpx.get(api, auth=u, timeout=30).status_code for u in (("dave", "two"), ("erin", "three"), ("x", "y"))] \
            == [200, 200, 401]
    finally:
        s.stop()
    assert Path(creds).read_text().startswith("carol")
