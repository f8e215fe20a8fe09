"""3-D training data of RA-UNet-II: liver slabs and tumour patches (SPEC §1 "Data", §6).

The authors' recipe, step by step (rank 3, arrays in nibabel order ``(x, y, z)``):

1. :func:`normalize_volume`: HU clipped to ``[-100, 200]`` → z-score over the whole volume →
   min–max to ``[0, 1]``. The same function serves the liver and the tumour model.
2. :func:`liver_box`: bounding box of ``label > 0`` grown by 10 voxels on every side, clipped
   to the volume; :func:`crop` cuts it out.
3. Liver model (:func:`prepare_liver_volume`, :func:`liver_slabs`): the normalised volume
   cropped to the liver box is resized in-plane to 224×224 (image bilinear, label nearest
   neighbour, z untouched), then cut into 32-slice slabs. Target = liver (``label > 0``, the
   tumour is part of the liver).
4. Tumour model (:func:`prepare_tumour_volume`, :func:`tumour_patches`): volumes with tumour
   only; the normalised volume cropped to the liver box at native resolution; 128×128×32
   patches centred on tumour voxels (``tumour_fraction`` of them) or on liver voxels (the
   rest), each with a random jitter of up to half a patch. Target = tumour (``label == 2``).
5. :func:`build_volume_dataset`: the ``tf.data`` pipeline over the volume shards of a split;
   :func:`build_datasets` builds it from a data configuration (:data:`DEFAULT_CONFIG`, kinds
   ``"liver_slabs"`` and ``"tumour_patches"``), which is what the training runner reads and
   writes beside the weights as ``preprocessing.json``, so cascade inference
   (:mod:`keras_liver.cascade`) cuts windows exactly as training did.

Readings of ours (the paper gives the sizes, not these details):

- Padding. When the box is smaller than a slab or patch along an axis, the cropped volume is
  padded (centred: half before, half after) with :data:`PAD_VALUE` = 0, the normalised value
  of the volume's darkest voxel (air and fat clip to the window's bottom, -100 HU), and
  label 0. After padding every dimension is at least the sample size, so each sample is a
  plain sub-block of the (padded) box: no sample reaches outside the liver box except into
  this padding.
- Slab placement. Training draws a uniformly random start per slab. Evaluation tiles the box
  with ``stride`` 20 (the stride of the cascade's sliding window, SPEC §1), the last slab
  aligned with the box's end so every slice is covered.
- Label resizing is nearest neighbour (``scipy.ndimage.zoom(order=0, grid_mode=True)``), which
  keeps the mask binary without a threshold; the image uses ``order=1`` on the same pixel
  grid (``grid_mode=True`` = half-pixel centres, as ``tf.image.resize``).
- Tumour patches: ``tumour_fraction`` defaults to 0.8 (SPEC: "most centred on tumour voxels,
  some on liver voxels"); 4 of 5 patches see a lesion, which offsets how small lesions are
  (a few percent of the liver box), while 1 of 5 shows the network tumour-free liver
  parenchyma so it learns not to fire on it. The count is exact per volume:
  ``round(tumour_fraction * num)`` tumour-centred patches come first. The jitter keeps the
  centre voxel inside the patch (offset from the patch's centre in
  ``[-(p // 2) + 1, p - 1 - p // 2]`` before clipping to the box, and clipping keeps it too),
  so every tumour-centred patch contains tumour.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import tensorflow as tf
from scipy import ndimage

from keras_liver.data import schema
from keras_liver.data.pipeline import _manifest, _split_ids, split_shards
from keras_liver.errors import DataError
from keras_liver.postprocess import bounding_box

#: Published defaults (SPEC §1).
HU_WINDOW = (-100.0, 200.0)
LIVER_MARGIN = 10
LIVER_IN_PLANE = (224, 224)
LIVER_DEPTH = 32
LIVER_EVAL_STRIDE = 20
TUMOUR_PATCH = (128, 128, 32)
TUMOUR_FRACTION = 0.8
#: Value of padding voxels: the normalised value of the volume's darkest voxel.
PAD_VALUE = 0.0
TASKS = ("liver", "tumour")
#: Data-configuration kind → task.
KINDS = {"liver_slabs": "liver", "tumour_patches": "tumour"}

#: A 3-D data configuration (the ``data`` block of an RA-UNet-II stage; JSON types).
DEFAULT_CONFIG = {
    "kind": "liver_slabs",
    "window": list(HU_WINDOW),
    "margin": LIVER_MARGIN,
    "in_plane": list(LIVER_IN_PLANE),
    "depth": LIVER_DEPTH,
    "stride": LIVER_EVAL_STRIDE,
    "patch_size": list(TUMOUR_PATCH),
    "tumour_fraction": TUMOUR_FRACTION,
    "samples_per_volume": 4,
    "batch_size": 2,
    "shuffle_buffer": 64,
}


# --------------------------------------------------------------------------- volume level

def normalize_volume(hu, window=HU_WINDOW) -> np.ndarray:
    """Clip ``hu`` to ``window``, z-score over the whole volume, then min–max to ``[0, 1]``.

    As the RA-UNet authors did (SPEC §1). Mathematically the z-score is absorbed by the
    min–max (both are affine), so the result equals ``(c - c.min()) / (c.max() - c.min())``
    of the clipped volume ``c``; both steps are kept to follow the recipe. A constant volume
    (after clipping) has no spread: its result is all zeros (no division by zero).
    Returns float32 of the input's shape.
    """
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise ValueError(f"window must be (low, high) with low < high, received {tuple(window)}")
    x = np.clip(np.asarray(hu, dtype=np.float64), lo, hi)
    std = x.std()
    if std == 0:
        return np.zeros(x.shape, np.float32)
    z = (x - x.mean()) / std
    zmin, zmax = z.min(), z.max()
    return ((z - zmin) / (zmax - zmin)).astype(np.float32)


def liver_box(label, margin: int = LIVER_MARGIN, *, case_id: str = "volume") -> tuple[slice, ...]:
    """Slices of the bounding box of ``label > 0`` grown by ``margin`` voxels on every side and
    clipped to the volume. Raises :class:`DataError` naming ``case_id`` when there is no liver."""
    label = np.asarray(label)
    box = bounding_box(label > 0, margin=int(margin))
    if box is None:
        raise DataError(case_id, f"no liver (no voxel with label > 0) in the label volume of "
                                 f"shape {label.shape}; the 3-D liver/tumour data needs one")
    return box


def crop(volume, box: Sequence[slice]) -> np.ndarray:
    """``volume`` restricted to ``box`` (a tuple of slices from :func:`liver_box`)."""
    return np.asarray(volume)[tuple(box)]


def pad_to(volume, shape, value: float = PAD_VALUE) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pad ``volume`` (centred) with ``value`` so each axis is at least ``shape``; returns the
    padded array and the number of voxels added before each axis."""
    volume = np.asarray(volume)
    before, widths = [], []
    for n, want in zip(volume.shape, shape):
        extra = max(int(want) - n, 0)
        before.append(extra // 2)
        widths.append((extra // 2, extra - extra // 2))
    if any(sum(w) for w in widths):
        volume = np.pad(volume, widths, mode="constant", constant_values=value)
    return volume, tuple(before)


def prepare_liver_volume(hu, label, *, case_id: str = "volume", window=HU_WINDOW,
                         margin: int = LIVER_MARGIN, in_plane=LIVER_IN_PLANE):
    """Normalised image and liver mask of the liver box, resized in-plane to ``in_plane``.

    Returns ``(image float32 (H, W, Dz), target uint8 (H, W, Dz))`` with target = ``label > 0``;
    Dz is the box's slice count (not resized).
    """
    box = liver_box(label, margin, case_id=case_id)
    image = crop(normalize_volume(hu, window), box)
    target = (crop(label, box) > 0).astype(np.uint8)
    image = resize_in_plane(image, in_plane, order=1)
    target = resize_in_plane(target, in_plane, order=0)
    return np.clip(image, 0.0, 1.0).astype(np.float32), target.astype(np.uint8)


def resize_in_plane(volume, size, *, order: int) -> np.ndarray:
    """Resize the first two axes of ``volume`` to ``size`` (z untouched): ``order=1`` bilinear
    for images, ``order=0`` nearest neighbour for labels, half-pixel centres
    (``grid_mode=True``, as ``tf.image.resize``), edges clamped. Training (liver slabs) and the
    cascade (there and back) use this one function."""
    volume = np.asarray(volume)
    size = (int(size[0]), int(size[1]))
    if volume.shape[:2] == size:
        return volume.copy()
    zoom = (size[0] / volume.shape[0], size[1] / volume.shape[1]) + (1.0,) * (volume.ndim - 2)
    out = ndimage.zoom(volume, zoom, order=order, mode="nearest", grid_mode=True)
    if out.shape[:2] != size:  # scipy rounds the zoomed shape; never expected to differ
        raise AssertionError(f"resize_in_plane: {volume.shape} -> {out.shape}, wanted {size}")
    return out


def prepare_tumour_volume(hu, label, *, case_id: str = "volume", window=HU_WINDOW,
                          margin: int = LIVER_MARGIN):
    """Normalised image and label (0/1/2) of the liver box at native resolution."""
    box = liver_box(label, margin, case_id=case_id)
    return (crop(normalize_volume(hu, window), box),
            crop(np.asarray(label), box).astype(np.uint8))


# --------------------------------------------------------------------------- samples

def slab_starts(depth_available: int, depth: int, stride: int) -> np.ndarray:
    """Starts of the evaluation tiling: ``0, stride, …`` and a last slab ending at the end."""
    last = max(depth_available - depth, 0)
    starts = list(range(0, last + 1, int(stride)))
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts, np.int64)


def liver_slabs(image, target, *, depth: int = LIVER_DEPTH, num: int | None = None,
                rng: np.random.Generator | None = None, stride: int = LIVER_EVAL_STRIDE):
    """Cut ``depth``-slice slabs from a prepared liver volume (:func:`prepare_liver_volume`).

    With ``rng`` (training): ``num`` slabs at uniformly random starts. Without (evaluation):
    the tiling of :func:`slab_starts`. Volumes with fewer slices are padded first
    (:func:`pad_to`). Returns ``(images (N, H, W, depth), targets (N, H, W, depth), starts)``
    with ``starts`` the z index of each slab in the padded volume.
    """
    image, _ = pad_to(image, (0, 0, depth), PAD_VALUE)
    target, _ = pad_to(target, (0, 0, depth), 0)
    nz = image.shape[2]
    if rng is None:
        starts = slab_starts(nz, depth, stride)
    else:
        if not num or num < 1:
            raise ValueError(f"random slabs need num >= 1, received num={num!r}")
        starts = rng.integers(0, nz - depth + 1, size=int(num))
    images = np.stack([image[:, :, s:s + depth] for s in starts])
    targets = np.stack([target[:, :, s:s + depth] for s in starts])
    return images, targets, starts


def _patch_starts(centres: np.ndarray, size, shape, rng) -> np.ndarray:
    size = np.asarray(size, np.int64)
    half = size // 2
    jitter = rng.integers(half - size + 1, half + 1, size=centres.shape)  # keeps centre inside
    starts = centres - half + jitter
    return np.clip(starts, 0, np.asarray(shape, np.int64) - size)


def tumour_patches(image, label, *, size=TUMOUR_PATCH, num: int = 1,
                   rng: np.random.Generator, tumour_fraction: float = TUMOUR_FRACTION):
    """Sample ``num`` patches of ``size`` from a prepared tumour volume
    (:func:`prepare_tumour_volume`: normalised image and label 0/1/2 of the liver box).

    The first ``round(tumour_fraction * num)`` patches are centred on random tumour voxels,
    the others on random liver voxels (label 1 or 2), each with a jitter of up to half a
    patch; patches are clipped to the (padded) box. Returns
    ``(images (N, *size), targets (N, *size) uint8 tumour mask, starts (N, 3))``, ``starts``
    in the coordinates of the box padded by :func:`pad_to`.
    """
    if not 0.0 <= tumour_fraction <= 1.0:
        raise ValueError(f"tumour_fraction must be in [0, 1], received {tumour_fraction}")
    image, _ = pad_to(image, size, PAD_VALUE)
    label, _ = pad_to(label, size, 0)
    tumour = np.argwhere(label == 2)
    liver = np.argwhere(label > 0)
    if not len(tumour):
        raise ValueError("tumour_patches needs a volume with tumour (label 2)")
    n_tumour = int(round(tumour_fraction * num))
    centres = np.concatenate([tumour[rng.integers(0, len(tumour), n_tumour)],
                              liver[rng.integers(0, len(liver), num - n_tumour)]])
    starts = _patch_starts(centres, size, image.shape, rng)
    sx, sy, sz = (int(s) for s in size)
    images = np.stack([image[a:a + sx, b:b + sy, c:c + sz] for a, b, c in starts])
    targets = np.stack([(label[a:a + sx, b:b + sy, c:c + sz] == 2) for a, b, c in starts])
    return images, targets.astype(np.uint8), starts


def _text(value) -> str:
    """A case id as ``tf.numpy_function`` hands it over (bytes) or as given."""
    return value.decode() if isinstance(value, bytes) else str(value)


def case_seed(seed: int, case_id: str) -> int:
    """A stable 32-bit seed of ``(seed, case_id)`` (the evaluation draws of a case)."""
    return zlib.crc32(f"{int(seed)}/{case_id}".encode())


# --------------------------------------------------------------------------- configuration

def is_volumetric(config) -> bool:
    """Whether a data configuration is one of this module's (else the 2-D slice pipeline's)."""
    return isinstance(config, dict) and config.get("kind") in KINDS


def resolve_config(config=None, **overrides) -> dict:
    """The full 3-D data configuration: :data:`DEFAULT_CONFIG` filled in, values checked.

    Idempotent; unknown keys raise ``ValueError`` naming them. ``in_plane`` (liver) and
    ``patch_size`` (tumour) are the model's input size.
    """
    cfg = dict(config or {})
    cfg.update(overrides)
    unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"3-D data config has unknown keys {unknown}; "
                         f"expected keys {sorted(DEFAULT_CONFIG)}")
    out = {**DEFAULT_CONFIG, **cfg}
    if out["kind"] not in KINDS:
        raise ValueError(f"3-D data config 'kind' must be one of {sorted(KINDS)}, "
                         f"received {out['kind']!r}")
    try:
        out["window"] = [float(v) for v in out["window"]]
        out["in_plane"] = [int(v) for v in out["in_plane"]]
        out["patch_size"] = [int(v) for v in out["patch_size"]]
    except (TypeError, ValueError):
        raise ValueError(f"3-D data config: window, in_plane and patch_size must be lists of "
                         f"numbers; received {out}") from None
    if len(out["window"]) != 2 or not out["window"][0] < out["window"][1]:
        raise ValueError(f"3-D data config 'window' must be [lo, hi] with lo < hi, "
                         f"received {out['window']}")
    if len(out["in_plane"]) != 2 or len(out["patch_size"]) != 3:
        raise ValueError(f"3-D data config: 'in_plane' needs 2 sizes and 'patch_size' 3; "
                         f"received {out['in_plane']} and {out['patch_size']}")
    for key in ("margin", "depth", "stride", "samples_per_volume", "batch_size",
                "shuffle_buffer"):
        out[key] = int(out[key])
    positive = ("depth", "stride", "samples_per_volume", "batch_size", "shuffle_buffer")
    if out["margin"] < 0 or min(out[k] for k in positive) < 1 or min(
            out["in_plane"] + out["patch_size"]) < 1:
        raise ValueError(f"3-D data config: sizes must be positive (margin >= 0); received {out}")
    out["tumour_fraction"] = float(out["tumour_fraction"])
    if not 0.0 <= out["tumour_fraction"] <= 1.0:
        raise ValueError(f"3-D data config 'tumour_fraction' must be in [0, 1], "
                         f"received {out['tumour_fraction']}")
    return out


def sample_shape(config) -> tuple[int, int, int]:
    """``(H, W, D)`` of one sample (the model's spatial input size) of a 3-D data config."""
    cfg = resolve_config(config)
    if KINDS[cfg["kind"]] == "liver":
        return (*cfg["in_plane"], cfg["depth"])
    return tuple(cfg["patch_size"])


def build_datasets(manifest_root, config, *, seed: int = 0, splits=("train", "val", "test"),
                   repeat_train: bool = False) -> dict:
    """``{split: dataset}`` of :func:`build_volume_dataset` for a 3-D data configuration
    (the counterpart of :func:`keras_liver.data.pipeline.build_datasets`)."""
    cfg = resolve_config(config)
    if isinstance(splits, str):
        splits = (splits,)
    return {s: build_volume_dataset(
                manifest_root, s, task=KINDS[cfg["kind"]],
                samples_per_volume=cfg["samples_per_volume"], batch_size=cfg["batch_size"],
                seed=seed, window=cfg["window"], margin=cfg["margin"], in_plane=cfg["in_plane"],
                depth=cfg["depth"], stride=cfg["stride"], patch_size=cfg["patch_size"],
                tumour_fraction=cfg["tumour_fraction"], shuffle_buffer=cfg["shuffle_buffer"],
                repeat=repeat_train and s == "train")
            for s in splits}


# --------------------------------------------------------------------------- tf.data

def build_volume_dataset(manifest_root, split: str, *, task: str = "liver",
                         samples_per_volume: int = 4, batch_size: int = 2, seed: int = 0,
                         training: bool | None = None, window=HU_WINDOW,
                         margin: int = LIVER_MARGIN, in_plane=LIVER_IN_PLANE,
                         depth: int = LIVER_DEPTH, stride: int = LIVER_EVAL_STRIDE,
                         patch_size=TUMOUR_PATCH, tumour_fraction: float = TUMOUR_FRACTION,
                         shuffle_buffer: int = 64, repeat: bool = False) -> tf.data.Dataset:
    """``(image, target)`` batches ``(B, H, W, D, 1)`` float32 for RA-UNet-II.

    ``task="liver"``: slabs ``(*in_plane, depth)`` of every volume of the split; target liver.
    ``task="tumour"``: patches ``patch_size`` of the volumes that contain tumour (the others
    are skipped); target tumour. ``training`` (default: ``split == "train"``) draws
    ``samples_per_volume`` random samples per volume, new ones every epoch, shuffles them and
    drops the last partial batch; otherwise liver slabs tile each box (``stride``) and tumour
    patches are ``samples_per_volume`` draws fixed per ``(seed, case)``, in manifest order.

    Each volume is parsed, normalised, cropped (and resized) once and cached in memory; the
    samples are cut from the cache. The same ``seed`` gives the same batches, epoch after
    epoch (each training epoch draws anew). ``repeat`` repeats the training samples forever
    (for ``fit(steps_per_epoch=...)``).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, received {task!r}")
    manifest = _manifest(manifest_root)
    training = split == "train" if training is None else bool(training)
    files = split_shards(manifest, split, kind="volumes")
    if not files:
        raise ValueError(f"{manifest['root']}: split {split!r} has no cases "
                         f"({_split_ids(manifest, split)})")
    if task == "liver":
        out_shape = (int(in_plane[0]), int(in_plane[1]), int(depth))
    else:
        out_shape = tuple(int(s) for s in patch_size)

    def prepare(image, label, case_id):
        cid = _text(case_id)
        if task == "liver":
            return prepare_liver_volume(image, label, case_id=cid, window=window,
                                        margin=margin, in_plane=in_plane)
        return prepare_tumour_volume(image, label, case_id=cid, window=window, margin=margin)

    def parse(serialized):
        ex = schema.parse_example(serialized, 3)
        image, label = tf.numpy_function(prepare, [ex["image"], ex["label"], ex["case_id"]],
                                         [tf.float32, tf.uint8], stateful=False)
        image.set_shape([None, None, None])
        label.set_shape([None, None, None])
        return image, label, ex["case_id"]

    def has_tumour(serialized):
        f = tf.io.parse_single_example(
            serialized, {"label_values": tf.io.VarLenFeature(tf.int64)})
        return tf.reduce_any(tf.equal(tf.sparse.to_dense(f["label_values"]), 2))

    def sample(image, label, case_id, draw_seed):
        cid = _text(case_id)
        rng = np.random.default_rng(int(draw_seed) if training else case_seed(seed, cid))
        if task == "liver":
            images, targets, _ = liver_slabs(image, label, depth=depth,
                                             num=samples_per_volume if training else None,
                                             rng=rng if training else None, stride=stride)
        else:
            images, targets, _ = tumour_patches(image, label, size=patch_size,
                                                num=samples_per_volume, rng=rng,
                                                tumour_fraction=tumour_fraction)
        return (images[..., None].astype(np.float32), targets[..., None].astype(np.float32))

    def to_samples(vol, draw_seed):
        image, label, case_id = vol
        images, targets = tf.numpy_function(sample, [image, label, case_id, draw_seed],
                                            [tf.float32, tf.float32], stateful=False)
        images.set_shape([None, *out_shape, 1])
        targets.set_shape([None, *out_shape, 1])
        return tf.data.Dataset.from_tensor_slices((images, targets))

    ds = tf.data.TFRecordDataset(files, compression_type=schema.COMPRESSION)
    if task == "tumour":
        ds = ds.filter(has_tumour)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    draws = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, draws)).flat_map(to_samples)
    if training:
        ds = ds.shuffle(int(shuffle_buffer), seed=int(seed), reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
