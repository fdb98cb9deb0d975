"""diffusers' img2img and inpaint pipelines with their random draws taken from the job's noise streams.

diffusers draws an img2img/inpaint job's randomness inside the pipeline from the `generator` list: the
VAE posterior sample of the init (and masked) image, then the initial noise. To give these jobs A1111's
variation seeds and "resize seed from", a job sets `noise_streams` (one `seeds.NoiseStream` per image,
whose `.generator` is the one passed as `generator=`) and every one of those draws goes through the
image's stream instead, in diffusers' order, so at strength 1 the start is exactly the variation seed's
own. With `noise_streams` None (the default) the pipelines are diffusers' own, untouched.

The overrides follow diffusers 0.42.1's `prepare_latents` / `_encode_vae_image` of each pipeline
(`pipelines/stable_diffusion*/pipeline_stable_diffusion*_{img2img,inpaint}.py`), keeping only the
batch-of-generators paths Easel uses (a list with one generator per image)."""

from __future__ import annotations


import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
)

from webui.generation.seeds import NoiseStream

Generators = torch.Generator | list[torch.Generator] | None


class NoiseStreamPipeline:
    """Mixin: draws through `noise_streams` when set. Must come before the diffusers class in the bases."""

    noise_streams: list[NoiseStream] | None = None

    def _streams(self, generator: Generators, count: int) -> list[NoiseStream]:
        """The first `count` streams, checked to be the streams of the generators diffusers was given."""
        streams = self.noise_streams or []
        gens = generator if isinstance(generator, list) else [generator]
        if len(gens) != len(streams) or any(g is not s.generator for g, s in zip(gens, streams)):
            raise ValueError("noise_streams must be the streams of the `generator` list passed to the pipeline")
        if count > len(streams):
            raise ValueError(f"{count} images need random draws but there are {len(streams)} noise streams")
        return streams[:count]

    def _stream_randn(self, shape: tuple[int, ...], generator: Generators, device, dtype) -> torch.Tensor:
        """What `randn_tensor(shape, generator=generator, device=device, dtype=dtype)` draws, per image stream."""
        streams = self._streams(generator, shape[0])
        return torch.cat([s.randn(tuple(shape[1:]), dtype)[None] for s in streams]).to(device)

    def _sample_each(self, image: torch.Tensor, generator: Generators) -> torch.Tensor:
        """`retrieve_latents(vae.encode(image[i:i+1]), generator[i])` for each image, drawing from its stream."""
        streams = self._streams(generator, image.shape[0])
        out = []
        for i, stream in enumerate(streams):
            encoded = self.vae.encode(image[i : i + 1])
            dist = getattr(encoded, "latent_dist", None)
            if dist is None:  # e.g. a tiny autoencoder: deterministic latents, no draw
                out.append(encoded.latents)
                continue
            params = dist.parameters
            sample = stream.randn(tuple(dist.mean.shape[1:]), params.dtype)[None].to(params.device)
            out.append(dist.mean + dist.std * sample)  # DiagonalGaussianDistribution.sample
        return torch.cat(out, dim=0)

    def _upcast_sample(self, image: torch.Tensor, generator: Generators, dtype: torch.dtype) -> torch.Tensor:
        """SDXL's encode: in float32 when the VAE asks for it (`force_upcast`), back to `dtype` after."""
        upcast = self.vae.config.force_upcast
        if upcast:
            image = image.float()
            self.vae.to(dtype=torch.float32)
        latents = self._sample_each(image, generator)
        if upcast:
            self.vae.to(dtype)
        return latents.to(dtype)

    def _img2img_latents(self, image, timestep, batch_size: int, dtype, device, generator: Generators,
                         add_noise: bool = True) -> torch.Tensor:
        """img2img's `prepare_latents` (SD and SDXL): the encoded image, repeated to the batch, noised."""
        image = image.to(device=device, dtype=dtype)
        if image.shape[1] == 4:
            latents = image
        else:
            if image.shape[0] < batch_size and batch_size % image.shape[0] == 0:
                image = torch.cat([image] * (batch_size // image.shape[0]), dim=0)
            latents = self._encode_init(image, generator, dtype, device)
        if batch_size > latents.shape[0]:
            if batch_size % latents.shape[0]:
                raise ValueError(f"Cannot duplicate `image` of batch size {latents.shape[0]} to {batch_size}.")
            latents = torch.cat([latents] * (batch_size // latents.shape[0]), dim=0)
        if not add_noise:
            return latents
        noise = self._stream_randn(tuple(latents.shape), generator, device, dtype)
        return self.scheduler.add_noise(latents, noise, timestep)

    def _encode_init(self, image, generator: Generators, dtype, device) -> torch.Tensor:
        """img2img's encoding of the init image (SD; SDXL overrides)."""
        return self.vae.config.scaling_factor * self._sample_each(image, generator)

    def _inpaint_latents(self, shape: tuple[int, ...], dtype, device, generator: Generators, image, timestep,
                         is_strength_max: bool, add_noise: bool, return_noise: bool,
                         return_image_latents: bool) -> tuple:
        """The `latents=None` branch of SD's and SDXL's inpaint `prepare_latents` (SD has no `add_noise`)."""
        if not is_strength_max and (image is None or timestep is None):
            raise ValueError("strength < 1 starts from the image plus noise: pass both `image` and `timestep`")
        image_latents = None
        if image is not None and image.shape[1] == 4:
            image_latents = image.to(device=device, dtype=dtype)
        elif return_image_latents or not is_strength_max:
            image_latents = self._encode_vae_image(image=image.to(device=device, dtype=dtype), generator=generator)
        if image_latents is not None:
            image_latents = image_latents.repeat(shape[0] // image_latents.shape[0], 1, 1, 1)
        noise = self._stream_randn(shape, generator, device, dtype)
        if not add_noise:
            latents = image_latents.to(device)
        elif is_strength_max:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(image_latents, noise, timestep)
        return (latents,) + ((noise,) if return_noise else ()) + ((image_latents,) if return_image_latents else ())

    def _latent_shape(self, batch_size: int, channels: int, height, width) -> tuple[int, int, int, int]:
        return (batch_size, channels, int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor)


def _no_latents(latents) -> None:
    if latents is not None:
        raise ValueError("pass either `latents` or noise_streams to the inpaint pipeline, not both")


class NoiseStreamImg2ImgPipeline(NoiseStreamPipeline, StableDiffusionImg2ImgPipeline):
    """StableDiffusionImg2ImgPipeline drawing through `noise_streams` when set."""

    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
        if self.noise_streams is None:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device,
                                           generator)
        return self._img2img_latents(image, timestep, batch_size * num_images_per_prompt, dtype, device, generator)


class NoiseStreamXLImg2ImgPipeline(NoiseStreamPipeline, StableDiffusionXLImg2ImgPipeline):
    """StableDiffusionXLImg2ImgPipeline drawing through `noise_streams` when set."""

    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None,
                        add_noise=True):
        if self.noise_streams is None:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device,
                                           generator, add_noise)
        return self._img2img_latents(image, timestep, batch_size * num_images_per_prompt, dtype, device, generator,
                                     add_noise)

    def _encode_init(self, image, generator: Generators, dtype, device) -> torch.Tensor:
        latents = self._upcast_sample(image, generator, dtype)
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, 4, 1, 1).to(device=device, dtype=dtype)
            std = torch.tensor(std).view(1, 4, 1, 1).to(device=device, dtype=dtype)
            return (latents - mean) * config.scaling_factor / std
        return config.scaling_factor * latents


class NoiseStreamInpaintPipeline(NoiseStreamPipeline, StableDiffusionInpaintPipeline):
    """StableDiffusionInpaintPipeline drawing through `noise_streams` when set."""

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator,
                        latents=None, image=None, timestep=None, is_strength_max=True, return_noise=False,
                        return_image_latents=False):
        if self.noise_streams is None:
            return super().prepare_latents(batch_size, num_channels_latents, height, width, dtype, device, generator,
                                           latents, image, timestep, is_strength_max, return_noise,
                                           return_image_latents)
        _no_latents(latents)
        return self._inpaint_latents(self._latent_shape(batch_size, num_channels_latents, height, width), dtype,
                                     device, generator, image, timestep, is_strength_max, True, return_noise,
                                     return_image_latents)

    def _encode_vae_image(self, image: torch.Tensor, generator: Generators) -> torch.Tensor:
        if self.noise_streams is None:
            return super()._encode_vae_image(image, generator)
        return self.vae.config.scaling_factor * self._sample_each(image, generator)


class NoiseStreamXLInpaintPipeline(NoiseStreamPipeline, StableDiffusionXLInpaintPipeline):
    """StableDiffusionXLInpaintPipeline drawing through `noise_streams` when set."""

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator,
                        latents=None, image=None, timestep=None, is_strength_max=True, add_noise=True,
                        return_noise=False, return_image_latents=False):
        if self.noise_streams is None:
            return super().prepare_latents(batch_size, num_channels_latents, height, width, dtype, device, generator,
                                           latents, image, timestep, is_strength_max, add_noise, return_noise,
                                           return_image_latents)
        _no_latents(latents)
        return self._inpaint_latents(self._latent_shape(batch_size, num_channels_latents, height, width), dtype,
                                     device, generator, image, timestep, is_strength_max, add_noise, return_noise,
                                     return_image_latents)

    def _encode_vae_image(self, image: torch.Tensor, generator: Generators) -> torch.Tensor:
        if self.noise_streams is None:
            return super()._encode_vae_image(image, generator)
        return self.vae.config.scaling_factor * self._upcast_sample(image, generator, image.dtype)
