"""The 2D U-Net: image slice in, membrane probability out.

Sized for laptop CPUs. The classic U-Net (64 base filters, 31 M parameters) takes about 2 s
per 512 x 512 slice on 2 cores; this one (12 base filters, depth 4, batch norm, 1.1 M
parameters) takes under 0.1 s with the same receptive field, which is what membrane
continuity needs; with the light decoder (an option, 0.87 M parameters) 0.61x of that.
Only stock Keras layers are used, so a saved model loads in safe mode and in later Keras
versions without custom code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UNetConfig:
    base_filters: int = 12
    depth: int = 4
    convs_per_block: int = 2
    batch_norm: bool = True
    light_decoder: bool = False
    """Skips added instead of concatenated, and one convolution per decoder level instead
    of ``convs_per_block``: 0.61x the network time (the decoder is two thirds of the work),
    so 16 filters cost what 12 do with the full decoder (docs/design.md, "A light decoder")."""

    @property
    def size_multiple(self) -> int:
        """Height and width fed to the network must be multiples of this."""
        return 2**self.depth

    def to_dict(self) -> dict:
        return asdict(self)


def build_unet(config: UNetConfig = UNetConfig(), seed: int | None = None):
    """An uncompiled Keras U-Net: (batch, H, W, 1) floats in, H and W multiples of 2**depth."""
    from .backend import keras_module

    keras = keras_module()
    layers = keras.layers
    if seed is not None:
        keras.utils.set_random_seed(seed)

    def block(x, filters, name, convs=config.convs_per_block):
        for i in range(convs):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=not config.batch_norm,
                kernel_initializer="he_normal",
                name=f"{name}_conv{i}",
            )(x)
            if config.batch_norm:
                x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((None, None, 1), name="image")
    x = inputs
    skips = []
    for level in range(config.depth):
        x = block(x, config.base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = block(x, config.base_filters * 2**config.depth, "bottom")
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        if config.light_decoder:
            x = layers.Add(name=f"skip{level}")([x, skips[level]])
            x = block(x, filters, f"dec{level}", convs=1)
        else:
            x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
            x = block(x, filters, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="membrane")(x)
    return keras.Model(inputs, outputs, name="em_unet")


def size_multiple_of(model) -> int:
    """The padding multiple a built U-Net needs, read from its pooling layers."""
    pools = sum(1 for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D")
    return 2**pools
