"""Rank-generic blocks and layers: the same code path in 2-D and 3-D."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import (apply_channel_attention, apply_conv_bn, apply_conv_bn_relu,
                                apply_convlstm_fusion, apply_head, apply_residual_block)
from keras_liver.errors import ModelInputError
from keras_liver.layers import ChannelAttention, LinearUpSampling, StackSequence
from model_harness import run_model_checks

RANKS = (2, 3)
SPATIAL = {2: (8, 8), 3: (8, 8, 4)}


def _input(rank, channels, spatial=None):
    return keras.Input(tuple(spatial or SPATIAL[rank]) + (channels,))


def _names(model):
    return [layer.name for layer in model.layers]


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- ndim

@pytest.mark.parametrize("rank", RANKS)
def test_ndim_maps_rank_to_classes(rank):
    x = _input(rank, 3)
    assert ndim.rank_of(x) == rank
    expected = {"conv": "Conv{}D", "conv_transpose": "Conv{}DTranspose",
                "max_pool": "MaxPooling{}D", "avg_pool": "AveragePooling{}D",
                "upsampling": "UpSampling{}D", "global_avg_pool": "GlobalAveragePooling{}D",
                "spatial_dropout": "SpatialDropout{}D", "conv_lstm": "ConvLSTM{}D"}
    for kind, pattern in expected.items():
        assert ndim.layer_class(kind, rank).__name__ == pattern.format(rank)
    assert isinstance(ndim.upsampling(rank, 2), ndim.layer_class("upsampling", rank))
    linear = ndim.upsampling(rank, 2, interpolation="bilinear")
    if rank == 2:
        assert isinstance(linear, layers.UpSampling2D) and linear.interpolation == "bilinear"
    else:
        assert isinstance(linear, LinearUpSampling) and linear.size == (2, 2, 2)


def test_ndim_refuses_other_ranks():
    with pytest.raises(ValueError, match="spatial rank must be 2 or 3"):
        ndim.layer_class("conv", 1)
    with pytest.raises(ValueError, match="received a tensor of shape"):
        ndim.rank_of(keras.Input((8, 3)))
    with pytest.raises(ValueError, match="interpolation"):
        ndim.upsampling(2, 2, interpolation="cubic")


def test_check_input_shape_messages():
    assert ndim.check_input_shape("Net", [64, 64, 1], rank=2, divisor=16) == (64, 64, 1)
    assert ndim.check_input_shape("Net", (64, 64, 32, 1), rank=(2, 3), divisor=16)
    with pytest.raises(ModelInputError, match=r"^Net needs spatial sizes divisible by 16; "
                                              r"received input_shape=\(250, 250, 1\)$"):
        ndim.check_input_shape("Net", (250, 250, 1), rank=2, divisor=16)
    with pytest.raises(ModelInputError, match=r"Net needs input_shape=\(H, W, D, C\)"):
        ndim.check_input_shape("Net", (64, 64, 1), rank=3, divisor=16)


# --------------------------------------------------------------------------- conv units

@pytest.mark.parametrize("rank", RANKS)
def test_conv_bn_relu(rank):
    x = _input(rank, 3)
    y = apply_conv_bn_relu(x, 5, 3, strides=2, name="enc1_conv1")
    z = apply_conv_bn(y, 6, 1, name="enc1_proj")
    model = keras.Model(x, z)
    assert _names(model)[1:] == ["enc1_conv1_conv", "enc1_conv1_bn", "enc1_conv1_relu",
                                 "enc1_proj_conv", "enc1_proj_bn"]
    assert isinstance(model.get_layer("enc1_conv1_conv"), ndim.layer_class("conv", rank))
    assert model.output_shape == (None,) + tuple(s // 2 for s in SPATIAL[rank]) + (6,)


@pytest.mark.parametrize("rank", RANKS)
def test_residual_block_shortcuts(rank):
    same = _input(rank, 4)
    model = keras.Model(same, apply_residual_block(same, 4, name="enc1_res"))
    assert not any("shortcut" in n for n in _names(model))
    assert model.get_layer("enc1_res_add").input[1] is same
    assert model.output_shape[1:] == SPATIAL[rank] + (4,)

    wider = _input(rank, 2)
    model = keras.Model(wider, apply_residual_block(wider, 4, name="enc1_res"))
    shortcut = model.get_layer("enc1_res_shortcut_conv")
    assert shortcut.kernel_size == (1,) * rank and shortcut.filters == 4
    assert "enc1_res_shortcut_bn" in _names(model) and "enc1_res_out" in _names(model)
    assert "enc1_res_conv2_relu" not in _names(model)      # ReLU comes after the add

    down = keras.Model(wider, apply_residual_block(wider, 4, strides=2, avg_down=True,
                                                   name="stage2_block1"))
    assert isinstance(down.get_layer("stage2_block1_shortcut_pool"),
                      ndim.layer_class("avg_pool", rank))
    assert down.get_layer("stage2_block1_shortcut_conv").strides == (1,) * rank
    assert down.output_shape[1:] == tuple(s // 2 for s in SPATIAL[rank]) + (4,)


# --------------------------------------------------------------------------- ConvLSTM fusion

@pytest.mark.parametrize("rank", RANKS)
def test_convlstm_fusion(rank):
    a, b = _input(rank, 3), _input(rank, 3)
    model = keras.Model([a, b], apply_convlstm_fusion(a, b, 5, name="dec1_ar"))
    stack = model.get_layer("dec1_ar_stack")
    assert stack.output.shape == (None, 2) + SPATIAL[rank] + (3,)
    lstm = model.get_layer("dec1_ar_convlstm")
    assert isinstance(lstm, ndim.layer_class("conv_lstm", rank))
    assert not lstm.return_sequences and lstm.padding == "same"
    assert model.output_shape == (None,) + SPATIAL[rank] + (5,)
    with pytest.raises(ValueError, match="one shape"):
        apply_convlstm_fusion(a, _input(rank, 4), 5, name="bad")


# --------------------------------------------------------------------------- heads

@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("num_classes, activation", [(1, "sigmoid"), (3, "softmax")])
def test_head_is_float32_under_mixed_precision(rank, num_classes, activation):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        x = _input(rank, 4)
        model = keras.Model(x, apply_head(x, num_classes, name="head"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert _names(model)[1:] == ["head_conv", f"head_{activation}"]
    assert model.get_layer("head_conv").compute_dtype == "float16"
    y = model(np.random.default_rng(0).random((2,) + SPATIAL[rank] + (4,), dtype=np.float32))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert y.shape[-1] == num_classes


# --------------------------------------------------------------------------- channel attention

def _numpy_channel_attention(x, beta):
    a = x.reshape(x.shape[0], -1, x.shape[-1]).astype(np.float64)
    energy = np.einsum("bny,bnx->byx", a, a)
    g = np.exp(energy - energy.max(-1, keepdims=True))
    g /= g.sum(-1, keepdims=True)
    return (beta * np.einsum("byx,bnx->bny", g, a) + a).reshape(x.shape)


@pytest.mark.parametrize("rank", RANKS)
def test_channel_attention_matches_numpy(rank):
    x = _input(rank, 6, SPATIAL[rank][:-1] + (3,))
    model = keras.Model(x, apply_channel_attention(x, name="skip1_ca"))
    data = np.random.default_rng(rank).normal(size=(2,) + tuple(x.shape[1:])).astype("float32")
    np.testing.assert_array_equal(_np(model(data)), data)       # β = 0 at initialisation
    layer = model.get_layer("skip1_ca")
    layer.beta.assign(-0.3)
    np.testing.assert_allclose(_np(model(data)), _numpy_channel_attention(data, -0.3),
                               rtol=1e-5, atol=1e-5)


def test_channel_attention_config_and_mixed_precision():
    layer = ChannelAttention(beta_initializer="ones", name="ca")
    clone = ChannelAttention.from_config(layer.get_config())
    assert clone.name == "ca" and isinstance(clone.beta_initializer, keras.initializers.Ones)
    data = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype("float32")
    reference = _np(ChannelAttention(beta_initializer="ones")(data))
    mixed = ChannelAttention(beta_initializer="ones", dtype="mixed_float16")
    out = mixed(data)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert mixed.beta.dtype == "float32"
    np.testing.assert_allclose(_np(out).astype("float32"), reference, rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------- linear up-sampling

def _numpy_linear_upsample(x, sizes):
    for axis, s in enumerate(sizes, start=1):
        n = x.shape[axis]
        src = (np.arange(n * s) + 0.5) / s - 0.5          # half-pixel centres, edges clamped
        x = np.apply_along_axis(lambda v: np.interp(src, np.arange(n), v), axis, x)
    return x


def test_linear_upsampling_2d_equals_keras_bilinear():
    data = np.random.default_rng(0).random((2, 5, 7, 3), dtype=np.float32)
    expected = _np(layers.UpSampling2D(2, interpolation="bilinear")(data))
    np.testing.assert_allclose(_np(LinearUpSampling(2)(data)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(expected, _numpy_linear_upsample(data, (2, 2)), atol=1e-6)


@pytest.mark.parametrize("size", [2, (2, 2, 1), (3, 2, 2)])
def test_linear_upsampling_3d_is_trilinear(size):
    data = np.random.default_rng(1).random((2, 4, 3, 5, 2), dtype=np.float32)
    layer = LinearUpSampling(size)
    out = _np(layer(data))
    sizes = (size,) * 3 if isinstance(size, int) else size
    np.testing.assert_allclose(out, _numpy_linear_upsample(data, sizes), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 4, 3, 5, 2)) == (None, 4 * sizes[0], 3 * sizes[1],
                                                               5 * sizes[2], 2)
    clone = LinearUpSampling.from_config(layer.get_config())
    assert clone.size == layer.size


def test_stack_sequence():
    a = np.ones((2, 3, 4, 5, 1), "float32")
    b = np.zeros_like(a)
    layer = StackSequence(axis=1)
    out = _np(layer([a, b]))
    assert out.shape == (2, 2, 3, 4, 5, 1) and out[:, 0].min() == 1 and out[:, 1].max() == 0
    assert layer.compute_output_shape([a.shape, b.shape]) == out.shape
    assert StackSequence.from_config(layer.get_config()).axis == 1


# --------------------------------------------------------------------------- a 3-D model

def _tiny_3d_model(input_shape=(8, 8, 4, 1), num_classes=2, name="blocks3d"):
    x = inputs = keras.Input(input_shape, name="input")
    x = apply_conv_bn_relu(x, 8, name="enc1_conv1")
    skip = apply_residual_block(x, 8, name="enc1_res")
    x = ndim.max_pool(3, 2, name="enc1_pool")(skip)
    x = apply_residual_block(x, 8, strides=1, name="bottom_res")
    x = apply_channel_attention(x, name="bottom_ca")
    x = ndim.upsampling(3, 2, interpolation="trilinear", name="dec1_up")(x)
    x = apply_convlstm_fusion(skip, x, 4, name="dec1_fuse")
    outputs = apply_head(x, num_classes, name="head")
    return keras.Model(inputs, outputs, name=name)


def test_blocks_compose_and_serialise_in_3d(tmp_path):
    model = run_model_checks(_tiny_3d_model, (8, 8, 4, 1), tmp_path=tmp_path)
    assert model.output_shape == (None, 8, 8, 4, 2)
    assert isinstance(model.get_layer("dec1_fuse_convlstm"), layers.ConvLSTM3D)
