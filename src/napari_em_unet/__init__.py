"""napari-em-unet: U-Net segmentation of electron-microscopy stacks that learns from corrections.

This module stays tiny on purpose: napari imports it whenever any of the plugin's
commands runs (even opening a TIFF), so nothing here may pull in TensorFlow, Qt or napari.
"""

__version__ = "0.1.0"
