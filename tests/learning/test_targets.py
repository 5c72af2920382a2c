"""The labels -> training-target rule: 0 is membrane, non-zero is interior, touching labels
are membrane."""

import numpy as np

from napari_em_unet.learning.targets import (
    derived_borders,
    labelled_slices,
    membrane_width,
    separation_map,
    training_target,
)


def test_isbi_mask_maps_zero_to_membrane_and_255_to_interior():
    labels = np.full((20, 20), 255, dtype=np.uint8)
    labels[:, 9:12] = 0
    target = training_target(labels, membrane_width_px=3)
    assert target.membrane[:, 9:12].all()
    assert not target.membrane[:, :9].any() and not target.membrane[:, 12:].any()
    assert target.weight.mean() == np.float32(1.0) or abs(target.weight.mean() - 1) < 1e-5


def test_touching_instance_labels_get_a_membrane_between_them():
    labels = np.ones((20, 20), dtype=np.uint32)
    labels[:, 10:] = 2  # napari brush style: cells touch, no 0 between them
    assert derived_borders(labels)[:, 9].all() and derived_borders(labels).sum() == 20
    thin = training_target(labels, membrane_width_px=1)
    assert thin.membrane.sum() == 20
    wide = training_target(labels, membrane_width_px=5)
    # widened to 5 pixels around the derived border (columns 7..11)
    assert wide.membrane[:, 7:12].all() and wide.membrane.sum() == 100
    # the loss weights peak on the border between touching cells
    assert wide.weight[:, 9].mean() > 2 * wide.weight[:, 0].mean()


def test_same_label_everywhere_has_no_membrane_and_zero_stays_membrane():
    labels = np.full((8, 8), 7, dtype=np.uint16)
    assert training_target(labels).membrane.sum() == 0
    labels[3, 3] = 0
    assert training_target(labels).membrane.sum() == 1


def test_separation_map_follows_the_distances_to_the_two_nearest_cells():
    cells = np.zeros((40, 60), dtype=np.int32)
    cells[5:35, 5:20], cells[5:35, 22:37], cells[5:35, 47:58] = 1, 2, 3
    close = separation_map(cells, sigma=5.0)
    # in the 2-px gap, d1 + d2 = 1 + 2 = 3; in the 10-px gap 11 at best
    assert np.isclose(close[20, 20], np.exp(-9 / 50), atol=1e-6)
    assert np.isclose(close[20, 41], np.exp(-((5 + 6) ** 2) / 50), atol=1e-6)
    # inside a cell d1 = 0, so the term measures the way to the nearest other cell
    assert np.isclose(close[20, 18], np.exp(-(4**2) / 50), atol=1e-6)
    assert np.isclose(close[20, 10], np.exp(-(12**2) / 50), atol=1e-6)
    # more than 3 sigma from every other cell's bounding box: left out (below exp(-4.5))
    assert close[20, 6] == 0


def test_separation_weight_favours_thin_membranes_between_cells_in_a_mask():
    mask = np.zeros((40, 60), dtype=np.uint8)  # ISBI style: one interior value, 0 membrane
    mask[5:35, 5:20] = mask[5:35, 22:37] = mask[5:35, 47:58] = 255
    plain = training_target(mask, membrane_width_px=3)
    weighted = training_target(mask, membrane_width_px=3, separation_weight=10)
    np.testing.assert_array_equal(plain.membrane, weighted.membrane)
    thin, wide = (slice(5, 35), slice(20, 22)), (slice(5, 35), slice(38, 46))
    assert plain.weight[thin].mean() == plain.weight[wide].mean()
    assert weighted.weight[thin].mean() > 4 * weighted.weight[wide].mean()
    assert abs(weighted.weight.mean() - 1) < 1e-5


def test_separation_weight_uses_instance_labels_as_given():
    labels = np.ones((20, 20), dtype=np.uint32)
    labels[:, 10:] = 2  # touching instances: their derived border separates them
    plain = training_target(labels, membrane_width_px=3)
    weighted = training_target(labels, membrane_width_px=3, separation_weight=10)
    assert weighted.weight[:, 9].mean() / weighted.weight[:, 0].mean() > (
        plain.weight[:, 9].mean() / plain.weight[:, 0].mean()
    )


def test_membrane_width_estimate():
    labels = np.full((3, 64, 64), 255, dtype=np.uint8)
    labels[:, :, 30:35] = 0  # 5 pixels wide
    assert abs(membrane_width(labels) - 5) <= 1


def test_labelled_slices_skip_all_zero_slices():
    labels = np.zeros((4, 5, 5), dtype=np.uint8)
    labels[1, 2, 2] = 3
    labels[3] = 255
    assert labelled_slices(labels) == [1, 3]


def test_section_defects_fade_the_image_or_blank_a_band_without_loss_there():
    from napari_em_unet.learning.augmentation import _section_defects

    image = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    weight = np.ones_like(image)
    faded = blanked = 0
    for seed in range(200):
        img, wgt = _section_defects(np.random.default_rng(seed), image, weight)
        assert img.shape == wgt.shape == image.shape
        if np.ptp(img) < 0.7:  # contrast cut to 25-60 %
            faded += 1
        dead = wgt == 0
        if dead.any():
            blanked += 1
            band = img[dead]
            assert np.ptp(band) == 0  # constant grey where the section is missing
            assert dead.all(axis=0).any() or dead.all(axis=1).any()  # a full band
    assert 8 <= faded <= 35 and 3 <= blanked <= 20  # about 10 % and 5 % of patches
    assert np.all(weight == 1)  # the caller's arrays are untouched


def test_elastic_deformation_moves_tissue_by_pixels_and_keeps_image_and_target_aligned():
    from napari_em_unet.learning.augmentation import _elastic

    yy, xx = np.mgrid[:256, :256]
    membrane = ((yy % 32) < 3) | ((xx % 32) < 3)  # a grid of membranes, 3 pixels wide
    image = np.where(membrane, 0.0, 1.0).astype(np.float32)
    shifts = []
    for seed in range(20):
        img, tgt, wgt = _elastic(
            np.random.default_rng(seed), image, membrane.astype(np.float32), np.ones_like(image)
        )
        assert set(np.unique(tgt)) <= {0.0, 1.0}  # the target stays a mask
        assert np.array_equal(img < 0.5, tgt == 1)  # one warp for image and target
        assert np.allclose(wgt, 1)
        shifts.append(np.mean(tgt != membrane))
    # The U-Net paper's strength (std 10 px on 512 px): lines move by pixels, not fractions.
    assert 0.05 < np.median(shifts) < 0.5
