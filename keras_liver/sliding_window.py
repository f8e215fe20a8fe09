"""Sliding-window inference, written once for 2-D and 3-D windows.

The reading of nnU-Net's ``predict_sliding_window_return_logits`` (Isensee et al., nnU-Net,
Nat. Methods 2021; ``nnunetv2/inference/sliding_window_prediction.py``) and MONAI's
``sliding_window_inference``, in NumPy around any ``predict_on_batch``:

- **Window starts** along an axis of ``size`` voxels for a window of ``window`` and a step
  ``step``: ``0, step, 2 step, …`` and a last window aligned to the end (``size - window``),
  so every voxel is covered and no window reaches outside the image (the RA-UNet evaluation
  tiling, :func:`keras_liver.data.volumetric.slab_starts`). An ``overlap`` ``o`` in ``[0, 1)``
  gives the step ``floor(window * (1 - o))`` (at least 1), so neighbouring windows share at
  least ``o`` of their extent (nnU-Net's ``tile_step_size`` = ``1 - o``; nnU-Net then spreads
  its starts evenly, we keep the regular step with the last window at the end).
- **Images smaller than the window** along an axis are padded, centred, with ``pad_value``
  (as :func:`keras_liver.data.volumetric.pad_to`) and the result is cropped back.
- **Blending**: each window's prediction is multiplied by an importance map ``w`` and the sum
  over windows divided by the summed ``w``. ``"mean"``: ``w = 1`` (the average of the
  overlapping windows, the RA-UNet paper's voting). ``"gaussian"``: nnU-Net's
  ``compute_gaussian``: a unit impulse at the window's centre voxel (``window // 2``)
  smoothed by ``scipy.ndimage.gaussian_filter`` with ``sigma = window / 8`` per axis
  (``mode="constant"``, truncated at 4 sigma), divided by its maximum (1 at the centre), and
  zeros replaced by the smallest non-zero value so no voxel gets weight 0. Voxels that no
  window covers (only when the caller passes its own starts) get 0.
- **Bounded memory**: windows go to the model ``batch_size`` at a time, always as a full
  batch (the last one zero-padded), so the network is traced once for one input shape (a
  smaller last batch retraced RA-UNet's 641-layer network: 4.6 s against 0.2 s per call).
  Besides the batch, memory holds the image and one float32 accumulator of the output.
- **Flip test-time augmentation**: with ``tta_axes`` (spatial axes of the window), the
  prediction of each batch is the mean of the prediction on the batch as it is and on each
  copy flipped along one of the axes (flipped back), MSA-UNet's identity + flips averaging.
- A tqdm progress bar counts windows (off unless ``progress``).

Arrays are in nibabel order; an image is ``(*spatial)`` (no channel), the model sees
``(batch, *window, 1)`` and returns ``(batch, *window, C)``; results are ``(*spatial, C)``.
"""
from __future__ import annotations

import itertools
import math
import sys
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

BLENDS = ("mean", "gaussian")
#: nnU-Net's ``sigma_scale``: the Gaussian's sigma is this fraction of the window per axis.
GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0


# --------------------------------------------------------------------------- window geometry

def window_starts(size: int, window: int, step: int) -> list[int]:
    """Starts along one axis: ``0, step, …`` and a last window ending at ``size`` (module
    docstring). ``size < window`` gives ``[0]`` (the caller pads the image first)."""
    size, window, step = int(size), int(window), int(step)
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1; received window={window}, step={step}")
    last = max(size - window, 0)
    return [min(i * step, last) for i in range(math.ceil(last / step) + 1)]


def step_for_overlap(window: int, overlap: float) -> int:
    """The step of windows of ``window`` voxels that overlap by at least ``overlap``."""
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); received {overlap}")
    return max(1, int(math.floor(int(window) * (1.0 - overlap) + 1e-9)))


def steps_for_overlap(window: Sequence[int], overlap: float) -> tuple[int, ...]:
    return tuple(step_for_overlap(w, overlap) for w in window)


def grid_starts(shape: Sequence[int], window: Sequence[int], steps: Sequence[int]
                ) -> list[tuple[int, ...]]:
    """Every window start of the grid over ``shape`` (C order: the last axis varies fastest)."""
    if not len(shape) == len(window) == len(steps):
        raise ValueError(f"shape {tuple(shape)}, window {tuple(window)} and steps "
                         f"{tuple(steps)} must have one entry per spatial axis")
    axes = [window_starts(n, w, s) for n, w, s in zip(shape, window, steps)]
    return [tuple(s) for s in itertools.product(*axes)]


def importance_map(window: Sequence[int], blend: str = "mean",
                   sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> np.ndarray:
    """Per-voxel weight of a window's prediction, float32 of shape ``window`` (module
    docstring: ``"mean"`` all ones, ``"gaussian"`` nnU-Net's ``compute_gaussian``)."""
    window = tuple(int(w) for w in window)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}; received {blend!r}")
    if blend == "mean":
        return np.ones(window, np.float32)
    impulse = np.zeros(window, np.float64)
    impulse[tuple(w // 2 for w in window)] = 1.0
    g = ndimage.gaussian_filter(impulse, [w * float(sigma_scale) for w in window], order=0,
                                mode="constant", cval=0.0)
    g = g / g.max()
    g[g == 0] = g[g != 0].min()
    return g.astype(np.float32)


def pad_to_window(image: np.ndarray, window: Sequence[int], value: float = 0.0
                  ) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pad ``image`` (centred: half before, the rest after) with ``value`` so each spatial
    axis is at least ``window``; returns the padded image and the voxels added before."""
    image = np.asarray(image)
    widths = []
    for n, w in zip(image.shape, window):
        extra = max(int(w) - n, 0)
        widths.append((extra // 2, extra - extra // 2))
    widths += [(0, 0)] * (image.ndim - len(widths))
    if any(a or b for a, b in widths):
        image = np.pad(image, widths, mode="constant", constant_values=value)
    return image, tuple(a for a, _ in widths[:len(window)])


# --------------------------------------------------------------------------- running a model

def predict_full_batches(predict_on_batch: Callable, x: np.ndarray, batch_size: int
                         ) -> np.ndarray:
    """``predict_on_batch`` over ``x`` in chunks of exactly ``batch_size`` (the last chunk
    zero-padded, the padding's output dropped), float32."""
    x = np.asarray(x, np.float32)
    batch_size = max(1, int(batch_size))
    parts = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        if len(chunk) < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *x.shape[1:]),
                                                    np.float32)])
        out = np.asarray(predict_on_batch(chunk), np.float32)
        parts.append(out[:min(batch_size, len(x) - i)])
    if not parts:
        raise ValueError("predict_full_batches needs at least one input")
    return np.concatenate(parts)


def predict_with_flips(predict_on_batch: Callable, batch: np.ndarray,
                       flip_axes: Sequence[int] = ()) -> np.ndarray:
    """The mean of ``predict_on_batch(batch)`` and, for each axis of ``flip_axes`` (axes of
    ``batch``, e.g. 1 for the first spatial axis), of the prediction on the flipped batch
    flipped back."""
    total = np.asarray(predict_on_batch(batch), np.float32).copy()
    for axis in flip_axes:
        total += np.flip(np.asarray(predict_on_batch(np.flip(batch, axis=axis)), np.float32),
                         axis=axis)
    return total / np.float32(1 + len(flip_axes))


def blend_windows(predict_on_batch: Callable, image: np.ndarray, starts, window, *,
                  weights: np.ndarray | None = None, batch_size: int = 2,
                  tta_axes: Sequence[int] = (), progress: bool = False,
                  desc: str = "windows") -> np.ndarray:
    """Blended prediction ``(*image.shape, C)`` of the windows of ``image`` at ``starts``.

    ``weights``: the importance map (default all ones: the mean of overlapping windows);
    ``tta_axes``: spatial axes (0-based) flipped for test-time augmentation. Every window
    must lie inside ``image``; voxels no window covers get 0.
    """
    from tqdm import tqdm

    image = np.asarray(image, np.float32)
    window = tuple(int(w) for w in window)
    starts = [tuple(int(v) for v in s) for s in starts]
    batch_size = max(1, int(batch_size))
    if len(window) != image.ndim:
        raise ValueError(f"window {window} must have one size per axis of the image "
                         f"{image.shape}")
    for s in starts:
        if len(s) != image.ndim or any(a < 0 or a + w > n
                                       for a, w, n in zip(s, window, image.shape)):
            raise ValueError(f"window at {s} of size {window} reaches outside the image "
                             f"{image.shape}")
    weights = np.ones(window, np.float32) if weights is None else np.asarray(weights, np.float32)
    if weights.shape != window:
        raise ValueError(f"importance map of shape {weights.shape} for windows of {window}")
    flip_axes = tuple(int(a) + 1 for a in tta_axes)
    total = count = None
    bar = tqdm(total=len(starts), desc=desc, unit="window", file=sys.stderr,
               disable=not progress, leave=False)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        regions = [tuple(slice(a, a + w) for a, w in zip(s, window)) for s in chunk]
        batch = np.zeros((batch_size, *window, 1), np.float32)
        batch[:len(chunk), ..., 0] = np.stack([image[r] for r in regions])
        probs = predict_with_flips(predict_on_batch, batch, flip_axes)[:len(chunk)]
        if probs.shape[1:-1] != window:
            raise ValueError(f"the model returned windows of {probs.shape[1:]}, expected "
                             f"{window} + channels")
        if total is None:
            total = np.zeros((*image.shape, probs.shape[-1]), np.float32)
            count = np.zeros(image.shape, np.float32)
        for r, p in zip(regions, probs):
            total[r] += p * weights[..., None]
            count[r] += weights
        bar.update(len(chunk))
    bar.close()
    if total is None:   # no window: nothing covered
        return np.zeros((*image.shape, 1), np.float32)
    return np.divide(total, count[..., None], out=np.zeros_like(total),
                     where=count[..., None] > 0)


def sliding_window_inference(predict_on_batch: Callable, image: np.ndarray, window, *,
                             steps: Sequence[int] | None = None, overlap: float = 0.5,
                             blend: str = "mean", batch_size: int = 2,
                             tta_axes: Sequence[int] = (), pad_value: float = 0.0,
                             progress: bool = False, desc: str = "windows") -> np.ndarray:
    """Prediction ``(*image.shape, C)`` of a model on every window of ``image``.

    ``steps`` per axis, or (when ``None``) the steps for ``overlap``; ``blend`` ``"mean"``
    or ``"gaussian"``; images smaller than the window are padded with ``pad_value`` and the
    result cropped back (module docstring).
    """
    image = np.asarray(image, np.float32)
    window = tuple(int(w) for w in window)
    steps = steps_for_overlap(window, overlap) if steps is None else tuple(int(s) for s in steps)
    padded, before = pad_to_window(image, window, pad_value)
    starts = grid_starts(padded.shape, window, steps)
    probs = blend_windows(predict_on_batch, padded, starts, window,
                          weights=importance_map(window, blend), batch_size=batch_size,
                          tta_axes=tta_axes, progress=progress, desc=desc)
    return probs[tuple(slice(b, b + n) for b, n in zip(before, image.shape))]
