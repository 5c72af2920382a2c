"""The plugin's notes on a layer, read and written in one place.

Layers made by this plugin carry ``layer.metadata["napari_em_unet"]``: their role, the
image and model they came from, the kind of output, where an on-disk layer's zarr store
lives and the per-slice uncertainty. Only such layers are ever written to by the plugin
(and then only on slices the user has not corrected); any other layer is the user's. The
reader and the samples put the pixel size in ``layer.metadata["pixel_size_nm"]``.
Plain Python: no Qt, and napari only through the layer objects handed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

META_KEY = "napari_em_unet"
SEGMENTATION = "segmentation"
PROBABILITY = "probability"


@dataclass(frozen=True)
class PluginMeta:
    """What the plugin recorded on a layer (all None for a layer it did not make)."""

    role: str | None = None
    """``"segmentation"`` (a labels layer) or ``"probability"`` (an image layer)."""
    image: str | None = None
    """Name of the image layer it was made from."""
    model: str | None = None
    """Name of the model that made it."""
    output: str = "instances"
    """``"instances"`` or ``"membranes"``."""
    store: str | None = None
    """The zarr folder of an on-disk layer."""
    uncertainty: dict = field(default_factory=dict)
    """Slice (int, or str after a JSON round trip) -> mean binary entropy of the probability."""
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, layer) -> PluginMeta:
        raw = (getattr(layer, "metadata", None) or {}).get(META_KEY)
        if not isinstance(raw, dict):
            return cls()
        known = set(cls.__dataclass_fields__) - {"extra"}
        values = {k: v for k, v in raw.items() if k in known and v is not None}
        return cls(**values, extra={k: v for k, v in raw.items() if k not in known})


def plugin_meta(layer) -> PluginMeta:
    """The plugin's notes on ``layer``."""
    return PluginMeta.of(layer)


def update_plugin_meta(layer, **values) -> None:
    """Record ``values`` (those not None or empty) on ``layer``, keeping what is there."""
    meta = dict(getattr(layer, "metadata", None) or {})
    notes = dict(meta.get(META_KEY) or {})
    notes.update({k: v for k, v in values.items() if v})
    meta[META_KEY] = notes
    layer.metadata = meta


def new_layer_metadata(image_layer, role: str, **values) -> dict:
    """``metadata=`` for a new layer made from ``image_layer`` (its pixel size carried over)."""
    notes = {
        "role": role,
        "image": image_layer.name,
        **{k: v for k, v in values.items() if v is not None},
    }
    metadata = {META_KEY: notes}
    if role == SEGMENTATION:
        metadata["pixel_size_nm"] = pixel_size_of(image_layer)
    return metadata


def is_plugin_layer(layer) -> bool:
    """Whether the plugin made this labels layer (and may fill in its uncorrected slices)."""
    return plugin_meta(layer).role == SEGMENTATION


def is_probability_layer(layer) -> bool:
    return plugin_meta(layer).role == PROBABILITY


def pixel_size_of(layer) -> float | None:
    """The pixel size (nm) the reader or sample recorded in the layer's metadata."""
    value = (getattr(layer, "metadata", None) or {}).get("pixel_size_nm")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def store_of(layer) -> Path | None:
    """The zarr folder an on-disk layer made by this plugin lives in, or None."""
    store = plugin_meta(layer).store
    return Path(store) if store else None


def unwrap(obj):
    """The napari object behind a plugin ``PublicOnlyProxy`` (proxies are new per access,
    so they cannot serve as dictionary keys or be compared by identity)."""
    return getattr(obj, "__wrapped__", obj)
