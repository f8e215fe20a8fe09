"""RA V-Net (SPEC §2) and its ablation baselines (Tables 2–4)."""
from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from keras import layers

from keras_liver import layers as kl_layers
from keras_liver.errors import ModelInputError
from keras_liver.models import (MODELS, CofResUNet, RAVNet, RAVNetWithoutCofRes, ResUNet, UNet,
                                get_model)
from keras_liver.models.ra_vnet import apply_ar_module, apply_ca_module, apply_cofres_block
from model_harness import check_training_reduces_loss, run_model_checks

BUILDERS = {"ra_vnet": RAVNet, "ra_vnet_without_cofres": RAVNetWithoutCofRes,
            "cofres_unet": CofResUNet, "res_unet": ResUNet, "unet": UNet}

# Parameter counts of OUR reading (docs/fidelity.md), measured with model.count_params().
# They do not depend on the spatial size (the networks are fully convolutional), so the
# base-8 count is checked on the tiny 32×32 build and equals the 128×128×1 demo count.
FULL_SIZE_PARAMS = {  # input 512×512×1, base_filters 64, depth 4
    "ra_vnet": 115_582_002,
    "ra_vnet_without_cofres": 128_393_186,
    "cofres_unet": 18_242_961,
    "res_unet": 31_760_449,
    "unet": 31_054_145,
}
BASE8_PARAMS = {
    "ra_vnet": 1_813_508,
    "ra_vnet_without_cofres": 2_012_638,
    "cofres_unet": 289_487,
    "res_unet": 500_745,
    "unet": 488_617,
}
BASE16_PARAMS = {"ra_vnet": 7_236_798}  # 128×128×1 demo preset

TINY = (32, 32, 1)


def _model(inputs, outputs):
    return keras.Model(inputs, outputs)


# --------------------------------------------------------------------------- every variant

def test_registry_maps_names_to_builders():
    assert {k: MODELS[k] for k in BUILDERS} == BUILDERS  # other papers register theirs too
    model = get_model("ra_vnet", input_shape=[32, 32, 1], base_filters=4)
    assert model.input_shape == (None, 32, 32, 1) and model.name == "ra_vnet"
    with pytest.raises(KeyError, match="registered models"):
        get_model("vnet")


def test_ra_vnet_model_checks(tmp_path):
    """Published depth 4 at 32×32, base 8; SavedModel served where keras_liver is unimportable."""
    model = run_model_checks(RAVNet, TINY, tmp_path=tmp_path, base_filters=8,
                             isolated_saved_model=True)
    assert model.output_shape == (None, 32, 32, 1)
    assert model.get_layer("head_sigmoid").dtype_policy.compute_dtype == "float32"
    assert model.name == "ra_vnet"


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - {"ra_vnet"}))
def test_variant_model_checks(name, tmp_path):
    """The shared checks on each ablation variant, at depth 2 (16×16, base 4) to stay cheap."""
    model = run_model_checks(BUILDERS[name], (16, 16, 1), tmp_path=tmp_path, base_filters=4,
                             depth=2)
    assert model.output_shape == (None, 16, 16, 1)
    assert model.name == name


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_base8_parameter_count(name):
    model = BUILDERS[name](input_shape=TINY, base_filters=8)
    assert model.count_params() == BASE8_PARAMS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_full_size_parameter_count(name, monkeypatch):
    # Counting needs shapes only. Keras' default ConvLSTM recurrent initialiser (orthogonal)
    # runs a QR of a 9216×4096 matrix for dec4_ar_convlstm (~20 s on 2 CPU cores), so it is
    # replaced by zeros here; the builder and every shape are unchanged.
    monkeypatch.setattr(keras.initializers.Orthogonal, "__call__",
                        lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))
    keras.backend.clear_session()
    model = BUILDERS[name]()  # published defaults: 512×512×1, base 64, depth 4, sigmoid
    assert model.input_shape == (None, 512, 512, 1)
    assert model.output_shape == (None, 512, 512, 1)
    assert model.count_params() == FULL_SIZE_PARAMS[name]
    del model
    keras.backend.clear_session()
    gc.collect()


def test_demo_preset_parameter_count():
    model = RAVNet(input_shape=(128, 128, 1), base_filters=16)
    assert model.count_params() == BASE16_PARAMS["ra_vnet"]


def test_multiclass_softmax_head():
    model = run_model_checks(RAVNet, TINY, base_filters=4, num_classes=3,
                             serialization=False, saved_model=False)
    assert model.output_shape == (None, 32, 32, 3)
    assert model.get_layer("head_softmax").dtype_policy.compute_dtype == "float32"


def test_training_reduces_loss():
    keras.utils.set_random_seed(0)
    model = RAVNet(input_shape=TINY, base_filters=4)
    check_training_reduces_loss(model, steps=5)


@pytest.mark.parametrize("shape, message", [
    ((250, 250, 1), "RAVNet needs spatial sizes divisible by 16; "
                    "received input_shape=(250, 250, 1)"),
    ((8, 8, 1), "divisible by 16"),
    ((32, 32, 16, 1), "RAVNet needs input_shape=(H, W, C)"),
    ((None, 32, 1), "divisible by 16"),
])
def test_wrong_input_shape_raises(shape, message):
    with pytest.raises(ModelInputError) as err:
        RAVNet(input_shape=shape, base_filters=4)
    assert message in str(err.value)


def test_wrong_input_shape_names_each_builder():
    with pytest.raises(ModelInputError, match=r"^UNet needs spatial sizes divisible by 8;"):
        UNet(input_shape=(36, 36, 1), base_filters=4, depth=3)
    assert UNet(input_shape=(40, 40, 1), base_filters=4, depth=3).output_shape == (None, 40, 40, 1)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="channel_attention"):
        RAVNet(input_shape=TINY, base_filters=4, channel_attention="top")
    with pytest.raises(ValueError, match="base_filters"):
        RAVNet(input_shape=TINY, base_filters=6)


# --------------------------------------------------------------------------- structure

def test_layer_names_carry_module_names():
    model = RAVNet(input_shape=TINY, base_filters=4)
    names = {layer.name for layer in model.layers}
    for expected in ("enc3_cofres_conv2_conv", "enc1_cofres_shortcut_conv", "enc1_pool",
                     "bottom_cofres_conv5_conv", "skip4_ca", "dec4_ar_conv1_conv", "dec4_ar_up",
                     "dec4_ar_res_add", "dec4_ar_skip_conv", "dec2_ar_stack",
                     "dec2_ar_convlstm", "dec1_ar_conv3_relu", "head_conv", "head_sigmoid"):
        assert expected in names, expected
    convlstms = [layer for layer in model.layers if isinstance(layer, layers.ConvLSTM2D)]
    assert [layer.name for layer in convlstms] == [f"dec{k}_ar_convlstm" for k in (4, 3, 2, 1)]
    assert [layer.filters for layer in convlstms] == [64, 32, 16, 8]
    # Every conv is followed by BN (+ ReLU, except projection shortcuts).
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D) and not layer.name.startswith("head"):
            assert layer.name.endswith("_conv")
            assert layer.name[:-len("_conv")] + "_bn" in names, layer.name


def test_widths_double_per_level():
    model = RAVNet(input_shape=TINY, base_filters=4)   # paper: base 64 → 64, 128, 256, 512, 1024
    widths = [model.get_layer(f"enc{k}_cofres_conv5_conv").filters for k in (1, 2, 3, 4)]
    assert widths == [4, 8, 16, 32]
    assert model.get_layer("bottom_cofres_conv5_conv").filters == 64
    assert model.get_layer("dec1_ar_conv3_conv").filters == 4
    assert model.get_layer("head_conv").filters == 1
    assert model.get_layer("head_conv").kernel_size == (1, 1)


@pytest.mark.parametrize("placement, expected", [
    ("bottom", ["skip4_ca"]),
    ("all", ["skip1_ca", "skip2_ca", "skip3_ca", "skip4_ca"]),
    ("none", []),
])
def test_channel_attention_placement(placement, expected):
    model = RAVNet(input_shape=TINY, base_filters=4, channel_attention=placement)
    found = [layer.name for layer in model.layers
             if isinstance(layer, kl_layers.ChannelAttention)]
    assert sorted(found) == expected


def test_variants_differ_where_the_paper_says():
    def kinds(model):
        return {type(layer).__name__ for layer in model.layers}

    small = dict(input_shape=TINY, base_filters=4)
    without_cofres = RAVNetWithoutCofRes(**small)
    names = [layer.name for layer in without_cofres.layers]
    assert not any("cofres" in n for n in names)
    assert "enc1_conv2_conv" in names and "bottom_conv2_conv" in names and "skip4_ca" in names
    assert {"ConvLSTM2D", "ChannelAttention"} <= kinds(without_cofres)
    cofres_unet = CofResUNet(**small)
    assert "enc2_cofres_conv5_conv" in [layer.name for layer in cofres_unet.layers]
    assert not {"ConvLSTM2D", "ChannelAttention"} & kinds(cofres_unet)
    assert "dec4_upconv" in [layer.name for layer in cofres_unet.layers]
    res_unet = ResUNet(**small)
    assert "enc3_res_add" in [layer.name for layer in res_unet.layers]
    assert "bottom_res_shortcut_conv" in [layer.name for layer in res_unet.layers]
    unet = UNet(**small)
    assert not any(n.endswith("_add") for n in (layer.name for layer in unet.layers))


# --------------------------------------------------------------------------- CA module

def test_ca_module_is_identity_at_init_then_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 6)).astype("float32")
    inputs = keras.Input((4, 5, 6))
    model = _model(inputs, apply_ca_module(inputs, name="skip4_ca"))
    ca = model.get_layer("skip4_ca")
    assert len(ca.weights) == 1 and ca.weights[0].shape == ()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), x)

    beta = 0.7
    ca.beta.assign(beta)
    a = x.reshape(2, -1, 6)                                   # (B, N, C)
    energy = np.einsum("bny,bnx->byx", a, a)                  # A_y · A_x
    g = np.exp(energy - energy.max(-1, keepdims=True))
    g /= g.sum(-1, keepdims=True)                             # softmax over x
    expected = beta * np.einsum("byx,bnx->bny", g, a) + a     # E = β·(G A) + A
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- CofRes module

def test_cofres_module_structure():
    inputs = keras.Input((8, 8, 3))
    model = _model(inputs, apply_cofres_block(inputs, 16, name="enc1_cofres"))
    assert model.output_shape == (None, 8, 8, 16)
    convs = [model.get_layer(f"enc1_cofres_conv{i}_conv") for i in range(1, 5)]
    assert [c.filters for c in convs] == [4, 4, 4, 4]
    assert all(c.kernel_size == (3, 3) for c in convs)
    # Sequential: conv_{i+1} reads conv_i's ReLU output.
    for i in range(1, 4):
        assert convs[i].input is model.get_layer(f"enc1_cofres_conv{i}_relu").output
    concat = model.get_layer("enc1_cofres_concat")
    assert concat.output.shape[-1] == 16
    assert [t.shape[-1] for t in concat.input] == [4, 4, 4, 4]
    shortcut = model.get_layer("enc1_cofres_shortcut_conv")
    assert shortcut.kernel_size == (1, 1) and shortcut.filters == 16
    conv5 = model.get_layer("enc1_cofres_conv5_conv")
    assert conv5.kernel_size == (1, 1) and conv5.filters == 16
    assert conv5.input is model.get_layer("enc1_cofres_add").output

    same = keras.Input((8, 8, 16))
    model = _model(same, apply_cofres_block(same, 16, name="enc2_cofres"))
    names = [layer.name for layer in model.layers]
    assert not any("shortcut" in n for n in names)
    assert model.get_layer("enc2_cofres_add").input[1] is same


# --------------------------------------------------------------------------- AR module

def test_ar_module_structure():
    x = keras.Input((4, 4, 16))
    skip = keras.Input((8, 8, 8))
    model = keras.Model([x, skip], apply_ar_module(x, skip, name="dec2_ar"))
    assert model.output_shape == (None, 8, 8, 8)                       # C/2 at 2h × 2w
    assert model.get_layer("dec2_ar_conv1_conv").filters == 4           # C/4
    up = model.get_layer("dec2_ar_up")
    assert isinstance(up, layers.UpSampling2D) and up.interpolation == "bilinear"
    assert model.get_layer("dec2_ar_res_conv1_conv").filters == 4
    assert model.get_layer("dec2_ar_conv2_conv").filters == 16          # back to C
    assert model.get_layer("dec2_ar_skip_conv").filters == 16           # skip brought to C
    stack = model.get_layer("dec2_ar_stack")
    assert stack.output.shape == (None, 2, 8, 8, 16)                    # time axis of length 2
    assert stack.input[0] is model.get_layer("dec2_ar_skip_relu").output
    assert stack.input[1] is model.get_layer("dec2_ar_conv2_relu").output
    lstm = model.get_layer("dec2_ar_convlstm")
    assert isinstance(lstm, layers.ConvLSTM2D)
    assert lstm.filters == 16 and lstm.kernel_size == (3, 3) and not lstm.return_sequences
    assert lstm.output.shape == (None, 8, 8, 16)
    conv3 = model.get_layer("dec2_ar_conv3_conv")
    assert conv3.filters == 8 and conv3.kernel_size == (3, 3)

    same = keras.Input((8, 8, 16))
    model = keras.Model([x, same], apply_ar_module(x, same, name="dec2_ar"))
    assert "dec2_ar_skip_conv" not in [layer.name for layer in model.layers]
