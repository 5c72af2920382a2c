"""Linking slices into 3D objects from napari: the Segment widget's option, "Link now",
whose layer is written, the 3D view one click away."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet._widgets.layer_meta import META_KEY
from napari_em_unet._widgets.linking_panel import LinkPanel
from napari_em_unet._widgets.segment_widget import SegmentWidget
from napari_em_unet._widgets.session import session_for

TIMEOUT_MS = 240_000


def per_slice_columns(depth=4) -> np.ndarray:
    """Two cells running through every section, numbered 1..2 anew on each section (as
    the U-Net's per-slice labels are), with membrane (0) around them."""
    labels = np.zeros((depth, 32, 48), dtype=np.uint32)
    for z in range(depth):
        first, second = (1, 2) if z % 2 == 0 else (2, 1)
        labels[z, 4:14, 4:20] = first
        labels[z, 18:28, 24:44] = second
    return labels


def plugin_layer(viewer, data, name="cells"):
    return viewer.add_labels(
        data,
        name=name,
        metadata={"pixel_size_nm": 4.0, META_KEY: {"role": "segmentation", "output": "instances"}},
    )


def wait(qtbot, panel):
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)


def test_plugin_layer_is_linked_in_place(qtbot, make_napari_viewer, linking):
    viewer = make_napari_viewer()
    layer = plugin_layer(viewer, per_slice_columns())
    tracker = session_for(viewer).tracker(layer)
    tracker.mark({1})
    panel = LinkPanel(viewer)
    viewer.window.add_dock_widget(panel)
    ended = []
    panel.finished.connect(ended.append)
    assert panel.bias.value == pytest.approx(linking.LinkParams().bias)
    assert panel.link(layer)
    wait(qtbot, panel)
    assert ended == [layer] and viewer.layers[-1] is layer  # no new layer
    data = np.asarray(layer.data)
    assert data.dtype == np.uint32
    top, bottom = data[:, 8, 8], data[:, 20, 30]
    assert len(set(top)) == 1 and len(set(bottom)) == 1 and top[0] != bottom[0] != 0
    assert (data == 0).sum() == (per_slice_columns() == 0).sum()  # membrane untouched
    assert layer.metadata[META_KEY]["linked"] == {
        "bias": panel.bias.value,
        "min_sections": 1,
        "objects": 2,
    }
    assert session_for(viewer).corrected(layer) == {1}  # same layer, same corrections
    assert "into 2 3D objects" in panel.status.value
    # The 3D view is one click away.
    panel.view.view_3d.native.click()
    assert viewer.dims.ndisplay == 3


def test_a_users_layer_and_an_edited_layer_are_not_overwritten(qtbot, make_napari_viewer, linking):
    viewer = make_napari_viewer()
    own = viewer.add_labels(per_slice_columns(), name="mine")  # not made by the plugin
    panel = LinkPanel(viewer)
    assert panel.link_now.native.isHidden()  # shown with the option, like its controls
    panel.wanted.value = True
    assert not panel.link_now.native.isHidden()
    viewer.layers.selection.active = own
    panel.link_now.native.click()
    wait(qtbot, panel)
    np.testing.assert_array_equal(own.data, per_slice_columns())
    linked = viewer.layers["mine 3D"]
    assert len(np.unique(linked.data[:, 8, 8])) == 1
    assert "'mine' is unchanged: it is not a layer this plugin made" in panel.status.value

    made = plugin_layer(viewer, per_slice_columns(), name="made")
    assert panel.link(made)
    made.paint((0, 30, 2), 9)  # the user edits while the linking runs
    wait(qtbot, panel)
    assert made.data[0, 30, 2] == 9 and "made 3D" in [lay.name for lay in viewer.layers]
    assert "it was edited while linking ran" in panel.status.value


def test_refusals_are_one_sentence_and_change_nothing(
    qtbot, make_napari_viewer, linking, monkeypatch
):
    viewer = make_napari_viewer()
    flat = plugin_layer(viewer, per_slice_columns()[0], name="flat")
    membranes = viewer.add_labels(
        per_slice_columns(),
        name="membranes",
        metadata={META_KEY: {"role": "segmentation", "output": "membranes"}},
    )
    panel = LinkPanel(viewer)
    assert not panel.link(flat) and "not a stack of 2 or more slices" in panel.status.value
    assert not panel.link(membranes) and "holds membranes" in panel.status.value
    viewer.layers.selection.active = viewer.add_image(np.zeros((4, 8, 8)), name="img")
    panel.wanted.value = True
    panel.link_now.native.click()
    assert panel.status.value == "Select a labels layer in the layer list first."
    assert len(viewer.layers) == 3 and not panel.running
    import sys

    monkeypatch.setitem(sys.modules, "napari_em_unet.segmentation.linking", None)
    import napari_em_unet.segmentation as package

    monkeypatch.delattr(package, "linking", raising=False)
    unavailable = LinkPanel(viewer)
    assert not unavailable.wanted.enabled and not unavailable.link_now.enabled
    assert unavailable.status.value == "3D linking is not part of this installation."


def test_min_sections_removes_short_objects(qtbot, make_napari_viewer, linking):
    viewer = make_napari_viewer()
    data = per_slice_columns()
    data[2, 30, 46] = 7  # a speck on one section
    layer = plugin_layer(viewer, data)
    panel = LinkPanel(viewer)
    panel.wanted.value = True
    panel.min_sections.value = 2
    panel.link(layer)
    wait(qtbot, panel)
    assert layer.data[2, 30, 46] == 0 and layer.metadata[META_KEY]["linked"]["objects"] == 2


def test_zarr_layer_gets_a_new_store_and_the_old_one_is_removed(qtbot, make_napari_viewer, linking):
    from napari_em_unet._widgets.layer_meta import store_of
    from napari_em_unet._widgets.layers import create_layer_store

    viewer = make_napari_viewer()
    array, path = create_layer_store("cells", (4, 32, 48), np.uint32, init=per_slice_columns())
    layer = viewer.add_labels(
        array,
        name="cells",
        metadata={META_KEY: {"role": "segmentation", "output": "instances", "store": str(path)}},
    )
    panel = LinkPanel(viewer)
    panel.link(layer)
    wait(qtbot, panel)
    new = store_of(layer)
    assert new != path and new.exists() and not path.exists()
    assert type(layer.data).__module__.startswith("zarr")
    assert len(np.unique(np.asarray(layer.data[:, 8, 8]))) == 1


def test_segment_widget_links_its_result(qtbot, sample_viewer, gui_models, linking):
    widget = SegmentWidget(sample_viewer)
    sample_viewer.window.add_dock_widget(widget)
    session_for(sample_viewer).models.add_file(gui_models["threshold"])
    assert widget.linking.bias.native.isHidden()  # the controls appear with the option
    widget.linking.wanted.value = True
    assert not widget.linking.bias.native.isHidden()  # shown once the option is ticked
    widget._probability.value = True
    widget.run()
    qtbot.waitUntil(
        lambda: not widget.runner.running and not widget.linking.running, timeout=TIMEOUT_MS
    )
    layer = widget.runner.labels_layer
    data = np.asarray(layer.data)
    linked = layer.metadata[META_KEY]["linked"]
    per_slice = sum(len(np.unique(data[z])) - 1 for z in range(data.shape[0]))
    objects = len(np.unique(data)) - 1
    # Cells run through the sections of the sample: far fewer objects than per-slice cells.
    assert linked["objects"] == objects and objects < per_slice / 2
    spans = [len(np.unique(np.nonzero(data == label)[0])) for label in np.unique(data)[1:50]]
    assert max(spans) == data.shape[0]
    assert widget._run.enabled and widget.problem() is None
    # The section spacing comes from the sample file, through the image the layer was made of.
    from napari_em_unet._widgets.measure_widget import MeasureWidget

    sample_viewer.layers.selection.active = layer
    measure = MeasureWidget(sample_viewer)
    assert measure._labels_layer.value is layer
    assert [box.value for box in measure._voxel] == [50.0, 4.0, 4.0]


def test_the_panels_fallback_bias_is_the_linking_default():
    # The panel's constant stands in for LinkParams' default; a tuned default must move both.
    from napari_em_unet._widgets.linking_panel import DEFAULT_BIAS
    from napari_em_unet.segmentation.linking import LinkParams

    assert LinkParams().bias == DEFAULT_BIAS
