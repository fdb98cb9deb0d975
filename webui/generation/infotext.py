"""A1111's infotext: the "parameters" text every Easel image carries, written and read as A1111 1.10 and Forge do.

This layer only knows text and image files. Mapping request fields to infotext keys (and converting
the raw strings `parse_infotext` returns back into types, with A1111's defaults for missing keys)
belongs to the caller, so the format stays in one place and stays byte-compatible with A1111:

    prompt lines
    Negative prompt: negative lines          (left out when the negative prompt is empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, ...

PNG keeps the text in the `parameters` text chunk; JPEG and WebP keep it in the EXIF UserComment,
laid out exactly as A1111's `piexif.dump(... UserComment.dump(text, encoding="unicode"))`, so A1111,
Forge and every infotext reader that follows them can read Easel's files and Easel can read theirs.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from PIL import Image, PngImagePlugin
from PIL.ExifTags import IFD

# A1111 modules/infotext_utils.py, verbatim: a key is 2+ word/space/-// characters; a value is a JSON string
# or anything up to the next comma.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
_RE_KEY = re.compile(r"\w[\w \-/]+")

NEGATIVE_PREFIX = "Negative prompt:"

# Pillow format name for each file extension Easel saves; the extension itself is kept as the caller wrote it.
FORMATS: Mapping[str, str] = MappingProxyType({"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"})

USER_COMMENT_TAG = 0x9286  # Exif IFD, type UNDEFINED
_EXIF_POINTER_TAG = 0x8769
_UNICODE = b"UNICODE\x00"  # EXIF 2.3 table 9 character-code prefixes, as piexif.helper.UserComment spells them
_ASCII = b"ASCII\x00\x00\x00"
_JIS = b"JIS\x00\x00\x00\x00\x00"
_UNDEFINED = b"\x00" * 8
# A JPEG APP1 segment holds at most 65533 bytes, "Exif\0\0" included; the block around the text takes 54.
_JPEG_EXIF_MAX = 65533


def quote(value: str) -> str:
    """JSON-quote `value` when it would not survive the settings line raw.

    A1111 quotes values holding ',', ':' or a newline. Easel also quotes the two cases A1111 writes raw and
    then reads back changed: a value that starts with '"' (A1111 would unquote it) and one with surrounding
    whitespace (A1111's regex drops it). A1111 reads both quoted forms back correctly."""
    if any(c in value for c in ",:\n") or value.startswith('"') or value != value.strip():
        return json.dumps(value, ensure_ascii=False)
    return value


def unquote(value: str) -> str:
    """Undo `quote`: a value in double quotes is a JSON string; anything else (or bad JSON) is returned as is."""
    if len(value) == 0 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def format_value(value: object) -> str:
    """Text of one settings value: `str()`, except that whole floats print as ints.

    A1111's UI hands Gradio slider values over as ints when they are whole, so its infotexts say
    `CFG scale: 7` and `CFG scale: 7.5`; a request object holding 7.0 should write the same."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The infotext A1111's `create_infotext` writes: prompt, optional negative line, settings line.

    `params` keeps its order; None values are left out; a value equal to its key is written as the bare key
    (A1111 does so). A1111 readers only take the last line as settings when it holds at least 3 pairs, so
    callers pass at least 3 (A1111 always writes Steps, Sampler, CFG scale, Seed, Size). Keys must be readable
    back by A1111's regex (2+ letters, digits, '_', ' ', '-', '/'), else ValueError: a key like "a:b"
    would silently corrupt every key after it."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if not _RE_KEY.fullmatch(key):
            raise ValueError(
                f"infotext key {key!r} cannot be read back: use 2+ letters, digits, '_', spaces, '-' or '/', "
                "starting with a letter, digit or '_'"
            )
        text = format_value(value)
        parts.append(key if text == key else f"{key}: {quote(text)}")
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(parts)}".strip()


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, settings) from an infotext, with A1111's `parse_generation_parameters` rules.

    The last line is the settings line only if it holds 3+ `key: value` pairs; earlier lines are the prompt
    until a line starting "Negative prompt:", then the negative prompt (both may span lines; lines are
    stripped). Values are raw strings, unquoted; a `WxH` value is split into `<key>-1` / `<key>-2`
    (`Size: 512x768` -> `Size-1: "512"`, `Size-2: "768"`). A1111's defaults for missing keys (Clip skip 1,
    Schedule type Automatic, ...) are the caller's business: this returns only what the text says."""
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""

    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative if in_negative else prompt).append(line)

    params: dict[str, str] = {}
    for key, value in RE_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        size = RE_IMAGESIZE.match(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.group(1), size.group(2)
        else:
            params[key] = value
    return "\n".join(prompt), "\n".join(negative), params


def pillow_format(fmt: str) -> str:
    """Pillow's format name for a file extension ("jpg" -> "JPEG"); ValueError naming the choices."""
    try:
        return FORMATS[fmt.lower().lstrip(".")]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}: choose one of {', '.join(FORMATS)}") from None


def exif_user_comment(infotext: str) -> bytes:
    """An EXIF block holding only the UserComment, byte for byte what A1111 writes.

    A1111 calls `piexif.dump({"Exif": {UserComment: UserComment.dump(text, encoding="unicode")}})`:
    big-endian TIFF, IFD0 with one pointer to the Exif IFD, the Exif IFD with tag 0x9286 of type
    UNDEFINED (7) and no next-IFD field, then b"UNICODE\\0" + UTF-16-BE text. Pillow's own Exif writer
    stores bytes as type BYTE, which piexif (and so A1111) fails to decode, hence this encoder."""
    comment = _UNICODE + infotext.encode("utf_16_be", errors="replace")
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", _EXIF_POINTER_TAG, 4, 1, 26) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", USER_COMMENT_TAG, 7, len(comment), 40)
    return b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + ifd0 + exif_ifd + comment


def decode_user_comment(data: bytes | str) -> str | None:
    """The text of an EXIF UserComment by its character-code prefix; None when empty.

    UNICODE is UTF-16 big-endian for piexif/A1111; some writers use the TIFF byte order instead, so a body
    whose zero bytes sit at odd offsets (ASCII in little-endian) is read as UTF-16-LE. An unknown prefix is
    read as UTF-8 ignoring errors, as A1111 does."""
    if isinstance(data, str):  # written as EXIF type ASCII by some tools
        text = data
    else:
        prefix, body = data[:8], data[8:]
        if prefix == _UNICODE:
            text = _decode_utf16(body)
        elif prefix == _ASCII:
            text = body.decode("utf-8", errors="replace")
        elif prefix == _JIS:
            text = body.decode("shift_jis", errors="replace")
        elif prefix == _UNDEFINED:
            text = body.decode("utf-8", errors="ignore")
        else:
            text = data.decode("utf-8", errors="ignore")
    text = text.rstrip("\x00")
    return text or None


def _decode_utf16(body: bytes) -> str:
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return body.decode("utf-16", errors="replace")
    even_zeros = body[0::2].count(0)
    odd_zeros = body[1::2].count(0)
    return body.decode("utf_16_le" if odd_zeros > even_zeros else "utf_16_be", errors="replace")


def embed_infotext(infotext: str | None, fmt: str, quality: int = 95) -> dict[str, Any]:
    """Keyword arguments for `Image.save` that write `infotext` where A1111 puts it for `fmt`.

    PNG: a `parameters` text chunk (tEXt, or iTXt when the text is not Latin-1, as Pillow's `add_text`
    decides for A1111 too). JPEG/WebP: the EXIF UserComment. None writes no metadata."""
    kind = pillow_format(fmt)
    if kind == "PNG":
        options: dict[str, Any] = {"format": kind}
        if infotext is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", infotext)
            options["pnginfo"] = info
        return options
    options = {"format": kind, "quality": quality}
    if infotext is not None:
        exif = exif_user_comment(infotext)
        if kind == "JPEG" and len(exif) > _JPEG_EXIF_MAX:
            raise ValueError(
                f"infotext too long for a JPEG's EXIF ({len(infotext)} characters, a JPEG holds about "
                f"{(_JPEG_EXIF_MAX - 54) // 2}); save as PNG or WebP"
            )
        options["exif"] = exif
    return options


def read_infotext(image: Image.Image) -> str | None:
    """The infotext an image carries: PNG `parameters`, else the EXIF UserComment, else None."""
    text = image.info.get("parameters")
    if text is None and isinstance(image, PngImagePlugin.PngImageFile):
        text = image.text.get("parameters")  # a text chunk after the image data (loads the pixels)
    if text is not None:
        return str(text)
    try:
        comment = image.getexif().get_ifd(IFD.Exif).get(USER_COMMENT_TAG)
    except (OSError, ValueError, SyntaxError, struct.error):  # a damaged EXIF block is no infotext
        return None
    return None if comment is None else decode_user_comment(comment)


def image_bytes(image: Image.Image, infotext: str | None, fmt: str = "png", quality: int = 95) -> bytes:
    """`image` encoded as `fmt` with `infotext` embedded: the bytes a saved file or an API response holds.

    JPEG has no alpha or palette, so other modes are converted to RGB first (A1111 drops alpha the same way);
    WebP keeps RGBA."""
    options = embed_infotext(infotext, fmt, quality)
    if options["format"] == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    elif options["format"] == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()
