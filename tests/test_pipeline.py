"""tf.data pipeline over a tiny hand-written dataset (manifest + GZIP shards)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_liver.data import pipeline as PL
from keras_liver.data import preprocessing as P
from keras_liver.data import schema

X, Y, Z = 12, 16, 8
FG_SLICES = (2, 3, 4, 5)
SPLIT = {"train": ["c0", "c1", "c2", "c3"], "val": ["c4"], "test": ["c5"]}


def _case_arrays(index: int, z: int = Z, fg=FG_SLICES, shape=(X, Y)):
    """Image value ``1000 * (case + 1) + slice`` everywhere (identifies the slice), label square."""
    image = np.zeros(shape + (z,), np.float32)
    label = np.zeros(shape + (z,), np.uint8)
    for k in range(z):
        image[:, :, k] = 1000 * (index + 1) + k
        image[0, :, k] -= 50.0  # not constant, so min-max normalisation is not trivial
        if k in fg:
            h, w = shape
            label[h // 4:3 * h // 4, w // 4:3 * w // 4, k] = 1
            label[h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1, k] = 2
    return image, label


def _write_dataset(root, split, cases):
    """cases: {case_id: (index, image xyz, label xyz)}; writes slice and volume shards."""
    os.makedirs(os.path.join(root, schema.SLICES_DIR))
    os.makedirs(os.path.join(root, schema.VOLUMES_DIR))
    entries = []
    for cid, (image, label) in cases.items():
        spacing = [0.8, 0.8, 2.5]
        with tf.io.TFRecordWriter(schema.shard_path(root, "slices", cid), options=schema.COMPRESSION) as w:
            for k in range(image.shape[2]):
                w.write(schema.encode_example(image[:, :, k], label[:, :, k], case_id=cid,
                                              spacing=spacing, slice_index=k))
        with tf.io.TFRecordWriter(schema.shard_path(root, "volumes", cid), options=schema.COMPRESSION) as w:
            w.write(schema.encode_example(image, label, case_id=cid, spacing=spacing))
        entries.append({
            "id": cid, "shape": list(image.shape), "spacing": spacing,
            "num_slices": int(image.shape[2]),
            "foreground_slices": int((label.reshape(-1, image.shape[2]) > 0).any(0).sum()),
            "label_values": [int(v) for v in np.unique(label)],
            "slices": f"slices/{cid}{schema.SHARD_SUFFIX}",
            "volume": f"volumes/{cid}{schema.SHARD_SUFFIX}",
        })
    manifest = {"format_version": schema.FORMAT_VERSION, "name": "tiny", "source": "test",
                "layout": "flat", "labels": {"0": "background", "1": "liver", "2": "tumour"},
                "seed": 0, "split_fractions": [0.7, 0.15, 0.15], "split": split,
                "counts": {}, "cases": entries}
    with open(os.path.join(root, schema.MANIFEST), "w") as f:
        json.dump(manifest, f)
    return str(root)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cases = {f"c{i}": _case_arrays(i) for i in range(6)}
    return _write_dataset(root, SPLIT, cases)


@pytest.fixture(scope="module")
def many_empty(tmp_path_factory):
    """Two cases of 4x4 slices: 200 + 150 empty slices and 10 + 5 foreground slices."""
    root = tmp_path_factory.mktemp("empty")
    cases = {"a": _case_arrays(1, 210, range(100, 110), (4, 4)),
             "b": _case_arrays(2, 155, range(0, 5), (4, 4))}
    return _write_dataset(root, {"train": ["a", "b"], "val": [], "test": ["b"]}, cases)


def _ids(ds):
    """(case index, slice index) of every slice of a batched dataset, from pixel (1, 1)."""
    out = []
    for image, _ in ds.as_numpy_iterator():
        v = np.rint(image[:, 1, 1, 0]).astype(int)
        out += [(int(i) // 1000 - 1, int(i) % 1000) for i in v]
    return out


def test_parse_example_and_parse_image_label_match_the_numpy_decoder(tiny):
    for kind, rank in (("slices", 2), ("volumes", 3)):
        ds = tf.data.TFRecordDataset(schema.shard_path(tiny, kind, "c1"),
                                     compression_type=schema.COMPRESSION).take(3)
        full = ds.map(lambda s: schema.parse_example(s, rank))
        pair = ds.map(lambda s: schema.parse_image_label(s, rank))
        assert full.element_spec["image"].shape.rank == rank
        assert [t.shape.rank for t in pair.element_spec] == [rank, rank]
        # the variable-length parse of the shape (any rank) reads the same records
        loose = ds.map(lambda s: tf.io.parse_single_example(s, schema.feature_spec()))
        for raw, ex, (image, label), f in zip(ds.as_numpy_iterator(), full.as_numpy_iterator(),
                                              pair.as_numpy_iterator(), loose):
            ref = schema.decode_example(raw)
            assert ex["image"].dtype == image.dtype == np.float32
            assert ex["label"].dtype == label.dtype == np.uint8
            for got in (ex["image"], image):
                np.testing.assert_array_equal(got, ref["image"])
            for got in (ex["label"], label):
                np.testing.assert_array_equal(got, ref["label"])
            np.testing.assert_allclose(ex["spacing"], ref["spacing"])
            assert ex["case_id"].decode() == ref["case_id"] == "c1"
            assert int(ex["slice_index"]) == ref["slice_index"]
            assert int(ex["foreground"]) == ref["foreground"]
            assert ex["label_values"].dtype == np.int64
            assert ex["label_values"].tolist() == ref["label_values"]
            assert tf.sparse.to_dense(f["shape"]).numpy().tolist() == list(ref["image"].shape)
        with pytest.raises(tf.errors.InvalidArgumentError):  # a volume is not a slice
            next(iter(ds.map(lambda s: schema.parse_image_label(s, 5 - rank))))
    with pytest.raises(ValueError, match="rank must be 2 or 3"):
        schema.parse_image_label(tf.constant(b""), 4)


def test_splits_have_their_cases_only_in_manifest_order(tiny):
    cfg = {"batch_size": 3}
    ds = PL.build_datasets(tiny, cfg, seed=1)
    assert set(ds) == {"train", "val", "test"}
    train, val, test = _ids(ds["train"]), _ids(ds["val"]), _ids(ds["test"])
    assert val == [(4, k) for k in range(Z)]  # manifest order, not shuffled, last batch kept
    assert test == [(5, k) for k in range(Z)]
    assert len(train) == 30  # 32 slices, drop_remainder on train with batch 3
    assert len(set(train)) == 30 and {c for c, _ in train} == {0, 1, 2, 3}
    assert train != sorted(train)  # shuffled
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        assert PL.count_examples(tiny, split, cfg) == n
    only_test = PL.build_datasets(tiny, cfg, splits="test")
    assert list(only_test) == ["test"]


def test_element_shapes_dtypes_and_targets(tiny):
    cfg = {"batch_size": 4, "image_size": [8, 8], "window": [-100, 8000], "target": "classes"}
    val = PL.build_datasets(tiny, cfg, splits=("val",))["val"]
    assert val.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    assert val.element_spec[1].shape.as_list() == [None, 8, 8, 3]
    (image, target), = val.take(1).as_numpy_iterator()
    assert image.dtype == np.float32 and target.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(target.sum(-1), 1.0)
    raw = list(PL.case_slices(tiny, "c4"))
    for k in range(4):
        np.testing.assert_allclose(image[k], P.preprocess_image_np(raw[k][0], cfg), atol=1e-5)
        np.testing.assert_array_equal(target[k], P.target_from_label_np(raw[k][1], cfg))
    assert target[:2, ..., 1:].sum() == 0 and target[2, ..., 1:].sum() > 0  # slice 2 has fg

    tumour = PL.build_datasets(tiny, {"batch_size": 8, "target": "tumour"}, splits=("test",))["test"]
    (_, t), = tumour.as_numpy_iterator()
    assert t.shape == (8, X, Y, 1)
    np.testing.assert_array_equal(t.reshape(8, -1).sum(1), [0, 0, 4, 4, 4, 4, 0, 0])


def test_clahe_pipeline_matches_numpy_opencv_loop(tiny):
    cfg = {"batch_size": 8, "window": [5000, 5008], "clahe": {"clip_limit": 2.0, "tile_grid": [2, 2]},
           "normalize": "zscore"}
    (image, _), = PL.build_datasets(tiny, cfg, splits=("val",))["val"].as_numpy_iterator()
    for k, (raw, _) in enumerate(PL.case_slices(tiny, "c4")):
        np.testing.assert_allclose(image[k], P.preprocess_image_np(raw, cfg), atol=1e-5)


def test_opencv_and_tf_preprocessing_give_identical_training_batches(tiny):
    assert PL.DEFAULT_PREPROCESS_IMPL == "opencv"
    cfg = {"batch_size": 4, "window": [1500, 4500], "image_size": [10, 12],
           "clahe": {"clip_limit": 2.0, "tile_grid": [2, 2]},
           "augment": {"hflip": True, "vflip": True, "crop": 0.2, "translate": 0.2}}
    default = PL.build_datasets(tiny, cfg, seed=3, splits="train")["train"]
    pure_tf = PL.build_datasets(tiny, cfg, seed=3, splits="train", preprocess_impl="tf")["train"]
    n = 0
    for (ia, ta), (ib, tb) in zip(default.as_numpy_iterator(), pure_tf.as_numpy_iterator()):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta, tb)
        n += 1
    assert n == 8 and ia.std() > 0
    with pytest.raises(ValueError, match="preprocess_impl must be one of"):
        PL.build_split(tiny, "train", cfg, preprocess_impl="numpy")


def test_slice_filter_keeps_foreground_and_drops_empty(tiny):
    cfg = {"batch_size": 1, "slice_filter": {"keep_empty_fraction": 0.0}}
    ds = PL.build_datasets(tiny, cfg, seed=0)
    train = _ids(ds["train"])
    assert sorted(train) == [(c, k) for c in range(4) for k in FG_SLICES]
    assert PL.count_examples(tiny, "train", cfg) == 16
    # default: the filter applies to the train split only
    assert len(_ids(ds["val"])) == Z and PL.count_examples(tiny, "val", cfg) == Z
    cfg["slice_filter"]["splits"] = ["train", "val"]
    assert _ids(PL.build_datasets(tiny, cfg, splits="val")["val"]) == [(4, k) for k in FG_SLICES]


def test_slice_filter_fraction_is_seeded_fixed_and_counted_exactly(many_empty):
    cfg = {"batch_size": 50, "drop_remainder": False, "slice_filter": {"keep_empty_fraction": 0.5}}
    counts = {}
    for seed in (0, 1):
        n = PL.count_examples(many_empty, "train", cfg, seed=seed)
        assert 15 + 0.4 * 350 <= n <= 15 + 0.6 * 350
        ds = PL.build_datasets(many_empty, cfg, seed=seed, splits="train")["train"]
        epoch1, epoch2 = _ids(ds), _ids(ds)
        assert len(epoch1) == n
        assert set(epoch1) == set(epoch2) and epoch1 != epoch2  # same subset, reshuffled
        fg = {(1, k) for k in range(100, 110)} | {(2, k) for k in range(5)}
        assert fg <= set(epoch1)
        counts[seed] = set(epoch1)
    assert counts[0] != counts[1]
    assert PL.count_examples(many_empty, "test", cfg) == 155
    assert PL.count_examples(many_empty, "val", cfg) == 0
    assert _ids(PL.build_datasets(many_empty, cfg, splits="val")["val"]) == []


def test_train_is_deterministic_under_a_seed(tiny):
    cfg = {"batch_size": 4, "shuffle_buffer": 64, "cache": True, "normalize": "minmax",
           "augment": {"hflip": True, "vflip": True, "crop": 0.2, "translate": 0.2}}

    def epochs(seed, n=2):
        ds = PL.build_datasets(tiny, cfg, seed=seed, splits="train")["train"]
        return [list(ds.as_numpy_iterator()) for _ in range(n)]

    a, b, c = epochs(7), epochs(7), epochs(8)
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb) == 8
        for (ia, ta), (ib, tb) in zip(ea, eb):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(ta, tb)
    flat = lambda e: np.concatenate([t for _, t in e])
    assert not np.array_equal(flat(a[0]), flat(a[1]))  # reshuffled / re-augmented each epoch
    assert not np.array_equal(flat(a[0]), flat(c[0]))  # another seed, another run
    labels = flat(a[0])
    assert set(np.unique(labels)) <= {0.0, 1.0}


def test_augmentation_changes_train_only(tiny):
    aug = {"batch_size": 8, "augment": {"translate": 0.3}}
    plain = {"batch_size": 8}
    a = PL.build_datasets(tiny, aug, seed=2)
    p = PL.build_datasets(tiny, plain, seed=2)
    for split in ("val", "test"):
        for (ia, ta), (ip, tp) in zip(a[split].as_numpy_iterator(), p[split].as_numpy_iterator()):
            np.testing.assert_array_equal(ia, ip)
            np.testing.assert_array_equal(ta, tp)
    shifted = np.concatenate([i for i, _ in a["train"].as_numpy_iterator()])
    assert (shifted == 0).any()  # translation leaves zero-filled borders
    assert not (np.concatenate([i for i, _ in p["train"].as_numpy_iterator()]) == 0).any()


def test_repeat_train_and_file_cache(tiny, tmp_path):
    cfg = {"batch_size": 8, "cache": str(tmp_path / "cache")}
    ds = PL.build_datasets(tiny, cfg, seed=0, repeat_train=True)
    got = _ids(ds["train"].take(6))  # 48 slices > one epoch of 32
    assert len(got) == 48 and set(got) == {(c, k) for c in range(4) for k in range(Z)}
    assert _ids(ds["val"]) == [(4, k) for k in range(Z)]
    assert _ids(ds["val"]) == [(4, k) for k in range(Z)]  # second pass reads the cache
    assert any(name.startswith("cache") for name in os.listdir(tmp_path))


def test_volumes_kind(tiny):
    cfg = {"kind": "volumes", "batch_size": 2, "image_size": [8, 8], "window": [-100, 8000]}
    ds = PL.build_datasets(tiny, cfg, seed=0)
    assert PL.count_examples(tiny, "train", cfg) == 4
    batches = list(ds["train"].as_numpy_iterator())
    assert len(batches) == 2 and batches[0][0].shape == (2, 8, 8, Z, 1)
    (image, target), = ds["test"].as_numpy_iterator()
    assert image.shape == (1, 8, 8, Z, 1) and target.shape == (1, 8, 8, Z, 1)
    raw, lab = PL.load_case(tiny, "c5")
    np.testing.assert_allclose(image[0], np.moveaxis(P.preprocess_volume(raw, cfg), 0, 2), atol=1e-6)
    ref = np.stack([P.target_from_label_np(lab[:, :, k], cfg) for k in range(Z)], axis=2)
    np.testing.assert_array_equal(target[0], ref)
    assert ref[..., 0].sum((0, 1)).tolist() == [0, 0, 16, 16, 16, 16, 0, 0]


def test_raw_access_round_trip(tiny):
    image, label = PL.load_case(tiny, "c2")
    ref_image, ref_label = _case_arrays(2)
    np.testing.assert_array_equal(image, ref_image)
    np.testing.assert_array_equal(label, ref_label)
    slices = list(PL.case_slices(tiny, "c2"))
    assert len(slices) == Z
    np.testing.assert_array_equal(slices[3][1], ref_label[:, :, 3])


def test_errors_name_the_problem(tiny, tmp_path):
    with pytest.raises(ValueError, match="no split 'holdout'"):
        PL.build_datasets(tiny, {}, splits=("holdout",))
    manifest = schema.load_manifest(tiny)
    manifest["split"] = {"train": ["c0", "ghost"]}
    with pytest.raises(ValueError, match="'ghost'"):
        PL.build_datasets(manifest, {}, splits="train")
    manifest["cases"] = manifest["cases"] + [{"id": "ghost", "slices": "slices/ghost.tfrecord.gz"}]
    with pytest.raises(FileNotFoundError, match="ghost"):
        PL.build_datasets(manifest, {}, splits="train")
