"""The TensorFlow child process that napari talks to (napari never imports TensorFlow).

``protocol`` holds the request and progress records (plain data, no TensorFlow), ``client``
is what the widgets use, ``process`` starts and serves the child, ``jobs`` run inside it
and ``model_cache`` keeps loaded models there between jobs."""
