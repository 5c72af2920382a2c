"""Slices worked on two at a time: same results, same order, errors and stops as one at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_em_unet.segmentation.parallel import ordered_map
from napari_em_unet.segmentation.pipeline import segment_stack
from napari_em_unet.segmentation.tiling import predict_stack


def test_results_come_in_the_order_of_the_items_whatever_finishes_first():
    delays = [0.03, 0.0, 0.02, 0.0, 0.01, 0.0]

    def work(i):
        time.sleep(delays[i])
        return i * 10, threading.current_thread().name

    results = list(ordered_map(work, range(len(delays)), workers=2))
    assert [value for value, _ in results] == [0, 10, 20, 30, 40, 50]
    assert {name for _, name in results} != {threading.current_thread().name}


def test_an_error_is_raised_at_its_item_after_the_earlier_results():
    def work(i):
        if i == 3:
            raise ValueError("slice 3 is broken")
        return i

    got = []
    with pytest.raises(ValueError, match="slice 3"):
        for value in ordered_map(work, range(8), workers=2):
            got.append(value)
    assert got == [0, 1, 2]


def test_stopping_early_leaves_the_rest_unread_and_unstarted():
    read, started = [], []

    def items():
        for i in range(100):
            read.append(i)
            yield i

    def work(i):
        started.append(i)
        return i

    results = ordered_map(work, items(), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    results.close()
    assert len(read) <= 3 + 2 + 1  # consumed, in work, one read ahead
    assert len(started) <= len(read)


@pytest.mark.parametrize("output", ["instances", "probabilities"])
def test_two_workers_give_the_labels_of_one(tiny_model, small_stack, output):
    stack = np.concatenate([small_stack[0]] * 2)
    one = [r.result for r in segment_stack(tiny_model, stack, output=output, workers=1)]
    two = [r.result for r in segment_stack(tiny_model, stack, output=output, workers=2)]
    assert len(two) == len(stack)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_progress_records_count_up_in_slice_order(tiny_model, small_stack):
    records = list(predict_stack(tiny_model, small_stack[0], slices=[2, 0, 1], workers=2))
    assert [(r.index, r.done, r.total) for r in records] == [(2, 1, 3), (0, 2, 3), (1, 3, 3)]
