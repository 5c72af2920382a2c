"""Reading and writing: TIFF, lazy volumes (TIFF, zarr, dask), streaming writers, atomic
writes and the autosave of corrections. No TensorFlow, no Qt."""
