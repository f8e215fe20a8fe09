"""Attention Residual UNet (SPEC §5) and the additive attention gate it shares with BADA's
Attention U-Net baseline."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from keras_liver.blocks import apply_attention_gate
from keras_liver.errors import ModelInputError
from keras_liver.models.arunet import ARUNET_LIVER, ARUNET_VESSEL, AttentionResUNet
from model_harness import check_training_reduces_loss, run_model_checks

# Trainable parameters of the authors' released models at 512×512×1 (SPEC §5); the reading
# that hits them is written down in docs/fidelity.md (Attention Residual UNet).
TRAINABLE_PARAMS = {"liver": 515_812, "vessel": 2_055_356}
# Plus the BN moving means/variances (Keras counts them in count_params()).
ALL_PARAMS = {"liver": 518_250, "vessel": 2_060_226}
PRESETS = {"liver": ARUNET_LIVER, "vessel": ARUNET_VESSEL}
SMALL = (64, 64, 1)


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.fixture(scope="module")
def published():
    """Both published models at their published input size, built once."""
    keras.backend.clear_session()
    return {key: AttentionResUNet(**preset) for key, preset in PRESETS.items()}


# --------------------------------------------------------------------------- published size

@pytest.mark.parametrize("key", sorted(PRESETS))
def test_published_parameter_counts(published, key):
    model = published[key]
    assert model.input_shape == (None, 512, 512, 1)
    assert model.output_shape == (None, 512, 512, 3)
    assert trainable_count(model) == TRAINABLE_PARAMS[key]
    assert model.count_params() == ALL_PARAMS[key]


def test_presets_are_the_published_widths():
    assert ARUNET_LIVER == {"base_filters": 8} and ARUNET_VESSEL == {"base_filters": 16}


def test_gates_on_levels_2_to_4_only(published):
    model = published["liver"]
    names = {layer.name for layer in model.layers}
    gate_levels = sorted({int(n[3]) for n in names if n.startswith("dec") and "_gate_" in n})
    assert gate_levels == [2, 3, 4]
    multiplies = sorted(layer.name for layer in model.layers
                        if isinstance(layer, layers.Multiply))
    assert multiplies == ["dec2_gate_multiply", "dec3_gate_multiply", "dec4_gate_multiply"]


def test_gate_wiring_in_the_graph(published):
    model = published["liver"]
    out = {layer.name: layer.output for layer in model.layers}
    for level, width in ((4, 64), (3, 32), (2, 16)):
        skip, up = out[f"enc{level}_res_out"], out[f"dec{level}_up"]
        gate = f"dec{level}_gate"
        # g = the up-sampled decoder map, x = the encoder skip.
        assert model.get_layer(f"{gate}_theta_x_conv").input is skip
        assert model.get_layer(f"{gate}_phi_g_conv").input is up
        # F_int = width(skip) / 2, ψ has one channel.
        assert model.get_layer(f"{gate}_theta_x_conv").filters == width // 2
        assert model.get_layer(f"{gate}_phi_g_conv").filters == width // 2
        assert model.get_layer(f"{gate}_psi_conv").filters == 1
        multiply = model.get_layer(f"{gate}_multiply")
        assert multiply.input[0] is skip and multiply.input[1] is out[f"{gate}_psi_sigmoid"]
        # concat [gated skip, up] → residual block at the skip's width.
        concat = model.get_layer(f"dec{level}_concat")
        assert concat.input[0] is multiply.output and concat.input[1] is up
        assert model.get_layer(f"dec{level}_res_conv1_conv").input is concat.output
        assert model.get_layer(f"dec{level}_res_conv1_conv").filters == width
    # Level 1: no gate, concat [up, raw skip].
    concat = model.get_layer("dec1_concat")
    assert concat.input[0] is out["dec1_up"] and concat.input[1] is out["enc1_res_out"]


def test_encoder_decoder_widths_and_layers(published):
    model = published["liver"]
    enc = [model.get_layer(f"enc{k}_res_conv2_conv").filters for k in (1, 2, 3, 4)]
    assert enc == [8, 16, 32, 64]
    assert model.get_layer("bottom_res_conv2_conv").filters == 128
    for level, width in ((4, 64), (3, 32), (2, 16), (1, 8)):
        up = model.get_layer(f"dec{level}_up")
        assert isinstance(up, layers.Conv2DTranspose)
        assert up.filters == width and up.kernel_size == (2, 2) and up.strides == (2, 2)
        assert model.get_layer(f"dec{level}_res_shortcut_conv").kernel_size == (1, 1)
    assert isinstance(model.get_layer("enc1_pool"), layers.MaxPooling2D)
    # Post-activation residual block: Conv-BN-ReLU → Conv-BN, add, ReLU.
    res_add = model.get_layer("enc2_res_add")
    assert res_add.input[0] is model.get_layer("enc2_res_conv2_bn").output
    assert res_add.input[1] is model.get_layer("enc2_res_shortcut_bn").output
    assert model.get_layer("enc2_res_out").input is res_add.output
    head = model.get_layer("head_conv")
    assert head.filters == 3 and head.kernel_size == (1, 1)
    assert model.get_layer("head_softmax").dtype_policy.compute_dtype == "float32"
    # The reading the counts pin: every convolution (gates and transposed convs too) has a bias.
    convs = [layer for layer in model.layers
             if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))]
    # 5 encoder/bottom + 4 decoder residual blocks × 3, 4 transposed, 3 gates × 3, head.
    assert len(convs) == 9 * 3 + 4 + 3 * 3 + 1
    assert all(layer.use_bias for layer in convs)


# --------------------------------------------------------------------------- attention gate

def _bn_numpy(layer, y):
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return gamma * (y - mean) / np.sqrt(var + layer.epsilon) + beta


def _conv1x1_numpy(layer, y):
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return y @ kernel.reshape(kernel.shape[-2:]) + bias


@pytest.mark.parametrize("spatial", [(8, 6), (4, 6, 5)], ids=["2d", "3d"])
def test_attention_gate_in_isolation(spatial):
    rng = np.random.default_rng(3)
    cx, cg, f_int = 6, 10, 3
    x_in, g_in = keras.Input(spatial + (cx,)), keras.Input(spatial + (cg,))
    gated = apply_attention_gate(x_in, g_in, f_int, name="gate")
    alpha_out = keras.Model([x_in, g_in], gated).get_layer("gate_psi_sigmoid").output
    model = keras.Model([x_in, g_in], [gated, alpha_out])
    assert model.get_layer("gate_theta_x_conv").filters == f_int
    assert model.get_layer("gate_phi_g_conv").filters == f_int
    rank = len(spatial)
    assert model.get_layer("gate_psi_conv").kernel_size == (1,) * rank
    assert all(model.get_layer(n).use_bias
               for n in ("gate_theta_x_conv", "gate_phi_g_conv", "gate_psi_conv"))
    # Random weights, BN statistics included, so the NumPy reference sees every term.
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               if "variance" in w.path else
                               rng.normal(0, 0.5, w.shape).astype("float32")
                               for w in layer.weights])
    x = rng.normal(size=(2,) + spatial + (cx,)).astype("float32")
    g = rng.normal(size=(2,) + spatial + (cg,)).astype("float32")
    y, alpha = (keras.ops.convert_to_numpy(t) for t in model([x, g], training=False))

    assert y.shape == x.shape
    assert alpha.shape == x.shape[:-1] + (1,)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0 and alpha.std() > 0

    layer = model.get_layer
    theta = _bn_numpy(layer("gate_theta_x_bn"), _conv1x1_numpy(layer("gate_theta_x_conv"), x))
    phi = _bn_numpy(layer("gate_phi_g_bn"), _conv1x1_numpy(layer("gate_phi_g_conv"), g))
    psi = _bn_numpy(layer("gate_psi_bn"),
                    _conv1x1_numpy(layer("gate_psi_conv"), np.maximum(theta + phi, 0.0)))
    expected_alpha = 1.0 / (1.0 + np.exp(-psi))
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, expected_alpha * x, rtol=1e-4, atol=1e-5)


def test_attention_gate_layer_names_and_errors():
    x_in, g_in = keras.Input((8, 8, 4)), keras.Input((8, 8, 8))
    model = keras.Model([x_in, g_in], apply_attention_gate(x_in, g_in, 2, name="dec2_gate"))
    assert sorted(layer.name for layer in model.layers[2:]) == sorted(
        f"dec2_gate_{part}" for part in (
            "theta_x_conv", "theta_x_bn", "phi_g_conv", "phi_g_bn", "add", "relu",
            "psi_conv", "psi_bn", "psi_sigmoid", "multiply"))
    with pytest.raises(ValueError, match="spatial size"):
        apply_attention_gate(x_in, keras.Input((4, 4, 8)), 2, name="bad")
    with pytest.raises(ValueError, match="spatial size"):
        apply_attention_gate(x_in, keras.Input((8, 8, 2, 8)), 2, name="bad")
    with pytest.raises(ValueError, match="inter_filters"):
        apply_attention_gate(x_in, g_in, 0, name="bad")


# --------------------------------------------------------------------------- shared checks

def test_model_checks(tmp_path):
    """Published widths (f = 8) at 64×64: softmax sums to 1, JSON, .keras and SavedModel served
    where keras_liver cannot be imported."""
    model = run_model_checks(AttentionResUNet, SMALL, tmp_path=tmp_path, base_filters=8,
                             isolated_saved_model=True)
    assert model.output_shape == (None, 64, 64, 3)
    assert model.name == "attention_res_unet"
    assert trainable_count(model) == TRAINABLE_PARAMS["liver"]  # fully convolutional


def test_training_reduces_loss():
    keras.utils.set_random_seed(0)
    model = AttentionResUNet(input_shape=(32, 32, 1), base_filters=4)
    check_training_reduces_loss(model, steps=5)


@pytest.mark.parametrize("shape, message", [
    ((500, 500, 1), "AttentionResUNet needs spatial sizes divisible by 16; "
                    "received input_shape=(500, 500, 1)"),
    ((8, 8, 1), "divisible by 16"),
    ((64, 40, 1), "divisible by 16"),
    ((32, 32, 16, 1), "AttentionResUNet needs input_shape=(H, W, C)"),
])
def test_wrong_input_shape_raises(shape, message):
    with pytest.raises(ModelInputError) as err:
        AttentionResUNet(input_shape=shape, base_filters=4)
    assert message in str(err.value)


def test_bad_base_filters_raise():
    with pytest.raises(ValueError, match="base_filters"):
        AttentionResUNet(input_shape=SMALL, base_filters=0)


def test_registered_by_name():
    from keras_liver.models import MODELS, get_model

    assert MODELS["attention_res_unet"] is AttentionResUNet
    model = get_model("attention_res_unet", input_shape=[32, 32, 1], **ARUNET_LIVER)
    assert model.output_shape == (None, 32, 32, 3)
