"""Per-slice preprocessing and augmentation against NumPy/OpenCV references."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_liver.data import augment as A
from keras_liver.data import preprocessing as P


@pytest.fixture(scope="module")
def ct_slice():
    rng = np.random.default_rng(0)
    img = rng.normal(40.0, 180.0, (40, 52)).astype(np.float32)
    img[5:30, 10:40] += 120.0  # an organ-like bright block
    return img


@pytest.fixture(scope="module")
def label_slice():
    lab = np.zeros((40, 52), np.uint8)
    lab[8:30, 6:40] = 1
    lab[15:22, 20:28] = 2
    return lab


# --------------------------------------------------------------------------- configuration

def test_resolve_config_defaults_and_idempotence():
    cfg = P.resolve_config({})
    assert cfg["kind"] == "slices" and cfg["target"] == "liver" and cfg["num_classes"] == 3
    assert cfg["window"] is None and cfg["clahe"] is None and cfg["normalize"] is None
    assert cfg["image_size"] is None and cfg["cache"] is False and cfg["drop_remainder"] is True
    assert cfg["slice_filter"] == {"keep_empty_fraction": 1.0, "splits": ["train"]}
    assert cfg["augment"] == {"hflip": False, "vflip": False, "crop": 0.0, "translate": 0.0}
    full = P.resolve_config({"window": (-100, 200), "clahe": True, "image_size": (64, 32)})
    assert full["window"] == [-100.0, 200.0] and full["image_size"] == [64, 32]
    assert full["clahe"] == {"clip_limit": 2.0, "tile_grid": [8, 8]}
    assert P.resolve_config(full) == full


@pytest.mark.parametrize("bad, match", [
    ({"windw": [0, 1]}, "unknown keys"),
    ({"target": "tumor"}, "target"),
    ({"window": [200, -100]}, "lo < hi"),
    ({"clahe": True}, "set 'window'"),
    ({"normalize": "std"}, "normalize"),
    ({"augment": {"flip": True}}, "unknown keys"),
    ({"augment": {"crop": 0.5}}, "crop"),
    ({"slice_filter": {"keep_empty_fraction": 1.5}}, "keep_empty_fraction"),
    ({"kind": "volumes", "slice_filter": {"keep_empty_fraction": 0.3}}, "kind 'slices' only"),
])
def test_resolve_config_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        P.resolve_config(bad)


# --------------------------------------------------------------------------- transforms

def test_window_matches_numpy(ct_slice):
    got = P.window(ct_slice, -100, 200).numpy()
    ref = P.window_np(ct_slice, -100, 200)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0
    inside = (ct_slice > -100) & (ct_slice < 200)
    np.testing.assert_allclose(got[inside], (ct_slice[inside] + 100) / 300, rtol=1e-5)


def test_clahe_identical_to_opencv_on_same_uint8(ct_slice):
    x01 = P.window_np(ct_slice, -200, 250)
    u8 = P.to_uint8_np(x01)
    np.testing.assert_array_equal(P.to_uint8(x01).numpy(), u8)
    cv = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(u8)
    got = P.clahe(x01[None], 2.0, (4, 4)).numpy()[0]
    np.testing.assert_array_equal(got, cv.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(got, P.clahe_np(x01, 2.0, (4, 4)))
    assert not np.array_equal(cv, u8)  # CLAHE did something


def test_clahe_in_parallel_tf_data_map_matches_opencv():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (12, 24, 32)).astype(np.float32) ** 2
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda x: P.clahe(x[None], 3.0, (2, 4))[0],
        num_parallel_calls=4, deterministic=True)
    for got, ref in zip(ds.as_numpy_iterator(), images):
        np.testing.assert_array_equal(got, P.clahe_np(ref, 3.0, (2, 4)))


def test_window_and_clahe_give_the_same_bits_eagerly_and_in_graphs(ct_slice):
    # Grappler rewrites a division by a constant into a multiply by its reciprocal in graphs
    # only; window and clahe are written so that eager, graph and NumPy agree exactly.
    hu = np.stack([ct_slice, ct_slice[::-1] * 1.3 - 20.0])
    cfg = {"window": [-160, 240], "clahe": {"clip_limit": 2.0, "tile_grid": [4, 4]}}
    spec = [tf.TensorSpec([None, None, None], tf.float32)]
    graph_window = tf.function(lambda x: P.window(x, -160, 240), input_signature=spec)
    np.testing.assert_array_equal(graph_window(hu).numpy(), P.window_np(hu, -160, 240))
    np.testing.assert_array_equal(P.window(hu, -160, 240).numpy(), P.window_np(hu, -160, 240))
    eager = P.preprocess_batch(hu, cfg).numpy()
    graph = tf.function(lambda x: P.preprocess_batch(x, cfg), input_signature=spec)(hu).numpy()
    np.testing.assert_array_equal(graph, eager)
    for k in range(2):
        np.testing.assert_array_equal(eager[k, ..., 0], P.preprocess_image_np(hu[k], cfg)[..., 0])


@pytest.mark.parametrize("size", [None, [40, 52], [24, 30]])
def test_opencv_impl_equals_the_tf_ops_bit_for_bit(ct_slice, size):
    hu = np.stack([ct_slice, ct_slice * 0.7 + 30.0])
    cfg = {"window": [-200, 250], "clahe": {"clip_limit": 2.0, "tile_grid": [4, 2]},
           "normalize": "minmax", "image_size": size}
    ref = P.preprocess_batch(hu, cfg).numpy()
    np.testing.assert_array_equal(P.preprocess_batch(hu, cfg, impl="opencv").numpy(), ref)
    spec = [tf.TensorSpec([None, None, None], tf.float32)]  # dynamic shapes: resize by tf.cond
    for impl in P.IMPLS:
        fn = tf.function(lambda x, impl=impl: P.preprocess_batch(x, cfg, impl=impl),
                         input_signature=spec)
        got = fn(hu)
        assert got.shape == ref.shape and (size is None or got.shape[1:3] == tuple(size))
        np.testing.assert_array_equal(got.numpy(), ref)
    if size == [40, 52]:  # resizing to the native size is the identity
        np.testing.assert_array_equal(ref, P.preprocess_batch(hu, dict(cfg, image_size=None)))
    with pytest.raises(ValueError, match="impl must be one of"):
        P.preprocess_batch(hu, cfg, impl="cv2")


def test_native_size_target_is_the_label(label_slice):
    cfg = {"target": "classes", "image_size": [40, 52]}
    spec = [tf.TensorSpec([None, None, None], tf.uint8)]
    graph = tf.function(lambda y: P.target_batch(y, cfg), input_signature=spec)
    np.testing.assert_array_equal(graph(label_slice[None]).numpy()[0], np.eye(3)[label_slice])


def test_normalize_matches_numpy(ct_slice):
    batch = np.stack([ct_slice, np.full_like(ct_slice, 7.0)])
    mm = P.normalize(tf.constant(batch), "minmax").numpy()
    np.testing.assert_allclose(mm[0], P.minmax_np(ct_slice), atol=1e-6)
    assert mm[0].min() == 0.0 and mm[0].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(mm[1], 0.0)  # constant image -> 0
    zs = P.normalize(tf.constant(batch), "zscore").numpy()
    np.testing.assert_allclose(zs[0], P.zscore_np(ct_slice), atol=1e-5)
    assert abs(zs[0].mean()) < 1e-4 and zs[0].std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(zs[1], 0.0)


@pytest.mark.parametrize("size", [None, [20, 26], [64, 80], [33, 17]])
def test_preprocess_image_matches_numpy_reference(ct_slice, size):
    cfg = {"window": [-200, 250], "clahe": {"clip_limit": 2.0, "tile_grid": [4, 4]},
           "normalize": "minmax", "image_size": size}
    got = P.preprocess_image(ct_slice, cfg)
    assert got.dtype == tf.float32
    assert got.shape == ((40, 52) if size is None else tuple(size)) + (1,)
    np.testing.assert_allclose(got.numpy(), P.preprocess_image_np(ct_slice, cfg), atol=2e-5)


def test_preprocess_image_inside_tf_function_equals_eager(ct_slice):
    cfg = {"window": [-100, 200], "normalize": "zscore", "image_size": [16, 16]}
    graph = tf.function(lambda x: P.preprocess_image(x, cfg))(tf.constant(ct_slice))
    np.testing.assert_allclose(graph.numpy(), P.preprocess_image(ct_slice, cfg).numpy(), atol=1e-6)


@pytest.mark.parametrize("target, channels", [("liver", 1), ("tumour", 1), ("classes", 3)])
@pytest.mark.parametrize("size", [None, [33, 17], [80, 104]])
def test_target_from_label(label_slice, target, channels, size):
    cfg = {"target": target, "image_size": size}
    got = P.target_from_label(label_slice, cfg).numpy()
    assert got.dtype == np.float32 and got.shape[-1] == channels
    assert got.shape[:2] == ((40, 52) if size is None else tuple(size))
    np.testing.assert_array_equal(got, P.target_from_label_np(label_slice, cfg))
    assert set(np.unique(got)) <= {0.0, 1.0}
    if target == "classes":
        np.testing.assert_array_equal(got.sum(-1), 1.0)
    if size is None:
        expected = {"liver": label_slice >= 1, "tumour": label_slice == 2}.get(target)
        if expected is not None:
            np.testing.assert_array_equal(got[..., 0], expected)
    assert P.target_channels(cfg) == channels


def test_classes_target_refuses_out_of_range_label(label_slice):
    with pytest.raises(tf.errors.InvalidArgumentError):
        P.target_from_label(label_slice, {"target": "classes", "num_classes": 2})


def test_preprocess_volume_equals_per_slice_and_restore_round_trip():
    x, y, z = 24, 20, 7
    gx, gy, gz = np.meshgrid(np.linspace(0, 1, x), np.linspace(0, 1, y), np.arange(z), indexing="ij")
    volume = (300 * np.sin(2 * gx + gz / 3) * np.cos(1.5 * gy)).astype(np.float32)
    cfg = {"window": [-400, 400], "normalize": "minmax", "image_size": [32, 32]}
    pre = P.preprocess_volume(volume, cfg, batch_size=3)
    assert pre.shape == (z, 32, 32, 1) and pre.dtype == np.float32
    for k in (0, 4, 6):
        np.testing.assert_allclose(pre[k], P.preprocess_image(volume[:, :, k], cfg).numpy(), atol=1e-6)

    # identity config: restore(preprocess(v)) == v exactly
    ident = P.preprocess_volume(volume, {})
    np.testing.assert_array_equal(P.restore_slices(ident, volume.shape), volume[..., None])
    np.testing.assert_array_equal(P.restore_slices(ident[..., 0], volume.shape), volume)

    # resize only: smooth volume survives up- and down-sampling within interpolation error
    for size in ([48, 40], [16, 16]):
        there = P.preprocess_volume(volume, {"image_size": size}, batch_size=4)
        back = P.restore_slices(np.concatenate([there, there], -1), volume.shape[:2], batch_size=2)
        assert back.shape == (x, y, z, 2)
        err = np.abs(back[..., 0] - volume)
        assert err.max() < 0.08 * np.abs(volume).max(), err.max()
    assert P.preprocess_volume(volume[:, :, :0], cfg).shape == (0, 32, 32, 1)


# --------------------------------------------------------------------------- augmentation

def _blob_pair(h=32, w=40):
    """An image equal to its (asymmetric, binary) mask, so alignment is checkable."""
    m = np.zeros((h, w, 1), np.float32)
    m[4:20, 6:15] = 1.0
    m[22:27, 25:38] = 1.0
    return tf.constant(m), tf.constant(m)


SEEDS = [tf.constant([s, 11], tf.int64) for s in range(12)]


def test_flips_keep_alignment_and_happen():
    image, mask = _blob_pair()
    flipped = 0
    for seed in SEEDS:
        for axis in (0, 1):
            im, tg = A.random_flip(image, mask, seed, axis)
            np.testing.assert_array_equal(im, tg)
            if not np.array_equal(im, image):
                np.testing.assert_array_equal(im, np.flip(image.numpy(), axis))
                flipped += 1
    assert 0 < flipped < 2 * len(SEEDS)


def test_crop_resize_keeps_alignment_binary_and_changes():
    image, mask = _blob_pair()
    changed = 0
    for seed in SEEDS:
        im, tg = A.random_crop_resize(image, mask, seed, 0.2)
        im, tg = im.numpy(), tg.numpy()
        assert im.shape == tg.shape == (32, 40, 1)
        assert set(np.unique(tg)) <= {0.0, 1.0}
        exact = (im == 0.0) | (im == 1.0)
        assert exact.mean() > 0.8
        np.testing.assert_array_equal(im[exact], tg[exact])
        changed += not np.array_equal(tg, mask.numpy())
    assert changed >= len(SEEDS) - 1
    im, tg = A.random_crop_resize(image, mask, SEEDS[0], 0.0)
    assert im is image and tg is mask


def test_translate_keeps_alignment_fills_background_and_changes():
    image, mask = _blob_pair()
    changed = 0
    for seed in SEEDS:
        im, tg = A.random_translate(image, mask, seed, 0.25)
        np.testing.assert_array_equal(im, tg)
        changed += not np.array_equal(im, image)
        assert im.numpy().sum() <= image.numpy().sum()
    assert changed >= len(SEEDS) - 1

    # known shift: compare with a NumPy shift, and a one-hot target filled with class 0
    onehot = tf.one_hot(tf.cast(mask[..., 0], tf.int32) * 2, 3)
    im, tg = A.random_translate(image, onehot, SEEDS[3], 0.25, tf.one_hot(0, 3))
    u = tf.random.stateless_uniform([2], seed=SEEDS[3], minval=-0.25, maxval=0.25).numpy()
    dy, dx = np.round(u * np.array([32, 40], np.float32)).astype(int)
    assert (dy, dx) != (0, 0)
    ref = np.zeros((32, 40, 1), np.float32)
    src = image.numpy()
    ref[max(dy, 0):32 + min(dy, 0), max(dx, 0):40 + min(dx, 0)] = \
        src[max(-dy, 0):32 - max(dy, 0), max(-dx, 0):40 - max(dx, 0)]
    np.testing.assert_array_equal(im, ref)
    np.testing.assert_array_equal(tg.numpy().sum(-1), 1.0)  # still one-hot everywhere
    np.testing.assert_array_equal(tg.numpy()[..., 2:], ref)
    np.testing.assert_array_equal(tg.numpy()[..., 0:1], 1.0 - ref)


def test_augment_zero_settings_is_identity_and_full_settings_align():
    image, mask = _blob_pair()
    cfg = P.resolve_config({})
    for seed in SEEDS[:3]:
        im, tg = A.augment(image, mask, seed, cfg)
        np.testing.assert_array_equal(im, image)
        np.testing.assert_array_equal(tg, mask)
    assert not A.is_active(cfg)

    cfg = P.resolve_config({"augment": {"hflip": True, "vflip": True, "crop": 0.1, "translate": 0.1}})
    outs = []
    for seed in SEEDS[:6]:
        im, tg = A.augment(image, mask, seed, cfg)
        im, tg = im.numpy(), tg.numpy()
        exact = (im == 0.0) | (im == 1.0)
        np.testing.assert_array_equal(im[exact], tg[exact])
        assert set(np.unique(tg)) <= {0.0, 1.0}
        outs.append(tg)
        again = A.augment(image, mask, seed, cfg)[1].numpy()
        np.testing.assert_array_equal(again, tg)  # same seed, same draw
    assert len({o.tobytes() for o in outs}) > 1  # different seeds, different draws


def test_augment_volume_moves_in_plane_axes_only():
    rng = np.random.default_rng(3)
    vol = tf.constant((rng.uniform(size=(16, 12, 5, 1)) > 0.5).astype(np.float32))
    cfg = {"augment": {"hflip": True, "vflip": True, "crop": 0.2, "translate": 0.2}}
    for seed in SEEDS[:4]:
        im, tg = A.augment(vol, vol, seed, cfg)
        assert im.shape == tg.shape == vol.shape
        im, tg = im.numpy(), tg.numpy()
        exact = (im == 0.0) | (im == 1.0)
        np.testing.assert_array_equal(im[exact], tg[exact])
    # a flip of a volume equals flipping every slice
    im, _ = A.random_flip(vol, vol, SEEDS[0], 1)
    ref = vol.numpy()[:, ::-1] if not np.array_equal(im, vol) else vol.numpy()
    np.testing.assert_array_equal(im, ref)
