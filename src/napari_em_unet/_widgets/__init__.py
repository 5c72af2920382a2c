"""The plugin's dock widgets (Qt); one module per responsibility.

Deliberately empty: npe2 imports ``napari_em_unet._widgets.<module>`` only when a widget is
opened, and this file runs first, so it must not import Qt, napari or TensorFlow itself.
"""
