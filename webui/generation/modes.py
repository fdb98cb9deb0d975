"""Per-mode inputs of a job: the init image and mask as the pipeline wants them, the keyword arguments
that carry them, and the finishing step (inpaint results pasted back over the original)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from webui.generation.images import InpaintFrame, fill, inpaint_frame, prepare_mask, resize_image
from webui.generation.pipelines import Route
from webui.generation.request import GenerationRequest, MaskedContent, Mode


@dataclass
class JobInputs:
    image: Image.Image | None = None  # generation-sized picture for img2img/inpaint pipelines
    mask: Image.Image | None = None  # generation-sized mask for the inpaint pipeline
    frame: InpaintFrame | None = None  # set for real inpaint jobs: how to paste results back
    latent_content: MaskedContent | None = None  # latent noise / latent nothing
    notices: list[str] = field(default_factory=list)

    def pipeline_kwargs(self, pipe, req: GenerationRequest, seeds: list[int], way: Route) -> dict:
        strength = 1.0 if way.from_noise else req.denoising_strength
        kwargs: dict = dict(image=self.image, strength=strength)
        if way.pipeline_mode == "inpaint":
            kwargs.update(mask_image=self.mask, height=req.height, width=req.width)
            if self.latent_content is not None:
                kwargs.update(self._latent_start(pipe, req, seeds))
        return kwargs

    def _latent_start(self, pipe, req: GenerationRequest, seeds: list[int]) -> dict:
        """A1111's "latent noise"/"latent nothing": the masked area of the encoded picture becomes
        seeded noise or zeros before denoising. The pixel picture still conditions 9-channel models."""
        vae = pipe.vae
        pixels = pipe.image_processor.preprocess(self.image, height=req.height, width=req.width)
        pixels = pixels.to(vae.device, vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        mask = pipe.mask_processor.preprocess(self.mask, height=req.height, width=req.width).to(vae.device)
        small = torch.nn.functional.interpolate(mask, size=latents.shape[-2:]).round().to(latents.dtype)
        starts = []
        for seed in seeds:
            if self.latent_content is MaskedContent.LATENT_NOISE:
                fill_with = torch.randn(latents.shape[1:], generator=torch.Generator("cpu").manual_seed(seed))
            else:
                fill_with = torch.zeros(latents.shape[1:])
            fill_with = fill_with.to(latents.device, latents.dtype)
            starts.append(latents[0] * (1 - small[0]) + fill_with * small[0])
        masked_pixels = pixels * (mask < 0.5).to(pixels.dtype)
        return dict(image=torch.stack(starts), masked_image_latents=masked_pixels)

    def finish(self, image: Image.Image) -> Image.Image:
        return self.frame.paste_back(image) if self.frame is not None else image


def prepare_inputs(req: GenerationRequest, way: Route, pipe) -> JobInputs:
    size = (req.width, req.height)
    if way.pipeline_mode == "txt2img":
        return JobInputs()
    full_mask = Image.new("L", size, 255) if way.full_mask else None
    if way.from_noise:
        return JobInputs(image=Image.new("RGB", size, (127, 127, 127)), mask=full_mask)
    if req.mode is Mode.IMG2IMG:
        return JobInputs(image=resize_image(req.resize_mode, req.init_image.convert("RGB"), *size), mask=full_mask)
    opts = req.inpaint
    mask = prepare_mask(req.mask, opts.invert_mask, opts.mask_blur)
    frame = inpaint_frame(req.init_image, mask, req.width, req.height, req.resize_mode, opts.only_masked,
                          opts.only_masked_padding)
    inputs = JobInputs(image=frame.image, mask=frame.mask, frame=frame)
    if mask.getextrema()[1] == 0:
        inputs.notices.append("the mask is empty (nothing painted): the picture comes back unchanged")
    if opts.masked_content is MaskedContent.FILL:
        inputs.image = fill(frame.image, frame.mask)
    elif opts.masked_content in (MaskedContent.LATENT_NOISE, MaskedContent.LATENT_NOTHING):
        inputs.latent_content = opts.masked_content
    return inputs


def sdxl_kwargs(req: GenerationRequest, way: Route) -> dict:
    """SDXL micro-conditioning; unset sizes keep diffusers' defaults (the generation size)."""
    s = req.sdxl
    kwargs: dict = dict(crops_coords_top_left=s.crops_coords_top_left)
    for name in ("original_size", "target_size", "negative_original_size", "negative_target_size"):
        if getattr(s, name) is not None:
            kwargs[name] = tuple(getattr(s, name))
    if s.negative_crops_coords_top_left != (0, 0):
        kwargs["negative_crops_coords_top_left"] = s.negative_crops_coords_top_left
    if way.pipeline_mode != "txt2img":
        kwargs.update(aesthetic_score=s.aesthetic_score, negative_aesthetic_score=s.negative_aesthetic_score)
    return kwargs
