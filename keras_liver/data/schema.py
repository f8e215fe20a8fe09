"""TFRecord schema and dataset-folder layout shared by the writer and the tf.data pipeline (SPEC §6).

A converted dataset is a folder::

    NAME/
      manifest.json                      # see MANIFEST_KEYS
      slices/<case_id>.tfrecord.gz       # one example per axial slice (2-D training)
      volumes/<case_id>.tfrecord.gz      # one example per volume (3-D training)

Shards are per case, so a split by case selects files and a resumed conversion skips
finished cases. Every record is GZIP-compressed ``tf.train.Example`` with the features of
``FEATURES``:

``image``        raw little-endian float32 bytes of the source voxels (HU for CT), C order
``label``        raw uint8 bytes, same shape
``shape``        int64 list: ``[H, W]`` for a slice, ``[H, W, D]`` for a volume (nibabel order)
``spacing``      float list ``[sx, sy, sz]`` in mm (from the NIfTI header)
``case_id``      bytes
``slice_index``  int64 (the z index of a slice; -1 for a volume)
``foreground``   int64: number of voxels with label > 0
``label_values`` int64 list: the label values present in this example
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_liver import fileio

COMPRESSION = "GZIP"
#: zlib level 1: float32 CT compresses little better at zlib's default 6 (a phantom volume's
#: slices: 3.0 MB against 3.4 MB) but writes 7x slower (1.1 s against 0.15 s); any level reads
#: back the same bytes.
COMPRESSION_LEVEL = 1
MANIFEST = "manifest.json"
SLICES_DIR = "slices"
VOLUMES_DIR = "volumes"
SHARD_SUFFIX = ".tfrecord.gz"
FORMAT_VERSION = 1

#: Keys of manifest.json. ``cases`` is a list of dicts with ``id``, ``image``, ``label``
#: (source paths), ``image_sha256``, ``label_sha256``, ``shape`` ([x, y, z]), ``spacing``,
#: ``affine`` (4x4 list), ``label_values``, ``num_slices``, ``foreground_slices`` and
#: ``slices`` / ``volume`` (shard paths relative to the dataset folder).
#: ``split`` maps "train"/"val"/"test" to lists of case ids; ``counts`` holds the number of
#: cases and slices per split.
MANIFEST_KEYS = (
    "format_version", "name", "source", "layout", "labels", "seed", "split_fractions",
    "split", "counts", "cases",
)


def shard_path(root: str, kind: str, case_id: str) -> str:
    """Path of a case's shard; ``kind`` is ``"slices"`` or ``"volumes"``."""
    if kind not in (SLICES_DIR, VOLUMES_DIR):
        raise ValueError(f"kind must be '{SLICES_DIR}' or '{VOLUMES_DIR}', received {kind!r}")
    return os.path.join(root, kind, f"{case_id}{SHARD_SUFFIX}")


def load_manifest(root: str) -> dict[str, Any]:
    """Read ``root/manifest.json`` (``root`` may also be the manifest file itself)."""
    path = root if root.endswith(".json") else os.path.join(root, MANIFEST)
    manifest = fileio.read_json(
        path, missing="no manifest; convert a dataset first with `keras-liver convert SRC --out DIR`")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: manifest format_version {manifest.get('format_version')!r}, "
            f"this keras-liver reads {FORMAT_VERSION}"
        )
    manifest["root"] = os.path.dirname(os.path.abspath(path))
    return manifest


# --------------------------------------------------------------------------- encoding (NumPy)

def _bytes(v: bytes):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _ints(v):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))


def _floats(v):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in v]))


def encode_example(image: np.ndarray, label: np.ndarray, *, case_id: str,
                   spacing, slice_index: int = -1) -> bytes:
    """Serialise one slice (2-D arrays) or volume (3-D arrays) as a ``tf.train.Example``."""
    import tensorflow as tf

    image = np.asarray(image)
    label = np.asarray(label)
    if image.shape != label.shape:
        raise ValueError(f"case {case_id}: image shape {image.shape} != label shape {label.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"case {case_id}: expected a 2-D slice or 3-D volume, got shape {image.shape}")
    values = np.unique(label)
    example = tf.train.Example(features=tf.train.Features(feature={
        "image": _bytes(np.ascontiguousarray(image, dtype="<f4").tobytes()),
        "label": _bytes(np.ascontiguousarray(label, dtype=np.uint8).tobytes()),
        "shape": _ints(image.shape),
        "spacing": _floats(spacing),
        "case_id": _bytes(case_id.encode()),
        "slice_index": _ints([slice_index]),
        "foreground": _ints([int(np.count_nonzero(label))]),
        "label_values": _ints(values),
    }))
    return example.SerializeToString()


# --------------------------------------------------------------------------- decoding (TF)

def feature_spec(rank: int | None = None):
    """The parsing spec of ``FEATURES``. ``shape`` is a variable-length list, or, given the
    ``rank`` of the examples (2 slices, 3 volumes), a fixed-length one parsed straight to a
    dense tensor (the records are the same either way)."""
    import tensorflow as tf
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "shape": (tf.io.VarLenFeature(tf.int64) if rank is None
                  else tf.io.FixedLenFeature([rank], tf.int64)),
        "spacing": tf.io.FixedLenFeature([3], tf.float32),
        "case_id": tf.io.FixedLenFeature([], tf.string),
        "slice_index": tf.io.FixedLenFeature([], tf.int64),
        "foreground": tf.io.FixedLenFeature([], tf.int64),
        "label_values": tf.io.VarLenFeature(tf.int64),
    }


def _check_rank(rank):
    if rank not in (2, 3):
        raise ValueError(f"rank must be 2 or 3, received {rank}")


def _arrays(f):
    """``image`` float32 and ``label`` uint8 from the raw bytes and dense ``shape`` of ``f``."""
    import tensorflow as tf

    shape = tf.cast(f["shape"], tf.int32)
    image = tf.reshape(tf.io.decode_raw(f["image"], tf.float32, little_endian=True), shape)
    label = tf.reshape(tf.io.decode_raw(f["label"], tf.uint8), shape)
    return image, label


def parse_example(serialized, rank: int):
    """Parse one serialized example inside a tf.data map; ``rank`` is 2 (slices) or 3 (volumes).

    Returns a dict of tensors: ``image`` float32 and ``label`` uint8 of static rank ``rank``,
    ``spacing`` (3,), ``case_id``, ``slice_index``, ``foreground``, ``label_values``.
    """
    import tensorflow as tf

    _check_rank(rank)
    f = tf.io.parse_single_example(serialized, feature_spec(rank))
    image, label = _arrays(f)
    return {
        "image": image,
        "label": label,
        "spacing": f["spacing"],
        "case_id": f["case_id"],
        "slice_index": f["slice_index"],
        "foreground": f["foreground"],
        "label_values": tf.sparse.to_dense(f["label_values"]),
    }


def parse_image_label(serialized, rank: int):
    """``(image, label)`` of one serialized example, as :func:`parse_example` returns them,
    parsing only the ``image``, ``label`` and ``shape`` features (the training pipeline's
    parse)."""
    import tensorflow as tf

    _check_rank(rank)
    spec = feature_spec(rank)
    return _arrays(tf.io.parse_single_example(
        serialized, {k: spec[k] for k in ("image", "label", "shape")}))


def decode_example(serialized: bytes) -> dict[str, Any]:
    """Decode one serialized example to NumPy (tests, tools); the inverse of ``encode_example``."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized).features.feature
    shape = tuple(ex["shape"].int64_list.value)
    return {
        "image": np.frombuffer(ex["image"].bytes_list.value[0], dtype="<f4").reshape(shape),
        "label": np.frombuffer(ex["label"].bytes_list.value[0], dtype=np.uint8).reshape(shape),
        "spacing": tuple(ex["spacing"].float_list.value),
        "case_id": ex["case_id"].bytes_list.value[0].decode(),
        "slice_index": int(ex["slice_index"].int64_list.value[0]),
        "foreground": int(ex["foreground"].int64_list.value[0]),
        "label_values": list(ex["label_values"].int64_list.value),
    }
