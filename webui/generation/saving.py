"""Saving generated images the way A1111 names them: `outputs/txt2img-images/2024-05-01/00007-1234.png`.

Several jobs, threads or Easel processes may save into one folder at once, and a gallery or file
watcher may read it meanwhile. So a file is encoded first, written whole under a hidden temp name
in the same folder, then given its final name in one step that can never replace an existing file
(a hard link, which fails if the name exists). Choosing the number and claiming the name happen
under an advisory lock on the folder, so concurrent Easel saves also get distinct numbers."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from webui.generation.infotext import image_bytes, pillow_format

MODES = ("txt2img", "img2img", "inpaint")


def dated_folder(outputs_dir: Path, mode: str, day: datetime.date) -> Path:
    """`outputs_dir/<mode>-images/<YYYY-MM-DD>`, A1111's default layout; ValueError for an unknown mode."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    return Path(outputs_dir) / f"{mode}-images" / day.isoformat()


def next_sequence_number(folder: Path) -> int:
    """A1111's `get_next_sequence_number(path, "")`: one past the highest leading number of any name.

    Every entry counts whatever its extension ("00012-5.jpg", "00013.txt", a folder "00014-x"), so numbers
    keep rising when the user mixes formats or A1111 writes into the same folder; the sequence starts at 0."""
    result = -1
    for name in os.listdir(folder):
        try:
            result = max(result, int(os.path.splitext(name)[0].split("-")[0]))
        except ValueError:
            pass
    return result + 1


def save_image(
    image: Image.Image, folder: Path, seed: int, infotext: str | None, fmt: str = "png", *, quality: int = 95
) -> Path:
    """Save `image` with its infotext as `folder/NNNNN-SEED.<fmt>` and return the path; the folder is created.

    Never overwrites and never exposes a half-written file. ValueError for an unknown format (before anything
    touches the disk); OSError naming the folder when it cannot be created or written."""
    pillow_format(fmt)
    extension = fmt.lower().lstrip(".")
    data = image_bytes(image, infotext, extension, quality)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(folder, data)
        try:
            with _folder_lock(folder):
                for number in itertools.count(next_sequence_number(folder)):
                    final = folder / f"{number:05}-{seed}.{extension}"
                    if _claim(tmp, final):
                        return final
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise _naming(err, folder) from err
    raise AssertionError("unreachable")  # itertools.count never ends


def _write_temp(folder: Path, data: bytes) -> Path:
    # A leading "." keeps the temp file out of galleries and out of the sequence numbering.
    fd, name = tempfile.mkstemp(prefix=".easel-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _claim(tmp: Path, final: Path) -> bool:
    """Give `tmp`'s content the name `final` unless that name exists; False when it does."""
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except (OSError, AttributeError):  # no hard links here (FAT, exFAT, some network shares): reserve the name
        pass
    try:
        fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    # An empty placeholder may be visible for a moment, never a partial image; the rename replaces only it.
    os.replace(tmp, final)
    return True


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the folder itself (no lock file left behind).

    flock() on separate opens excludes threads of one process as well as other processes. Where there is no
    flock (Windows, some network filesystems) saving still never overwrites; two saves with different seeds
    may then share a number, as they can in A1111."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _naming(err: OSError, folder: Path) -> OSError:
    """The same kind of error, with a message that names the folder the user has to fix."""
    message = f"cannot save images in {folder}: {err.strerror or err}"
    if err.errno is None:
        return OSError(message)
    return OSError(err.errno, message)  # OSError picks the subclass (PermissionError, ...) from errno
