"""tf.data pipelines over a converted dataset (manifest + GZIP TFRecord shards, SPEC §6).

``build_datasets(root, config)`` turns the ``split`` of a manifest into ``tf.data`` datasets
of ``(image, target)`` batches, reading the case shards of each split only (a split by case
cannot leak slices). For the train split::

    case shards (shuffled per epoch) -> parallel interleave (deterministic) -> slice filter
    -> parse + preprocess (parallel map, deterministic) -> cache -> shuffle (seeded, per epoch)
    [-> repeat] -> augment (seeded per element) -> batch (drop_remainder) -> prefetch

Val/test read the shards in manifest order, one case after another on a background thread
(a parallel interleave would mix or buffer whole cases), are neither shuffled nor augmented,
keep their last partial batch, and yield slices in case order then slice order.

Elements: ``image`` ``(B, H, W, 1)`` float32 and ``target`` ``(B, H, W, K)`` float32 for kind
"slices"; ``(B, H, W, D, 1)`` / ``(B, H, W, D, K)`` for kind "volumes" (whole volumes,
every slice preprocessed as in 2-D; patch sampling comes later). The data configuration is
described in :mod:`keras_liver.data.preprocessing`.

The per-slice window -> CLAHE runs through OpenCV in a ``tf.numpy_function`` by default
(``preprocess_impl="opencv"``, :data:`DEFAULT_PREPROCESS_IMPL`): ``tf.data`` maps run on the
CPU, where OpenCV's CLAHE costs about a quarter of the TF op's, and both give the same values
bit for bit (``tests/test_clahe.py``, ``tests/test_pipeline.py``), so a model trained on this
pipeline sees what the pure-TF ``preprocess_batch`` of export and prediction feeds it.
``preprocess_impl="tf"`` keeps the whole pipeline in TF ops (no Python in the map functions).

The slice filter keeps every slice whose ``foreground`` feature (voxels with label > 0) is
positive and an empty slice when a fingerprint of ``(seed, case_id, slice_index)`` falls
below ``keep_empty_fraction``: the kept subset is fixed for a seed (the same every epoch),
and :func:`count_examples` counts it exactly with the same function.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

from keras_liver.data import schema
from keras_liver.data.augment import augment_dataset
from keras_liver.data.preprocessing import check_impl, preprocess_batch, resolve_config, target_batch

SPLITS = ("train", "val", "test")
_HASH_BUCKETS = 1 << 30
_TRAIN_CYCLE_LENGTH = 4
_READ_BUFFER = 1 << 20
#: ``preprocess_impl`` of :func:`build_split` / :func:`build_datasets` when not given.
DEFAULT_PREPROCESS_IMPL = "opencv"


# --------------------------------------------------------------------------- manifest helpers

def _manifest(manifest_or_root) -> dict[str, Any]:
    if isinstance(manifest_or_root, Mapping):
        if "root" not in manifest_or_root:
            raise ValueError("manifest dict has no 'root'; read it with schema.load_manifest(root)")
        return dict(manifest_or_root)
    return schema.load_manifest(os.fspath(manifest_or_root))


def _case_entry(manifest, case_id: str) -> dict[str, Any]:
    for case in manifest.get("cases", []):
        if case["id"] == case_id:
            return case
    raise ValueError(f"{manifest['root']}: case {case_id!r} is in a split but not in 'cases'")


def _split_ids(manifest, split: str) -> list[str]:
    splits = manifest.get("split", {})
    if split not in splits:
        raise ValueError(f"{manifest['root']}: manifest has no split {split!r}; "
                         f"it has {sorted(splits)}")
    return [str(c) for c in splits[split]]


def _shard(manifest, case_id: str, kind: str) -> str:
    """Absolute path of a case's shard (the manifest's relative path, else the schema's)."""
    case = _case_entry(manifest, case_id)
    rel = case.get("slices" if kind == "slices" else "volume")
    path = os.path.join(manifest["root"], rel) if rel else schema.shard_path(
        manifest["root"], kind, case_id)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: shard of case {case_id!r} ({kind}) is missing")
    return path


def split_shards(manifest_or_root, split: str, kind: str = "slices") -> list[str]:
    """Shard paths of a split's cases, in manifest order."""
    manifest = _manifest(manifest_or_root)
    return [_shard(manifest, cid, kind) for cid in _split_ids(manifest, split)]


# --------------------------------------------------------------------------- slice filter

_FILTER_SPEC = {
    "case_id": tf.io.FixedLenFeature([], tf.string),
    "slice_index": tf.io.FixedLenFeature([], tf.int64),
    "foreground": tf.io.FixedLenFeature([], tf.int64),
}


def keep_slice(foreground, case_id, slice_index, keep_empty_fraction: float, seed: int):
    """Element-wise decision of the slice filter (works on scalars and vectors).

    True when ``foreground > 0``, or when the FarmHash fingerprint bucket of
    ``"seed/case_id/slice_index"`` is below ``keep_empty_fraction`` of the buckets.
    """
    key = tf.strings.join([tf.strings.as_string(tf.constant(int(seed), tf.int64)),
                           case_id, tf.strings.as_string(slice_index)], separator="/")
    bucket = tf.strings.to_hash_bucket_fast(key, _HASH_BUCKETS)
    threshold = int(round(float(keep_empty_fraction) * _HASH_BUCKETS))
    return tf.logical_or(foreground > 0, bucket < threshold)


def _filter_active(cfg, split: str) -> bool:
    sf = cfg["slice_filter"]
    return cfg["kind"] == "slices" and split in sf["splits"] and sf["keep_empty_fraction"] < 1.0


_SCAN_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def scan_shard(path: str) -> dict[str, np.ndarray]:
    """``case_id``, ``slice_index`` and ``foreground`` of every record of a slice shard.

    Cached in memory per (path, size, mtime), so repeated counts cost one read per shard.
    """
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SCAN_CACHE:
        ds = tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION)
        ds = ds.batch(4096).map(lambda s: tf.io.parse_example(s, _FILTER_SPEC))
        parts = list(ds.as_numpy_iterator())
        _SCAN_CACHE[key] = {k: (np.concatenate([p[k] for p in parts]) if parts
                                else np.zeros(0, object if k == "case_id" else np.int64))
                            for k in _FILTER_SPEC}
    return _SCAN_CACHE[key]


def count_examples(manifest_or_root, split: str, config, *, seed: int = 0) -> int:
    """Number of examples the ``split`` dataset yields before batching (slices after the
    slice filter for kind "slices", cases for kind "volumes"); ``seed`` must be the one
    given to :func:`build_datasets` (it draws the kept empty slices).

    Uses the manifest's ``num_slices`` when nothing is filtered; otherwise scans the shards'
    ``foreground`` features once (cached in memory) and applies the pipeline's own filter
    function, so the count is exact.
    """
    manifest = _manifest(manifest_or_root)
    cfg = resolve_config(config)
    ids = _split_ids(manifest, split)
    if cfg["kind"] == "volumes":
        return len(ids)
    if not _filter_active(cfg, split):
        total = 0
        for cid in ids:
            case = _case_entry(manifest, cid)
            if isinstance(case.get("num_slices"), int):
                total += case["num_slices"]
            else:
                total += len(scan_shard(_shard(manifest, cid, "slices"))["foreground"])
        return total
    fraction = cfg["slice_filter"]["keep_empty_fraction"]
    total = 0
    for cid in ids:
        info = scan_shard(_shard(manifest, cid, "slices"))
        if len(info["foreground"]) == 0:
            continue
        keep = keep_slice(tf.constant(info["foreground"]), tf.constant(info["case_id"]),
                          tf.constant(info["slice_index"]), fraction, seed)
        total += int(tf.reduce_sum(tf.cast(keep, tf.int64)))
    return total


# --------------------------------------------------------------------------- datasets

def _read(files: list[str], training: bool, seed: int) -> tf.data.Dataset:
    def records(path):
        return tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION,
                                       buffer_size=_READ_BUFFER)

    if not files:
        return tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string)).flat_map(records)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        cycle = min(_TRAIN_CYCLE_LENGTH, len(files))
    else:
        cycle = 1  # one case after another: manifest order, read ahead on a background thread
    return ds.interleave(records, cycle_length=cycle, block_length=1,
                         num_parallel_calls=cycle, deterministic=True)


def _parse_fn(cfg, impl: str):
    rank = 2 if cfg["kind"] == "slices" else 3

    def parse(serialized):
        image, label = schema.parse_image_label(serialized, rank)
        if rank == 2:
            return (preprocess_batch(image[tf.newaxis], cfg, impl=impl)[0],
                    target_batch(label[tf.newaxis], cfg)[0])
        # volume (X, Y, Z): preprocess the Z slices as a batch, then put the slice axis third.
        image = preprocess_batch(tf.transpose(image, [2, 0, 1]), cfg, impl=impl)
        target = target_batch(tf.transpose(label, [2, 0, 1]), cfg)
        return tf.transpose(image, [1, 2, 0, 3]), tf.transpose(target, [1, 2, 0, 3])

    return parse


def _check_volume_batching(manifest, ids, cfg):
    depths = {tuple(_case_entry(manifest, c).get("shape", []))[2:3] for c in ids}
    if cfg["batch_size"] > 1 and len(depths) > 1:
        raise ValueError(
            f"kind 'volumes' batches whole volumes; the split has depths {sorted(depths)} "
            f"that cannot share a batch of {cfg['batch_size']}: use batch_size 1")
    if cfg["image_size"] is None and cfg["batch_size"] > 1:
        sizes = {tuple(_case_entry(manifest, c).get("shape", []))[:2] for c in ids}
        if len(sizes) > 1:
            raise ValueError(f"kind 'volumes' with image_size null: in-plane sizes {sorted(sizes)} "
                             f"cannot share a batch of {cfg['batch_size']}; set image_size")


def _cache_file(manifest, split: str, cfg, seed: int) -> str:
    """``<cache>_<split>_<digest>``: the digest covers everything that decides the cached
    elements (dataset, cases, preprocessing, filter seed), so a changed run never reads a
    stale cache file."""
    keys = ("kind", "target", "num_classes", "image_size", "window", "clahe", "normalize",
            "slice_filter")
    ident = {k: cfg[k] for k in keys}
    ident.update(root=manifest["root"], split=split, cases=_split_ids(manifest, split),
                 seed=int(seed) if _filter_active(cfg, split) else None)
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg['cache']}_{split}_{digest}"


def build_split(manifest_or_root, split: str, config, *, seed: int = 0,
                repeat: bool = False, preprocess_impl: str | None = None) -> tf.data.Dataset:
    """The dataset of one split; ``split == "train"`` gets shuffling and augmentation.
    ``preprocess_impl``: ``"opencv"`` (default) or ``"tf"`` (module docstring)."""
    manifest = _manifest(manifest_or_root)
    cfg = resolve_config(config)
    impl = check_impl(DEFAULT_PREPROCESS_IMPL if preprocess_impl is None else preprocess_impl,
                      "preprocess_impl")
    training = split == "train"
    ids = _split_ids(manifest, split)
    if cfg["kind"] == "volumes":
        _check_volume_batching(manifest, ids, cfg)
    files = [_shard(manifest, cid, cfg["kind"]) for cid in ids]
    ds = _read(files, training, seed)

    if _filter_active(cfg, split):
        fraction = cfg["slice_filter"]["keep_empty_fraction"]

        def keep(serialized):
            f = tf.io.parse_single_example(serialized, _FILTER_SPEC)
            return keep_slice(f["foreground"], f["case_id"], f["slice_index"], fraction, seed)

        ds = ds.filter(keep)

    ds = ds.map(_parse_fn(cfg, impl), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cfg["cache"]:
        ds = ds.cache(_cache_file(manifest, split, cfg, seed) if isinstance(cfg["cache"], str) else "")
    if training:
        ds = ds.shuffle(cfg["shuffle_buffer"], seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = augment_dataset(ds, cfg, seed)
    elif repeat:
        ds = ds.repeat()
    ds = ds.batch(cfg["batch_size"], drop_remainder=training and cfg["drop_remainder"],
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def build_datasets(manifest_root, config, *, seed: int = 0, splits=SPLITS,
                   repeat_train: bool = False,
                   preprocess_impl: str | None = None) -> dict[str, tf.data.Dataset]:
    """Build the ``(image, target)`` datasets of ``splits`` from one manifest.

    ``manifest_root`` is the dataset folder, its manifest.json, or a manifest dict from
    :func:`schema.load_manifest`. ``seed`` fixes the file order, shuffle, slice filter and
    augmentation of the train split (two builds with the same seed iterate identically,
    epoch after epoch; each epoch is reshuffled). ``repeat_train`` repeats the train split
    forever (use with ``steps_per_epoch``; see :func:`count_examples`). ``preprocess_impl``:
    ``"opencv"`` (default: OpenCV's CLAHE in a ``tf.numpy_function``) or ``"tf"`` (pure TF);
    the same values either way.
    """
    manifest = _manifest(manifest_root)
    cfg = resolve_config(config)
    if isinstance(splits, str):
        splits = (splits,)
    return {s: build_split(manifest, s, cfg, seed=seed, repeat=repeat_train and s == "train",
                           preprocess_impl=preprocess_impl)
            for s in splits}


# --------------------------------------------------------------------------- raw access

def case_slices(manifest_root, case_id: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the raw ``(image (X, Y) float32 HU, label (X, Y) uint8)`` slices of a case,
    in shard order (slice order)."""
    manifest = _manifest(manifest_root)
    path = _shard(manifest, case_id, "slices")
    ds = tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION)
    for serialized in ds.as_numpy_iterator():
        ex = schema.decode_example(serialized)
        yield ex["image"], ex["label"]


def load_case(manifest_root, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A case's raw ``(image, label)`` volumes ``(X, Y, Z)`` rebuilt from its slice shard
    (slices ordered by ``slice_index``)."""
    manifest = _manifest(manifest_root)
    path = _shard(manifest, case_id, "slices")
    ds = tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION)
    items = sorted(((ex["slice_index"], ex["image"], ex["label"])
                    for ex in map(schema.decode_example, ds.as_numpy_iterator())),
                   key=lambda item: item[0])
    if not items:
        raise ValueError(f"{path}: case {case_id!r} has no slices")
    return (np.stack([i[1] for i in items], axis=-1), np.stack([i[2] for i in items], axis=-1))
