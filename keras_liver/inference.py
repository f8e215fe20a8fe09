"""Whole-volume prediction for every model of the library, on the input grid.

One entry point, :func:`load` (``keras-liver predict --model NAME|RUN_DIR``), returns the
predictor a run directory asks for; each has ``.predict(volume) -> (probabilities, label)``
and ``.predict_file(in, out)``; :func:`predict_files` labels many files (or folders) in one
call:

- a **2-D training run** (``preprocessing.json`` of kind ``"slices"``: RA V-Net, RA-UNet-I,
  MSA-UNet, BADA, Attention Residual UNet): :class:`Predictor`, slice by slice;
- a **3-D training run** (kinds ``"liver_slabs"`` / ``"tumour_patches"``: an RA-UNet-II
  stage): :class:`VolumePredictor`, overlapping sliding windows;
- a **cascade run** (``cascade.json``): :class:`keras_liver.cascade.RAUNetCascade`;
- a **linked run** (``linked.json``): :class:`keras_liver.linked.LinkedLiverVessel`.

The run directory's ``preprocessing.json`` (written by training) decides the preprocessing, so
prediction cannot disagree with training (nnU-Net's one plans file):

- 2-D: each batch of ``batch_size`` axial slices goes through
  :func:`keras_liver.data.preprocessing.preprocess_batch` (window, CLAHE, normalisation,
  resize; window -> CLAHE by OpenCV in a ``tf.numpy_function`` by default,
  ``preprocess_impl="tf"`` for TF ops, the same values), the model (optional flip TTA: the
  mean over the identity and each flip, MSA-UNet), is resized back to the input's in-plane
  grid (as :func:`~keras_liver.data.preprocessing.restore_slices`) and labelled, all in one
  ``tf.function`` per predictor (traced once; the model runs inside it when it is a
  ``keras.Model``); memory holds one batch of probabilities besides the label volume.
- 3-D: :func:`keras_liver.data.volumetric.normalize_volume` with the run's window (HU clip,
  z-score, min–max over the whole volume); liver slabs: the volume resized in-plane to the
  run's ``in_plane`` (training's bilinear :func:`~keras_liver.data.volumetric.resize_in_plane`
  interpolation, by ``tf.image.resize``: :func:`resize_in_plane`, equal within float32
  round-off)
  and tiled by windows of ``depth`` slices with the run's ``stride``; tumour patches: native
  resolution, ``patch_size`` windows with half a patch of overlap (the cascade's default);
  an ``overlap`` argument (or the run config's ``inference.overlap``) replaces either step.
  Windows are blended (``"mean"`` or nnU-Net's ``"gaussian"``), ``batch_size`` windows per
  forward pass (:mod:`keras_liver.sliding_window`), and resized back.

Then a threshold (one channel: ``threshold``, default 0.5) or an argmax (several classes),
optionally the largest 3-D connected component (:func:`keras_liver.postprocess.largest_component`,
labelled inside the mask's bounding box;
default on for 2-D runs and liver slabs, off for tumour patches, where lesions are several),
and a ``uint8`` label volume on the input grid, written with the input's affine and header,
never reoriented. Unreadable input raises :class:`~keras_liver.errors.DataError` naming the
file; writes are atomic, so a failed prediction leaves no partial output file.

Options come from the arguments, else the run config's ``inference`` section (``tta``,
``overlap``, ``blend``, ``batch_size``), ``threshold`` and ``postprocess.largest_component``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_liver import sliding_window
from keras_liver.data import preprocessing as prep
from keras_liver.data import volumetric
from keras_liver.data.volumes import is_nifti, read_volume, strip_nifti_suffix, write_volume
from keras_liver.errors import DataError, ModelInputError
from keras_liver.postprocess import largest_component
from keras_liver.training import BEST_MODEL, load_model, read_run_config

#: Test-time flips of a batch of slices ``(N, H, W, C)``: "vflip" reverses the rows (axis 1),
#: "hflip" the columns (axis 2) — the axes of :mod:`keras_liver.data.augment`'s flips.
TTA_FLIPS = {"vflip": 1, "hflip": 2}
#: Test-time flips of a batch of 3-D windows ``(N, X, Y, Z, C)``: the 2-D names for x and y,
#: "zflip" for the slice axis.
TTA_FLIPS_3D = {"vflip": 1, "hflip": 2, "zflip": 3}
#: Suffix of the output file of an input in a folder prediction.
OUTPUT_SUFFIX = "_pred.nii.gz"


def check_tta(tta, flips: dict[str, int] = TTA_FLIPS) -> tuple[str, ...]:
    """The flips of a ``tta`` setting (``None``/``[]``: none) as a tuple, validated against
    ``flips`` (:data:`TTA_FLIPS` for 2-D, :data:`TTA_FLIPS_3D` for 3-D)."""
    flips_given = tuple(tta or ())
    unknown = [t for t in flips_given if t not in flips]
    if unknown or len(set(flips_given)) != len(flips_given):
        raise ValueError(f"tta must list distinct flips out of {sorted(flips)}; "
                         f"received {list(flips_given)}")
    return flips_given


def predict_slices(model, slices: np.ndarray, *, tta=(), batch_size: int = 8) -> np.ndarray:
    """Model output for preprocessed slices ``(N, H, W, C)``, ``batch_size`` at a time in full
    batches; with ``tta`` (flips out of :data:`TTA_FLIPS`), the mean of the output on the
    slices as they are and on each flipped copy, flipped back (MSA-UNet's test-time
    augmentation: identity, horizontal and vertical flips averaged, then thresholded)."""
    flips = check_tta(tta)
    slices = np.asarray(slices, np.float32)
    if not len(slices):
        raise ModelInputError("no slices to predict")

    def run(x):
        return sliding_window.predict_full_batches(model.predict_on_batch, x, batch_size)

    return sliding_window.predict_with_flips(run, slices, [TTA_FLIPS[f] for f in flips])


def _check_volume(volume) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ModelInputError(f"expected a 3-D volume (x, y, z), received shape {volume.shape}")
    return volume


def _labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Threshold (one channel, ``probs`` without a channel axis) or argmax (``(..., C)``)."""
    if probs.ndim == 3:
        return (probs > threshold).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)


def resize_in_plane(volume: np.ndarray, size) -> np.ndarray:
    """Resize the first two axes of ``volume`` ``(X, Y, ...)`` to ``size`` with
    ``tf.image.resize`` (bilinear, half-pixel centres, edges clamped, no antialiasing): the
    interpolation of :func:`keras_liver.data.volumetric.resize_in_plane` with ``order=1`` (and
    of the ``serve_hu`` graph), equal to it within float32 round-off, in a fraction of
    SciPy's time. Float32."""
    v = np.asarray(volume, np.float32)
    size = (int(size[0]), int(size[1]))
    if v.shape[:2] == size:
        return v.copy()
    flat = v.reshape(v.shape[0], v.shape[1], -1)
    out = tf.image.resize(flat, size, method="bilinear", antialias=False).numpy()
    return out.reshape(*size, *v.shape[2:])


def _normalized_in_plane(hu: np.ndarray, window, size) -> np.ndarray:
    """``clip(resize_in_plane(normalize_volume(hu, window), size), 0, 1)`` computed as the
    resize of the clipped HU, then the min–max of the clipped full-resolution volume: both
    steps are affine, so they commute (the result differs by float32 round-off), and the
    volume-sized work shrinks to one clip, one resize and two reductions."""
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise ValueError(f"window must be (low, high) with low < high, received {tuple(window)}")
    v = np.asarray(hu, np.float32)
    size = (int(size[0]), int(size[1]))
    c_lo, c_hi = (float(np.clip(m, lo, hi)) for m in (v.min(), v.max()))
    if c_hi == c_lo:  # normalize_volume: a constant volume has no spread -> zeros
        return np.zeros((*size, *v.shape[2:]), np.float32)
    flat = tf.clip_by_value(v.reshape(v.shape[0], v.shape[1], -1), lo, hi)
    if v.shape[:2] != size:
        flat = tf.image.resize(flat, size, method="bilinear", antialias=False)
    small = flat.numpy().reshape(*size, *v.shape[2:]).astype(np.float64)
    return np.clip((small - c_lo) / (c_hi - c_lo), 0.0, 1.0).astype(np.float32)


class _FilePredictor:
    """``predict_file`` for predictors with ``label(volume)``."""

    def predict_file(self, in_path: str, out_path: str) -> str:
        """Predict a NIfTI file and write the uint8 label volume with the input's affine and
        header (atomically; a bad input raises :class:`DataError` naming it)."""
        vol = read_volume(in_path)
        try:
            label = self.label(vol.data)
        except ModelInputError as err:
            raise ModelInputError(f"{in_path}: {err}") from None
        return write_volume(out_path, label, vol.affine, header=vol.header, dtype=np.uint8)


# --------------------------------------------------------------------------- 2-D runs

@dataclass
class Predictor(_FilePredictor):
    """A trained 2-D model with the preprocessing it was trained with, slice by slice.
    ``tta`` lists the test-time flips averaged with the plain prediction (run config
    ``inference.tta``); ``batch_size`` slices are preprocessed and predicted at a time."""

    model: Any
    preprocessing: dict[str, Any]
    threshold: float = 0.5
    largest_component: bool = True
    batch_size: int = 8
    tta: tuple[str, ...] = ()
    progress: bool = False
    preprocess_impl: str = "opencv"
    _graphs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.tta = check_tta(self.tta)
        self.preprocessing = prep.resolve_config(self.preprocessing)
        self.batch_size = int(self.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, received {self.batch_size}")
        prep.check_impl(self.preprocess_impl, "preprocess_impl")

    @classmethod
    def from_config(cls, model: keras.Model, config: dict[str, Any], *,
                    preprocessing: dict[str, Any] | None = None, **kwargs) -> "Predictor":
        """``model`` with the preprocessing (``config["data"]`` unless given), threshold,
        post-processing and test-time augmentation of a run config; keyword arguments
        override them."""
        inference = config.get("inference") or {}
        kwargs.setdefault("threshold", config.get("threshold", 0.5))
        kwargs.setdefault("largest_component",
                          (config.get("postprocess") or {}).get("largest_component", True))
        kwargs.setdefault("tta", inference.get("tta", ()))
        if inference.get("batch_size") is not None:
            kwargs.setdefault("batch_size", inference["batch_size"])
        return cls(model=model, preprocessing=preprocessing or config["data"], **kwargs)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs) -> "Predictor":
        model, config, preprocessing = _load_run(run_dir)
        return cls.from_config(model, config, preprocessing=preprocessing, **kwargs)

    # One batch of raw slices -> probabilities and labels on the input grid, in TF ops: the
    # preprocessing, the model (a keras.Model runs inside the same tf.function; anything
    # else with a predict_on_batch, e.g. the cascade's Ensemble, between two of them), the
    # flips, the resize back and the threshold / argmax. Traced once per predictor and
    # output kind (the slice size is dynamic).
    def _graph(self, with_probs: bool):
        key = bool(with_probs)
        if key not in self._graphs:
            self._graphs[key] = self._build_graph(key)
        return self._graphs[key]

    def _build_graph(self, with_probs: bool):
        cfg, impl, b = self.preprocessing, self.preprocess_impl, self.batch_size
        axes = [TTA_FLIPS[f] for f in self.tta]
        threshold, model = float(self.threshold), self.model
        raw = tf.TensorSpec([None, None, None], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)

        def preprocess(chunk):  # full batches, as predict_full_batches: the padding is dropped
            x = prep.preprocess_batch(chunk, cfg, impl=impl)
            x = tf.pad(x, [[0, b - tf.shape(x)[0]], [0, 0], [0, 0], [0, 0]])
            return tf.ensure_shape(x, [b, *x.shape[1:]])

        def finish(total, passes, chunk):
            """Mean over the passes (``passes`` is an input, so Grappler cannot turn the
            division into a multiply by a reciprocal), resize to the chunk's grid
            (restore_slices), labels; slice axis first."""
            p = total[:tf.shape(chunk)[0]] / passes
            xy = tf.shape(chunk)[1:3]
            p = tf.cond(tf.reduce_all(tf.equal(tf.shape(p)[1:3], xy)), lambda: p,
                        lambda: tf.image.resize(p, xy, method="bilinear", antialias=False))
            binary = p.shape[-1] == 1
            if binary:
                label = tf.cast(p[..., 0] > threshold, tf.uint8)
            else:
                label = tf.cast(tf.argmax(p, axis=-1), tf.uint8)
            # the head's kind travels with the answer (a one-channel head is binary)
            probs = (p[..., 0] if binary else p) if with_probs else tf.zeros([0])
            return probs, label, tf.constant(binary)

        if isinstance(model, keras.Model):
            def forward(x):
                return tf.cast(model(x, training=False), tf.float32)

            @tf.function(input_signature=[raw, scalar], autograph=False)
            def step(chunk, passes):
                x = preprocess(chunk)
                total = forward(x)
                for a in axes:  # predict_with_flips' order of the sum
                    total = total + tf.reverse(forward(tf.reverse(x, [a])), [a])
                return finish(total, passes, chunk)

            return lambda chunk, passes: step(chunk, passes)

        pre = tf.function(preprocess, input_signature=[raw], autograph=False)
        post = tf.function(finish, autograph=False, reduce_retracing=True)

        def two_graphs(chunk, passes):
            x = pre(chunk).numpy()
            total = sliding_window.predict_with_flips(
                lambda t: np.asarray(model.predict_on_batch(t), np.float32), x, axes)
            # predict_with_flips divides by the number of passes already
            return post(tf.constant(total), tf.constant(1.0), chunk)

        return two_graphs

    def _batches(self, volume: np.ndarray, with_probs: bool):
        """``(first slice, probabilities (n, X, Y[, C]) or None, label (n, X, Y), binary)``
        per batch of axial slices; ``binary``: the model has a one-channel (sigmoid) head."""
        from tqdm import tqdm

        volume = _check_volume(volume)
        nz = volume.shape[2]
        step = self._graph(with_probs)
        passes = tf.constant(float(1 + len(self.tta)))
        with tqdm(total=nz, desc="slices", unit="slice", file=sys.stderr,
                  disable=not self.progress, leave=False) as bar:
            for i in range(0, nz, self.batch_size):
                chunk = tf.constant(np.moveaxis(volume[:, :, i:i + self.batch_size], 2, 0))
                probs, label, binary = step(chunk, passes)
                yield i, (probs.numpy() if with_probs else None), label.numpy(), bool(binary)
                bar.update(int(chunk.shape[0]))

    def _collect(self, volume: np.ndarray, with_probs: bool):
        """``(probabilities, label, binary)`` on the volume's grid, filled batch by batch
        slice-first (contiguous writes): the probabilities are returned as an ``(x, y, z[, C])``
        view of that ``(z, x, y[, C])`` array (no copy of the largest array), the label as a
        contiguous ``(x, y, z)`` array."""
        probs = label = None
        binary = False
        nz = np.shape(volume)[2] if np.ndim(volume) == 3 else 0
        for i, p, lab, binary in self._batches(volume, with_probs):
            if label is None:
                label = np.empty((nz, *lab.shape[1:]), np.uint8)
                if with_probs:
                    probs = np.empty((nz, *p.shape[1:]), np.float32)
            label[i:i + len(lab)] = lab
            if with_probs:
                probs[i:i + len(p)] = p
        label = np.ascontiguousarray(np.moveaxis(label, 0, 2))
        return (np.moveaxis(probs, 0, 2) if with_probs else None), label, binary

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Foreground probabilities ``(x, y, z)`` (or ``(x, y, z, C)`` for C > 1 classes)."""
        return self._collect(volume, True)[0]

    def _postprocess(self, label: np.ndarray, binary: bool) -> np.ndarray:
        if binary and self.largest_component:
            label = largest_component(label > 0).astype(np.uint8)
        return label

    def label(self, volume: np.ndarray) -> np.ndarray:
        """The uint8 label volume, computed batch by batch (no full probability volume)."""
        _, label, binary = self._collect(volume, False)
        return self._postprocess(label, binary)

    def predict(self, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, label)`` on the volume's grid; label uint8."""
        probs, label, binary = self._collect(volume, True)
        return probs, self._postprocess(label, binary)


# --------------------------------------------------------------------------- 3-D runs

def volume_windows(config: dict[str, Any], overlap: float | None = None
                   ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(window, steps)`` of a 3-D data config: liver slabs ``(*in_plane, depth)`` stepped
    by the config's ``stride`` along z, tumour patches ``patch_size`` stepped by half a
    patch; with ``overlap``, the steps of that overlap
    (:func:`keras_liver.sliding_window.steps_for_overlap`)."""
    cfg = volumetric.resolve_config(config)
    window = tuple(int(w) for w in volumetric.sample_shape(cfg))
    if overlap is not None:
        return window, sliding_window.steps_for_overlap(window, overlap)
    if cfg["kind"] == "liver_slabs":
        return window, (window[0], window[1], cfg["stride"])
    return window, tuple(max(1, w // 2) for w in window)


@dataclass
class VolumePredictor(_FilePredictor):
    """A trained 3-D model (an RA-UNet-II stage run) on whole volumes, by sliding windows
    (module docstring). ``largest_component=None``: on for liver slabs, off for tumour
    patches; ``overlap=None``: the run's own steps (:func:`volume_windows`)."""

    model: Any
    preprocessing: dict[str, Any]
    threshold: float = 0.5
    largest_component: bool | None = None
    batch_size: int = 2
    overlap: float | None = None
    blend: str = "mean"
    tta: tuple[str, ...] = ()
    progress: bool = False

    def __post_init__(self):
        self.preprocessing = volumetric.resolve_config(self.preprocessing)
        self.tta = check_tta(self.tta, TTA_FLIPS_3D)
        if self.blend not in sliding_window.BLENDS:
            raise ValueError(f"blend must be one of {sliding_window.BLENDS}; "
                             f"received {self.blend!r}")
        self.batch_size = int(self.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, received {self.batch_size}")
        if self.largest_component is None:
            self.largest_component = self.preprocessing["kind"] == "liver_slabs"
        self.window, self.steps = volume_windows(self.preprocessing, self.overlap)
        inputs = getattr(self.model, "inputs", None)
        if inputs and tuple(inputs[0].shape[1:4]) != self.window:
            raise ValueError(f"the model takes {tuple(inputs[0].shape[1:])}, but its data "
                             f"config cuts windows of {self.window}")

    @classmethod
    def from_config(cls, model, config: dict[str, Any], *,
                    preprocessing: dict[str, Any] | None = None, **kwargs) -> "VolumePredictor":
        """``model`` with the 3-D preprocessing, threshold, post-processing and ``inference``
        settings of a run config; keyword arguments override them."""
        inference = config.get("inference") or {}
        kwargs.setdefault("threshold", config.get("threshold", 0.5))
        lc = (config.get("postprocess") or {}).get("largest_component")
        if lc is not None:
            kwargs.setdefault("largest_component", lc)
        for key in ("overlap", "blend", "tta", "batch_size"):
            if inference.get(key) is not None:
                kwargs.setdefault(key, inference[key])
        return cls(model=model, preprocessing=preprocessing or config["data"], **kwargs)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs) -> "VolumePredictor":
        model, config, preprocessing = _load_run(run_dir)
        return cls.from_config(model, config, preprocessing=preprocessing, **kwargs)

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Probabilities ``(x, y, z)`` (``(x, y, z, C)`` for C > 1) on the volume's grid."""
        volume = _check_volume(volume)
        cfg = self.preprocessing
        liver = cfg["kind"] == "liver_slabs"
        if liver:  # normalise + resize in-plane (as training's resize_in_plane, in TF ops)
            image = _normalized_in_plane(volume, cfg["window"], cfg["in_plane"])
        else:
            image = volumetric.normalize_volume(volume, cfg["window"])
        probs = sliding_window.sliding_window_inference(
            self.model.predict_on_batch, image, self.window, steps=self.steps,
            blend=self.blend, batch_size=self.batch_size,
            tta_axes=[TTA_FLIPS_3D[f] - 1 for f in self.tta], pad_value=volumetric.PAD_VALUE,
            progress=self.progress, desc="liver slabs" if liver else "tumour patches")
        if liver:
            probs = resize_in_plane(probs, volume.shape[:2])
            np.clip(probs, 0.0, 1.0, out=probs)
        return probs[..., 0] if probs.shape[-1] == 1 else probs

    def predict(self, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, label)`` on the volume's grid; label uint8."""
        probs = self.probabilities(volume)
        label = _labels(probs, self.threshold)
        if probs.ndim == 3 and self.largest_component:
            label = largest_component(label > 0).astype(np.uint8)
        return probs, label

    def label(self, volume: np.ndarray) -> np.ndarray:
        return self.predict(volume)[1]


# --------------------------------------------------------------------------- run directories

def _load_run(run_dir: str):
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no trained model in this run directory")
    config, preprocessing = read_run_config(run_dir)
    return load_model(path), config, preprocessing


def resolve_model(model: str) -> str:
    """The run directory of ``--model``: a directory as given, or a paper's name (no path
    separator) for its experiment's default run directory ``runs/NAME``, where
    ``python -m keras_liver.experiments.NAME`` writes."""
    if os.path.isdir(model):
        return model
    if os.sep in model:
        raise FileNotFoundError(f"{model}: no such run directory")
    default = os.path.join("runs", model)
    if os.path.isdir(default):
        return default
    raise FileNotFoundError(
        f"{model}: no such run directory, and no trained {model!r} in {default}; train one "
        f"with `python -m keras_liver.experiments.{model}` or pass its run directory")


def _tta_setting(tta, flips: dict[str, int]):
    """``None``: the run's own; ``"flips"``: every flip of the rank; ``"none"``: off; else
    the given flips."""
    if tta is None:
        return None
    if tta == "flips":
        return tuple(flips)
    if tta == "none":
        return ()
    return check_tta(tta, flips)


def load(model: str, *, tta=None, blend: str | None = None, overlap: float | None = None,
         batch_size: int | None = None, largest_component: bool | None = None,
         progress: bool = False):
    """The predictor of a run directory or a paper's name (:func:`resolve_model`): the RA-UNet
    cascade (``cascade.json``), the linked liver and vessel models (``linked.json``), a 3-D
    run (:class:`VolumePredictor`) or a 2-D run (:class:`Predictor`).

    ``None`` keeps the run's own setting. ``tta``: ``"flips"`` (every flip: vflip and hflip,
    plus zflip for 3-D runs), ``"none"``, or a list of flips; ``blend``/``overlap``: the
    windows of 3-D runs and the cascade; ``batch_size``: slices or windows per forward pass;
    ``largest_component``: keep the largest 3-D component of a binary label. An option that
    does not apply to the run raises :class:`ModelInputError`.
    """
    from keras_liver.cascade import CASCADE_FILE, RAUNetCascade, is_cascade_run
    from keras_liver.linked import LINKED_FILE, LinkedLiverVessel, is_linked_run

    run_dir = resolve_model(model)

    def refuse(what: str, **options):
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise ModelInputError(f"{run_dir}: {', '.join(given)} does not apply to {what}")

    if is_cascade_run(run_dir):
        refuse("the RA-UNet cascade (no test-time augmentation; its liver stage always keeps "
               "the largest component)", tta=tta, largest_component=largest_component)
        options = {k: v for k, v in (("blend", blend), ("overlap", overlap),
                                     ("batch_size", batch_size)) if v is not None}
        return RAUNetCascade.from_run(run_dir, progress=progress, **options)
    if is_linked_run(run_dir):
        refuse("the linked liver and vessel models (2-D, no test-time augmentation, no "
               "windows)", tta=tta, blend=blend, overlap=overlap)
        linked = LinkedLiverVessel.from_run(
            run_dir, **({} if largest_component is None
                        else {"largest_component": bool(largest_component)}))
        for predictor in (linked.liver, linked.vessel):
            predictor.progress = progress
            if batch_size is not None:
                predictor.batch_size = int(batch_size)
        return linked
    if not os.path.exists(os.path.join(run_dir, BEST_MODEL)):
        raise FileNotFoundError(f"{os.path.join(run_dir, BEST_MODEL)}: no trained model in this "
                                f"run directory (and no {CASCADE_FILE} or {LINKED_FILE})")
    _, preprocessing = read_run_config(run_dir)
    options = {k: v for k, v in (("batch_size", batch_size),
                                 ("largest_component", largest_component)) if v is not None}
    if volumetric.is_volumetric(preprocessing):
        flips = _tta_setting(tta, TTA_FLIPS_3D)
        options.update({k: v for k, v in (("tta", flips), ("blend", blend),
                                          ("overlap", overlap)) if v is not None})
        return VolumePredictor.from_run(run_dir, progress=progress, **options)
    refuse("a 2-D run (it predicts slice by slice, without windows)", blend=blend,
           overlap=overlap)
    flips = _tta_setting(tta, TTA_FLIPS)
    if flips is not None:
        options["tta"] = flips
    return Predictor.from_run(run_dir, progress=progress, **options)


# --------------------------------------------------------------------------- many files

def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given, folders replaced by their ``*.nii`` / ``*.nii.gz`` files (sorted).
    A missing path or a folder without NIfTI files raises :class:`DataError` naming it."""
    out = []
    for path in inputs:
        path = str(path)
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if is_nifti(f) and not f.startswith(".")
                           and os.path.isfile(os.path.join(path, f)))
            if not found:
                raise DataError(path, "folder holds no *.nii or *.nii.gz file")
            out.extend(found)
        elif not os.path.exists(path):
            raise DataError(path, "file not found")
        else:
            out.append(path)
    return out


def output_path(in_path: str, out_dir: str) -> str:
    """``OUT_DIR/<input name without .nii[.gz]>_pred.nii.gz``."""
    return os.path.join(out_dir, strip_nifti_suffix(os.path.basename(in_path)) + OUTPUT_SUFFIX)


def output_paths(inputs: Sequence[str], out_dir: str) -> list[str]:
    """:func:`output_path` of each input; two inputs with one output name raise
    :class:`DataError` naming both."""
    outs, seen = [], {}
    for path in inputs:
        out = output_path(path, out_dir)
        if out in seen:
            raise DataError(path, f"would write the same output {out} as {seen[out]}")
        seen[out] = path
        outs.append(out)
    return outs


def predict_files(model, inputs: Sequence[str], out_dir: str, *, progress: bool = False,
                  **options) -> list[str]:
    """Label every input (files, or folders of NIfTI files) into ``out_dir`` as
    ``<name>_pred.nii.gz``; ``model`` is a predictor or what :func:`load` takes (with
    ``options``). The first bad input raises :class:`DataError`; outputs already written for
    earlier inputs stay. Returns the output paths."""
    from tqdm import tqdm

    files = expand_inputs(inputs)
    outs = output_paths(files, out_dir)
    predictor = load(model, progress=progress, **options) if isinstance(model, str) else model
    for src, out in tqdm(list(zip(files, outs)), desc="predict", unit="volume", file=sys.stderr,
                         disable=not progress or len(files) == 1):
        predictor.predict_file(src, out)
    return outs


def predict_file(run_dir: str, in_path: str, out_path: str, **kwargs) -> str:
    """Label one NIfTI file with the run of ``run_dir`` (:func:`load` options)."""
    return load(run_dir, **kwargs).predict_file(in_path, out_path)
