"""The inference copy of a trained U-Net: batch norm folded into the convolutions.

At inference a batch-norm layer is a fixed per-channel scale and shift, so it can be merged
into the kernel and bias of the convolution before it. The copy computes the same
probabilities (within float rounding, checked on a test input before it is used) with one
pass less over every feature map: 15-20 % less network time per slice on this project's
2-core CPU (docs/design.md, "Network size"). Training and fine-tuning keep the original,
whose batch-norm statistics they adapt; a model that is not this project's U-Net is used as
it is.
"""

from __future__ import annotations

import weakref

import numpy as np

from .info import LoadedModel

# The largest difference allowed between the copy and the original on the check input.
TOLERANCE = 1e-4

_copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_model(model: LoadedModel):
    """The Keras model to predict with: the folded copy when it can be made, else the original.

    Cached per Keras model; a LoadedModel's weights do not change after loading."""
    original = model.keras_model
    if original not in _copies:
        try:
            folded = _folded(original)
        except (KeyError, ValueError, AttributeError, TypeError):
            folded = None  # not our U-Net layout: nothing to fold
        # None, not the original, as the value: a weak key must not be kept alive by it.
        _copies[original] = folded
    return _copies[original] or original


def _folded(original):
    """The folded copy, or None when there is nothing to fold or it does not match."""
    from dataclasses import replace

    from .unet import build_unet

    config = _config_of(original)
    if not config.batch_norm:
        return None
    folded = build_unet(replace(config, batch_norm=False))
    for layer in folded.layers:
        if layer.weights:
            layer.set_weights(_weights_for(layer.name, original))
    return folded if _same_output(original, folded, config.size_multiple) else None


def _config_of(model):
    from .unet import UNetConfig, size_multiple_of

    names = [layer.name for layer in model.layers]
    return UNetConfig(
        base_filters=model.get_layer("down0_conv0").filters,
        depth=size_multiple_of(model).bit_length() - 1,
        convs_per_block=sum(name.startswith("down0_conv") for name in names),
        batch_norm="down0_bn0" in names,
        light_decoder=type(model.get_layer("skip0")).__name__ == "Add",
    )


def _weights_for(name: str, original) -> list[np.ndarray]:
    """The weights of layer ``name`` of the folded copy, taken from the original."""
    source = original.get_layer(name)
    block, _, conv = name.rpartition("_conv")
    if not block or not conv.isdigit():
        return source.get_weights()
    bn = original.get_layer(f"{block}_bn{conv}")
    mean = np.asarray(bn.moving_mean)
    scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * np.asarray(bn.gamma)
    shift = -mean * scale + (np.asarray(bn.beta) if bn.beta is not None else 0.0)
    (kernel,) = source.get_weights()
    return [kernel * scale, shift.astype(kernel.dtype)]


def _same_output(original, folded, multiple: int) -> bool:
    side = max(64, multiple)
    probe = np.random.default_rng(0).random((1, side, side, 1), dtype=np.float32)
    a = np.asarray(original(probe, training=False))
    b = np.asarray(folded(probe, training=False))
    return bool(np.abs(a - b).max() <= TOLERANCE)
