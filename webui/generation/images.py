"""Image preparation for img2img and inpaint, following A1111's `images.resize_image`,
`masking` and `fill` so the same inputs frame and blend the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from webui.generation.request import ResizeMode

LANCZOS = Image.Resampling.LANCZOS


def resize_image(mode: ResizeMode, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's three resize modes: stretch, crop to the aspect ratio, or letterbox with stretched edges."""
    if mode is ResizeMode.JUST_RESIZE:
        return im.resize((width, height), LANCZOS)
    ratio, src_ratio = width / height, im.width / im.height
    crop = mode is ResizeMode.CROP_AND_RESIZE
    if (ratio > src_ratio) == crop:
        src_w, src_h = width, im.height * width // im.width
    else:
        src_w, src_h = im.width * height // im.height, height
    resized = im.resize((src_w, src_h), LANCZOS)
    res = Image.new(im.mode, (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if crop:
        return res
    if ratio < src_ratio:  # bars above and below: stretch the first/last rows
        fill = height // 2 - src_h // 2
        if fill > 0:
            res.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)), box=(0, fill + src_h))
    elif ratio > src_ratio:  # bars left and right: stretch the first/last columns
        fill = width // 2 - src_w // 2
        if fill > 0:
            res.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)), box=(fill + src_w, 0))
    return res


def prepare_mask(mask: Image.Image, invert: bool, blur: int) -> Image.Image:
    """Greyscale mask (white = repaint), inverted and Gaussian-blurred like A1111 (`mask_blur`)."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1][0] < 255:
        mask = mask.getchannel("A")  # painted masks (gr.ImageMask) carry the strokes in alpha
    mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area takes the blurred colours around it."""
    image_mod = Image.new("RGBA", image.size)
    image_masked = Image.new("RGBa", image.size)
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def mask_bbox(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """The box around the non-black part of the mask, grown by `padding` and clipped to the image."""
    arr = np.asarray(mask)
    ys, xs = np.nonzero(arr > 0)
    if len(xs) == 0:
        return None
    w, h = mask.size
    return (max(int(xs.min()) - padding, 0), max(int(ys.min()) - padding, 0),
            min(int(xs.max()) + 1 + padding, w), min(int(ys.max()) + 1 + padding, h))


def expand_to_ratio(box: tuple[int, int, int, int], width: int, height: int, im_w: int, im_h: int) -> tuple[int, int, int, int]:
    """Grow the crop to the generation's aspect ratio so the crop is not distorted (A1111's expand_crop_region)."""
    x1, y1, x2, y2 = box
    ratio_crop, ratio_proc = (x2 - x1) / (y2 - y1), width / height
    if ratio_crop > ratio_proc:
        y1, y2 = _grow(y1, y2, (x2 - x1) / ratio_proc, im_h)
    else:
        x1, x2 = _grow(x1, x2, (y2 - y1) * ratio_proc, im_w)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, desired: float, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) around its centre to `desired`, shifted back inside [0, limit)."""
    diff = int(desired - (hi - lo)) // 2
    lo, hi = lo - diff, hi + diff + int(desired - (hi - lo)) % 2
    if hi >= limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        hi, lo = min(hi - lo, limit), 0
    return lo, hi


@dataclass
class InpaintFrame:
    """What the pipeline sees for an inpaint job, and how to put its output back into the picture."""

    image: Image.Image  # generation-sized picture given to the pipeline
    mask: Image.Image  # generation-sized blurred mask
    original: Image.Image  # the full picture, at its own size for "only masked", else generation size
    full_mask: Image.Image  # blurred mask matching `original`, used to paste back
    crop: tuple[int, int, int, int] | None  # where the generated crop goes in `original`

    def paste_back(self, generated: Image.Image) -> Image.Image:
        """Original pixels outside the mask, generated ones inside, blended by the blurred mask."""
        if self.crop is None:
            base = generated.convert("RGB")
        else:
            x1, y1, x2, y2 = self.crop
            base = self.original.convert("RGB").copy()
            base.paste(generated.convert("RGB").resize((x2 - x1, y2 - y1), LANCZOS), (x1, y1))
        return Image.composite(base, self.original.convert("RGB"), self.full_mask)


def inpaint_frame(
    image: Image.Image, mask: Image.Image, width: int, height: int, resize_mode: ResizeMode,
    only_masked: bool, padding: int,
) -> InpaintFrame:
    """Frame an inpaint job: the whole picture resized, or only the masked area cropped with padding."""
    image = image.convert("RGB")
    if only_masked:
        box = mask_bbox(mask, padding)
        if box is not None:
            box = expand_to_ratio(box, width, height, *image.size)
            crop_img = image.crop(box).resize((width, height), LANCZOS)
            crop_mask = mask.crop(box).resize((width, height), LANCZOS)
            return InpaintFrame(crop_img, crop_mask, image, mask, box)
    sized = resize_image(resize_mode, image, width, height)
    sized_mask = resize_image(resize_mode, mask, width, height)
    return InpaintFrame(sized, sized_mask, sized, sized_mask, None)
