"""Post-processing of predicted masks (shared by every paper's inference)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Keep the largest connected component of a binary mask (full connectivity by default:
    26-neighbourhood in 3-D, 8 in 2-D). An empty mask is returned unchanged."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity or mask.ndim)
    labels, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array;
    ``None`` for an empty mask."""
    coords = np.nonzero(mask)
    if not coords[0].size:
        return None
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                 for c, n in zip(coords, mask.shape))
