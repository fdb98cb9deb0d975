"""Images in and out of the API: base64 (raw or a `data:image/...;base64,` URL) to PIL, and PNG with
its infotext back to base64. Sizes are checked from the header before any pixel is decoded."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from webui.generation.infotext import image_bytes

MAX_IMAGE_PIXELS = 8192 * 8192  # far above any SD input; a 20000x20000 upload is refused before decoding


class ImageFieldError(ValueError):
    """A client's image the API refuses; the message names the field."""


def decode_image(data: str, field: str) -> Image.Image:
    if not isinstance(data, str) or not data:
        raise ImageFieldError(f"{field}: expected a base64-encoded image, got {type(data).__name__}")
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if ";base64" not in header:
            raise ImageFieldError(f"{field}: a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(data.strip(), validate=False)
    except (binascii.Error, ValueError) as e:
        raise ImageFieldError(f"{field}: invalid base64 ({e})") from None
    try:
        image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError:  # Pillow's own guard fires first for the very largest
        raise ImageFieldError(f"{field}: the image is too large (the limit is {MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError):
        raise ImageFieldError(f"{field}: not an image (PNG, JPEG, WebP, ... expected)") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageFieldError(f"{field}: {width}x{height} is too large (the limit is {MAX_IMAGE_PIXELS} pixels)")
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageFieldError(f"{field}: the image is damaged ({e})") from None
    return image


def encode_png(image: Image.Image, infotext: str | None) -> str:
    return base64.b64encode(image_bytes(image, infotext, "png")).decode("ascii")
