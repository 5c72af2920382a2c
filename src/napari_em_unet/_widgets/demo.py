"""``em-unet demo``: napari with the sample stack, its ground truth, and the widgets docked.

With ``--screenshot PATH`` the window is saved to an image and napari closes, which is how
the README's pictures are made (under ``xvfb-run`` on a machine without a display).
"""

from __future__ import annotations

import time
from pathlib import Path

PLUGIN = "napari-em-unet"
SEGMENT, FINETUNE, EVALUATE = "Segment (U-Net)", "Fine-tune (U-Net)", "Evaluate segmentation"


def build_demo(viewer, model: str | Path | None = None) -> dict:
    """Open the synthetic sample and dock the Segment and Fine-tune widgets in ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    model : path, optional
        A model file to add and select (default: the newest available, e.g. the bundled one).

    Returns
    -------
    dict
        ``{"segment": SegmentWidget, "finetune": FineTuneWidget}``.
    """
    from .session import session_for

    viewer.open_sample(PLUGIN, "synthetic_sstem")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT)
    _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, FINETUNE)
    if model is not None:
        session_for(viewer).models.add_file(model)
    return {"segment": segment, "finetune": finetune}


def wait_for(predicate, timeout: float = 600.0) -> bool:
    """Run the Qt event loop until ``predicate()`` is true (for scripts without napari.run).

    A real event loop, woken every 50 ms to check, rather than a processEvents() polling
    loop that would keep a core busy and slow down the TensorFlow process.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    end = time.monotonic() + timeout
    check = QTimer()
    check.setInterval(50)
    check.timeout.connect(lambda: loop.quit() if predicate() or time.monotonic() > end else None)
    check.start()
    if not predicate():
        loop.exec()
    check.stop()
    return bool(predicate())


def display_problem(env=None, find_library=None) -> str | None:
    """Why a napari window cannot open here (Linux), in one sentence; None if it can.

    Checked before Qt starts, because Qt without a display, or without the xcb-cursor
    library Qt 6.5+ needs, aborts the whole process with a core dump instead of raising.
    """
    import ctypes.util
    import os
    import sys

    env = os.environ if env is None else env
    find_library = find_library or ctypes.util.find_library
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # the user chose another Qt platform (wayland, offscreen, vnc...)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return (
            "napari needs a display and none is set ($DISPLAY is empty): run this on a "
            "desktop, or under `xvfb-run -a`; `em-unet segment` works without one"
        )
    if env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY") and find_library("xcb-cursor") is None:
        return (
            "Qt needs the system library libxcb-cursor0 to open a window on X11 "
            "(Debian/Ubuntu: sudo apt-get install libxcb-cursor0)"
        )
    return None


def run_demo(
    screenshot: str | Path | None = None,
    *,
    segment: bool = False,
    model: str | Path | None = None,
    size: tuple[int, int] = (1600, 1000),
) -> int:
    """Open the demo window; return an exit code.

    Parameters
    ----------
    screenshot : path, optional
        Save the whole window there and quit instead of handing over to the user.
    segment : bool
        Segment the sample first (with ``model`` or the newest available model).
    model : path, optional
        A model file to add and select.
    size : (int, int)
        Window size in pixels, for screenshots.
    """
    import napari
    from napari.utils.notifications import show_info

    viewer = napari.Viewer(title="EM U-Net demo")
    viewer.window.resize(*size)
    widgets = build_demo(viewer, model)
    if segment:
        widget = widgets["segment"]
        reason = widget.problem()
        if reason:
            show_info(reason)
        else:
            widget.run()
            if screenshot is not None:
                wait_for(lambda: not widget.runner.running)
                viewer.layers.selection = {widget.runner.labels_layer}
    if screenshot is not None:
        wait_for(lambda: False, timeout=0.5)  # let the docks lay out
        path = Path(screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        viewer.close()
        print(f"wrote {path}")
        return 0
    napari.run()
    return 0
