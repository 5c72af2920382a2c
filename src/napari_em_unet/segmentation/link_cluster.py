"""Partition the graph of 2D labels into 3D objects: greedy additive edge contraction.

Every edge carries a signed weight: positive when the evidence says its two 2D labels are
the same object, negative when it says they are not. The best partition (the one whose
joined edges have the largest total weight: a multicut) is approximated greedily, as in
GAEC (Keuper et al., ICCV 2015): join the two objects whose edges between them sum to the
largest positive weight, add up their edges to the others, repeat until no positive sum
is left. Summing is what makes it work for linking: two neighbouring cells that a 2D merge
error connects in one section repel each other in every other section they share, and
that repulsion adds up over their whole length, while the merge error attracts only once.

Pure Python over a heap; ties are broken by node index, so the result depends only on
the edge list (the same list gives the same objects, on one machine or from many chunks).
"""

from __future__ import annotations

import heapq

import numpy as np


def contract_edges(n_nodes: int, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Greedy additive edge contraction; returns each node's cluster (a representative node).

    Parameters
    ----------
    n_nodes : int
        Nodes are ``0 .. n_nodes - 1``.
    u, v : int arrays
        Edge ends. Repeated pairs add up; self-loops are ignored.
    w : float array
        Edge weights: > 0 attract, < 0 repel.

    Returns
    -------
    numpy.ndarray
        ``cluster[i]`` is the smallest node index of the cluster node ``i`` ends in.
    """
    adjacency: list[dict[int, float] | None] = [{} for _ in range(n_nodes)]
    for a, b, weight in zip(u.tolist(), v.tolist(), w.tolist(), strict=True):
        if a == b:
            continue
        total = adjacency[a].get(b, 0.0) + weight
        adjacency[a][b] = total
        adjacency[b][a] = total
    heap = [
        (-weight, a, b)
        for a in range(n_nodes)
        for b, weight in adjacency[a].items()
        if a < b and weight > 0
    ]
    heapq.heapify(heap)
    parent = np.arange(n_nodes)
    while heap:
        negative, a, b = heapq.heappop(heap)
        if adjacency[a] is None or adjacency[b] is None or adjacency[a].get(b) != -negative:
            continue  # an entry made stale by an earlier contraction
        # Keep the larger adjacency and fold the smaller into it: O(E log E) overall.
        keep, gone = (a, b) if len(adjacency[a]) >= len(adjacency[b]) else (b, a)
        kept, folded = adjacency[keep], adjacency[gone]
        del kept[gone], folded[keep]
        for other, weight in folded.items():
            neighbour = adjacency[other]
            del neighbour[gone]
            total = kept.get(other, 0.0) + weight
            kept[other] = total
            neighbour[keep] = total
            if total > 0:
                heapq.heappush(heap, (-total, min(keep, other), max(keep, other)))
        adjacency[gone] = None
        parent[gone] = keep
    return _representatives(parent)


def _representatives(parent: np.ndarray) -> np.ndarray:
    """Follow parent links to the root, then name each cluster by its smallest node."""
    root = parent.copy()
    while True:
        step = root[root]
        if np.array_equal(step, root):
            break
        root = step
    smallest = np.full(len(root), len(root), dtype=np.int64)
    np.minimum.at(smallest, root, np.arange(len(root)))
    return smallest[root]
