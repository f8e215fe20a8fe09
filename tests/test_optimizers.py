"""CoupledWeightDecayAdam: PyTorch's Adam with weight_decay (coupled L2), BADA §4.3 / SPEC §4."""
import json

import keras
import numpy as np
import pytest

from conftest import run_python
from keras_liver import training
from keras_liver.optimizers import CoupledWeightDecayAdam

LR, B1, B2, EPS = 1e-2, 0.9, 0.999, 1e-8
THETA0 = np.array([[0.8, -1.5, 0.3], [2.0, -0.05, -0.7]])
GRADS = [np.array([[0.30, -0.10, 0.20], [-0.40, 0.25, 0.05]]),
         np.array([[0.10, 0.35, -0.20], [0.15, -0.30, 0.45]]),
         np.array([[-0.25, 0.05, 0.40], [0.20, 0.10, -0.35]])]


def _f32(x):
    return float(np.float32(x))


def torch_adam(theta, grads, *, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.0,
               decoupled=False, keras_like=False):
    """NumPy transcription of ``torch.optim.Adam`` (single tensor, amsgrad off, maximize off):

        g ← g + wd·θ;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²
        θ ← θ − lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε)

    ``decoupled=True``: Keras' (AdamW-style) ``θ ← θ − lr·wd·θ`` before the step instead.
    ``keras_like=True``: what Keras' Adam computes besides the penalty: ε added to √v before
    the bias correction (denominator √v + ε, step lr·√(1−β2^t)/(1−β1^t)), and lr, wd and the
    β of the bias corrections rounded to float32 (``ops.cast(python_float, "float64")`` goes
    through float32; 1 − β2^t then keeps only ~5 digits at t = 1).
    """
    theta = np.array(theta, np.float64)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    pb1, pb2 = (_f32(betas[0]), _f32(betas[1])) if keras_like else betas
    if keras_like:
        lr, weight_decay = _f32(lr), _f32(weight_decay)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        if weight_decay and decoupled:
            theta = theta - lr * weight_decay * theta
        elif weight_decay:
            g = g + weight_decay * theta
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        bc1, bc2 = 1 - pb1 ** t, 1 - pb2 ** t
        if keras_like:
            theta = theta - lr * np.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
        else:
            theta = theta - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    return theta


def keras_steps(optimizer, grads, dtype="float64", theta=THETA0):
    var = keras.Variable(np.array(theta, dtype), dtype=dtype, name="theta")
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(np.asarray(g, dtype))], [var])
    return keras.ops.convert_to_numpy(var).astype(np.float64)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("l2", [4e-5, 0.5])
def test_matches_pytorch_adam_with_weight_decay(steps, l2):
    grads = GRADS[:steps]
    ours = keras_steps(CoupledWeightDecayAdam(learning_rate=LR, l2=l2, epsilon=EPS), grads)
    torch_ref = torch_adam(THETA0, grads, weight_decay=l2)
    # the same formula with Keras' ε placement and float32 constants: equal to rounding
    np.testing.assert_allclose(ours, torch_adam(THETA0, grads, weight_decay=l2, keras_like=True),
                               rtol=0, atol=1e-13)
    # PyTorch itself: each step agrees to ~1e-5 of its size lr (float32 β in Keras' bias
    # correction: 6e-6 at t = 1; ε placement: ε·(1/√(1−β2^t) − 1)/|g| ≈ 1e-6)
    np.testing.assert_allclose(ours, torch_ref, rtol=0, atol=2e-5 * LR * steps)
    # and the penalty is visible: without it the result is farther off than that
    if l2 == 0.5:
        plain = torch_adam(THETA0, grads)
        assert np.max(np.abs(plain - torch_ref)) > 1e3 * np.max(np.abs(ours - torch_ref))


def test_float32_variables_match_pytorch():
    ours = keras_steps(CoupledWeightDecayAdam(learning_rate=1e-3, l2=0.1, epsilon=EPS), GRADS,
                       dtype="float32")
    np.testing.assert_allclose(ours, torch_adam(THETA0, GRADS, lr=1e-3, weight_decay=0.1),
                               rtol=0, atol=1e-6)  # float32 ulp at |θ| = 2 is 2.4e-7


def test_zero_l2_is_plain_adam():
    ours = keras_steps(CoupledWeightDecayAdam(learning_rate=LR, l2=0.0, epsilon=EPS), GRADS)
    plain = keras_steps(keras.optimizers.Adam(learning_rate=LR, epsilon=EPS), GRADS)
    np.testing.assert_array_equal(ours, plain)


def test_differs_from_keras_decoupled_weight_decay():
    wd = 0.5
    coupled = keras_steps(CoupledWeightDecayAdam(learning_rate=LR, l2=wd, epsilon=EPS), GRADS)
    decoupled = keras_steps(keras.optimizers.Adam(learning_rate=LR, weight_decay=wd,
                                                  epsilon=EPS), GRADS)
    # Keras' weight_decay is the decoupled form ...
    np.testing.assert_allclose(decoupled, torch_adam(THETA0, GRADS, weight_decay=wd,
                                                     decoupled=True, keras_like=True), atol=1e-13)
    # ... which is another optimizer
    assert np.max(np.abs(coupled - decoupled)) > 1e-3


def test_refuses_keras_weight_decay():
    with pytest.raises(ValueError, match="cannot be combined with Keras' decoupled weight_decay"):
        CoupledWeightDecayAdam(l2=4e-5, weight_decay=4e-5)
    for bad in (-1e-5, float("nan"), "a lot"):
        with pytest.raises(ValueError, match="l2 must be"):
            CoupledWeightDecayAdam(l2=bad)
    CoupledWeightDecayAdam(l2=4e-5, weight_decay=None)  # None (from a config) is fine


def test_config_round_trip(tmp_path):
    opt = CoupledWeightDecayAdam(learning_rate=1e-3, l2=4e-5, epsilon=1e-8, beta_2=0.99,
                                 clipnorm=1.0)
    config = opt.get_config()
    assert config["l2"] == 4e-5 and config["weight_decay"] is None
    again = CoupledWeightDecayAdam.from_config(config)
    assert again.get_config() == config
    restored = keras.optimizers.deserialize(json.loads(json.dumps(
        keras.optimizers.serialize(opt))))
    assert type(restored) is CoupledWeightDecayAdam and restored.get_config() == config
    assert keras.saving.get_registered_name(CoupledWeightDecayAdam) == \
        "keras_liver>CoupledWeightDecayAdam"
    # inside a saved model
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.ones((4, 4), "float32"), np.ones((4, 1), "float32"), verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is CoupledWeightDecayAdam and loaded.optimizer.l2 == 4e-5
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_exclude_from_weight_decay_applies_to_the_penalty():
    kernel = keras.Variable(np.array(THETA0), dtype="float64", name="kernel")
    bias = keras.Variable(np.array(THETA0[0]), dtype="float64", name="bias")
    opt = CoupledWeightDecayAdam(learning_rate=LR, l2=0.5, epsilon=EPS)
    opt.exclude_from_weight_decay(var_names=["bias"])
    for g in GRADS:
        opt.apply([g, g[0]], [kernel, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel),
                               torch_adam(THETA0, GRADS, weight_decay=0.5, keras_like=True),
                               atol=1e-13)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias),  # excluded: plain Adam
                               torch_adam(THETA0[0], [g[0] for g in GRADS], keras_like=True),
                               atol=1e-13)


def test_loss_scale_optimizer_wrapping():
    scale = 2.0 ** 10  # a power of two: scaling and unscaling are exact
    wrapped = keras.optimizers.LossScaleOptimizer(
        CoupledWeightDecayAdam(learning_rate=LR, l2=0.5, epsilon=EPS), initial_scale=scale)
    ours = keras_steps(wrapped, [g * scale for g in GRADS])
    np.testing.assert_allclose(ours, torch_adam(THETA0, GRADS, weight_decay=0.5, keras_like=True),
                               atol=1e-13)


def _tiny_regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    return x, y


def _fit_kernel_norm(optimizer, *, precision="float32", steps=30):
    x, y = _tiny_regression()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.Dense(1, name="out", dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=optimizer, loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=steps // 4, shuffle=False, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        return model, sum(float(np.sum(np.square(keras.ops.convert_to_numpy(w))))
                          for w in (model.get_layer("hidden").kernel, model.get_layer("out").kernel))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_fit_shrinks_the_kernels():
    _, plain = _fit_kernel_norm(CoupledWeightDecayAdam(learning_rate=1e-2, l2=0.0))
    _, decayed = _fit_kernel_norm(CoupledWeightDecayAdam(learning_rate=1e-2, l2=0.5))
    assert decayed < 0.95 * plain


def test_fit_under_mixed_precision():
    model, _ = _fit_kernel_norm(CoupledWeightDecayAdam(learning_rate=1e-2, l2=4e-5),
                                precision="mixed_float16", steps=8)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert type(model.optimizer.inner_optimizer) is CoupledWeightDecayAdam


def test_build_optimizer_mapping():
    opt = training.build_optimizer({"name": "adam", "learning_rate": 1e-3, "l2": 4e-5})
    assert type(opt) is CoupledWeightDecayAdam and opt.l2 == 4e-5
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(1e-3)
    assert opt.weight_decay is None
    for spec in ({"name": "adam"}, {"name": "adam", "l2": 0.0}, {"name": "Adam", "l2": None}, {}):
        assert type(training.build_optimizer(spec)) is keras.optimizers.Adam, spec
    named = training.build_optimizer({"name": "coupled_adam", "learning_rate": 1e-3})
    assert type(named) is CoupledWeightDecayAdam and named.l2 == 4e-5
    assert training.build_optimizer({"name": "COUPLED_ADAM", "l2": 1e-4}).l2 == 1e-4
    adam_wd = training.build_optimizer({"name": "adam", "weight_decay": 1e-4})
    assert type(adam_wd) is keras.optimizers.Adam and adam_wd.weight_decay == 1e-4
    assert type(training.build_optimizer({"name": "adamw"})) is keras.optimizers.AdamW
    assert type(training.build_optimizer({"name": "sgd", "momentum": 0.9})) is keras.optimizers.SGD
    assert type(training.build_optimizer({"name": "rmsprop"})) is keras.optimizers.RMSprop
    with pytest.raises(ValueError, match="decoupled weight_decay"):
        training.build_optimizer({"name": "adam", "l2": 4e-5, "weight_decay": 4e-5})
    with pytest.raises(ValueError, match="Adam only"):
        training.build_optimizer({"name": "sgd", "l2": 4e-5})
    with pytest.raises(ValueError, match="unknown optimizer"):
        training.build_optimizer({"name": "lamb"})


def test_mirrored_strategy_and_jit_compile_apply_the_penalty_once():
    """Two replicas (two logical CPUs): the penalty is added after the all-reduce, so the
    result equals the single-device one (adding l2·θ before it would count it twice); and a
    jit-compiled step gives the same. (XLA cannot compile a MirroredStrategy step over two
    logical CPU devices — "Trying to access resource … located in device CPU:1 from device
    CPU:0", plain Adam alike — so mirrored + jit_compile is left to a GPU machine.)"""
    code = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_liver.optimizers import CoupledWeightDecayAdam
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1))).astype("float32")
k0 = rng.normal(size=(8, 1)).astype("float32")
def run(strategy, jit, l2):
    with strategy.scope():
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
        model.layers[-1].kernel.assign(k0)
        model.compile(optimizer=CoupledWeightDecayAdam(learning_rate=0.05, l2=l2),
                      loss="mse", jit_compile=jit)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(ds, epochs=2, verbose=0)
    return keras.ops.convert_to_numpy(model.layers[-1].kernel).ravel().tolist()
default = tf.distribute.get_strategy()
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": mirrored.num_replicas_in_sync,
       "default": run(default, False, 0.5), "default_jit": run(default, True, 0.5),
       "mirrored": run(mirrored, False, 0.5),
       "double_l2": run(default, False, 1.0)}
print("RESULT", json.dumps(out))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["replicas"] == 2
    ref = np.array(out["default"])
    for key in ("default_jit", "mirrored"):
        np.testing.assert_allclose(out[key], ref, rtol=0, atol=2e-5, err_msg=key)
    assert np.max(np.abs(np.array(out["double_l2"]) - ref)) > 1e-3
