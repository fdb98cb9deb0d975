"""Saving into A1111's output folders: names, numbering, formats, concurrency and failures, on real files."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from PIL import Image

from webui.generation.infotext import parse_infotext, read_infotext
from webui.generation.saving import _claim, dated_folder, next_sequence_number, save_image

INFOTEXT = "a red cube, 日本\nNegative prompt: blur\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 77, Size: 16x16"


def picture(color=(10, 200, 30)) -> Image.Image:
    image = Image.new("RGB", (16, 16), color)
    image.putpixel((3, 5), (255, 0, 255))
    return image


def test_dated_folder_uses_a1111_layout(tmp_path):
    day = datetime.date(2024, 5, 1)
    assert dated_folder(tmp_path, "txt2img", day) == tmp_path / "txt2img-images" / "2024-05-01"
    assert dated_folder(tmp_path, "img2img", day) == tmp_path / "img2img-images" / "2024-05-01"
    assert dated_folder(tmp_path, "inpaint", day) == tmp_path / "inpaint-images" / "2024-05-01"
    with pytest.raises(ValueError, match="txt2img, img2img, inpaint"):
        dated_folder(tmp_path, "extras", day)


def test_first_save_creates_the_folder_and_starts_at_zero(tmp_path):
    folder = dated_folder(tmp_path / "outputs", "txt2img", datetime.date(2024, 5, 1))
    path = save_image(picture(), folder, 1234567890, INFOTEXT)
    assert path == folder / "00000-1234567890.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert read_infotext(image) == INFOTEXT
        assert image.convert("RGB").tobytes() == picture().tobytes()  # PNG is lossless
    assert sorted(os.listdir(folder)) == ["00000-1234567890.png"]


def test_numbering_continues_after_the_highest_existing_number(tmp_path):
    (tmp_path / "00007-1.png").write_bytes(b"not really a png")
    (tmp_path / "00003-99.jpg").write_bytes(b"")
    (tmp_path / "grid-0042.png").write_bytes(b"")   # A1111 grids have their own prefix: ignored
    (tmp_path / "notes.txt").write_text("hi")
    assert next_sequence_number(tmp_path) == 8
    first = save_image(picture(), tmp_path, 5, INFOTEXT)
    second = save_image(picture(), tmp_path, 5, INFOTEXT, "webp")
    assert (first.name, second.name) == ("00008-5.png", "00009-5.webp")
    assert (tmp_path / "00007-1.png").read_bytes() == b"not really a png"


def test_any_entry_with_a_number_counts_like_in_a1111(tmp_path):
    (tmp_path / "00011-x.txt").write_text("")
    (tmp_path / "00012").mkdir()
    assert save_image(picture(), tmp_path, 3, INFOTEXT).name == "00013-3.png"


@pytest.mark.parametrize(("fmt", "pillow"), [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_each_format_keeps_its_extension_and_infotext(tmp_path, fmt, pillow):
    path = save_image(picture(), tmp_path, 9, INFOTEXT, fmt)
    assert path.name == f"00000-9.{fmt}"
    with Image.open(path) as image:
        assert image.format == pillow
        assert read_infotext(image) == INFOTEXT
        assert parse_infotext(read_infotext(image))[2]["Seed"] == "77"


def test_rgba_image_saves_as_jpeg(tmp_path):
    path = save_image(Image.new("RGBA", (8, 8), (0, 0, 255, 100)), tmp_path, 1, INFOTEXT, "jpg")
    with Image.open(path) as image:
        assert image.mode == "RGB" and read_infotext(image) == INFOTEXT


def test_unknown_format_fails_before_touching_the_disk(tmp_path):
    folder = tmp_path / "never"
    with pytest.raises(ValueError, match="png, jpg, jpeg, webp"):
        save_image(picture(), folder, 1, INFOTEXT, "bmp")
    assert not folder.exists()


def test_claiming_a_taken_name_leaves_both_files_alone(tmp_path):
    final, tmp = tmp_path / "00000-1.png", tmp_path / ".new.tmp"
    final.write_bytes(b"old")
    tmp.write_bytes(b"new")
    assert _claim(tmp, final) is False
    assert final.read_bytes() == b"old" and tmp.read_bytes() == b"new"
    assert _claim(tmp, tmp_path / "00001-1.png") is True
    assert (tmp_path / "00001-1.png").read_bytes() == b"new"


def check_folder(folder: Path, count: int) -> None:
    """`count` complete images numbered 0..count-1, each readable with its infotext, nothing else."""
    names = sorted(os.listdir(folder))
    assert len(names) == count, names
    assert [int(name.split("-")[0]) for name in names] == list(range(count))
    for name in names:
        with Image.open(folder / name) as image:
            image.load()
            assert read_infotext(image) == INFOTEXT


@pytest.fixture
def busy_switching():
    """Switch threads as often as the interpreter can, so races show up instead of hiding behind the GIL."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_threads_saving_into_one_folder_never_collide(tmp_path, busy_switching):
    folder = tmp_path / "txt2img-images" / "2024-05-01"
    results: list[Path] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        start.wait()
        try:
            for _ in range(5):
                # half the threads share a seed, so both a shared number and a shared name are contended
                results.append(save_image(picture(), folder, index % 2, INFOTEXT, ("png", "webp")[index % 2]))
        except BaseException as err:  # reported below, with the thread's error
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 40
    check_folder(folder, 40)


def test_processes_saving_into_one_folder_never_collide(tmp_path):
    folder = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys
        from PIL import Image
        from webui.generation.saving import save_image
        for _ in range(6):
            save_image(Image.new("RGB", (16, 16)), sys.argv[1], int(sys.argv[2]), {INFOTEXT!r})
    """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(folder), str(seed % 2)], env=env) for seed in range(4)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0, 0]
    check_folder(folder, 24)


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_a_save_waits_while_another_holds_the_folder_lock(tmp_path):
    """The lock that gives concurrent saves distinct numbers: held elsewhere, a save waits for it.

    It cannot fail from slowness: a working lock keeps the save blocked however long the join waits."""
    import fcntl

    saved: list[Path] = []
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: saved.append(save_image(picture(), tmp_path, 1, INFOTEXT)))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and saved == []
        assert [name for name in os.listdir(tmp_path) if not name.startswith(".")] == []
    finally:
        os.close(fd)
    thread.join()
    assert saved == [tmp_path / "00000-1.png"]
    assert os.listdir(tmp_path) == ["00000-1.png"]


def test_a_folder_that_cannot_be_created_is_named_in_the_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot save images in .*a-file"):
        save_image(picture(), blocker / "2024-05-01", 1, INFOTEXT)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_folder_is_named_in_the_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"cannot save images in {folder}"):
            save_image(picture(), folder, 1, INFOTEXT)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)
