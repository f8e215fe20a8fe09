"""SavedModel export for TensorFlow Serving.

``export_run(RUN_DIR, out)`` writes a SavedModel whose ``serving_default`` signature takes one
named float32 input ``image`` (a batch of preprocessed slices, ``(N, H, W, 1)``, the model's
input size) and returns two named outputs:

``probabilities``  float32 ``(N, H, W, C)``: sigmoid (C = 1) or softmax (C = classes) output
``label``          int32 ``(N, H, W)``: ``probabilities > threshold`` for one channel, else argmax

The artifact needs no Python from this project: custom layers are traced into the graph, so
``tf.saved_model.load`` and ``tensorflow_model_server`` load it as it is. The preprocessing the
model expects (window, CLAHE, normalisation, size) is copied beside it as
``keras_liver_preprocessing.json`` for clients.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_liver.training import BEST_MODEL, PREPROCESSING_FILE, read_run_config

SIGNATURE = "serving_default"
INPUT_NAME = "image"
PREPROCESSING_ASSET = "keras_liver_preprocessing.json"


def export_model(model: keras.Model, out: str, *, threshold: float = 0.5,
                 preprocessing: dict | None = None) -> str:
    """Write ``model`` as a SavedModel at ``out`` (atomically: a failed export leaves no folder)."""
    input_shape = tuple(model.inputs[0].shape[1:])
    channels = int(model.outputs[0].shape[-1])
    threshold = float(threshold)

    def serve(image):
        probabilities = tf.cast(model(image, training=False), tf.float32)
        if channels == 1:
            label = tf.cast(probabilities[..., 0] > threshold, tf.int32)
        else:
            label = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "label": label}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE, fn=serve,
        input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)],
    )
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-export-", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        if preprocessing is not None:
            with open(os.path.join(tmp, PREPROCESSING_ASSET), "w") as f:
                json.dump({"preprocessing": preprocessing, "threshold": threshold,
                           "input_shape": list(input_shape)}, f, indent=2)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_run(run_dir: str, out: str | None = None, *, version: int | None = None) -> str:
    """Export the best model of a training run; ``out`` defaults to ``RUN_DIR/saved_model``.

    With ``version``, the SavedModel goes to ``out/<version>`` (TF Serving's layout).
    """
    model_path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path}: no trained model in this run directory")
    config, preprocessing = read_run_config(run_dir)
    model = keras.models.load_model(model_path, compile=False)
    out = out or os.path.join(run_dir, "saved_model")
    if version is not None:
        out = os.path.join(out, str(int(version)))
    return export_model(model, out, threshold=config.get("threshold", 0.5),
                        preprocessing=preprocessing)
