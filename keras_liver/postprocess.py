"""Post-processing of predicted masks (shared by every paper's inference)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity by default:
    26-neighbourhood in 3-D, 8 in 2-D; the first of equally large ones). An empty mask is
    returned unchanged.

    Labelled inside the mask's :func:`bounding_box` only (no component reaches outside it),
    and the sizes counted by ``ndimage.histogram`` on the int32 labels (``np.bincount``
    first copies them to int64: on a 512x512x100 volume that took as long as the
    labelling)."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return mask
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity or mask.ndim)
    labels, count = ndimage.label(mask[box], structure=structure)
    if count <= 1:
        return mask
    sizes = ndimage.histogram(labels, 1, count, count)  # sizes of labels 1 .. count
    out = np.zeros(mask.shape, bool)
    out[box] = labels == int(np.argmax(sizes)) + 1
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array;
    ``None`` for an empty mask. From one projection per axis (``any`` over the others), not
    the coordinates of every voxel."""
    mask = np.asarray(mask, dtype=bool)
    box = []
    for axis, n in enumerate(mask.shape):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hits.size:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, n)))
    return tuple(box) if box else None
