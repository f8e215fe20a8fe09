"""RA-UNet (SPEC §1): RA-UNet-I (2-D), RA-UNet-II (3-D) and the brain variant (Table VIII).

The counts are those of the authors' Keras code (SPEC §1), the acceptance test. Building a
641-layer model takes a few seconds on 2 CPU cores whatever its input size, so each model is
built once per module and shared by the tests that only read it.
"""
from __future__ import annotations


import keras
import numpy as np
import pytest
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import apply_attention_residual_module, apply_preact_residual_unit
from keras_liver.blocks import attention as attention_blocks
from keras_liver.errors import ModelInputError
from keras_liver.models import MODELS, RAUNet2D, RAUNet3D, RAUNetBrain, ra_unet
from model_harness import (check_json_round_trip, check_keras_save_load, check_layer_names,
                           check_output, check_saved_model, predict, random_batch)

# Published configurations (SPEC §1): builder, keyword arguments, input shape, parameters,
# layers (len(model.layers), InputLayer included).
PUBLISHED = {
    "ra_unet_2d_256": (RAUNet2D, {}, (256, 256, 1), 747_321, 641),
    "ra_unet_3d_liver_224": (RAUNet3D, {}, (224, 224, 32, 1), 4_439_697, 641),
    "ra_unet_3d_tumour_128": (RAUNet3D, {"input_shape": (128, 128, 32, 1)}, (128, 128, 32, 1),
                              4_439_697, 641),
    "ra_unet_brain_64": (RAUNetBrain, {}, (64, 64, 64, 4), 12_813_377, 641),
}

# Reduced sizes for running the networks: 32 is the smallest multiple of 32.
SMALL = {2: (RAUNet2D, (32, 32, 1)), 3: (RAUNet3D, (32, 32, 32, 1))}
SMALL_BASE = 2


@pytest.fixture(scope="module")
def published():
    """Every published configuration, built once (about 4 s each on 2 CPU cores)."""
    keras.backend.clear_session()
    return {key: builder(**kwargs) for key, (builder, kwargs, *_rest) in PUBLISHED.items()}


@pytest.fixture(scope="module")
def small():
    """The 2-D and 3-D networks at 32³/base 2, built while recording every call of the shared
    blocks: rank → (model, [(block, name, rank of its input), ...])."""
    built = {}
    for rank, (builder, shape) in SMALL.items():
        calls = []

        def spy(block, kind, calls=calls):
            def wrapper(x, *args, name, **kwargs):
                calls.append((kind, name, ndim.rank_of(x)))
                return block(x, *args, name=name, **kwargs)
            return wrapper

        with pytest.MonkeyPatch.context() as mp:
            unit = spy(apply_preact_residual_unit, "unit")
            mp.setattr(ra_unet, "apply_preact_residual_unit", unit)
            mp.setattr(attention_blocks, "apply_preact_residual_unit", unit)
            mp.setattr(ra_unet, "apply_attention_residual_module",
                       spy(apply_attention_residual_module, "attention"))
            model = builder(input_shape=shape, base_filters=SMALL_BASE)
        built[rank] = (model, calls)
    return built


def _names(model):
    return [layer.name for layer in model.layers]


# --------------------------------------------------------------------------- published counts

@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_parameter_and_layer_counts(key, published):
    _, _, shape, params, depth = PUBLISHED[key]
    model = published[key]
    assert model.input_shape == (None,) + shape
    assert model.output_shape == (None,) + shape[:-1] + (1,)
    assert model.count_params() == params
    assert len(model.layers) == depth           # "depth of 641" (§III-F), InputLayer included
    assert isinstance(model.layers[0], layers.InputLayer)


# Feature-map sizes of Tables II, III and VIII (output of each paper stage).
TABLE_SHAPES = {
    "ra_unet_2d_256": {  # Table II
        "enc1_conv1_relu": (256, 256, 16), "enc1_pool": (128, 128, 16),
        "enc2_res1_add": (128, 128, 16), "enc3_res2_add": (64, 64, 32),
        "enc4_res3_add": (32, 32, 64), "enc5_res4_add": (16, 16, 128),
        "enc5_pool": (8, 8, 128), "bottom_res5_add": (8, 8, 256), "bottom_res6_add": (8, 8, 256),
        "dec5_up1": (16, 16, 256), "skip5_att1_post1_add": (16, 16, 128),
        "dec5_res7_add": (16, 16, 128), "dec4_up2": (32, 32, 128),
        "skip4_att2_post1_add": (32, 32, 64), "dec4_res8_add": (32, 32, 64),
        "dec3_up3": (64, 64, 64), "skip3_att3_post1_add": (64, 64, 32),
        "dec3_res9_add": (64, 64, 32), "dec2_up4": (128, 128, 32),
        "skip2_att4_post1_add": (128, 128, 16), "dec2_res10_add": (128, 128, 16),
        "dec1_up5": (256, 256, 16), "dec1_conv2_relu": (256, 256, 16),
        "head_conv3": (256, 256, 1),
    },
    "ra_unet_3d_liver_224": {  # Table III
        "enc1_conv1_relu": (224, 224, 32, 32), "enc2_res1_add": (112, 112, 16, 32),
        "enc3_res2_add": (56, 56, 8, 64), "enc4_res3_add": (28, 28, 4, 128),
        "enc5_res4_add": (14, 14, 2, 256), "bottom_res6_add": (7, 7, 1, 512),
        "dec5_up1": (14, 14, 2, 512), "skip5_att1_post1_add": (14, 14, 2, 256),
        "dec5_res7_add": (14, 14, 2, 256), "dec4_res8_add": (28, 28, 4, 128),
        "dec3_res9_add": (56, 56, 8, 64), "dec2_res10_add": (112, 112, 16, 32),
        "dec1_conv2_relu": (224, 224, 32, 32), "head_conv3": (224, 224, 32, 1),
    },
    "ra_unet_brain_64": {  # Table VIII
        "enc1_conv1_relu": (64, 64, 64, 32), "enc2_res1_add": (32, 32, 32, 64),
        "enc3_res2_add": (16, 16, 16, 128), "enc4_res3_add": (8, 8, 8, 256),
        "enc5_res4_add": (4, 4, 4, 512), "bottom_res5_add": (2, 2, 2, 512),
        "bottom_res6_add": (2, 2, 2, 512), "dec5_up1": (4, 4, 4, 512),
        "skip5_att1_post1_add": (4, 4, 4, 512), "dec5_res7_add": (4, 4, 4, 512),
        "dec4_res8_add": (8, 8, 8, 256), "dec3_res9_add": (16, 16, 16, 128),
        "dec2_res10_add": (32, 32, 32, 64), "dec1_up5": (64, 64, 64, 64),
        "dec1_conv2_relu": (64, 64, 64, 32), "head_conv3": (64, 64, 64, 1),
    },
}


@pytest.mark.parametrize("key", sorted(TABLE_SHAPES))
def test_stage_shapes_follow_the_paper_tables(key, published):
    model = published[key]
    found = {name: tuple(model.get_layer(name).output.shape[1:]) for name in TABLE_SHAPES[key]}
    assert found == TABLE_SHAPES[key]


def test_soft_mask_bottoms_out_at_the_bottleneck(published):
    """Att_i has soft-mask depth D = 0…3 (Table II "depth="), so every mask pools D + 1 times
    down to the bottleneck's 1/32 resolution."""
    model = published["ra_unet_2d_256"]
    names = _names(model)
    for level, index, depth in [(5, 1, 0), (4, 2, 1), (3, 3, 2), (2, 4, 3)]:
        prefix = f"skip{level}_att{index}"
        pools = [n for n in names if n.startswith(f"{prefix}_mask_pool")]
        assert len(pools) == depth + 1, prefix
        deepest = model.get_layer(f"{prefix}_mask_pool{depth + 1}")
        assert tuple(deepest.output.shape[1:3]) == (8, 8), prefix
        adds = [n for n in names if n.startswith(f"{prefix}_mask_add")]
        assert len(adds) == depth, prefix


def test_head_is_one_3x3_conv_with_the_sigmoid(published):
    model = published["ra_unet_2d_256"]
    head = model.layers[-1]
    assert head.name == "head_conv3" and isinstance(head, layers.Conv2D)
    assert head.kernel_size == (3, 3) and head.filters == 1
    assert keras.activations.serialize(head.activation) == "sigmoid"
    assert head.dtype_policy.compute_dtype == "float32"
    conv2 = model.get_layer("dec1_conv2_conv")
    assert conv2.kernel_size == (3, 3) and conv2.filters == 16
    assert model.get_layer("dec1_concat").input[1] is model.get_layer("enc1_conv1_relu").output


# --------------------------------------------------------------------------- one code path

def test_2d_and_3d_are_the_same_network(published):
    """RA-UNet-I and RA-UNet-II are one builder: same layer names in the same order, each
    layer the 2-D/3-D counterpart of the other, and a 3-D model of the 2-D widths."""
    two, three = published["ra_unet_2d_256"], published["ra_unet_3d_liver_224"]
    assert _names(two) == _names(three)
    kinds2 = [type(layer).__name__ for layer in two.layers]
    kinds3 = [type(layer).__name__.replace("3D", "2D") for layer in three.layers]
    assert kinds2 == kinds3
    # 219 convs (4 per residual unit × 52, 2 per soft mask × 4, Conv1-3), 15 poolings and
    # 15 up-samplings are 3-D layers in RA-UNet-II.
    assert sum(type(layer).__name__.endswith("3D") for layer in three.layers) == 249
    # Same widths at F = 8 in 2-D as RA-UNet-II: only the kernel volumes differ.
    widths2 = [getattr(layer, "filters", None) for layer in two.layers]
    widths3 = [getattr(layer, "filters", None) for layer in three.layers]
    assert [w * 2 if w not in (None, 1) else w for w in widths2] == widths3


def test_2d_and_3d_call_the_same_shared_blocks(small):
    """Both ranks go through keras_liver.blocks' residual unit and attention module, with
    the same names in the same order; the rank comes from the input."""
    (model2, calls2), (model3, calls3) = small[2], small[3]
    assert [c[:2] for c in calls2] == [c[:2] for c in calls3]
    assert {c[2] for c in calls2} == {2} and {c[2] for c in calls3} == {3}
    units = [name for kind, name, _ in calls2 if kind == "unit"]
    attention = [name for kind, name, _ in calls2 if kind == "attention"]
    assert attention == ["skip5_att1", "skip4_att2", "skip3_att3", "skip2_att4"]
    # 6 encoder/bottom + 4 decoder units, and 6 + 3·D in each attention module (D = 0…3).
    assert len(units) == 10 + sum(6 + 3 * d for d in range(4)) == 52
    # Every residual unit in the model came from the shared block (11 layers each).
    adds = [n for n in _names(model2) if n.endswith("_add") and "_mask_add" not in n]
    assert sorted(a[:-len("_add")] for a in adds) == sorted(units)


# --------------------------------------------------------------------------- reduced sizes

@pytest.mark.parametrize("rank", sorted(SMALL))
def test_runs_and_round_trips_at_a_reduced_size(rank, small, tmp_path):
    """Shared checks at 32×32(×32), base 2: shape, sigmoid range, explicit unique names,
    .keras → load_model gives the same outputs, and (2-D) to_json → model_from_json too.

    The JSON round trip runs once: it is the config half of the .keras round trip, which both
    ranks get, and each rebuild of a 641-layer model costs about 4 s on 2 cores."""
    model, _ = small[rank]
    shape = SMALL[rank][1]
    x = random_batch(shape)
    y = predict(model, x)
    assert y.shape == (2,) + shape[:-1] + (1,)
    check_output(model, x, y)
    check_layer_names(model)
    if rank == 2:
        check_json_round_trip(model, x, y)
    check_keras_save_load(model, x, y, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [2])  # 3-D runs the same blocks; exporting it adds ~50 s
def test_saved_model_serves_without_the_project(rank, small, tmp_path):
    model, _ = small[rank]
    x = random_batch(SMALL[rank][1])
    check_saved_model(model, x, predict(model, x), tmp_path, isolated=True)


def test_registry():
    assert MODELS["ra_unet_2d"] is RAUNet2D
    assert MODELS["ra_unet_3d"] is RAUNet3D
    assert MODELS["ra_unet_brain"] is RAUNetBrain


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("builder, shape, message", [
    (RAUNet2D, (250, 250, 1),
     "RAUNet2D needs spatial sizes divisible by 32; received input_shape=(250, 250, 1)"),
    (RAUNet2D, (16, 16, 1), "RAUNet2D needs spatial sizes divisible by 32"),
    (RAUNet2D, (256, 256, 32, 1), "RAUNet2D needs input_shape=(H, W, C); "),
    (RAUNet3D, (224, 224, 30, 1),
     "RAUNet3D needs spatial sizes divisible by 32; received input_shape=(224, 224, 30, 1)"),
    (RAUNet3D, (224, 224, 1), "RAUNet3D needs input_shape=(H, W, D, C); "),
    (RAUNetBrain, (64, 64, None, 4), "RAUNetBrain needs spatial sizes divisible by 32"),
])
def test_wrong_input_shape_raises(builder, shape, message):
    with pytest.raises(ModelInputError) as err:
        builder(input_shape=shape)
    assert message in str(err.value)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="base_filters"):
        RAUNet2D(base_filters=0)
    with pytest.raises(ValueError, match="num_classes"):
        RAUNet3D(num_classes=0)


# --------------------------------------------------------------------------- shared blocks

@pytest.mark.parametrize("rank", (2, 3))
@pytest.mark.parametrize("channels", (8, 16))
def test_preact_residual_unit(rank, channels):
    """Pre-activation bottleneck (Fig. 5): BN→ReLU→Conv 1×1 (C/4) → BN→ReLU→Conv 3×3 (C/4)
    → BN→ReLU→Conv 1×1 (C), Conv 1×1 shortcut even when widths match, add, no activation."""
    x = keras.Input((8,) * rank + (8,))
    model = keras.Model(x, apply_preact_residual_unit(x, channels, name="enc2_res1"))
    stages = [f"enc2_res1_conv{i}_{part}" for i in (1, 2, 3) for part in ("bn", "relu", "conv")]
    assert _names(model)[1:] == stages + ["enc2_res1_shortcut_conv", "enc2_res1_add"]
    convs = [model.get_layer(f"enc2_res1_conv{i}_conv") for i in (1, 2, 3)]
    assert [c.filters for c in convs] == [channels // 4, channels // 4, channels]
    assert [c.kernel_size for c in convs] == [(1,) * rank, (3,) * rank, (1,) * rank]
    assert all(isinstance(c, ndim.layer_class("conv", rank)) and c.use_bias for c in convs)
    shortcut = model.get_layer("enc2_res1_shortcut_conv")
    assert shortcut.input is x and shortcut.filters == channels
    assert model.layers[-1].name == "enc2_res1_add"       # nothing after the add
    q = channels // 4
    expected = (4 * 8 + 8 * q + q) + (4 * q + 3 ** rank * q * q + q) + (4 * q + q * channels
                                                                        + channels) \
        + (8 * channels + channels)
    assert model.count_params() == expected


@pytest.mark.parametrize("rank", (2, 3))
def test_attention_residual_module_gates_the_trunk(rank):
    """(1 + M) ⊙ T (Eq. 2) with M the soft mask's sigmoid and T the trunk, at depth 2."""
    x = keras.Input((8,) * rank + (4,))
    y = apply_attention_residual_module(x, depth=2, name="skip3_att3")
    model = keras.Model(x, y)
    names = _names(model)
    assert len(names) == 1 + 73 + 36 * 2                  # 11·(6 + 3D) + 3D + 7 layers
    assert [n for n in names if "_mask_pool" in n] == [f"skip3_att3_mask_pool{i}"
                                                      for i in (1, 2, 3)]
    assert all(isinstance(model.get_layer(n), ndim.layer_class("max_pool", rank))
               for n in names if "_mask_pool" in n)
    up = model.get_layer("skip3_att3_mask_up1")
    assert isinstance(up, ndim.layer_class("upsampling", rank))
    assert model.output_shape == (None,) + (8,) * rank + (4,)
    for conv in ("skip3_att3_mask_conv1", "skip3_att3_mask_conv2"):
        layer = model.get_layer(conv)
        assert layer.filters == 4 and keras.activations.serialize(layer.activation) == "linear"

    probe = keras.Model(x, [model.get_layer("skip3_att3_mask_sigmoid").output,
                            model.get_layer("skip3_att3_trunk2_add").output,
                            model.get_layer("skip3_att3_multiply").output])
    data = np.random.default_rng(rank).normal(size=(2,) + (8,) * rank + (4,)).astype("float32")
    mask, trunk, gated = (keras.ops.convert_to_numpy(t) for t in probe(data))
    assert mask.min() >= 0 and mask.max() <= 1
    np.testing.assert_allclose(gated, (1 + mask) * trunk, rtol=1e-6, atol=1e-6)
    assert (model.get_layer("skip3_att3_post1_conv1_bn").input
            is model.get_layer("skip3_att3_multiply").output)


def test_attention_residual_module_depth_zero():
    x = keras.Input((4, 4, 8))
    model = keras.Model(x, apply_attention_residual_module(x, depth=0, name="skip5_att1"))
    assert len(model.layers) == 1 + 73
    assert not any("_mask_add" in n or "_mask_skip" in n for n in _names(model))
    with pytest.raises(ValueError, match="depth"):
        apply_attention_residual_module(x, depth=-1, name="bad")
