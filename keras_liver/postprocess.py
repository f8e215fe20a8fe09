"""Post-processing of predicted masks (shared by every paper's inference)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity by default:
    26-neighbourhood in 3-D, 8 in 2-D; the first of equally large ones). An empty mask is
    returned unchanged.

    Labelled inside the mask's bounding box only (no component reaches outside it; the box
    comes from per-axis projections), and the sizes counted by ``ndimage.histogram`` on the
    int32 labels (``np.bincount`` first copies them to int64: on a 512x512x100 volume that
    took as long as the labelling)."""
    mask = np.asarray(mask, dtype=bool)
    spans = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
             for axis in range(mask.ndim)]
    if not spans or not spans[0].size:
        return mask
    box = tuple(slice(int(h[0]), int(h[-1]) + 1) for h in spans)
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
    ``None`` for an empty mask."""
    coords = np.nonzero(mask)
    if not coords[0].size:
        return None
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                 for c, n in zip(coords, mask.shape))
