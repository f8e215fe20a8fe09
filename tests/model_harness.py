"""Checks every model gets (keras-hub's ``run_model_saving_test`` habit, SPEC §0).

``run_model_checks(builder, input_shape, tmp_path=..., **builder_kwargs)`` builds the model and
checks, on a small random batch in inference mode:

- output shape ``(B, *spatial, K)``, float32, finite; sigmoid outputs in [0, 1], softmax
  outputs summing to 1 over the class axis;
- layer names: unique, explicit (start with one of the model's stage prefixes, no Keras
  counter names such as ``conv2d_3``);
- ``model.to_json()`` → ``keras.models.model_from_json`` → copy weights → same outputs;
- ``.keras`` save → ``keras.models.load_model`` → same outputs;
- SavedModel: ``keras_liver.export.export_model`` → ``tf.saved_model.load(path)``'s
  ``serving_default`` → same probabilities,
  in this process or (``isolated_saved_model=True``) in a fresh Python process where
  ``keras_liver`` cannot be imported (what TF Serving sees).

``check_training_reduces_loss(model)`` runs a few optimiser steps on one tiny batch and checks
the training loss went down.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

DEFAULT_PREFIXES = ("input", "enc", "bottom", "skip", "dec", "head")
# A Keras auto-generated name: snake_case class name with an optional counter.
_AUTO_NAME = re.compile(
    r"^(input_layer|conv[123]d(_transpose)?|batch_normalization|re_lu|activation|add|"
    r"concatenate|max_pooling[123]d|average_pooling[123]d|up_sampling[123]d|conv_lstm[123]d|"
    r"dropout|spatial_dropout[123]d|multiply|reshape|lambda)(_\d+)?$")

RTOL, ATOL = 1e-5, 1e-6


def random_batch(input_shape, batch_size=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch_size,) + tuple(input_shape), dtype=np.float32)


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def check_output(model, x, y):
    num_classes = model.output_shape[-1]
    assert y.shape == x.shape[:-1] + (num_classes,), (y.shape, x.shape, num_classes)
    assert y.dtype == np.float32, y.dtype
    assert np.all(np.isfinite(y))
    assert y.min() >= 0.0 and y.max() <= 1.0, (y.min(), y.max())
    if num_classes > 1:
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5, atol=1e-5)


def check_layer_names(model, prefixes=DEFAULT_PREFIXES):
    names = [layer.name for layer in model.layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate layer names: {duplicates}"
    auto = [n for n in names if _AUTO_NAME.match(n)]
    assert not auto, f"layer names left to Keras counters: {auto}"
    stray = [n for n in names if not n.startswith(tuple(prefixes))]
    assert not stray, f"layer names outside the stage grammar {prefixes}: {stray}"


def check_json_round_trip(model, x, expected):
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(predict(clone, x), expected, rtol=RTOL, atol=ATOL)


def check_keras_save_load(model, x, expected, tmp_path):
    path = os.path.join(str(tmp_path), f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(predict(loaded, x), expected, rtol=RTOL, atol=ATOL)


_ISOLATED_LOAD = textwrap.dedent("""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "keras_liver" or name.startswith("keras_liver."):
                raise ImportError("keras_liver must not be needed to serve the model")
    sys.meta_path.insert(0, _Block())
    import numpy as np, tensorflow as tf
    export_dir, x_path, y_path = sys.argv[1:4]
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    np.save(y_path, serve(image=tf.constant(np.load(x_path)))["probabilities"].numpy())
""")


def check_saved_model(model, x, expected, tmp_path, isolated=False):
    """The project's export (:func:`keras_liver.export.export_model`, what ``keras-liver
    export`` and the experiments write): ``serving_default(image=x)["probabilities"]`` equals
    the Keras output."""
    from keras_liver.export import export_model

    export_dir = export_model(model, os.path.join(str(tmp_path), f"{model.name}_savedmodel"))
    if not isolated:
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        y = serve(image=tf.constant(x))["probabilities"].numpy()
        np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)
    else:
        x_path = os.path.join(str(tmp_path), "x.npy")
        y_path = os.path.join(str(tmp_path), "y_isolated.npy")
        np.save(x_path, x)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        result = subprocess.run([sys.executable, "-c", _ISOLATED_LOAD, export_dir, x_path, y_path],
                                cwd=str(tmp_path), env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        np.testing.assert_allclose(np.load(y_path), expected, rtol=RTOL, atol=ATOL)


def run_model_checks(builder, input_shape, *, tmp_path=None, batch_size=2, seed=0,
                     prefixes=DEFAULT_PREFIXES, serialization=True, saved_model=True,
                     isolated_saved_model=False, **builder_kwargs):
    """Build ``builder(input_shape=input_shape, **builder_kwargs)`` and run the shared checks.

    Serialisation checks need ``tmp_path`` (pytest's fixture). Returns the model.
    """
    model = builder(input_shape=tuple(input_shape), **builder_kwargs)
    assert isinstance(model, keras.Model)
    x = random_batch(input_shape, batch_size, seed)
    y = predict(model, x)
    check_output(model, x, y)
    check_layer_names(model, prefixes)
    if serialization:
        check_json_round_trip(model, x, y)
        if tmp_path is not None:
            check_keras_save_load(model, x, y, tmp_path)
    if saved_model and tmp_path is not None:
        check_saved_model(model, x, y, tmp_path, isolated=isolated_saved_model)
    return model


def check_training_reduces_loss(model, *, steps=8, batch_size=2, learning_rate=1e-3, seed=0,
                                run_eagerly=True):
    """Fit ``steps`` optimiser steps on one fixed tiny batch; the training loss must fall.

    Target: a threshold of the (first channel of the) input, one-hot for K > 1 classes.
    Returns the per-step losses.
    """
    input_shape = tuple(model.input_shape[1:])
    num_classes = model.output_shape[-1]
    x = random_batch(input_shape, batch_size, seed)
    mask = (x[..., :1] > 0.5).astype("float32")
    if num_classes == 1:
        y, loss = mask, "binary_crossentropy"
    else:
        y = keras.ops.convert_to_numpy(
            keras.ops.one_hot(mask[..., 0].astype("int32"), num_classes))
        loss = "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, jit_compile=False,
                  run_eagerly=run_eagerly)
    history = model.fit(x, y, batch_size=batch_size, epochs=steps, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], f"loss did not decrease: {json.dumps(losses)}"
    return losses
