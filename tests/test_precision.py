"""``--precision`` and ``--jit`` on every experiment (issue 7, item 5), checked on the CPU.

Every experiment's command line takes both flags into every run it trains; tiny networks
built under a mixed policy compute in low precision and return float32 from their head;
compiled with XLA they predict what they predict eagerly; and the training runner trains
under ``mixed_float16`` (with Keras' loss scaling) and ``mixed_bfloat16`` with
``jit_compile``, writing float32 weights and losses.
"""
from __future__ import annotations

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_liver import training
from keras_liver.experiments import arunet, bada, common, msa_unet, ra_unet, ra_vnet

EXPERIMENTS = {"ra_vnet": ra_vnet, "ra_unet": ra_unet, "msa_unet": msa_unet, "bada": bada,
               "arunet": arunet}


def _resolve(paper: str, preset: str, **overrides) -> dict:
    """The experiment's own ``resolve_config`` (RA V-Net uses the common one)."""
    module = EXPERIMENTS[paper]
    resolve = getattr(module, "resolve_config", common.resolve_config)
    return resolve(common.load_experiment(paper), preset, **overrides)


def _trained_configs(paper: str, config: dict) -> list[dict]:
    """The training configs a resolved experiment config holds (one per model or stage)."""
    if paper == "ra_unet":
        return list(config["stages"].values())
    if paper == "arunet":
        return list(config["models"].values())
    return [config]


def _tiny_models() -> dict[str, dict]:
    """Every network of the tiny presets, once per builder: {builder name: model config}."""
    out = {}
    for paper in EXPERIMENTS:
        for c in _trained_configs(paper, _resolve(paper, "tiny")):
            out.setdefault(c["model"]["name"], c["model"])
    return out


TINY_MODELS = _tiny_models()
#: Every network under bfloat16; float16 where it differs: the 3-D networks (no float16
#: MaxPool3D CPU kernel) and a 2-D one with bilinear up-sampling (computed in float32).
#: The suite's 20-minute budget allows a few builds: bfloat16 on a 2-D ConvLSTM network, an
#: attention network and a 3-D one; float16 where it differs: the 3-D network (no float16
#: MaxPool3D CPU kernel) and a 2-D one with bilinear up-sampling (computed in float32).
MIXED_CASES = [("ra_vnet", "mixed_bfloat16"), ("bada", "mixed_bfloat16"),
               ("ra_unet_3d", "mixed_bfloat16"), ("ra_unet_3d", "mixed_float16"),
               ("ra_vnet", "mixed_float16")]
#: XLA against eager on a 2-D network with ConvLSTM and channel attention, one with spatial and
#: semantic attention, and a 3-D one.
XLA_CASES = ["ra_vnet", "bada", "ra_unet_3d"]


@pytest.mark.parametrize("paper", sorted(EXPERIMENTS))
def test_every_experiment_takes_precision_and_jit(paper):
    parser = EXPERIMENTS[paper].parser()
    args = parser.parse_args(["--preset", "tiny", "--precision", "mixed_bfloat16", "--jit"])
    config = _resolve(paper, "tiny", **common.recipe_overrides(args))
    for c in _trained_configs(paper, config):
        assert c["training"]["precision"] == "mixed_bfloat16"
        assert c["training"]["jit_compile"] is True
    # Without the flags the preset's own settings stay (float32, no XLA).
    args = parser.parse_args(["--preset", "tiny"])
    config = _resolve(paper, "tiny", **common.recipe_overrides(args))
    for c in _trained_configs(paper, config):
        assert c["training"].get("precision", "float32") == "float32"
        assert not c["training"].get("jit_compile", False)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        common.apply_overrides({"training": {}, "data": {}}, precision="float16")


def _input_for(model: keras.Model, seed: int = 0) -> np.ndarray:
    shape = (2, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_tiny_presets_cover_every_builder():
    from keras_liver.models import MODELS

    papers = {"ra_vnet", "ra_unet_2d", "ra_unet_3d", "msa_unet", "bada", "attention_res_unet"}
    assert papers <= set(TINY_MODELS) and set(TINY_MODELS) <= set(MODELS)


@pytest.mark.parametrize("label, policy", MIXED_CASES)
def test_mixed_policy_computes_low_and_returns_float32(label, policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = training.build_model(TINY_MODELS[label])
    finally:
        keras.config.set_dtype_policy("float32")
    compute = {layer.compute_dtype for layer in model.layers if layer.weights}
    assert policy.split("_")[1] in compute          # the convolutions run in 16 bits
    assert all(w.dtype == "float32" for w in model.weights)  # the variables stay float32
    x = _input_for(model)
    if policy == "mixed_float16" and len(model.inputs[0].shape) == 5:
        # TensorFlow has no float16 CPU kernel for MaxPool3D: on the CPU the 3-D networks
        # run float16 through XLA only (the runner refuses the eager combination up front)
        with pytest.raises(Exception, match="MaxPool3D"):
            model(x)
        with pytest.raises(ValueError, match="needs --jit"):
            training.check_precision({"model": {"name": "ra_unet_3d", "input_shape": [8, 8, 8, 1]},
                                      "training": {"precision": policy}})
        model.compile(jit_compile=True)
        y = model.predict(x, batch_size=2, verbose=0)
    else:
        y = model(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))


@pytest.mark.parametrize("label", XLA_CASES)
def test_xla_prediction_equals_eager(label):
    model = training.build_model(TINY_MODELS[label])
    x = _input_for(model, seed=1)
    eager = keras.ops.convert_to_numpy(model(x, training=False))
    model.compile(jit_compile=True)
    xla = model.predict(x, batch_size=2, verbose=0)
    np.testing.assert_allclose(xla, eager, rtol=1e-4, atol=1e-5)


# float16 without XLA: XLA's float16 CPU code is emulated and its compile alone took minutes;
# the bfloat16 run covers the XLA-compiled mixed train step (and the bilinear up-sampling fix).
@pytest.mark.parametrize("precision, jit", [("mixed_float16", False), ("mixed_bfloat16", True)])
def test_runner_trains_mixed_with_xla(precision, jit, tiny_dataset, tmp_path):
    config = common.resolve_config(common.load_experiment("ra_vnet"), "tiny", epochs=1,
                                   precision=precision, jit=jit)
    seen = {}

    class Optimizer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["optimizer"] = self.model.optimizer

    result = training.train(config, data=tiny_dataset, out_dir=str(tmp_path), verbose=0,
                            steps_per_epoch=3, callbacks=[Optimizer()])
    assert result.epochs_run == 1
    for key in ("loss", "val_loss"):
        assert all(math.isfinite(v) for v in result.history[key]), result.history
    # Keras wraps the optimizer in dynamic loss scaling for float16 only (bfloat16 has
    # float32's exponent range)
    scaled = isinstance(seen["optimizer"], keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    with open(os.path.join(str(tmp_path), training.CONFIG_FILE)) as f:
        written = json.load(f)["training"]
    assert written["precision"] == precision and written["jit_compile"] is jit
    # The saved model keeps the policy it trained with, with float32 weights, and its
    # float32 output agrees with the same weights run in float32.
    reloaded = keras.models.load_model(os.path.join(str(tmp_path), training.BEST_MODEL),
                                       compile=False)
    assert all(w.dtype == "float32" for w in reloaded.weights)
    x = _input_for(reloaded, seed=2)
    low = keras.ops.convert_to_numpy(reloaded(x))
    assert low.dtype == np.float32
    reference = training.build_model(config["model"])
    reference.set_weights(reloaded.get_weights())
    full = keras.ops.convert_to_numpy(reference(x))
    tolerance = 2e-2 if precision == "mixed_bfloat16" else 5e-3
    np.testing.assert_allclose(low, full, atol=tolerance)
    # and the policy is restored for whoever builds next
    assert keras.config.dtype_policy().name == "float32"
