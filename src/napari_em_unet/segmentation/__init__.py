"""From an image to cells, slice by slice: preprocessing, tiled prediction, the watershed,
the pipeline that joins them, and running it over volumes (streaming, dask clusters)."""
