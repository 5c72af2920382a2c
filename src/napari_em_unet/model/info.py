"""What a model is, in memory and in its file: the network plus :class:`ModelInfo`.

Plain data (no TensorFlow): listing models, reading a package's metadata or checking a
file's format version never pays for importing Keras.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..segmentation.preprocessing import DEFAULT_PERCENTILES

FORMAT_VERSION = 1
METADATA_ENTRY = "napari_em_unet.json"
"""Our metadata's name inside a ``.keras`` archive."""


@dataclass
class ModelInfo:
    """What travels with a model. Unknown keys from newer versions are kept in ``extra``."""

    name: str = "unnamed"
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    keras_version: str = ""
    tensorflow_version: str = ""
    created: str = ""
    architecture: dict = field(default_factory=dict)
    pixel_size_nm: float | None = None
    normalization: dict = field(
        default_factory=lambda: {"method": "percentile", "percentiles": list(DEFAULT_PERCENTILES)}
    )
    membrane_width_px: float = 3.0
    postprocessing: dict = field(default_factory=dict)
    view_scales: list = field(default_factory=lambda: [1.0])
    """The sizes, relative to the model's pixel size, at which each slice is predicted;
    the maps are averaged. A slice shrunk to 0.67 shows the network more of a large cell
    (docs/design.md, "A second, wider view and a learned edge rule")."""
    trained_on: list = field(default_factory=list)
    base_model: str | None = None
    epochs: int = 0
    validation: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "extra"}
        extra = dict(data.get("extra", {}))
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def percentiles(self) -> tuple[float, float]:
        low, high = self.normalization.get("percentiles", DEFAULT_PERCENTILES)
        return float(low), float(high)


@dataclass
class LoadedModel:
    """A Keras model with its metadata and where it came from."""

    keras_model: object
    info: ModelInfo
    path: Path | None = None
