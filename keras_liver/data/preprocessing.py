"""Per-slice preprocessing shared by training, inference and export (SPEC §6).

One data configuration (a plain, JSON-serialisable dict) decides how a slice becomes a network
input and how a label becomes a training target. :func:`resolve_config` fills in the defaults
and checks every key; the resolved dict is what travels with a trained model, so the
``tf.data`` pipeline (:mod:`keras_liver.data.pipeline`), whole-volume inference
(:func:`preprocess_volume`) and export read the same numbers.

Configuration keys (``DEFAULT_CONFIG`` holds the defaults)::

    kind            "slices"   "slices" (2-D examples) | "volumes" (3-D examples)
    target          "liver"    "liver" (label >= 1) | "tumour" (label == 2) |
                               "classes" (one-hot of the label, ``num_classes`` channels)
    num_classes     3          channels of the "classes" target (labels must be < num_classes)
    image_size      null       [H, W] to resize to; null keeps the native in-plane size
    window          null       [lo, hi] HU: clip, then scale to [0, 1]; null = no window
    clahe           null       null | true | {"clip_limit": 2.0, "tile_grid": [8, 8]}
                               (OpenCV CLAHE on round(255 * windowed); needs a window)
    normalize       null       null | "minmax" (per image, constant image -> 0) |
                               "zscore" (per image, (x - mean) / max(std, 1e-6))
    slice_filter    null       {"keep_empty_fraction": 1.0, "splits": ["train"]}: keep every
                               slice with foreground (label > 0) and a seeded fraction of the
                               empty ones, in the listed splits only (null = keep all)
    augment         null       {"hflip": false, "vflip": false, "crop": 0.0, "translate": 0.0}
                               (train split only; see keras_liver.data.augment)
    batch_size      8
    shuffle_buffer  512        train split only
    cache           false      true = in memory, a string = file prefix (the pipeline adds
                               "_<split>_<digest of dataset+preprocessing>"); after
                               preprocessing and before shuffling/augmentation
    drop_remainder  true       train split only (val/test keep their last partial batch)

Order of the image transforms: window -> CLAHE -> normalise -> resize (bilinear, no
antialiasing). Labels are resized with nearest neighbour, then mapped to the target.

Arrays are in nibabel ``(x, y)`` order; a slice ``(X, Y)`` is treated as an image with
``H = X`` rows and ``W = Y`` columns, and ``image_size`` is ``[H, W]`` in that order.

The NumPy/OpenCV references (``*_np``) implement the same formulas with a bare loop; tests
and benchmarks compare the TF versions against them.

Two implementations of window -> CLAHE, with bit-identical results (``impl`` of
:func:`preprocess_batch`, :data:`IMPLS`):

- ``"tf"`` (the default, and what export, ``serve_hu`` and the predictors use): pure TF. CLAHE
  is :func:`keras_liver.data.clahe.clahe_uint8`, OpenCV's algorithm in TF ops (bit-identical to
  ``cv2.createCLAHE``), so a preprocessing graph with CLAHE runs on any device, under XLA and
  serialises into a SavedModel.
- ``"opencv"``: window, quantisation and ``cv2.createCLAHE`` in one ``tf.numpy_function``
  (:func:`window_clahe_np`). CPU only and not serialisable, but about 4x cheaper per slice than
  the TF op on a CPU (docs/benchmarks.md §2); the ``tf.data`` training pipeline uses it by
  default (:mod:`keras_liver.data.pipeline`), so training and serving preprocess alike.
  Without a CLAHE step it is the ``"tf"`` graph.

A resize to the size the image already has is skipped (``tf.image.resize`` at scale 1 is the
identity for bilinear and nearest, half-pixel centres), so the published 512x512 configs pay
no resize.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import cv2
import numpy as np
import tensorflow as tf

from keras_liver.data.clahe import clahe_uint8

ZSCORE_EPSILON = 1e-6

#: ``k / 255`` in float32 for every grey level ``k`` (CLAHE's output back to [0, 1]).
_GREY_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)

#: Implementations of the window -> CLAHE steps of :func:`preprocess_batch` (module docstring).
IMPLS = ("tf", "opencv")

DEFAULT_CLAHE = {"clip_limit": 2.0, "tile_grid": [8, 8]}
DEFAULT_SLICE_FILTER = {"keep_empty_fraction": 1.0, "splits": ["train"]}
DEFAULT_AUGMENT = {"hflip": False, "vflip": False, "crop": 0.0, "translate": 0.0}

DEFAULT_CONFIG: dict[str, Any] = {
    "kind": "slices",
    "target": "liver",
    "num_classes": 3,
    "image_size": None,
    "window": None,
    "clahe": None,
    "normalize": None,
    "slice_filter": None,
    "augment": None,
    "batch_size": 8,
    "shuffle_buffer": 512,
    "cache": False,
    "drop_remainder": True,
}

KINDS = ("slices", "volumes")
TARGETS = ("liver", "tumour", "classes")
NORMALIZERS = (None, "minmax", "zscore")


# --------------------------------------------------------------------------- configuration

def _merge(name: str, value, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"data config '{name}' must be null or an object, received {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ValueError(
            f"data config '{name}' has unknown keys {unknown}; expected keys {sorted(defaults)}")
    out = copy.deepcopy(dict(defaults))
    out.update(copy.deepcopy(dict(value)))
    return out


def check_impl(impl: str, name: str = "impl") -> str:
    """``impl`` if it is one of :data:`IMPLS`; else ``ValueError`` naming the argument."""
    if impl not in IMPLS:
        raise ValueError(f"{name} must be one of {IMPLS}, received {impl!r}")
    return impl


def _pair(name: str, value, cast) -> list:
    try:
        a, b = value
        return [cast(a), cast(b)]
    except (TypeError, ValueError):
        raise ValueError(f"data config '{name}' must be a pair, received {value!r}") from None


def resolve_config(config: Mapping[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """Return the full data configuration: defaults filled in, values checked, JSON types.

    ``config`` may be partial (or already resolved: resolving is idempotent); keyword
    ``overrides`` replace top-level keys. Unknown keys raise ``ValueError`` naming them.
    """
    config = dict(config or {})
    config.update(overrides)
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(
            f"data config has unknown keys {unknown}; expected keys {sorted(DEFAULT_CONFIG)}")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg.update(copy.deepcopy(config))

    if cfg["kind"] not in KINDS:
        raise ValueError(f"data config 'kind' must be one of {KINDS}, received {cfg['kind']!r}")
    if cfg["target"] not in TARGETS:
        raise ValueError(
            f"data config 'target' must be one of {TARGETS}, received {cfg['target']!r}")
    cfg["num_classes"] = int(cfg["num_classes"])
    if cfg["num_classes"] < 2:
        raise ValueError(f"data config 'num_classes' must be >= 2, received {cfg['num_classes']}")

    if cfg["image_size"] is not None:
        cfg["image_size"] = _pair("image_size", cfg["image_size"], int)
        if min(cfg["image_size"]) < 1:
            raise ValueError(f"data config 'image_size' must be positive, received {cfg['image_size']}")
    if cfg["window"] is not None:
        cfg["window"] = _pair("window", cfg["window"], float)
        if not cfg["window"][0] < cfg["window"][1]:
            raise ValueError(f"data config 'window' needs lo < hi, received {cfg['window']}")

    clahe = cfg["clahe"]
    if clahe is False:
        clahe = None
    elif clahe is True:
        clahe = dict(DEFAULT_CLAHE)
    if clahe is not None:
        clahe = _merge("clahe", clahe, DEFAULT_CLAHE)
        clahe["clip_limit"] = float(clahe["clip_limit"])
        clahe["tile_grid"] = _pair("clahe.tile_grid", clahe["tile_grid"], int)
        if clahe["clip_limit"] <= 0 or min(clahe["tile_grid"]) < 1:
            raise ValueError(f"data config 'clahe' needs clip_limit > 0 and tile_grid >= 1, "
                             f"received {clahe}")
        if cfg["window"] is None:
            raise ValueError("data config 'clahe' runs on the windowed [0, 1] image; "
                             "set 'window' (e.g. [-200, 250]) or drop 'clahe'")
    cfg["clahe"] = clahe

    if cfg["normalize"] not in NORMALIZERS:
        raise ValueError(
            f"data config 'normalize' must be one of {NORMALIZERS}, received {cfg['normalize']!r}")

    sf = _merge("slice_filter", cfg["slice_filter"] or {}, DEFAULT_SLICE_FILTER)
    sf["keep_empty_fraction"] = float(sf["keep_empty_fraction"])
    if not 0.0 <= sf["keep_empty_fraction"] <= 1.0:
        raise ValueError(f"data config 'slice_filter.keep_empty_fraction' must be in [0, 1], "
                         f"received {sf['keep_empty_fraction']}")
    if isinstance(sf["splits"], str):
        sf["splits"] = [sf["splits"]]
    sf["splits"] = [str(s) for s in sf["splits"]]
    if cfg["kind"] == "volumes" and sf["keep_empty_fraction"] < 1.0:
        raise ValueError("data config 'slice_filter' applies to kind 'slices' only; "
                         f"received kind 'volumes' with keep_empty_fraction={sf['keep_empty_fraction']}")
    cfg["slice_filter"] = sf

    aug = _merge("augment", cfg["augment"] or {}, DEFAULT_AUGMENT)
    aug["hflip"], aug["vflip"] = bool(aug["hflip"]), bool(aug["vflip"])
    aug["crop"], aug["translate"] = float(aug["crop"]), float(aug["translate"])
    if not 0.0 <= aug["crop"] < 0.5:
        raise ValueError(f"data config 'augment.crop' must be in [0, 0.5), received {aug['crop']}")
    if not 0.0 <= aug["translate"] < 1.0:
        raise ValueError(
            f"data config 'augment.translate' must be in [0, 1), received {aug['translate']}")
    cfg["augment"] = aug

    for key in ("batch_size", "shuffle_buffer"):
        cfg[key] = int(cfg[key])
        if cfg[key] < 1:
            raise ValueError(f"data config '{key}' must be >= 1, received {cfg[key]}")
    if not isinstance(cfg["cache"], (bool, str)):
        raise ValueError(f"data config 'cache' must be true, false or a file path, "
                         f"received {cfg['cache']!r}")
    cfg["drop_remainder"] = bool(cfg["drop_remainder"])
    return cfg


def target_channels(config: Mapping[str, Any]) -> int:
    """Channels of the training target: ``num_classes`` for "classes", else 1."""
    cfg = resolve_config(config)
    return cfg["num_classes"] if cfg["target"] == "classes" else 1


# --------------------------------------------------------------------------- TF transforms
# All take a batch ``(N, H, W)`` (or any shape for the element-wise ones) of float32.

def window_scale(lo: float, hi: float) -> np.float32:
    """``1 / (hi - lo)`` rounded to float32, the factor of :func:`window`.

    A multiply, not a division: Grappler's constant folding turns a division by a constant
    into a multiply by its float32 reciprocal in graphs (``tf.function``, ``tf.data``, a
    SavedModel) but not eagerly, which moved a third of the windowed values by one ulp between
    the two and, through ``to_uint8`` and CLAHE's histograms, whole tiles by a grey level.
    With the multiply written out, eager, graph and NumPy agree bit for bit.
    """
    return np.float32(1.0) / np.float32(hi - lo)


def window(x, lo: float, hi: float):
    """Clip to ``[lo, hi]`` then scale linearly to ``[0, 1]``."""
    x = tf.cast(x, tf.float32)
    return (tf.clip_by_value(x, lo, hi) - np.float32(lo)) * window_scale(lo, hi)


def to_uint8(x01):
    """``round(255 * clip(x, 0, 1))`` as uint8 (round half to even, as NumPy)."""
    x = tf.clip_by_value(tf.cast(x01, tf.float32), 0.0, 1.0)
    return tf.cast(tf.round(x * np.float32(255.0)), tf.uint8)


def clahe(x01, clip_limit: float = 2.0, tile_grid=(8, 8)):
    """OpenCV CLAHE of a batch ``(N, H, W)`` of [0, 1] images; returns float32 in [0, 1].

    The image is quantised with :func:`to_uint8`, equalised by
    :func:`keras_liver.data.clahe.clahe_uint8` (TF ops, equal to ``cv2.createCLAHE`` with
    ``clipLimit=clip_limit, tileGridSize=tile_grid``) and divided by 255. ``tile_grid`` is
    OpenCV's ``tileGridSize`` (columns, rows).
    """
    out = clahe_uint8(to_uint8(x01), clip_limit, tuple(int(t) for t in tile_grid))
    # A table of k / 255 rather than a division: in a graph Grappler would turn ``/ 255`` into
    # ``* (1 / 255)``, one ulp off for 126 of the 256 grey levels (see window_scale).
    return tf.gather(tf.constant(_GREY_TO_UNIT), tf.cast(out, tf.int32))


def window_clahe_np(x, lo: float, hi: float, clip_limit: float, tile_grid) -> np.ndarray:
    """:func:`window` -> :func:`clahe` of a batch ``(N, H, W)`` in NumPy + OpenCV (float32 [0, 1]).

    The same float32 formulas as the TF ops and ``cv2.createCLAHE`` (which the TF CLAHE
    reproduces bit for bit), so the result equals ``clahe(window(x, lo, hi), ...)`` exactly.
    One CLAHE object per call (OpenCV's objects are not shared between the threads of a
    parallel ``tf.data`` map); OpenCV releases the GIL while it equalises.
    """
    x = np.asarray(x, dtype=np.float32)
    obj = cv2.createCLAHE(clipLimit=float(clip_limit),
                          tileGridSize=tuple(int(t) for t in tile_grid))
    u8 = to_uint8_np(window_np(x, lo, hi))
    out = np.empty(x.shape, np.float32)
    for i in range(x.shape[0]):
        out[i] = obj.apply(u8[i])
    out /= np.float32(255.0)  # float32 division: k / 255, as clahe()'s table
    return out


def window_clahe(x, lo: float, hi: float, clip_limit: float, tile_grid, impl: str = "tf"):
    """Window then CLAHE of a batch ``(N, H, W)`` (float32 [0, 1]) by the ``impl`` of
    :data:`IMPLS`; both give the same values."""
    if check_impl(impl) == "tf":
        return clahe(window(x, lo, hi), clip_limit, tile_grid)
    x = tf.cast(x, tf.float32)
    out = tf.numpy_function(
        lambda a: window_clahe_np(a, lo, hi, clip_limit, tile_grid), [x], tf.float32,
        stateful=False, name="window_clahe_opencv")
    return tf.ensure_shape(out, x.shape)


def _resize(x, size, method: str):
    """``tf.image.resize`` of ``(N, H, W, C)`` to ``size``, skipped when ``(H, W) == size``
    (exact: at scale 1 both methods return the input). Static shapes decide in Python,
    dynamic ones with a ``tf.cond``."""
    size = [int(s) for s in size]
    hw = x.shape[1:3]
    if hw.is_fully_defined():
        if hw.as_list() == size:
            return x
        return tf.image.resize(x, size, method=method, antialias=False)
    same = tf.reduce_all(tf.equal(tf.shape(x)[1:3], size))
    out = tf.cond(same, lambda: x,
                  lambda: tf.cast(tf.image.resize(x, size, method=method, antialias=False),
                                  x.dtype))
    return tf.ensure_shape(out, [x.shape[0], *size, x.shape[3]])


def normalize(x, method: str | None):
    """Per-image normalisation of a batch ``(N, H, W)``: None, "minmax" or "zscore"."""
    if method is None:
        return x
    axes = [1, 2]
    if method == "minmax":
        lo = tf.reduce_min(x, axis=axes, keepdims=True)
        hi = tf.reduce_max(x, axis=axes, keepdims=True)
        return tf.math.divide_no_nan(x - lo, hi - lo)
    if method == "zscore":
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        std = tf.math.reduce_std(x, axis=axes, keepdims=True)
        return (x - mean) / tf.maximum(std, np.float32(ZSCORE_EPSILON))
    raise ValueError(f"normalize must be one of {NORMALIZERS}, received {method!r}")


def preprocess_batch(images_nhw, config, *, impl: str = "tf"):
    """Preprocess a batch ``(N, H, W)`` of raw slices to ``(N, H', W', 1)`` float32.

    ``impl`` (:data:`IMPLS`): ``"tf"``, pure TF (any device, SavedModel); ``"opencv"``,
    window + CLAHE by OpenCV in a ``tf.numpy_function`` (CPU, the same values)."""
    check_impl(impl)
    cfg = resolve_config(config)
    x = tf.cast(tf.convert_to_tensor(images_nhw), tf.float32)
    if x.shape.rank != 3:
        raise ValueError(f"preprocess_batch expects (N, H, W) slices, received shape {x.shape}")
    if cfg["clahe"] is not None:  # resolve_config: CLAHE always comes with a window
        x = window_clahe(x, *cfg["window"], cfg["clahe"]["clip_limit"],
                         cfg["clahe"]["tile_grid"], impl=impl)
    elif cfg["window"] is not None:
        x = window(x, *cfg["window"])
    x = normalize(x, cfg["normalize"])
    x = x[..., tf.newaxis]
    if cfg["image_size"] is not None:
        x = _resize(x, cfg["image_size"], "bilinear")
    return x


def preprocess_image(image_hw, config):
    """Preprocess one raw slice ``(H, W)`` (HU) to the network input ``(H', W', 1)`` float32.

    window -> CLAHE -> normalise -> resize, as configured. Works eagerly on a NumPy/TF array
    and inside a ``tf.data`` map.
    """
    x = tf.convert_to_tensor(image_hw)
    if x.shape.rank != 2:
        raise ValueError(f"preprocess_image expects one (H, W) slice, received shape {x.shape}")
    return preprocess_batch(x[tf.newaxis], config)[0]


def target_batch(labels_nhw, config):
    """Map a batch ``(N, H, W)`` of uint8 labels to targets ``(N, H', W', K)`` float32.

    Labels are resized with nearest neighbour first. "liver": label >= 1, "tumour":
    label == 2 (K = 1); "classes": one-hot with K = ``num_classes`` (labels >= K raise).
    """
    cfg = resolve_config(config)
    y = tf.convert_to_tensor(labels_nhw)
    if y.shape.rank != 3:
        raise ValueError(f"target_batch expects (N, H, W) labels, received shape {y.shape}")
    y = tf.cast(y, tf.uint8)[..., tf.newaxis]
    if cfg["image_size"] is not None:
        y = _resize(y, cfg["image_size"], "nearest")
    if cfg["target"] == "liver":
        return tf.cast(y >= 1, tf.float32)
    if cfg["target"] == "tumour":
        return tf.cast(tf.equal(y, 2), tf.float32)
    k = cfg["num_classes"]
    check = tf.debugging.assert_less(
        tf.cast(y, tf.int32), k, message=f"label value >= num_classes={k}")
    with tf.control_dependencies([check]):
        return tf.one_hot(tf.cast(y[..., 0], tf.int32), k, dtype=tf.float32)


def target_from_label(label_hw, config):
    """Map one uint8 label ``(H, W)`` to the training target ``(H', W', K)`` float32."""
    y = tf.convert_to_tensor(label_hw)
    if y.shape.rank != 2:
        raise ValueError(f"target_from_label expects one (H, W) label, received shape {y.shape}")
    return target_batch(y[tf.newaxis], config)[0]


# --------------------------------------------------------------------------- whole volumes

def preprocess_volume(volume_xyz: np.ndarray, config, batch_size: int = 32) -> np.ndarray:
    """Preprocess every axial slice of a volume ``(X, Y, Z)`` for 2-D inference.

    Returns ``(Z, H', W', 1)`` float32 (slice axis first, ready for ``model.predict``),
    computed ``batch_size`` slices at a time with the same ops as :func:`preprocess_image`.
    """
    volume = np.asarray(volume_xyz)
    if volume.ndim != 3:
        raise ValueError(f"preprocess_volume expects an (X, Y, Z) volume, received shape {volume.shape}")
    cfg = resolve_config(config)
    slices = np.moveaxis(volume, 2, 0).astype(np.float32, copy=False)
    parts = [preprocess_batch(slices[i:i + batch_size], cfg).numpy()
             for i in range(0, slices.shape[0], max(1, int(batch_size)))]
    if not parts:
        h, w = cfg["image_size"] or volume.shape[:2]
        return np.zeros((0, h, w, 1), np.float32)
    return np.concatenate(parts, axis=0)


def restore_slices(probabilities, original_xy_shape, batch_size: int = 32) -> np.ndarray:
    """Resize per-slice predictions back to the original in-plane grid.

    ``probabilities`` is ``(Z, H', W', C)`` (or ``(Z, H', W')``); the result is
    ``(X, Y, Z, C)`` (or ``(X, Y, Z)``) float32, resized bilinearly (no antialiasing), with
    the slice axis moved back to the end. The output rank mirrors the input rank.
    """
    p = np.asarray(probabilities, dtype=np.float32)
    squeeze = p.ndim == 3
    if squeeze:
        p = p[..., None]
    if p.ndim != 4:
        raise ValueError(f"restore_slices expects (Z, H', W'[, C]) predictions, received shape {p.shape}")
    x, y = (int(s) for s in original_xy_shape[:2])
    if p.shape[1:3] == (x, y):
        out = p
    else:
        parts = [tf.image.resize(p[i:i + batch_size], (x, y), method="bilinear",
                                 antialias=False).numpy()
                 for i in range(0, p.shape[0], max(1, int(batch_size)))]
        out = np.concatenate(parts, axis=0) if parts else np.zeros((0, x, y, p.shape[-1]), np.float32)
    out = np.transpose(out, (1, 2, 0, 3))
    return out[..., 0] if squeeze else out


# --------------------------------------------------------------------------- NumPy references

def window_np(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (np.clip(x, np.float32(lo), np.float32(hi)) - np.float32(lo)) * window_scale(lo, hi)


def to_uint8_np(x01: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x01, dtype=np.float32), 0.0, 1.0)
    return np.round(x * np.float32(255.0)).astype(np.uint8)


def clahe_np(x01: np.ndarray, clip_limit: float = 2.0, tile_grid=(8, 8)) -> np.ndarray:
    """CLAHE of one [0, 1] image ``(H, W)`` with a fresh ``cv2.createCLAHE``; float32 [0, 1]."""
    obj = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(int(t) for t in tile_grid))
    return obj.apply(to_uint8_np(x01)).astype(np.float32) / np.float32(255.0)


def minmax_np(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def zscore_np(x: np.ndarray, epsilon: float = ZSCORE_EPSILON) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x - x.mean()) / np.float32(max(float(x.std()), epsilon))


def preprocess_image_np(image_hw: np.ndarray, config) -> np.ndarray:
    """NumPy + OpenCV reference of :func:`preprocess_image` for one slice: ``(H', W', 1)``."""
    cfg = resolve_config(config)
    x = np.asarray(image_hw, dtype=np.float32)
    if cfg["window"] is not None:
        x = window_np(x, *cfg["window"])
    if cfg["clahe"] is not None:
        x = clahe_np(x, cfg["clahe"]["clip_limit"], cfg["clahe"]["tile_grid"])
    if cfg["normalize"] == "minmax":
        x = minmax_np(x)
    elif cfg["normalize"] == "zscore":
        x = zscore_np(x)
    if cfg["image_size"] is not None:
        h, w = cfg["image_size"]
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)  # dsize is (width, height)
    return x[..., None].astype(np.float32)


def nearest_indices_np(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel of a half-pixel nearest-neighbour resize
    (``floor((i + 0.5) * n_in / n_out)`` in float32, as ``tf.image.resize``)."""
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale)
    return np.minimum(idx.astype(np.int64), n_in - 1)


def target_from_label_np(label_hw: np.ndarray, config) -> np.ndarray:
    """NumPy reference of :func:`target_from_label`."""
    cfg = resolve_config(config)
    y = np.asarray(label_hw, dtype=np.uint8)
    if cfg["image_size"] is not None:
        h, w = cfg["image_size"]
        y = y[np.ix_(nearest_indices_np(y.shape[0], h), nearest_indices_np(y.shape[1], w))]
    if cfg["target"] == "liver":
        return (y >= 1).astype(np.float32)[..., None]
    if cfg["target"] == "tumour":
        return (y == 2).astype(np.float32)[..., None]
    return np.eye(cfg["num_classes"], dtype=np.float32)[y]
