"""Models loaded in the TensorFlow process, kept between jobs.

Keyed by path and modification time, so re-segmenting with the same model does not reload
it, and a file replaced on disk (a newer save under the same name) is loaded again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, int], object] = OrderedDict()
_cache_lock = threading.Lock()


def _key(path: Path) -> tuple[str, int]:
    path = Path(path).resolve()
    return str(path), path.stat().st_mtime_ns


def remember(path: str | os.PathLike, loaded) -> None:
    """Put an already loaded model in the cache."""
    with _cache_lock:
        _cache[_key(Path(path))] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def load_cached(path: str | os.PathLike):
    """Load a model file, from the cache when the same file was loaded before.

    Parameters
    ----------
    path : str or PathLike
        A ``.keras`` file or a bioimage.io package.

    Returns
    -------
    LoadedModel
    """
    from ..model.files import load_model

    try:
        key = _key(Path(path))
    except OSError:
        return load_model(path)  # raises the one-sentence "model file not found"
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    loaded = load_model(path)
    remember(path, loaded)
    return loaded
