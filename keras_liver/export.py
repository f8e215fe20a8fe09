"""SavedModel export for TensorFlow Serving: two signatures on one artifact.

``export_run(RUN_DIR, out)`` writes a SavedModel with the run's weights and two signatures.

``serving_default`` takes the preprocessed network input: one named float32 input ``image``
(a batch of preprocessed slices ``(N, H, W, 1)`` or windows ``(N, X, Y, Z, 1)``, the model's
input size) and returns

``probabilities``  float32 ``(N, ..., C)``: sigmoid (C = 1) or softmax (C = classes) output
``label``          int32 ``(N, ...)``: ``probabilities > threshold`` for one channel, else argmax

``serve_hu`` takes the scan as it is, one named float32 input ``image_hu`` in HU (or the
scanner's scale, for MRI runs), and applies the run's own preprocessing in TensorFlow ops:

- 2-D runs: ``image_hu`` ``(N, H, W)``: N raw axial slices at any H, W (a volume
  ``(X, Y, Z)`` sent as ``transpose(volume, (2, 0, 1))``). In the graph:
  :func:`keras_liver.data.preprocessing.preprocess_batch` (window, CLAHE in TF ops — the
  OpenCV-identical :func:`~keras_liver.data.preprocessing.clahe` —, normalisation, resize
  to the model's size), the model, the run's test-time flips (run config
  ``inference.tta``; the mean over the identity and each flip), the probabilities resized
  back to ``(H, W)`` bilinearly as :func:`~keras_liver.data.preprocessing.restore_slices`
  does. Outputs ``probabilities`` float32 ``(N, H, W, C)`` and ``label`` int32 ``(N, H, W)``.
  The N slices go through the network in one batch (times 1 + flips): a client bounds the
  memory by the number of slices per request.
- 3-D runs (RA-UNet-II stages): ``image_hu`` ``(X, Y, Z)``: one volume (or region). In the
  graph the same steps as :class:`keras_liver.inference.VolumePredictor`: the HU window
  clipped and min–max normalised over the whole input
  (:func:`keras_liver.data.volumetric.normalize_volume`; its z-score is absorbed by the
  min–max), liver slabs resized in-plane to the run's size,
  padded to the window, windows at starts computed in the graph
  (:func:`keras_liver.sliding_window.window_starts`), ``batch_size`` windows per pass of a
  ``tf.while_loop``, mean or Gaussian blending, resized back. Outputs ``probabilities``
  float32 ``(X, Y, Z)`` and ``label`` int32 ``(X, Y, Z)`` (``(X, Y, Z, C)`` and argmax for a
  model with C > 1 channels; RA-UNet-II has one).

The label is the threshold (one channel) or the argmax (classes); the largest-connected-
component step of the Python predictors is not in the graph and stays client-side (the
exported ``keras_liver_preprocessing.json`` says whether the run applies it). Outputs equal
the Python predictors' probabilities within float32 round-off (the tests assert
``atol=1e-5``).

The artifact needs no Python from this project: custom layers are traced into the graph, so
``tf.saved_model.load`` and ``tensorflow_model_server`` load it as it is. The preprocessing the
model expects is copied beside it as ``keras_liver_preprocessing.json`` with the threshold, the
inference settings and the signatures' contract. A preprocessing step that runs Python
(``tf.numpy_function``, which cannot be saved) leaves ``serve_hu`` out, with a warning and the
reason in that file, rather than writing a signature that fails when served.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_liver import sliding_window
from keras_liver.data import preprocessing as prep
from keras_liver.data import volumetric
from keras_liver.inference import TTA_FLIPS, TTA_FLIPS_3D, check_tta, volume_windows
from keras_liver.training import BEST_MODEL, PREPROCESSING_FILE, load_model, read_run_config

SIGNATURE = "serving_default"
INPUT_NAME = "image"
HU_SIGNATURE = "serve_hu"
HU_INPUT_NAME = "image_hu"
PREPROCESSING_ASSET = "keras_liver_preprocessing.json"
#: Graph ops that call back into Python: a SavedModel holding one cannot be served.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
DEFAULT_3D_BATCH = 2
#: ``serve_hu``'s input: raw slices ``(N, H, W)`` (2-D runs) or a volume ``(X, Y, Z)`` (3-D).
HU_SPEC = tf.TensorSpec((None, None, None), tf.float32, name=HU_INPUT_NAME)
# The signatures are traced with autograph off: their Python control flow is on static values
# (the run's config) and the windows loop is an explicit tf.while_loop, so nothing needs
# converting, and AutoGraph's conversion of the preprocessing's helpers is skipped (it
# rewrote a nested helper of the CLAHE op wrongly when the op had already run eagerly in the
# process: "tf__byte() takes from -2 to 1 positional arguments but 3 were given").


def _runs_python(concrete) -> bool:
    graph_def = concrete.graph.as_graph_def()
    ops = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    return bool(ops & PYTHON_OPS)


def _labels(probabilities, channels: int, threshold: float):
    if channels == 1:
        return tf.cast(probabilities[..., 0] > threshold, tf.int32)
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32)


def _with_flips(forward, x, axes):
    """Mean of ``forward`` on ``x`` and on each flip of ``x`` along ``axes`` (flipped back),
    as one forward pass over the concatenated batch (one copy of the network in the graph)."""
    if not axes:
        return forward(x)
    k = 1 + len(axes)
    p = forward(tf.concat([x] + [tf.reverse(x, [a]) for a in axes], axis=0))
    p = tf.reshape(p, tf.concat([[k, tf.shape(x)[0]], tf.shape(p)[1:]], axis=0))
    total = p[0]
    for j, a in enumerate(axes, start=1):
        total += tf.reverse(p[j], [a])
    return total / np.float32(k)


def _serve_hu_2d(forward, channels: int, preprocessing: dict, threshold: float, inference: dict):
    cfg = prep.resolve_config(preprocessing)
    flips = check_tta(inference.get("tta"), TTA_FLIPS)
    axes = [TTA_FLIPS[f] for f in flips]

    @tf.function(autograph=False, input_signature=[HU_SPEC])
    def serve_hu(image_hu):
        x = prep.preprocess_batch(image_hu, cfg)
        p = _with_flips(forward, x, axes)
        p = tf.image.resize(p, tf.shape(image_hu)[1:3], method="bilinear", antialias=False)
        return {"probabilities": p, "label": _labels(p, channels, threshold)}

    return serve_hu, {"kind": "slices", "tta": list(flips),
                      "input": "image_hu float32 (N, H, W): raw axial slices",
                      "outputs": {"probabilities": f"float32 (N, H, W, {channels})",
                                  "label": "int32 (N, H, W)"}}


def _axis_starts(n, window: int, step: int):
    """:func:`keras_liver.sliding_window.window_starts` in the graph (``n >= window``)."""
    last = n - window
    count = (last + step - 1) // step + 1
    return tf.minimum(tf.range(count) * step, last)


def _serve_hu_3d(forward, channels: int, preprocessing: dict, threshold: float,
                 inference: dict):
    cfg = volumetric.resolve_config(preprocessing)
    window, steps = volume_windows(cfg, inference.get("overlap"))
    blend = inference.get("blend") or "mean"
    weights = sliding_window.importance_map(window, blend)
    flips = check_tta(inference.get("tta"), TTA_FLIPS_3D)
    axes = [TTA_FLIPS_3D[f] for f in flips]
    batch = int(inference.get("batch_size") or DEFAULT_3D_BATCH)
    liver = cfg["kind"] == "liver_slabs"
    lo, hi = (float(v) for v in cfg["window"])
    in_plane = [int(v) for v in cfg["in_plane"]]
    c = int(channels)

    @tf.function(autograph=False, input_signature=[HU_SPEC])
    def serve_hu(image_hu):
        shape = tf.shape(image_hu)
        clipped = tf.clip_by_value(image_hu, lo, hi)
        low = tf.reduce_min(clipped)
        x = tf.math.divide_no_nan(clipped - low, tf.reduce_max(clipped) - low)
        if liver:
            x = tf.clip_by_value(tf.image.resize(x, in_plane, method="bilinear",
                                                 antialias=False), 0.0, 1.0)
        size = tf.shape(x)
        extra = tf.maximum(tf.constant(window, tf.int32) - size, 0)
        before = extra // 2
        x = tf.pad(x, tf.stack([before, extra - before], axis=1),
                   constant_values=np.float32(volumetric.PAD_VALUE))
        padded = tf.shape(x)
        grids = tf.meshgrid(*[_axis_starts(padded[i], window[i], steps[i]) for i in range(3)],
                            indexing="ij")
        starts = tf.stack([tf.reshape(g, [-1]) for g in grids], axis=1)        # (M, 3)
        m = tf.shape(starts)[0]
        n_batches = (m + batch - 1) // batch
        # Full batches only: the last one repeats the last window with weight 0.
        starts = tf.concat([starts, tf.repeat(starts[-1:], n_batches * batch - m, axis=0)], 0)
        valid = tf.cast(tf.range(n_batches * batch) < m, tf.float32)
        offsets = tf.stack([tf.reshape(g, [-1]) for g in tf.meshgrid(
            *[tf.range(w) for w in window], indexing="ij")], axis=1)           # (V, 3)
        importance = tf.constant(weights)[tf.newaxis, ..., tf.newaxis]
        acc = tf.zeros(tf.concat([padded, [c + 1]], axis=0), tf.float32)

        def body(b, acc):
            idx = starts[b * batch:(b + 1) * batch]
            windows = tf.stack([tf.slice(x, idx[j], window) for j in range(batch)])
            p = _with_flips(forward, windows[..., tf.newaxis], axes)           # (B, *w, C)
            w = importance * tf.reshape(valid[b * batch:(b + 1) * batch], [batch, 1, 1, 1, 1])
            update = tf.concat([p * w, tf.broadcast_to(w, tf.shape(p[..., :1]))], axis=-1)
            indices = idx[:, tf.newaxis, :] + offsets[tf.newaxis]
            acc = tf.tensor_scatter_nd_add(acc, tf.reshape(indices, [-1, 3]),
                                           tf.reshape(update, [-1, c + 1]))
            return b + 1, acc

        _, acc = tf.while_loop(lambda b, _: b < n_batches, body, [tf.constant(0), acc])
        p = tf.math.divide_no_nan(acc[..., :c], acc[..., c:])
        p = tf.slice(p, tf.concat([before, [0]], 0), tf.concat([size, [c]], 0))
        if liver:
            p = tf.reshape(p, tf.concat([size[:2], [size[2] * c]], 0))
            p = tf.image.resize(p, shape[:2], method="bilinear", antialias=False)
            p = tf.clip_by_value(tf.reshape(p, tf.concat([shape, [c]], 0)), 0.0, 1.0)
        label = _labels(p, c, threshold)
        return {"probabilities": p[..., 0] if c == 1 else p, "label": label}

    spatial = "(X, Y, Z)" if c == 1 else f"(X, Y, Z, {c})"
    return serve_hu, {"kind": cfg["kind"], "tta": list(flips), "window": list(window),
                      "steps": list(steps), "blend": blend, "batch_size": batch,
                      "input": "image_hu float32 (X, Y, Z): one volume or region",
                      "outputs": {"probabilities": f"float32 {spatial}",
                                  "label": "int32 (X, Y, Z)"}}


def export_model(model: keras.Model, out: str, *, threshold: float = 0.5,
                 preprocessing: dict | None = None, inference: dict | None = None,
                 largest_component: bool | None = None) -> str:
    """Write ``model`` as a SavedModel at ``out`` (atomically: a failed export leaves no folder).

    ``serving_default`` always; ``serve_hu`` when ``preprocessing`` (the run's 2-D or 3-D data
    config) is given, with the ``inference`` settings (``tta``; 3-D: ``overlap``, ``blend``,
    ``batch_size``) of the run (module docstring). ``largest_component`` is recorded for
    clients (the graph does not apply it).
    """
    input_shape = tuple(model.inputs[0].shape[1:])
    channels = int(model.outputs[0].shape[-1])
    threshold = float(threshold)
    inference = dict(inference or {})

    # The network is traced once, as one function that both signatures call: the SavedModel
    # holds one copy of its graph, and a deep network is not traced a second time for
    # serve_hu.
    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)])
    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec((None, *input_shape), tf.float32,
                                                name=INPUT_NAME)])
    def serve(image):
        probabilities = forward(image)
        return {"probabilities": probabilities,
                "label": _labels(probabilities, channels, threshold)}

    signatures = {SIGNATURE: serve}
    hu_contract: dict = {"available": False, "reason": "exported without a preprocessing config"}
    serve_hu = None
    if preprocessing is not None:
        make = _serve_hu_3d if volumetric.is_volumetric(preprocessing) else _serve_hu_2d
        serve_hu, hu_contract = make(forward, channels, preprocessing, threshold, inference)
        # One trace, reused by tf.saved_model.save (the input signature is fixed).
        if _runs_python(serve_hu.get_concrete_function()):
            reason = ("the preprocessing runs Python (a tf.numpy_function or tf.py_function "
                      "op), which a SavedModel cannot hold")
            warnings.warn(f"{HU_SIGNATURE} left out of the export: {reason}", stacklevel=2)
            serve_hu, hu_contract = None, {"available": False, "reason": reason}
        else:
            hu_contract = {"available": True, **hu_contract}
            signatures[HU_SIGNATURE] = serve_hu

    # A bare tf.Module holding the model's variables and the traced functions. Keras'
    # ExportArchive tracks the model itself, which walks every layer's trackables and traces
    # the forward pass three times: 44 s against 13 s for a 641-layer RA-UNet-II (2 CPU
    # cores), for the same serving graph and weights.
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = serve
    if serve_hu is not None:
        module.serve_hu = serve_hu
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-export-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        if preprocessing is not None:
            with open(os.path.join(tmp, PREPROCESSING_ASSET), "w") as f:
                json.dump({"preprocessing": preprocessing, "threshold": threshold,
                           "input_shape": list(input_shape), "inference": inference,
                           "postprocess": {"largest_component": largest_component,
                                           "applied_in_graph": False},
                           "signatures": {SIGNATURE: {"input": f"{INPUT_NAME} float32 (N, "
                                                      f"{', '.join(map(str, input_shape))})"},
                                          HU_SIGNATURE: hu_contract}}, f, indent=2)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def default_export_dir(run_dir: str) -> str:
    """Where :func:`export_run` writes a run's SavedModel by default."""
    return os.path.join(run_dir, "saved_model")


def is_exported(run_dir: str) -> bool:
    """Whether ``RUN_DIR/saved_model`` holds a SavedModel written after the run's best model."""
    pb = os.path.join(default_export_dir(run_dir), "saved_model.pb")
    model_path = os.path.join(run_dir, BEST_MODEL)
    return (os.path.exists(pb) and os.path.exists(model_path)
            and os.path.getmtime(pb) >= os.path.getmtime(model_path))


def export_run(run_dir: str, out: str | None = None, *, version: int | None = None,
               model: keras.Model | None = None) -> str:
    """Export the best model of a training run; ``out`` defaults to ``RUN_DIR/saved_model``.

    With ``version``, the SavedModel goes to ``out/<version>`` (TF Serving's layout). ``model``
    is the run's best model when the caller already holds it (the training job that just
    wrote it), saving a reload; otherwise ``RUN_DIR/model.keras`` is loaded. ``serve_hu``
    applies the run's ``preprocessing.json`` and its config's ``inference`` settings.
    """
    model_path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path}: no trained model in this run directory")
    config, preprocessing = read_run_config(run_dir)
    if model is None:
        model = load_model(model_path)
    out = out or default_export_dir(run_dir)
    if version is not None:
        out = os.path.join(out, str(int(version)))
    largest = (config.get("postprocess") or {}).get("largest_component")
    if largest is None:
        largest = preprocessing.get("kind") != "tumour_patches"
    return export_model(model, out, threshold=config.get("threshold", 0.5),
                        preprocessing=preprocessing, inference=config.get("inference") or {},
                        largest_component=bool(largest))
