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


def random_flip(image, target, seed, axis: int):
    """Reverse ``axis`` (0 or 1) of image and target together with probability 0.5."""
    if axis not in (0, 1):
        raise ValueError(f"random_flip flips an in-plane axis (0 or 1), received axis={axis}")
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [axis]), lambda: image)
    target = tf.cond(flip, lambda: tf.reverse(target, [axis]), lambda: target)
    return image, target


def random_crop_resize(image, target, seed, max_fraction: float):
    """Cut ``floor(u * size)`` pixels off each side (``u ~ U[0, max_fraction)`` per side),
    then resize back: bilinear for the image, nearest for the target."""
    if max_fraction <= 0.0:
        return image, target
    if max_fraction >= 0.5:
        raise ValueError(f"random_crop_resize needs max_fraction < 0.5, received {max_fraction}")
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    u = tf.random.stateless_uniform([4], seed=seed, minval=0.0, maxval=max_fraction)
    size = tf.cast(tf.stack([h, h, w, w]), tf.float32)
    top, bottom, left, right = tf.unstack(tf.cast(tf.floor(u * size), tf.int32))

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


def random_translate(image, target, seed, max_fraction: float, target_fill=None):
    """Shift image and target by the same whole number of pixels, up to ``+-max_fraction`` of
    each in-plane size. Uncovered image pixels become 0; uncovered target pixels become
    ``target_fill`` (a vector over the target's last axis; default zeros)."""
    if max_fraction <= 0.0:
        return image, target
    shape = tf.shape(image)
    size = tf.cast(shape[:2], tf.float32)
    u = tf.random.stateless_uniform([2], seed=seed, minval=-max_fraction, maxval=max_fraction)
    dy, dx = tf.unstack(tf.cast(tf.round(u * size), tf.int32))

    new_image = _unflat(_shift(_flat(image), dy, dx), image)
    shifted = _unflat(_shift(_flat(target), dy, dx), target)
    if target_fill is not None:
        fill = tf.broadcast_to(tf.cast(target_fill, target.dtype), tf.shape(target))
        valid = _shift(tf.ones(tf.concat([shape[:2], [1]], 0), target.dtype), dy, dx)
        valid = tf.reshape(valid, tf.concat([shape[:2], tf.ones([tf.rank(target) - 2], tf.int32)], 0))
        shifted = shifted + (1 - valid) * fill
    return new_image, shifted


def augment(image, target, seed, config):
    """Apply the configured augmentations (``config`` is a data config or its ``augment``
    part is read from it) to one ``(image, target)`` pair with the element seed ``seed``."""
    cfg = resolve_config(config)
    aug = cfg["augment"]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    if aug["vflip"]:
        image, target = random_flip(image, target, seeds[0], axis=0)
    if aug["hflip"]:
        image, target = random_flip(image, target, seeds[1], axis=1)
    if aug["crop"] > 0:
        image, target = random_crop_resize(image, target, seeds[2], aug["crop"])
    if aug["translate"] > 0:
        fill = None
        if cfg["target"] == "classes":
            fill = tf.one_hot(0, cfg["num_classes"], dtype=target.dtype)
        image, target = random_translate(image, target, seeds[3], aug["translate"], fill)
    return image, target


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
