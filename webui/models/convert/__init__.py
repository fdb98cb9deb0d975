"""Easel's own diffusers -> A1111/LDM single-file converter (diffusers ships only the other direction).

Used to save merged or converted checkpoints, to write the tiny test checkpoints, and to write
real-size weightless "layout" files; every file it writes loads back through diffusers'
`from_single_file` bit for bit (tests/test_convert.py)."""

from webui.models.convert.checkpoint import (
    METADATA_CONFIGS,
    METADATA_FAMILY,
    component_config,
    components_to_ldm,
    pipeline_configs,
    pipeline_to_ldm,
    read_embedded_configs,
    save_single_file,
    write_config_folder,
)
from webui.models.convert.layout import empty_components, layout_state_dict, write_layout_file

__all__ = [
    "METADATA_CONFIGS",
    "METADATA_FAMILY",
    "component_config",
    "components_to_ldm",
    "empty_components",
    "layout_state_dict",
    "pipeline_configs",
    "pipeline_to_ldm",
    "read_embedded_configs",
    "save_single_file",
    "write_config_folder",
    "write_layout_file",
]
