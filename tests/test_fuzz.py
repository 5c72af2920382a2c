"""Fuzzing with hypothesis: the TIFF readers and the labels -> training-target rule.

Bounded (a few hundred examples in all) and derandomised on CI so that a run is
reproducible; locally every run explores new examples. A failure prints the smallest
example hypothesis found.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_em_unet.errors import InputError
from napari_em_unet.io.tiff import read_tiff, write_tiff
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.learning.targets import derived_borders, labelled_slices, training_target

FUZZ = settings(
    max_examples=int(os.environ.get("EM_UNET_FUZZ_EXAMPLES", 120)),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.uint32,
    np.int32,
    np.float32,
    np.float64,
    np.int64,
    np.uint64,
]
HEADERS = [b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"MM\x00+\x00\x08\x00\x00"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_counter = iter(range(10**9))


def _write(folder: Path, content: bytes) -> Path:
    # A new name each time: rewriting a file that an earlier memory map still sees could
    # crash the test process (SIGBUS), which is not what is being tested.
    path = folder / f"fuzz-{next(_counter)}.tif"
    path.write_bytes(content)
    return path


def _read_all(path: Path) -> None:
    """Both readers, every slice: only InputError may come out."""
    for memmap in (True, False):
        try:
            image = read_tiff(path, memmap=memmap)
            np.asarray(image.data).sum()
            del image
        except InputError as exc:
            assert "\n" not in str(exc)
    try:
        volume = open_volume(path)
        for index in range(min(volume.shape[0], 4)):
            volume.read_slice(index)
    except InputError as exc:
        assert "\n" not in str(exc)


def _valid_tiff(data: np.ndarray, compress: bool) -> bytes:
    import io

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, compression="zlib" if compress else None)
    return buffer.getvalue()


arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=12)
    )
)


@FUZZ
@given(content=st.binary(max_size=3000))
@example(content=b"")
@example(content=b"II*\x00")
def test_random_bytes(folder, content):
    _read_all(_write(folder, content))


@FUZZ
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=3000))
def test_random_bytes_after_a_tiff_header(folder, header, body):
    _read_all(_write(folder, header + body))


@FUZZ
@given(
    data=arrays,
    compress=st.booleans(),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6),
)
def test_damaged_valid_tiffs(folder, data, compress, cut, flips):
    """A real TIFF, then truncated and with a few bytes changed anywhere (header included)."""
    content = bytearray(_valid_tiff(data, compress))
    for where, xor in flips:
        content[min(int(where * len(content)), len(content) - 1)] ^= xor
    content = bytes(content[: max(1, int(cut * len(content)))] if cut < 1 else content)
    _read_all(_write(folder, content))


@FUZZ
@given(
    data=st.sampled_from(
        [np.uint8, np.uint16, np.uint32, np.int32, np.float32, np.float64]
    ).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=3, max_side=12))
    ),
    pixel=st.none() | st.floats(0.5, 500),
)
def test_valid_arrays_round_trip(folder, data, pixel):
    path = write_tiff(folder / f"round-{next(_counter)}.tif", data, pixel)
    image = read_tiff(path, memmap=False)
    np.testing.assert_array_equal(np.asarray(image.data).reshape(data.shape), data)
    if pixel is not None:
        assert image.pixel_size_nm == pytest.approx(pixel, rel=1e-3)


def test_a_header_claiming_a_huge_image_is_refused_without_allocating_it(folder):
    """8-byte file size, 2^31 x 2^31 pixels claimed: an error, not a MemoryError."""
    ifd = [
        (256, 4, 1, 2**31 - 1),
        (257, 4, 1, 2**31 - 1),
        (258, 3, 1, 16),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, 2**31 - 1),
        (279, 4, 1, 2**32 - 1),
    ]
    content = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(ifd))
    for tag, typ, count, value in ifd:
        content += struct.pack("<HHII", tag, typ, count, value)
    content += b"\x00\x00\x00\x00" + zlib.compress(b"\x00" * 64)
    path = _write(folder, content)
    for read in (
        lambda: np.asarray(read_tiff(path, memmap=False).data),
        lambda: open_volume(path).read_slice(0),
    ):
        with pytest.raises(InputError) as refused:
            read()
        assert "\n" not in str(refused.value)


# ----------------------------------------------------------------------------- targets
LABEL_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.bool_]


@st.composite
def label_images(draw, max_side=24):
    dtype = np.dtype(draw(st.sampled_from(LABEL_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side))
    if dtype == np.bool_:
        values = st.booleans()
    else:
        info = np.iinfo(dtype)
        # Mostly a few small ids (so that regions touch), sometimes extreme values.
        values = st.integers(0, 4) | st.sampled_from([int(info.min), int(info.max), 0])
    return draw(hnp.arrays(dtype, shape, elements=values))


def _expected_thin_membrane(labels: np.ndarray) -> np.ndarray:
    """The rule, written independently: 0, or a right/lower neighbour with another cell id."""
    h, w = labels.shape
    out = labels == 0
    for i in range(h):
        for j in range(w):
            a = labels[i, j]
            if a == 0:
                continue
            for ni, nj in ((i + 1, j), (i, j + 1)):
                if ni < h and nj < w and labels[ni, nj] != 0 and labels[ni, nj] != a:
                    out[i, j] = True
    return out


@FUZZ
@given(labels=label_images(), width=st.floats(1.0, 9.0), border_weight=st.floats(0.0, 10.0))
def test_target_is_well_formed(labels, width, border_weight):
    target = training_target(labels, width, border_weight)
    assert target.membrane.shape == labels.shape == target.weight.shape
    assert target.membrane.dtype == np.float32 and target.weight.dtype == np.float32
    assert set(np.unique(target.membrane)) <= {0.0, 1.0}
    assert np.all(np.isfinite(target.weight)) and np.all(target.weight > 0)
    assert target.weight.mean() == pytest.approx(1.0, rel=1e-3)
    membrane = target.membrane.astype(bool)
    assert np.all(membrane[labels == 0])  # 0 is membrane
    # Wherever two different cells touch, at least one side of the contact is membrane.
    for axis in (0, 1):
        a = np.moveaxis(labels, axis, 0)
        m = np.moveaxis(membrane, axis, 0)
        touching = (a[:-1] != a[1:]) & (a[:-1] != 0) & (a[1:] != 0)
        assert np.all(m[:-1][touching] | m[1:][touching])


@FUZZ
@given(labels=label_images())
def test_thin_target_follows_the_rule_exactly(labels):
    target = training_target(labels, membrane_width_px=1.0)
    expected = _expected_thin_membrane(labels)
    np.testing.assert_array_equal(target.membrane.astype(bool), expected)
    np.testing.assert_array_equal(derived_borders(labels), expected & (labels != 0))


@FUZZ
@given(labels=label_images().filter(lambda a: a.dtype != np.bool_), seed=st.integers(0, 2**16))
def test_target_depends_on_the_partition_not_on_the_ids(labels, seed):
    ids = np.unique(labels[labels != 0])
    new_ids = np.random.default_rng(seed).permutation(np.arange(1, len(ids) + 1)) * 7
    relabelled = np.zeros(labels.shape, dtype=np.int64)
    for old, new in zip(ids, new_ids, strict=True):
        relabelled[labels == old] = new
    a, b = training_target(labels, 3.0), training_target(relabelled, 3.0)
    np.testing.assert_array_equal(a.membrane, b.membrane)
    np.testing.assert_allclose(a.weight, b.weight, rtol=1e-5)


@FUZZ
@given(labels=label_images(), narrow=st.floats(1.0, 5.0), extra=st.floats(0.0, 6.0))
def test_wider_membranes_contain_narrower_ones(labels, narrow, extra):
    thin = training_target(labels, narrow).membrane.astype(bool)
    wide = training_target(labels, narrow + extra).membrane.astype(bool)
    assert np.all(wide[thin])


@FUZZ
@given(labels=label_images())
def test_transposing_labels_transposes_the_target(labels):
    np.testing.assert_array_equal(
        training_target(labels.T, 1.0).membrane, training_target(labels, 1.0).membrane.T
    )


@FUZZ
@given(
    mask=hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=24),
        elements=st.sampled_from([0, 255]),
    )
)
def test_isbi_masks_are_taken_literally(mask):
    """0/255 masks have no touching cells: the target is exactly the 0 pixels."""
    target = training_target(mask, 5.0)
    np.testing.assert_array_equal(target.membrane.astype(bool), mask == 0)


@FUZZ
@given(
    stack=hnp.arrays(
        np.uint16,
        hnp.array_shapes(min_dims=3, max_dims=3, max_side=8),
        elements=st.integers(0, 3) | st.just(0),
    )
)
def test_labelled_slices_are_those_with_a_cell(stack):
    assert labelled_slices(stack) == [i for i in range(stack.shape[0]) if stack[i].any()]
