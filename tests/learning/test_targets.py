"""The labels -> training-target rule: 0 is membrane, non-zero is interior, touching labels
are membrane."""

import numpy as np

from napari_em_unet.learning.targets import (
    derived_borders,
    labelled_slices,
    membrane_width,
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
