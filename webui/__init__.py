"""Easel: a local web UI for Stable Diffusion on diffusers."""

__version__ = "0.1.0"
