"""RA-UNet-II 3-D data: normalisation, liver box, slabs, tumour patches, tf.data builder."""
import numpy as np
import pytest

from keras_liver.data import volumetric as V
from keras_liver.errors import DataError


# --------------------------------------------------------------------------- normalisation

def test_normalize_volume_hand_worked():
    # clip: [-100, 0, 200, 200]; mean 75, any std; min-max of the z-scores: (c + 100) / 300.
    hu = np.array([-1000.0, 0.0, 200.0, 3000.0]).reshape(1, 2, 2)
    out = V.normalize_volume(hu)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out.ravel(), [0.0, 1 / 3, 1.0, 1.0], atol=1e-6)
    # the min-max uses the volume's own range, not the window's
    out = V.normalize_volume(np.array([0.0, 50.0, 100.0]).reshape(1, 1, 3))
    np.testing.assert_allclose(out.ravel(), [0.0, 0.5, 1.0], atol=1e-6)


def test_normalize_volume_constant_is_zero_and_window_checked():
    out = V.normalize_volume(np.full((3, 3, 3), -500.0))  # clips to one value
    assert np.all(out == 0) and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="low < high"):
        V.normalize_volume(np.zeros((2, 2, 2)), window=(200, -100))


# --------------------------------------------------------------------------- liver box

def test_liver_box_margin_and_clipping():
    label = np.zeros((50, 40, 30), np.uint8)
    label[20:25, 3:10, 25:28] = 1
    label[22, 5, 26] = 2
    box = V.liver_box(label, margin=10)
    # x grows both ways; y clips at 0; z clips at 30
    assert box == (slice(10, 35), slice(0, 20), slice(15, 30))
    assert V.crop(label, box).shape == (25, 20, 15)
    assert V.liver_box(label, margin=0) == (slice(20, 25), slice(3, 10), slice(25, 28))


def test_liver_box_without_liver_names_the_case():
    with pytest.raises(DataError, match=r"^volume-42: no liver"):
        V.liver_box(np.zeros((8, 8, 8), np.uint8), case_id="volume-42")


# --------------------------------------------------------------------------- liver slabs

def _toy_volume(shape=(40, 30, 12), seed=0):
    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 80, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[10:30, 8:22, 2:10] = 1
    label[15:19, 10:14, 4:7] = 2
    return hu, label


def test_prepare_liver_volume_resizes_in_plane_only():
    hu, label = _toy_volume()
    image, target = V.prepare_liver_volume(hu, label, margin=2, in_plane=(64, 48))
    assert image.shape == target.shape == (64, 48, 12)  # z: box 0..12 (clipped), not resized
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert set(np.unique(target)) == {0, 1}  # nearest neighbour keeps it binary
    # the liver fills (30-10)/(24) of x and (22-8)/(18) of y of the box
    frac = target[:, :, 5].mean()
    assert abs(frac - (20 / 24) * (14 / 18)) < 0.05


def test_liver_slabs_pad_tile_and_random():
    image = np.random.default_rng(0).random((8, 8, 10)).astype(np.float32)
    target = np.ones((8, 8, 10), np.uint8)
    # fewer slices than the slab: padded, centred, with PAD_VALUE / 0
    imgs, tgts, starts = V.liver_slabs(image, target, depth=16)
    assert imgs.shape == tgts.shape == (1, 8, 8, 16) and list(starts) == [0]
    assert np.all(imgs[0, :, :, :3] == V.PAD_VALUE) and np.all(tgts[0, :, :, :3] == 0)
    np.testing.assert_array_equal(imgs[0, :, :, 3:13], image)
    assert np.all(tgts[0, :, :, 13:] == 0)
    # tiling with stride: every slice covered, last slab ends at the end
    deep = np.random.default_rng(1).random((4, 4, 75)).astype(np.float32)
    imgs, _, starts = V.liver_slabs(deep, np.zeros_like(deep, np.uint8), depth=32, stride=20)
    assert list(starts) == [0, 20, 40, 43]
    np.testing.assert_array_equal(imgs[3], deep[:, :, 43:75])
    # random: seeded, in range, differ across seeds
    a = V.liver_slabs(deep, deep > 0.5, depth=32, num=6, rng=np.random.default_rng(5))[2]
    b = V.liver_slabs(deep, deep > 0.5, depth=32, num=6, rng=np.random.default_rng(5))[2]
    c = V.liver_slabs(deep, deep > 0.5, depth=32, num=6, rng=np.random.default_rng(6))[2]
    assert list(a) == list(b) and list(a) != list(c)
    assert all(0 <= s <= 75 - 32 for s in a)


# --------------------------------------------------------------------------- tumour patches

def _check_patches(image, label, size, num, fraction, seed):
    imgs, tgts, starts = V.tumour_patches(image, label, size=size, num=num,
                                          rng=np.random.default_rng(seed),
                                          tumour_fraction=fraction)
    padded_img, _ = V.pad_to(image, size)
    padded_lab, _ = V.pad_to(label, size, 0)
    assert imgs.shape == tgts.shape == (num, *size)
    n_tumour = round(fraction * num)
    for k, (s, img, tgt) in enumerate(zip(starts, imgs, tgts)):
        # inside the (padded) liver box
        assert np.all(s >= 0) and np.all(s + np.asarray(size) <= padded_img.shape)
        block = tuple(slice(a, a + n) for a, n in zip(s, size))
        np.testing.assert_array_equal(img, padded_img[block])
        np.testing.assert_array_equal(tgt, padded_lab[block] == 2)
        if k < n_tumour:
            assert tgt.any(), f"tumour-centred patch {k} has no tumour"
        else:
            assert (padded_lab[block] > 0).any(), f"liver-centred patch {k} has no liver"
    return starts


def test_tumour_patches_contain_tumour_and_stay_in_box():
    hu, label = _toy_volume(shape=(60, 50, 20))
    image, lab = V.prepare_tumour_volume(hu, label, margin=3)
    assert image.shape == (26, 20, 13)  # liver 10..29, 8..21, 2..9 grown by 3, z clipped at 0
    # patch larger than the box in every axis: padded, one block
    starts = _check_patches(image, lab, (32, 32, 16), 10, 0.8, 0)
    assert np.all(starts == 0)
    # smaller patches: jitter moves them, still contain tumour
    starts = _check_patches(image, lab, (8, 8, 4), 20, 0.75, 1)
    assert len({tuple(s) for s in starts}) > 5
    a = _check_patches(image, lab, (8, 8, 4), 20, 0.75, 1)
    c = _check_patches(image, lab, (8, 8, 4), 20, 0.75, 2)
    np.testing.assert_array_equal(starts, a)
    assert not np.array_equal(a, c)


def test_lits117_liver_box_and_tumour_patches():
    from keras_liver.data.fixtures import load_lits117

    ct = load_lits117()
    box = V.liver_box(ct.label, margin=10)
    liver = np.argwhere(ct.label > 0)
    for axis, s in enumerate(box):
        lo, hi = liver[:, axis].min(), liver[:, axis].max()
        assert s.start == max(lo - 10, 0) and s.stop == min(hi + 11, 128)
    # liver model at the published sizes: 224x224 in-plane, 32-slice slabs
    image, target = V.prepare_liver_volume(ct.image, ct.label)
    assert image.shape == target.shape == (224, 224, box[2].stop - box[2].start)
    imgs, tgts, _ = V.liver_slabs(image, target, num=2, rng=np.random.default_rng(0))
    assert imgs.shape == tgts.shape == (2, 224, 224, 32) and tgts.any()
    image, lab = V.prepare_tumour_volume(ct.image, ct.label)
    assert (lab == 2).sum() == (ct.label == 2).sum()  # the tumour lies in the box
    # real anatomy: the lesion is hypo-dense, so tumour-centred patches are darker in mean
    _check_patches(image, lab, (64, 64, 32), 12, 0.5, 0)
    imgs, tgts, _ = V.tumour_patches(image, lab, size=(64, 64, 32), num=12,
                                     rng=np.random.default_rng(0), tumour_fraction=0.5)
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert tgts[:6].mean() > tgts[6:].mean()


# --------------------------------------------------------------------------- tf.data

def _batches(ds, n):
    return [tuple(x.numpy() for x in b) for b in ds.take(n)]


def test_build_volume_dataset_liver(tiny_dataset):
    kw = dict(task="liver", samples_per_volume=2, batch_size=2, in_plane=(64, 64), depth=16)
    ds = V.build_volume_dataset(tiny_dataset, "train", seed=1, **kw)
    spec = ds.element_spec
    # training drops the last partial batch, so the batch size is static
    assert spec[0].shape.as_list() == [2, 64, 64, 16, 1] and spec[0].dtype.name == "float32"
    assert spec[1].shape.as_list() == [2, 64, 64, 16, 1] and spec[1].dtype.name == "float32"
    batches = _batches(ds, 3)  # 3 volumes x 2 slabs = 3 batches of 2 (drop_remainder)
    assert len(batches) == 3
    for img, tgt in batches:
        assert img.shape == (2, 64, 64, 16, 1) and 0 <= img.min() and img.max() <= 1
        assert set(np.unique(tgt)) <= {0.0, 1.0} and tgt.any()
    again = _batches(V.build_volume_dataset(tiny_dataset, "train", seed=1, **kw), 3)
    other = _batches(V.build_volume_dataset(tiny_dataset, "train", seed=2, **kw), 3)
    for (a, b), (c, d) in zip(batches, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(batches, other))
    # a second epoch of the same dataset draws new slabs (same seed, same sequence of epochs)
    ds = V.build_volume_dataset(tiny_dataset, "train", seed=1, **kw)
    epoch1, epoch2 = _batches(ds, 3), _batches(ds, 3)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(epoch1, epoch2))
    # evaluation: the tiling of each val case's liver box, in order, last partial batch kept
    from keras_liver.data.pipeline import load_case
    from keras_liver.data.schema import load_manifest

    (case,) = load_manifest(tiny_dataset)["split"]["val"]
    hu, label = load_case(tiny_dataset, case)
    image, target = V.prepare_liver_volume(hu, label, in_plane=(64, 64))
    want_img, want_tgt, _ = V.liver_slabs(image, target, depth=16, stride=20)
    val_ds = V.build_volume_dataset(tiny_dataset, "val", seed=1, **kw)
    assert val_ds.element_spec[0].shape.as_list() == [None, 64, 64, 16, 1]
    val = _batches(val_ds, 10)
    np.testing.assert_allclose(np.concatenate([b[0] for b in val])[..., 0], want_img, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in val])[..., 0], want_tgt)


def test_build_volume_dataset_tumour(tiny_dataset):
    from keras_liver.data.pipeline import load_case
    from keras_liver.data.schema import load_manifest

    manifest = load_manifest(tiny_dataset)
    with_tumour = [c for c in manifest["split"]["train"]
                   if 2 in np.unique(load_case(tiny_dataset, c)[1])]
    kw = dict(task="tumour", samples_per_volume=4, batch_size=4, patch_size=(32, 32, 16),
              tumour_fraction=1.0, seed=3)
    ds = V.build_volume_dataset(tiny_dataset, "train", **kw)
    assert ds.element_spec[0].shape.as_list() == [4, 32, 32, 16, 1]
    batches = _batches(ds, 10)
    assert len(batches) == len(with_tumour) >= 1  # volumes without tumour are skipped
    for img, tgt in batches:
        assert img.shape == tgt.shape == (4, 32, 32, 16, 1)
        assert all(t.any() for t in tgt)  # tumour_fraction 1: every patch sees tumour
    # evaluation draws are fixed per (seed, case): two passes agree
    ev = V.build_volume_dataset(tiny_dataset, "train", training=False, **kw)
    first, second = _batches(ev, 10), _batches(ev, 10)
    for (a, _), (b, _) in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_build_volume_dataset_rejects_unknown_task(tiny_dataset):
    with pytest.raises(ValueError, match="task must be one of"):
        V.build_volume_dataset(tiny_dataset, "train", task="vessels")
