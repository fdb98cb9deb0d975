"""The generation engine: one typed request in, images with infotext out, for every family and mode."""
