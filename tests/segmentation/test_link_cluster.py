"""Greedy additive edge contraction on graphs small enough to run by hand."""

import numpy as np

from napari_em_unet.segmentation.link_cluster import contract_edges


def run(n, edges):
    u, v, w = (np.array(x) for x in zip(*edges, strict=True))
    return contract_edges(n, u, v, w.astype(float)).tolist()


def test_repulsion_that_outweighs_the_second_join_keeps_it_apart():
    # 0-1 (+5) joins first; then {0,1}-2 sums 3 - 10 = -7: node 2 stays alone.
    assert run(3, [(0, 1, 5.0), (1, 2, 3.0), (0, 2, -10.0)]) == [0, 0, 2]


def test_weak_repulsion_is_outweighed():
    # {0,1}-2 sums 3 - 1 = +2: all one cluster.
    assert run(3, [(0, 1, 5.0), (1, 2, 3.0), (0, 2, -1.0)]) == [0, 0, 0]


def test_sums_decide_not_single_edges():
    # Two clusters {0,1} and {2,3} (joined at +9 each) linked by two +4 edges and one -6:
    # 4 + 4 - 6 = +2 > 0, so they join, although the -6 is the largest edge between them.
    edges = [(0, 1, 9.0), (2, 3, 9.0), (0, 2, 4.0), (1, 3, 4.0), (1, 2, -6.0)]
    assert run(4, edges) == [0, 0, 0, 0]
    edges[-1] = (1, 2, -9.0)  # 4 + 4 - 9 < 0: they stay apart
    assert run(4, edges) == [0, 0, 2, 2]


def test_repeated_pairs_add_up_and_clusters_are_named_by_their_smallest_node():
    assert run(4, [(3, 2, 1.0), (2, 3, 1.0), (1, 0, -1.0), (0, 1, -1.0)]) == [0, 1, 2, 2]
    assert run(2, [(0, 0, 5.0)]) == [0, 1]  # a self-loop joins nothing


def test_empty_graph():
    assert contract_edges(0, np.zeros(0, int), np.zeros(0, int), np.zeros(0)).tolist() == []
    assert run(3, [(0, 1, -1.0)]) == [0, 1, 2]
