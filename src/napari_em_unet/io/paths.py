"""Where napari-em-unet keeps things on the user's disk.

Everything lives under one folder, ``$NAPARI_EM_UNET_HOME`` if set, else the user data
folder that platformdirs gives (e.g. ``~/.local/share/napari-em-unet``): fine-tuned models,
autosaved corrections and the zarr stores of large napari layers. Downloaded samples go to
the user cache (or ``$NAPARI_EM_UNET_HOME/cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "NAPARI_EM_UNET_HOME"


def data_home() -> Path:
    """napari-em-unet's folder for user data (``$NAPARI_EM_UNET_HOME`` overrides it)."""
    override = os.environ.get(ENV_HOME)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-em-unet", appauthor=False))


def models_dir() -> Path:
    """Where fine-tuned models are saved (not created here)."""
    return data_home() / "models"


def segmentations_dir() -> Path:
    """Where napari layers too large for memory keep their zarr stores."""
    return data_home() / "segmentations"


def cache_dir() -> Path:
    """Where downloaded samples are kept."""
    override = os.environ.get(ENV_HOME)
    if override:
        return Path(override).expanduser() / "cache"
    import pooch

    return Path(pooch.os_cache("napari-em-unet"))
