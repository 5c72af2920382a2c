"""The progress record the analysis generators yield (run one to its end with
:func:`napari_em_unet.generators.drain`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps (slices read) are finished."""

    done: int
    total: int
