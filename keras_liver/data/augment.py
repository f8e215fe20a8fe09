"""Seeded, stateless augmentations applied identically to an image and its target (SPEC §3, §6).

Every random draw is a ``tf.random.stateless_*`` op of an explicit per-element seed (shape
``[2]`` integer), so a pipeline is repeatable under a seed even with parallel maps.
:func:`augment_dataset` derives the element seeds from ``tf.data.Dataset.random(seed)`` zipped
with the data, re-randomised on every iteration (each epoch gets new, but repeatable, draws).

Tensors are ``(H, W, C)`` slices or ``(H, W, D, C)`` volumes: only the two in-plane axes
move. Images use bilinear interpolation, targets nearest neighbour, so a binary mask stays
binary and a one-hot target stays one-hot. Axis 0 is the row axis ("vertical"), axis 1 the
column axis ("horizontal"), as in ``tf.image.flip_up_down`` / ``flip_left_right``.

Configuration (``augment`` in the data config, all off by default)::

    hflip      false   flip axis 1 with probability 0.5
    vflip      false   flip axis 0 with probability 0.5
    crop       0.0     cut a uniform [0, crop) fraction off each of the four sides
                       (independently), then resize back to (H, W)
    translate  0.0     shift by a whole number of pixels, uniform in +-translate * size on
                       each axis; uncovered pixels become 0 in the image and background in
                       the target (0 for a mask, class 0 for a one-hot target)

Order: flips -> crop -> translate.

:func:`random_flip`, :func:`random_crop_resize` and :func:`random_translate` are the steps
one at a time (``tf.reverse``, slice + ``tf.image.resize``, ``tf.pad`` + slice), and define
the result. :func:`augment`, which the pipeline runs, makes the same draws and gives the same
values bit for bit, but resamples each tensor once (a copy of a 512x512 slice per step was
most of the training pipeline's augmentation cost): the image by one slice, one reverse,
``tf.image.resize``'s own bilinear kernel on the flipped crop and the shifted window; the
target by two gathers whose indices are the nearest-neighbour resize of an index ramp (so
``tf.image.resize``'s index rule, not a restatement of it). ``tests/test_augment.py``
compares the two on random seeds, sizes, slices, volumes, masks and one-hot targets.
"""
from __future__ import annotations

import tensorflow as tf

from keras_liver.data.preprocessing import resolve_config


def _flat(x):
    """``(H, W, ...)`` -> ``(H, W, prod(...))`` so the tf.image ops accept volumes too."""
    s = tf.shape(x)
    return tf.reshape(x, tf.concat([s[:2], [-1]], axis=0))


def _unflat(x, like):
    return tf.ensure_shape(tf.reshape(x, tf.shape(like)), like.shape)


def _flip_draw(seed):
    """The flip decision of one axis: ``stateless_uniform < 0.5``."""
    return tf.random.stateless_uniform([], seed=seed) < 0.5


def _crop_draw(seed, h, w, max_fraction: float):
    """``[top, bottom, left, right]``: ``floor(u * size)`` pixels, ``u ~ U[0, max_fraction)``."""
    if max_fraction >= 0.5:
        raise ValueError(f"random_crop_resize needs max_fraction < 0.5, received {max_fraction}")
    u = tf.random.stateless_uniform([4], seed=seed, minval=0.0, maxval=max_fraction)
    size = tf.cast(tf.stack([h, h, w, w]), tf.float32)
    return tf.cast(tf.floor(u * size), tf.int32)


def _shift_draw(seed, shape, max_fraction: float):
    """``[dy, dx]``: ``round(u * size)``, ``u ~ U[-max_fraction, max_fraction)`` per axis."""
    size = tf.cast(shape[:2], tf.float32)
    u = tf.random.stateless_uniform([2], seed=seed, minval=-max_fraction, maxval=max_fraction)
    return tf.cast(tf.round(u * size), tf.int32)


# --------------------------------------------------------------------------- step by step

def random_flip(image, target, seed, axis: int):
    """Reverse ``axis`` (0 or 1) of image and target together with probability 0.5."""
    if axis not in (0, 1):
        raise ValueError(f"random_flip flips an in-plane axis (0 or 1), received axis={axis}")
    flip = _flip_draw(seed)
    image = tf.cond(flip, lambda: tf.reverse(image, [axis]), lambda: image)
    target = tf.cond(flip, lambda: tf.reverse(target, [axis]), lambda: target)
    return image, target


def random_crop_resize(image, target, seed, max_fraction: float):
    """Cut ``floor(u * size)`` pixels off each side (``u ~ U[0, max_fraction)`` per side),
    then resize back: bilinear for the image, nearest for the target."""
    if max_fraction <= 0.0:
        return image, target
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    top, bottom, left, right = tf.unstack(_crop_draw(seed, h, w, max_fraction))

    def crop_resize(x, method):
        x = _flat(x)
        x = x[top:h - bottom, left:w - right]
        return tf.image.resize(x, tf.stack([h, w]), method=method, antialias=False)

    new_image = _unflat(tf.cast(crop_resize(image, "bilinear"), image.dtype), image)
    new_target = _unflat(tf.cast(crop_resize(target, "nearest"), target.dtype), target)
    return new_image, new_target


def _shift(x, dy, dx):
    """Shift ``(H, W, C)`` by whole pixels (+ = down/right), filling with zeros."""
    shape = tf.shape(x)
    h, w = shape[0], shape[1]
    pads = [[tf.maximum(dy, 0), tf.maximum(-dy, 0)], [tf.maximum(dx, 0), tf.maximum(-dx, 0)], [0, 0]]
    x = tf.pad(x, pads)
    y0, x0 = tf.maximum(-dy, 0), tf.maximum(-dx, 0)
    return x[y0:y0 + h, x0:x0 + w]


def _fill_outside(shifted, valid, target_fill):
    """``shifted + (1 - valid) * fill``: ``valid`` ``(H, W, 1)`` is 1 where the shift covered."""
    shape = tf.shape(shifted)
    fill = tf.broadcast_to(tf.cast(target_fill, shifted.dtype), shape)
    valid = tf.reshape(valid, tf.concat([shape[:2], tf.ones([tf.rank(shifted) - 2], tf.int32)], 0))
    return shifted + (1 - valid) * fill


def random_translate(image, target, seed, max_fraction: float, target_fill=None):
    """Shift image and target by the same whole number of pixels, up to ``+-max_fraction`` of
    each in-plane size. Uncovered image pixels become 0; uncovered target pixels become
    ``target_fill`` (a vector over the target's last axis; default zeros)."""
    if max_fraction <= 0.0:
        return image, target
    shape = tf.shape(image)
    dy, dx = tf.unstack(_shift_draw(seed, shape, max_fraction))

    new_image = _unflat(_shift(_flat(image), dy, dx), image)
    shifted = _unflat(_shift(_flat(target), dy, dx), target)
    if target_fill is not None:
        valid = _shift(tf.ones(tf.concat([shape[:2], [1]], 0), target.dtype), dy, dx)
        shifted = _fill_outside(shifted, valid, target_fill)
    return new_image, shifted


# --------------------------------------------------------------------------- fused
#
# flip -> crop -> resize back -> shift as one resampling per tensor. Per in-plane axis (both
# axes at once, as 2-vectors): ``n`` the size, ``flip``, the crop ``[lo, n - hi)`` taken in
# flipped coordinates (length ``m``; its source positions start at ``s0``), the shift ``d``
# of the resized axis: output positions ``[out0, out0 + kept)`` read resized positions
# ``[src0, src0 + kept)``, the rest is filled. A tensor is handled as ``(H, W)`` when it has
# one channel (``tf.reverse`` and ``tf.pad`` are several times faster there than on
# ``(H, W, 1)``), else as ``(H, W, K)``.

def _planar(x, n):
    """``(H, W, ...)`` -> ``(H, W)`` (one channel, known statically) or ``(H, W, K)``."""
    if x.shape[2:].num_elements() == 1:
        return tf.reshape(x, n)
    return tf.reshape(x, tf.concat([n, [-1]], 0))


def _padded(v, x, value):
    """The 2-vector ``v`` extended with ``value`` for the channel axis of ``x``, if any."""
    return tf.concat([v, [value]], 0) if x.shape.rank == 3 else v


def _move(x, flip, crop, size, window, pads):
    """``_planar`` ``x``: the flipped crop's source rectangle (``crop`` = (start, length)
    2-vectors, or None), one ``Reverse`` (``flip``, or None), the bilinear resize to
    ``size`` (``tf.image.resize``'s own kernel and arguments, so its values; None: no
    resize), then the shift: the kept ``window`` and the zero ``pads`` (or None)."""
    if crop is not None:
        x = tf.slice(x, _padded(crop[0], x, 0), _padded(crop[1], x, -1))
    if flip is not None:
        x = tf.raw_ops.Reverse(tensor=x, dims=_padded(flip, x, False))
    if size is not None:
        rank = x.shape.rank
        x = tf.raw_ops.ResizeBilinear(images=tf.reshape(x, tf.concat([[1], tf.shape(x)[:2], [-1]], 0)),
                                      size=size, align_corners=False, half_pixel_centers=True)
        x = tf.reshape(x, tf.concat([size, [-1]], 0) if rank == 3 else size)
    if window is not None:
        x = tf.slice(x, _padded(window[0], x, 0), _padded(window[1], x, -1))
        x = tf.pad(x, tf.concat([pads, [[0, 0]]], 0) if x.shape.rank == 3 else pads)
    return x


def _source_indices(start, delta, m, n, src0, kept):
    """Source index of each kept output position of one axis for nearest neighbour: the
    crop's source indices ``start, start + delta, ...`` (``m`` of them) resized to ``n`` by
    ``ResizeNearestNeighbor`` itself (so with the index rule of ``tf.image.resize``), then
    the kept window ``[src0, src0 + kept)``."""
    ramp = tf.reshape(tf.range(start, start + delta * m, delta), [1, -1, 1, 1])
    ramp = tf.raw_ops.ResizeNearestNeighbor(images=ramp, size=tf.stack([n, 1]),
                                            align_corners=False, half_pixel_centers=True)
    return tf.reshape(ramp, [-1])[src0:src0 + kept]


def _gather(x, rows, cols, pads):
    """``_planar`` ``x`` resampled by nearest neighbour: a gather of rows, then of columns
    (as rows, through transposes: a gather of whole rows is the cheap one), then the zero
    ``pads`` of the shift (or None)."""
    perm = [1, 0, 2] if x.shape.rank == 3 else [1, 0]
    x = tf.transpose(tf.gather(tf.transpose(tf.gather(x, rows), perm), cols), perm)
    if pads is not None:
        x = tf.pad(x, tf.concat([pads, [[0, 0]]], 0) if x.shape.rank == 3 else pads)
    return x


def augment(image, target, seed, config):
    """Apply the configured augmentations (``config`` is a data config or its ``augment``
    part is read from it) to one ``(image, target)`` pair with the element seed ``seed``.

    The draws and the result are those of :func:`random_flip` (axis 0, then 1) ->
    :func:`random_crop_resize` -> :func:`random_translate` with the seeds of
    ``stateless_split(seed, 4)``, bit for bit (``tests/test_augment.py``), but each tensor
    is resampled once instead of copied per step: the image by a slice, one reverse, the
    bilinear resize and the shifted window; the target by two gathers whose indices come
    from the nearest-neighbour resize of an index ramp (or, without a crop, as the image)."""
    cfg = resolve_config(config)
    aug = cfg["augment"]
    if not is_active(cfg):
        return image, target
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    shape = tf.shape(image)
    n = shape[:2]
    flip = None
    if aug["vflip"] or aug["hflip"]:
        no = tf.constant(False)
        flip = tf.stack([_flip_draw(seeds[0]) if aug["vflip"] else no,
                         _flip_draw(seeds[1]) if aug["hflip"] else no])
    resize = aug["crop"] > 0
    shift = aug["translate"] > 0
    window = pads = None
    src0, kept = tf.zeros([2], tf.int32), n
    if shift:
        d = _shift_draw(seeds[3], shape, aug["translate"])
        out0 = tf.clip_by_value(d, 0, n)
        kept = tf.maximum(n - tf.abs(d), 0)
        src0 = out0 - d
        window, pads = (src0, kept), tf.stack([out0, n - kept - out0], axis=1)

    x, y = _planar(image, n), _planar(target, n)
    if resize:
        lo, hi = tf.unstack(tf.reshape(_crop_draw(seeds[2], n[0], n[1], aug["crop"]), [2, 2]),
                            axis=1)
        m = n - lo - hi
        if flip is None:
            s0, start, delta = lo, lo, tf.ones([2], tf.int32)
        else:
            s0 = tf.where(flip, hi, lo)
            start = tf.where(flip, n - 1 - lo, lo)
            delta = tf.where(flip, -1, 1)
        x = _move(x, flip, (s0, m), n, window, pads)
        rows, cols = (_source_indices(*a) for a in
                      zip(*(tf.unstack(v) for v in (start, delta, m, n, src0, kept))))
        y = _gather(y, rows, cols, pads)
    else:  # flips and shift only: copies, the same for both
        x = _move(x, flip, None, None, window, pads)
        y = _move(y, flip, None, None, window, pads)
    new_image = tf.reshape(tf.cast(x, image.dtype), shape)
    new_target = tf.reshape(y, tf.shape(target))
    if shift and cfg["target"] == "classes":
        fill = tf.one_hot(0, cfg["num_classes"], dtype=target.dtype)
        valid = tf.pad(tf.ones(tf.concat([kept, [1]], 0), target.dtype),
                       tf.concat([pads, [[0, 0]]], 0))
        new_target = _fill_outside(new_target, valid, fill)
    new_image.set_shape(image.shape)
    new_target.set_shape(target.shape)
    return new_image, new_target


def is_active(config) -> bool:
    aug = resolve_config(config)["augment"]
    return aug["hflip"] or aug["vflip"] or aug["crop"] > 0 or aug["translate"] > 0


def augment_dataset(dataset: tf.data.Dataset, config, seed: int) -> tf.data.Dataset:
    """Map :func:`augment` over ``(image, target)`` elements with per-element seeds drawn from
    ``tf.data.Dataset.random(seed)`` (new draws every iteration, the same for the same seed).
    Returns ``dataset`` unchanged when no augmentation is configured."""
    cfg = resolve_config(config)
    if not is_active(cfg):
        return dataset
    draws = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
    base = tf.constant(int(seed), tf.int64)

    def apply(pair, r):
        image, target = pair
        return augment(image, target, tf.stack([r, base]), cfg)

    return tf.data.Dataset.zip((dataset, draws)).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
