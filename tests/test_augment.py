"""augment.augment (one resampling per tensor) against the step-by-step chain it replaced.

The reference below is the chain written out with the plain ops: the same stateless draws,
then ``tf.reverse`` -> slice -> ``tf.image.resize`` (bilinear image, nearest target) ->
``tf.pad`` + slice. Outputs are compared bit for bit (as unsigned integers, so even the sign
of a zero counts), eagerly, in a ``tf.function`` and inside a ``tf.data`` map (where Grappler
rewrites the graph).
"""
import numpy as np
import pytest
import tensorflow as tf

from keras_liver.data import augment as A
from keras_liver.data.preprocessing import resolve_config

FULL = {"hflip": True, "vflip": True, "crop": 0.1, "translate": 0.1}
CONFIGS = [
    FULL,
    {"hflip": True, "vflip": True, "crop": 0.3, "translate": 0.4},
    {"hflip": True, "crop": 0.2},
    {"vflip": True, "translate": 0.3},
    {"crop": 0.25},
    {"translate": 0.2},
    {"hflip": True, "vflip": True},
]
#: (image shape, number of classes of the target or None for a binary mask)
CASES = [((37, 29, 1), None), ((37, 29, 1), 3), ((64, 48, 1), None), ((21, 17, 3, 1), None),
         ((19, 26, 4, 2), 3), ((33, 33, 1), 2)]


def reference(image, target, seed, cfg):
    """The old chain: flip axis 0, flip axis 1, crop + resize back, shift, one copy each."""
    aug = cfg["augment"]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]

    def flat(x):
        return tf.reshape(x, tf.concat([tf.shape(x)[:2], [-1]], 0))

    x, y = flat(image), flat(target)
    for axis, on in ((0, aug["vflip"]), (1, aug["hflip"])):
        if on and tf.random.stateless_uniform([], seed=seeds[axis]) < 0.5:
            x, y = tf.reverse(x, [axis]), tf.reverse(y, [axis])
    if aug["crop"] > 0:
        u = tf.random.stateless_uniform([4], seed=seeds[2], minval=0.0, maxval=aug["crop"])
        top, bottom, left, right = tf.unstack(
            tf.cast(tf.floor(u * tf.cast(tf.stack([h, h, w, w]), tf.float32)), tf.int32))
        x = tf.image.resize(x[top:h - bottom, left:w - right], [h, w], "bilinear")
        y = tf.image.resize(y[top:h - bottom, left:w - right], [h, w], "nearest")
    if aug["translate"] > 0:
        t = aug["translate"]
        u = tf.random.stateless_uniform([2], seed=seeds[3], minval=-t, maxval=t)
        dy, dx = tf.unstack(tf.cast(tf.round(u * tf.cast(shape[:2], tf.float32)), tf.int32))
        pads = [[tf.maximum(dy, 0), tf.maximum(-dy, 0)], [tf.maximum(dx, 0), tf.maximum(-dx, 0)],
                [0, 0]]
        y0, x0 = tf.maximum(-dy, 0), tf.maximum(-dx, 0)
        x = tf.pad(x, pads)[y0:y0 + h, x0:x0 + w]
        valid = tf.pad(tf.ones([h, w, 1], y.dtype), pads)[y0:y0 + h, x0:x0 + w]
        y = tf.reshape(tf.pad(y, pads)[y0:y0 + h, x0:x0 + w], tf.shape(target))
        if cfg["target"] == "classes":
            valid = tf.reshape(valid, [h, w] + [1] * (target.shape.rank - 2))
            y = y + (1 - valid) * tf.one_hot(0, cfg["num_classes"], dtype=y.dtype)
    return tf.reshape(x, shape), tf.reshape(y, tf.shape(target))


def _pair(shape, classes, rng):
    """A float32 image with negative values and some -0.0, and a binary or one-hot target."""
    image = rng.normal(size=shape).astype(np.float32) * 100
    image[rng.random(shape) < 0.05] = -0.0
    if classes is None:
        target = (rng.random(shape) > 0.5).astype(np.float32)
    else:
        target = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=shape[:-1])]
    return tf.constant(image), tf.constant(target)


def _bits(x):
    return np.asarray(x).view(np.uint32)


def _config(aug, classes):
    data = {"augment": aug, "target": "liver" if classes is None else "classes"}
    if classes is not None:
        data["num_classes"] = classes
    return resolve_config(data)


SEEDS = [tf.constant([s, 11], tf.int64) for s in range(8)]


@pytest.mark.parametrize("shape,classes", CASES)
def test_augment_equals_the_reference_chain_bit_for_bit(shape, classes):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    image, target = _pair(shape, classes, rng)
    for aug in CONFIGS:
        cfg = _config(aug, classes)
        fused = tf.function(lambda a, b, s, cfg=cfg: A.augment(a, b, s, cfg))
        for seed in SEEDS:
            want_x, want_y = reference(image, target, seed, cfg)
            for got_x, got_y in (A.augment(image, target, seed, cfg), fused(image, target, seed)):
                assert got_x.shape == image.shape and got_y.shape == target.shape
                assert got_x.dtype == image.dtype and got_y.dtype == target.dtype
                np.testing.assert_array_equal(_bits(got_x), _bits(want_x), err_msg=f"{aug} {seed}")
                np.testing.assert_array_equal(_bits(got_y), _bits(want_y), err_msg=f"{aug} {seed}")


def test_the_seeds_exercise_every_step():
    """The comparison above is not vacuous: flips happen and do not, crops and shifts are
    non-zero, and the augmented tensors differ from the input."""
    splits = [tf.random.experimental.stateless_split(s, 4) for s in SEEDS]
    flips = [bool(tf.random.stateless_uniform([], seed=s[k]) < 0.5) for s in splits for k in (0, 1)]
    assert any(flips) and not all(flips)
    crops = [A._crop_draw(s[2], 37, 29, FULL["crop"]).numpy() for s in splits]
    shifts = [A._shift_draw(s[3], [37, 29], FULL["translate"]).numpy() for s in splits]
    assert all(c.any() for c in crops) and all(d.any() for d in shifts)
    assert any((d < 0).any() for d in shifts) and any((d > 0).any() for d in shifts)
    image, target = _pair((37, 29, 1), None, np.random.default_rng(0))
    cfg = _config(FULL, None)
    changed = [not np.array_equal(A.augment(image, target, s, cfg)[1], target) for s in SEEDS]
    assert all(changed)


def test_augment_equals_the_step_functions():
    """augment is random_flip (0, then 1) -> random_crop_resize -> random_translate."""
    rng = np.random.default_rng(5)
    for shape, classes in CASES[:2] + CASES[4:5]:
        image, target = _pair(shape, classes, rng)
        cfg = _config(FULL, classes)
        fill = None if classes is None else tf.one_hot(0, classes)
        for seed in SEEDS[:4]:
            s = tf.random.experimental.stateless_split(seed, 4)
            x, y = A.random_flip(image, target, s[0], 0)
            x, y = A.random_flip(x, y, s[1], 1)
            x, y = A.random_crop_resize(x, y, s[2], FULL["crop"])
            x, y = A.random_translate(x, y, s[3], FULL["translate"], fill)
            got_x, got_y = A.augment(image, target, seed, cfg)
            np.testing.assert_array_equal(_bits(got_x), _bits(x))
            np.testing.assert_array_equal(_bits(got_y), _bits(y))


def test_augment_in_a_tf_data_map_at_512_equals_the_reference():
    """The pipeline's setting: a parallel tf.data map over 512x512 slices (the published
    size), where Grappler optimises the function graph."""
    rng = np.random.default_rng(9)
    image, target = _pair((512, 512, 1), None, rng)
    cfg = _config(FULL, None)
    seeds = tf.data.Dataset.range(6).map(lambda i: tf.stack([i, tf.constant(4, tf.int64)]))
    pairs = tf.data.Dataset.from_tensors((image, target)).repeat(6)
    ds = tf.data.Dataset.zip((pairs, seeds))
    fused = ds.map(lambda p, s: A.augment(p[0], p[1], s, cfg), num_parallel_calls=2)
    ref = ds.map(lambda p, s: reference(p[0], p[1], s, cfg), num_parallel_calls=2)
    for (gx, gy), (wx, wy) in zip(fused.as_numpy_iterator(), ref.as_numpy_iterator()):
        np.testing.assert_array_equal(_bits(gx), _bits(wx))
        np.testing.assert_array_equal(_bits(gy), _bits(wy))


def test_nothing_configured_returns_the_inputs():
    image, target = _pair((8, 8, 1), None, np.random.default_rng(1))
    x, y = A.augment(image, target, SEEDS[0], resolve_config({}))
    assert x is image and y is target
