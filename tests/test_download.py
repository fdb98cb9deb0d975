"""`easel download` against a real HTTP server on 127.0.0.1 that behaves like the Hub (tests/hub_server.py)."""

from __future__ import annotations

import os
import socket

import pytest

from hub_server import FakeHub  # tests/ is on sys.path under pytest's default import mode
from webui.models.download import DownloadError, download, find_entry
from webui.models.download_catalog import CATALOG, SHA256_RE, CatalogEntry
from webui.settings import MODEL_FOLDERS, Paths

REPO, FILE = "tester/tiny-model", "weights/tiny.safetensors"
DATA = os.urandom(300 * 1024)


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths.from_flags(data_dir=tmp_path / "data")


@pytest.fixture
def hub(tmp_path):
    with FakeHub(tmp_path / "hub") as hub:
        hub.sha = hub.add(REPO, FILE, DATA)
        yield hub


def entry(sha256: str | None = None, **changes) -> CatalogEntry:
    fields = dict(name="tiny", repo_id=REPO, filename=FILE, folder="checkpoints", dest_name="tiny.safetensors")
    return CatalogEntry(**{**fields, "size": len(DATA), "sha256": sha256, **changes})


def fetch(hub: FakeHub, paths: Paths, e: CatalogEntry, **kw):
    """The call under test, with the test's own catalog and no dependence on the caller's HF_HUB_OFFLINE."""
    kw = {"endpoint": hub.url, "progress": False, "offline": False, **kw}
    return download(e.name, paths, catalog={e.name: e}, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("catalog_sha", [True, False], ids=["catalog-sha", "server-sha"])
def test_download_lands_in_the_a1111_folder_with_the_right_bytes(hub, paths, catalog_sha):
    path = fetch(hub, paths, entry(hub.sha if catalog_sha else None))
    assert path == paths.folder("checkpoints").resolve() / "tiny.safetensors"
    assert path.read_bytes() == DATA
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.safetensors"]  # no .partial left
    assert hub.gets()[0].path == f"/{REPO}/resolve/main/{FILE}"


def test_interrupted_download_resumes_with_range(hub, paths):
    hub.knobs.drop_after = 100_000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(hub, paths, entry(hub.sha))
    partial = paths.folder("checkpoints") / "tiny.safetensors.partial"
    assert partial.read_bytes() == DATA[:100_000]
    assert not (paths.folder("checkpoints") / "tiny.safetensors").exists()

    hub.knobs.drop_after = None
    path = fetch(hub, paths, entry(hub.sha))
    assert path.read_bytes() == DATA
    assert [g.range for g in hub.gets()] == [None, "bytes=100000-"]
    assert not partial.exists()


def test_server_that_ignores_range_restarts_from_zero(hub, paths):
    hub.knobs.drop_after = 50_000
    with pytest.raises(DownloadError):
        fetch(hub, paths, entry(None))
    hub.knobs.drop_after, hub.knobs.ignore_range = None, True
    assert fetch(hub, paths, entry(None)).read_bytes() == DATA
    assert hub.gets()[-1].range == "bytes=50000-"


def test_partial_that_is_not_a_prefix_of_a_shorter_file_is_dropped(hub, paths):
    folder = paths.folder("checkpoints")
    folder.mkdir(parents=True)
    (folder / "tiny.safetensors.partial").write_bytes(os.urandom(len(DATA) + 10))
    assert fetch(hub, paths, entry(None, size=None)).read_bytes() == DATA  # 416, then from zero


@pytest.mark.parametrize("catalog_sha", [True, False], ids=["catalog-sha", "server-sha"])
def test_checksum_mismatch_leaves_nothing_behind(hub, paths, catalog_sha):
    hub.knobs.wrong_bytes = True
    with pytest.raises(DownloadError, match=r"checksum mismatch for tiny\.safetensors") as info:
        fetch(hub, paths, entry(hub.sha if catalog_sha else None))
    assert hub.sha in str(info.value) and ("catalog" if catalog_sha else "server") in str(info.value)
    assert list(paths.folder("checkpoints").iterdir()) == []


def test_catalog_checksum_wins_over_a_changed_upstream_file(hub, paths):
    with pytest.raises(DownloadError, match="changed upstream"):
        fetch(hub, paths, entry("0" * 64))
    assert list(paths.folder("checkpoints").iterdir()) == []


def test_hub_redirect_sha_from_first_hop_and_token_stays_home(hub, paths):
    hub.knobs.redirect = True
    path = fetch(hub, paths, entry(None), token="hf_secret")
    assert path.read_bytes() == DATA
    resolve, cdn = hub.seen
    assert resolve.authorization == "Bearer hf_secret" and cdn.path.startswith("/cdn/")
    assert cdn.authorization is None

    path.unlink()
    hub.knobs.wrong_bytes = True  # only the 302 carries the sha256; the CDN's ETag is not one
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(hub, paths, entry(None))


def test_resume_through_the_redirect_keeps_the_range(hub, paths):
    hub.knobs.redirect, hub.knobs.drop_after = True, 70_000
    with pytest.raises(DownloadError):
        fetch(hub, paths, entry(hub.sha))
    hub.knobs.drop_after = None
    assert fetch(hub, paths, entry(hub.sha)).read_bytes() == DATA
    assert hub.gets("/cdn/")[-1].range == "bytes=70000-"


def test_complete_file_is_not_downloaded_again_even_offline(hub, paths, monkeypatch):
    fetch(hub, paths, entry(hub.sha))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = download("tiny", paths, catalog={"tiny": entry(hub.sha)}, endpoint=hub.url, progress=False)
    assert path.read_bytes() == DATA
    assert len(hub.gets()) == 1


def test_complete_partial_from_a_crash_before_the_rename_needs_no_transfer(hub, paths):
    folder = paths.folder("checkpoints")
    folder.mkdir(parents=True)
    (folder / "tiny.safetensors.partial").write_bytes(DATA)
    assert fetch(hub, paths, entry(hub.sha)).read_bytes() == DATA
    assert hub.seen == [] and not (folder / "tiny.safetensors.partial").exists()


def test_a_different_file_at_the_destination_is_left_alone(hub, paths):
    folder = paths.folder("checkpoints")
    folder.mkdir(parents=True)
    (folder / "tiny.safetensors").write_bytes(b"x" * len(DATA))
    with pytest.raises(DownloadError, match="already exists but is not tiny"):
        fetch(hub, paths, entry(hub.sha))
    assert (folder / "tiny.safetensors").read_bytes() == b"x" * len(DATA)
    assert hub.seen == []


def test_unknown_name_lists_the_known_ones(paths):
    with pytest.raises(DownloadError, match="unknown model 'sd99'; known names: .*sd15.*sdxl-base"):
        download("sd99", paths, progress=False)


def test_offline_env_fails_at_once_with_the_manual_route(hub, paths, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        download("sd15", paths, endpoint=hub.url, progress=False)
    message = str(info.value)
    assert message.startswith("offline: HF_HUB_OFFLINE is set; download sd15 by hand from ")
    sd15 = "stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"
    assert f"{hub.url}/{sd15} into " in message
    assert str(paths.folder("checkpoints")) in message
    assert hub.seen == []


def test_connection_refused_fails_fast_and_names_the_url(paths):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DownloadError, match="looks offline") as info:
        download("taesd", paths, endpoint=endpoint, progress=False, offline=False)
    assert f"{endpoint}/madebyollin/taesd/resolve/main/diffusion_pytorch_model.safetensors" in str(info.value)
    assert not paths.folder("vae_approx").exists() or list(paths.folder("vae_approx").iterdir()) == []


def test_a_silent_server_times_out(hub, paths):
    hub.knobs.stall = True
    with pytest.raises(DownloadError, match="timed out"):
        fetch(hub, paths, entry(hub.sha), timeout=0.3)


def test_missing_file_is_a_clear_404(hub, paths):
    with pytest.raises(DownloadError, match="HTTP 404 .*no such repository, revision or file"):
        fetch(hub, paths, entry(None, filename="nope.safetensors"))


def test_destination_name_cannot_escape_the_folder(hub, paths):
    with pytest.raises(DownloadError, match="unsafe destination"):
        fetch(hub, paths, entry(hub.sha, dest_name="../x.safetensors"))
    assert not (paths.folder("checkpoints").parent / "x.safetensors").exists()
    assert hub.seen == []


def test_hf_endpoint_from_the_environment(hub, paths, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    e = entry(hub.sha)
    path = download(e.name, paths, catalog={e.name: e}, progress=False, offline=False)
    assert path.read_bytes() == DATA


def test_progress_bar_goes_to_stderr(hub, paths, capsys):
    fetch(hub, paths, entry(hub.sha), progress=True)
    captured = capsys.readouterr()
    assert "tiny.safetensors" in captured.err and captured.out == ""


def test_catalog_entries_are_complete_and_land_in_known_folders():
    assert {"sd15", "sdxl-base", "sdxl-refiner", "sdxl-turbo", "ssd-1b", "vega", "sdxl-vae-fp16-fix", "taesd"} <= set(
        CATALOG
    )
    for name, e in CATALOG.items():
        assert e.name == name and e.folder in MODEL_FOLDERS and e.revision == "main"
        assert e.sha256 is None or SHA256_RE.match(e.sha256), name
        assert "/" not in e.dest_name and e.dest_name.endswith(".safetensors"), name
    assert find_entry("sd15").sha256[:10] == "6ce0161689"  # the A1111 short hash users know
    assert find_entry("sdxl-vae-fp16-fix").folder == "vae" and find_entry("taesd").folder == "vae_approx"


def test_endpoint_without_scheme_is_a_clear_error(paths):
    with pytest.raises(DownloadError, match="invalid URL huggingface.co/.*check the endpoint or HF_ENDPOINT"):
        download("taesd", paths, endpoint="huggingface.co", progress=False, offline=False)
