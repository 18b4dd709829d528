"""Connected pieces of a labelled graph, and stray pieces given back to a neighbour.

Shared by the refinement (:mod:`.refine`) and the radius-tail step
(:mod:`.radius_tail`). Graphs are CSR arrays (int32 when they fit); an edge
between two labels is kept as a self-loop, which joins nothing.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def edge_rows(indptr: np.ndarray) -> np.ndarray:
    """Source row of every stored edge of a CSR graph (dtype of ``indptr``)."""
    return np.repeat(np.arange(indptr.shape[0] - 1, dtype=indptr.dtype), np.diff(indptr))


def edge_offsets(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``indices`` of the edges of ``rows``, row after row, and each row's count."""
    starts = indptr.take(rows)
    counts = indptr.take(rows + 1) - starts
    first = np.cumsum(counts) - counts  # where each row's edges start in the result
    offsets = np.repeat(starts - first, counts) + np.arange(int(counts.sum()))
    return offsets, counts


def components_within(
    indptr: np.ndarray,
    indices: np.ndarray,
    rows: np.ndarray | None,
    labels: np.ndarray,
    degree: int = 0,
) -> tuple[int, np.ndarray]:
    """Connected components of the graph keeping only edges inside one label.

    ``degree`` > 0 says that every row holds exactly that many edges (a
    padded table, see :meth:`_Refinement.subgraph`): the labels of the
    rows are then broadcast instead of gathered, and ``rows`` is not used.
    """
    n = indptr.shape[0] - 1
    # An edge between two labels becomes a self-loop, which joins nothing:
    # cheaper than dropping it (no new row pointers) and the traversal, so
    # the component numbering, is the same. (``take`` gathers faster than
    # fancy indexing.)
    if degree:
        same = (labels.take(indices).reshape(n, degree) == labels[:, None]).ravel()
        kept_indices = indices.copy()
        cross = np.flatnonzero(~same)  # few: most neighbours share the label
        kept_indices[cross] = cross // degree
    else:
        kept_indices = np.where(labels.take(rows) == labels.take(indices), indices, rows)
    graph = sparse.csr_matrix(
        (np.ones(kept_indices.size), kept_indices, indptr), shape=(n, n), copy=False
    )
    # The graph is symmetric, so strong components are the connected pieces
    # (and scipy skips building the transpose).
    count, component = connected_components(graph, directed=True, connection="strong")
    return int(count), component


def pieces_per_cluster(
    count: int, component: np.ndarray, labels: np.ndarray, n_clusters: int
) -> np.ndarray:
    """Connected pieces per cluster code, from components within labels."""
    component_label = np.zeros(count, dtype=np.int64)
    component_label[component] = labels  # a component lies inside one label
    return np.bincount(component_label, minlength=n_clusters)


def reattach_fragments(
    indptr: np.ndarray,
    indices: np.ndarray,
    rows: np.ndarray | None,
    degree: int,
    assign: np.ndarray,
    weights: np.ndarray,
    eps: float,
) -> np.ndarray:
    """Keep the heaviest connected piece of each part; give every other piece to a neighbour.

    A stray piece joins the kept part it shares most edges with (pieces that
    touch only other stray pieces wait for a later round), so every part stays
    connected. ``assign`` must label a connected graph.
    """
    count, component = components_within(indptr, indices, rows, assign, degree)
    parts = int(assign.max()) + 1
    if count <= np.unique(assign).size:  # (some part codes may be unused)
        return assign
    if rows is None:  # a padded table: every row holds ``degree`` edges
        rows = np.repeat(np.arange(indptr.shape[0] - 1), degree)
    component_part = np.zeros(count, dtype=np.int64)
    component_part[component] = assign
    component_weight = np.bincount(component, weights + eps, minlength=count)
    # The first heaviest component of each part is kept.
    ranking = np.lexsort((np.arange(count), -component_weight, component_part))
    first = np.r_[True, component_part[ranking][1:] != component_part[ranking][:-1]]
    kept = np.zeros(count, dtype=bool)
    kept[ranking[first]] = True
    from_component = component[rows]
    to_component = component[indices]
    while not kept.all():
        useful = ~kept[from_component] & kept[to_component]
        if not useful.any():
            break  # the graph is not connected: leave the rest as they are
        keys, shared = np.unique(
            from_component[useful] * parts + component_part[to_component[useful]],
            return_counts=True,
        )
        stray, target = keys // parts, keys % parts
        ranking = np.lexsort((target, -shared, stray))
        stray, target = stray[ranking], target[ranking]
        first = np.r_[True, stray[1:] != stray[:-1]]
        component_part[stray[first]] = target[first]
        kept[stray[first]] = True
    return component_part[component]
