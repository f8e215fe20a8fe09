"""MSA-UNet (SPEC §3): DropBlock, the four paper modules in isolation, the five Table 2
variants (published-size parameter counts, small-size runs and round trips)."""
from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from keras import layers
from numpy.lib.stride_tricks import sliding_window_view

from keras_liver.errors import ModelInputError
from keras_liver.layers import DropBlock
from keras_liver.models.msa_unet import (ABLATIONS, TABLE2_ROWS, MSAUNet, MSAUNetBaseline,
                                         MSAUNetWithAASPP, MSAUNetWithMSRB, MSAUNetWithRASM,
                                         apply_aaspp, apply_msam, apply_msrb, apply_rasm)
from model_harness import check_training_reduces_loss, run_model_checks

# --------------------------------------------------------------------------- counts by hand
# Every conv keeps its bias and is followed by BN (γ, β, moving mean, moving variance = 4 per
# channel), so a Conv k×k (c_in → c)-BN-ReLU unit holds k^2·c_in·c + c + 4c parameters.
#
# MSRB (Eq. 1), input width C, output width C':
#   b1 = Conv 3×3 (C → C')           9·C·C'  + 5C'
#   b2 = Conv 3×3 (C → C')           9·C·C'  + 5C'
#        Conv 3×3 (C' → C')          9·C'^2  + 5C'
#   fuse = Conv 1×1 (2C' → C')       2·C'^2  + 5C'
#   shortcut = Conv 1×1 (C → C')     C·C'    + 5C'
#   add, DropBlock                   0
#   total                            19·C·C' + 11·C'^2 + 25·C'
# (e.g. C = 3, C' = 8: 456 + 704 + 200 = 1,360 = count_params of the block, see
# test_msrb_structure_and_parameters.)
# MSAM (Eq. 2), width C: five Conv 3×3 (C → C)-BN-ReLU + one linear Conv 1×1 (C → C):
#   5·(9C^2 + 5C) + C^2 + C = 46·C^2 + 26·C.
# AASPP (Eq. 3), width C: Conv 1×1 (C^2 + 5C) + three dilated Conv 3×3 (3·(9C^2 + 5C)) +
#   four MSAM (4·(46C^2 + 26C)) + Conv 1×1 (4C → C) (4C^2 + 5C) = 216·C^2 + 129·C.
# In 3-D a 3×3×3 kernel has 27 taps instead of 9 (rank argument below).
# RASM (Eq. 4), F_high width C_h, level width C: MSRB(C_h + C → C) + MSRB(C → C) + MSAM(C)
#   + Conv 1×1 (C → C) + Conv 1×1 (C_h → C).


def conv_unit(c_in, c, k=3):
    return k * k * c_in * c + 5 * c


def msrb_params(c_in, c, rank=2):
    k = 3 ** rank                                       # taps of a 3×3 (3×3×3) kernel
    return (2 * k + 1) * c_in * c + (k + 2) * c * c + 25 * c    # 2-D: 19·C·C' + 11·C'^2 + 25C'


def msam_params(c, rank=2):
    return 5 * (3 ** rank * c * c + 5 * c) + c * c + c         # 2-D: 46·C^2 + 26·C


def aaspp_params(c):
    return 216 * c * c + 129 * c


def rasm_params(c_high, c):
    return (msrb_params(c_high + c, c) + msrb_params(c, c) + msam_params(c)
            + conv_unit(c, c, 1) + conv_unit(c_high, c, 1))


def plain_encoder_params(c_in, c):
    return conv_unit(c_in, c) + conv_unit(c, c)


def plain_decoder_params(c_high, c):
    upconv = 2 * 2 * c_high * c + c                    # Conv2DTranspose 2×2, linear, bias
    return upconv + conv_unit(2 * c, c) + conv_unit(c, c)


def expected_params(key, *, base=64, depth=4, channels=1):
    """Parameter count of an ``ABLATIONS`` variant from the module formulas above."""
    msrb = key in ("unet_msrb", "msa_unet")
    aaspp = key in ("unet_aaspp", "msa_unet")
    rasm = key in ("unet_rasm", "msa_unet")
    widths = [base * 2 ** k for k in range(depth + 1)]
    encoder = msrb_params if msrb else plain_encoder_params
    total, c_in = 0, channels
    for c in widths:                                     # enc1..enc{depth} and the bottom
        total += encoder(c_in, c)
        c_in = c
    if aaspp:
        total += aaspp_params(widths[-1])
    for level in range(depth, 0, -1):
        decoder = rasm_params if rasm else plain_decoder_params
        total += decoder(widths[level], widths[level - 1])
    return total + widths[0] + 1                         # head Conv 1×1 (1 filter), bias


# model.count_params() at the published configuration (512×512×1, F = 64, 4 poolings);
# equal to expected_params(key) — see test_published_parameter_counts.
FULL_SIZE_PARAMS = {
    "unet": 31_054_145,          # = keras_liver.models.ra_vnet.UNet (same layout)
    "unet_msrb": 40_841_217,
    "unet_aaspp": 257_678_657,
    "unet_rasm": 70_120_065,
    "msa_unet": 306_531_649,
}
MIN_SIDE = {"unet": 16, "unet_msrb": 16, "unet_aaspp": 128, "unet_rasm": 64, "msa_unet": 128}

# Every variant runs here: depth 2 needs sides divisible by 32 with AASPP (2**(2+3)). Kept
# this small because eager training costs ~1.8 s per step for the 321-layer MSA-UNet on
# 2 CPU cores (compiling the graph instead costs ~50 s).
SMALL = dict(input_shape=(32, 32, 1), base_filters=4, depth=2)


def _model(inputs, outputs):
    return keras.Model(inputs, outputs)


def _names(model):
    return [layer.name for layer in model.layers]


def _np(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- DropBlock

def _expected_drop_fraction(spatial, block, gamma):
    """Exact E[fraction zeroed] for one channel: unit u is zeroed unless none of the c(u)
    valid seeds whose block covers it fires, P = 1 − (1 − γ)^c(u)."""
    coverage = np.ones(spatial)
    for axis, n in enumerate(spatial):
        b = min(block, n)
        seeds = np.arange(b // 2, n - (b - 1) // 2)                # valid seed positions
        covers = np.zeros(n)
        for i in seeds:                                           # seed i zeroes i−b//2 …
            covers[i - b // 2: i - b // 2 + b] += 1
        shape = [1] * len(spatial)
        shape[axis] = n
        coverage = coverage * covers.reshape(shape)
    return float(np.mean(1.0 - (1.0 - gamma) ** coverage))


def _is_union_of_blocks(zero, block):
    """True when the boolean map ``zero`` (spatial axes only) is exactly a union of
    block×…×block cubes lying inside the map (a morphological opening leaves it unchanged)."""
    rank = zero.ndim
    windows = sliding_window_view(zero, (block,) * rank)
    anchors = windows.reshape(windows.shape[:rank] + (-1,)).all(axis=-1)
    opened = np.zeros_like(zero)
    for index in zip(*np.nonzero(anchors)):
        opened[tuple(slice(i, i + block) for i in index)] = True
    return np.array_equal(opened, zero)


def test_dropblock_drops_the_rate_in_expectation():
    shape = (8, 64, 64, 16)                     # 524,288 units, about 1,070 blocks
    layer = DropBlock(rate=0.1, block_size=7, seed=0)
    y = _np(layer(np.ones(shape, "float32"), training=True))
    fraction = float(np.mean(y == 0))
    gamma = layer.gamma((64, 64))
    # Eq. 1 of Ghiasi et al. with the valid-seed-region correction.
    assert gamma == pytest.approx(0.1 / 7 ** 2 * 64 ** 2 / (64 - 7 + 1) ** 2)
    expected = _expected_drop_fraction((64, 64), 7, gamma)
    assert 0.09 < expected < 0.1                # overlapping blocks drop a little less
    assert abs(fraction - expected) < 0.01, (fraction, expected)
    assert abs(fraction - 0.1) < 0.015, fraction


@pytest.mark.parametrize("shape, block, rate", [
    ((2, 32, 32, 4), 7, 0.2),
    ((2, 32, 32, 4), 4, 0.2),                   # even block: same-padding offsets
    ((2, 16, 16, 16, 2), 5, 0.2),               # 3-D: cubes
])
def test_dropblock_zeros_are_whole_blocks_and_mean_is_kept(shape, block, rate):
    layer = DropBlock(rate=rate, block_size=block, seed=1)
    y = _np(layer(np.ones(shape, "float32"), training=True))
    zero = y == 0
    assert zero.any() and not zero.all()
    for sample in range(shape[0]):
        for channel in range(shape[-1]):
            assert _is_union_of_blocks(zero[sample, ..., channel], block), (sample, channel)
    kept = y[~zero]
    np.testing.assert_allclose(kept, y.size / kept.size, rtol=1e-5)   # count(M)/count_ones(M)
    assert float(y.mean()) == pytest.approx(1.0, rel=1e-5)


def test_dropblock_keeps_the_mean_of_a_random_input():
    x = np.random.default_rng(0).random((8, 64, 64, 16), dtype=np.float32)
    y = _np(DropBlock(rate=0.1, block_size=7, seed=2)(x, training=True))
    assert np.mean(y == 0) > 0.08
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=0.02)


def test_dropblock_masks_differ_per_channel_and_sample():
    y = _np(DropBlock(rate=0.3, block_size=3, seed=3)(np.ones((2, 16, 16, 2), "float32"),
                                                      training=True))
    assert not np.array_equal(y[0, ..., 0], y[0, ..., 1])
    assert not np.array_equal(y[0], y[1])


def test_dropblock_block_larger_than_the_map_drops_whole_maps():
    # Block clipped to the 4×4 map: one valid seed, gamma = rate, all-or-nothing per channel.
    layer = DropBlock(rate=0.25, block_size=7, seed=4)
    assert layer.block_shape((4, 4)) == (4, 4) and layer.gamma((4, 4)) == pytest.approx(0.25)
    y = _np(layer(np.ones((16, 4, 4, 64), "float32"), training=True))
    per_map = (y == 0).reshape(16, 16, 64).mean(axis=1)
    assert set(np.unique(per_map)) <= {0.0, 1.0}
    assert abs(per_map.mean() - 0.25) < 0.05


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (2, 8, 8, 8, 3)])
def test_dropblock_is_the_identity_at_inference(shape):
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    layer = DropBlock(rate=0.5, block_size=3)
    np.testing.assert_array_equal(_np(layer(x)), x)
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)
    np.testing.assert_array_equal(_np(DropBlock(rate=0.0)(x, training=True)), x)
    inputs = keras.Input(shape[1:])
    model = _model(inputs, DropBlock(rate=0.5, block_size=3, name="enc1_msrb_dropblock")(inputs))
    np.testing.assert_array_equal(_np(model.predict(x, verbose=0)), x)
    assert model.count_params() == 0


def test_dropblock_config_round_trip():
    layer = DropBlock(rate=0.15, block_size=5, seed=7, name="enc1_msrb_dropblock")
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "block_size", "seed")} == \
        {"rate": 0.15, "block_size": 5, "seed": 7}
    clone = DropBlock.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, DropBlock) and revived.get_config() == config
    x = np.ones((2, 16, 16, 3), "float32")
    np.testing.assert_array_equal(_np(clone(x, training=True)), _np(layer(x, training=True)))


@pytest.mark.parametrize("kwargs", [dict(rate=1.0), dict(rate=-0.1), dict(block_size=0),
                                    dict(block_size=2.5)])
def test_dropblock_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="DropBlock"):
        DropBlock(**kwargs)


# --------------------------------------------------------------------------- MSRB

def test_msrb_structure_and_parameters():
    inputs = keras.Input((16, 16, 3))
    model = _model(inputs, apply_msrb(inputs, 8, name="enc2_msrb"))
    assert model.output_shape == (None, 16, 16, 8)
    get = model.get_layer
    for part, kernel in (("b1", 3), ("b2_1", 3), ("b2_2", 3), ("fuse", 1), ("shortcut", 1)):
        conv = get(f"enc2_msrb_{part}_conv")
        assert conv.filters == 8 and conv.kernel_size == (kernel, kernel), part
        assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal), part
        assert f"enc2_msrb_{part}_bn" in _names(model) and f"enc2_msrb_{part}_relu" in _names(model)
    assert get("enc2_msrb_b1_conv").input is inputs
    assert get("enc2_msrb_b2_2_conv").input is get("enc2_msrb_b2_1_relu").output   # f3(f3(x))
    assert [t.name for t in get("enc2_msrb_concat").input] == \
        [get("enc2_msrb_b1_relu").output.name, get("enc2_msrb_b2_2_relu").output.name]
    assert get("enc2_msrb_fuse_conv").input is get("enc2_msrb_concat").output
    assert get("enc2_msrb_shortcut_conv").input is inputs
    drop = get("enc2_msrb_dropblock")
    assert isinstance(drop, DropBlock) and (drop.block_size, drop.rate) == (7, 0.1)
    assert drop.input is get("enc2_msrb_add").output and drop.output is model.output
    assert model.count_params() == msrb_params(3, 8) == 1_360


def test_msrb_3d_and_options():
    inputs = keras.Input((8, 8, 8, 2))
    model = _model(inputs, apply_msrb(inputs, 4, dropblock_size=3, dropblock_rate=0.2,
                                      name="enc1_msrb"))
    assert model.output_shape == (None, 8, 8, 8, 4)
    assert isinstance(model.get_layer("enc1_msrb_b1_conv"), layers.Conv3D)
    drop = model.get_layer("enc1_msrb_dropblock")
    assert (drop.block_size, drop.rate) == (3, 0.2)
    assert model.count_params() == msrb_params(2, 4, rank=3)


# --------------------------------------------------------------------------- MSAM

@pytest.mark.parametrize("shape", [(16, 16, 4), (8, 16, 8, 2)])
def test_msam_gates_its_input_with_a_full_size_map(shape):
    inputs = keras.Input(shape)
    out = apply_msam(inputs, name="dec3_rasm_msam")
    mask_layer = keras.Model(inputs, out).get_layer("dec3_rasm_msam_mask_sigmoid")
    model = keras.Model(inputs, [out, mask_layer.output])
    x = np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
    y, mask = (_np(t) for t in model(x, training=False))
    assert y.shape == x.shape and mask.shape == x.shape     # same size as Fin (§ MSAM)
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.std() > 0
    np.testing.assert_allclose(y, x * mask, rtol=1e-6, atol=1e-6)          # Fin ⊗ σ(…)
    get = model.get_layer
    sides = np.array(shape[:-1])
    for k in (2, 4, 8):
        assert tuple(get(f"dec3_rasm_msam_pool{k}").output.shape[1:-1]) == tuple(sides // k)
    mask_conv = get("dec3_rasm_msam_mask_conv")
    assert mask_conv.kernel_size == (1,) * len(sides) and mask_conv.filters == shape[-1]
    assert mask_conv.activation.__name__ == "linear"
    assert get("dec3_rasm_msam_p4_add").input[0] is get("dec3_rasm_msam_pool4").output
    assert get("dec3_rasm_msam_p2_add").input[0] is get("dec3_rasm_msam_pool2").output
    if len(sides) == 2:
        assert get("dec3_rasm_msam_p8_up").interpolation == "bilinear"
    assert model.count_params() == msam_params(shape[-1], rank=len(sides))


def test_msam_needs_sides_divisible_by_8():
    with pytest.raises(ModelInputError, match="divisible by 8"):
        apply_msam(keras.Input((12, 12, 4)), name="bottom_aaspp_rate1_msam")


# --------------------------------------------------------------------------- AASPP, RASM

def test_aaspp_structure_and_parameters():
    inputs = keras.Input((8, 8, 16))
    model = _model(inputs, apply_aaspp(inputs, name="bottom_aaspp"))
    assert model.output_shape == (None, 8, 8, 16)
    for rate in (1, 2, 4, 8):
        conv = model.get_layer(f"bottom_aaspp_rate{rate}_conv")
        assert conv.dilation_rate == (rate, rate) and conv.filters == 16
        assert conv.kernel_size == ((1, 1) if rate == 1 else (3, 3))
        assert conv.input is inputs
        assert (model.get_layer(f"bottom_aaspp_rate{rate}_msam_mul").output
                in model.get_layer("bottom_aaspp_concat").input)
    assert model.get_layer("bottom_aaspp_concat").output.shape[-1] == 64
    fuse = model.get_layer("bottom_aaspp_fuse_conv")
    assert fuse.kernel_size == (1, 1) and fuse.filters == 16
    assert model.count_params() == aaspp_params(16)


def test_rasm_structure_and_parameters():
    high, low = keras.Input((4, 4, 16)), keras.Input((8, 8, 8))
    model = keras.Model([high, low], apply_rasm(high, low, name="dec3_rasm"))
    assert model.output_shape == (None, 8, 8, 8)
    get = model.get_layer
    up = get("dec3_rasm_up")
    assert up.interpolation == "bilinear" and up.input is high
    concat = get("dec3_rasm_concat")
    assert concat.input[0] is up.output and concat.input[1] is low      # [b2(F_high); F_low]
    assert get("dec3_rasm_msrb1_b1_conv").input.shape[-1] == 24
    assert get("dec3_rasm_msrb2_b1_conv").input is get("dec3_rasm_msrb1_dropblock").output
    assert get("dec3_rasm_msam_pool2").input is get("dec3_rasm_msrb2_dropblock").output
    assert get("dec3_rasm_low_conv").input is low
    assert get("dec3_rasm_high_conv").input is up.output
    add = get("dec3_rasm_add")
    assert [t.name for t in add.input] == [get("dec3_rasm_low_relu").output.name,
                                           get("dec3_rasm_high_relu").output.name,
                                           get("dec3_rasm_msam_mul").output.name]
    assert model.count_params() == rasm_params(16, 8)


# --------------------------------------------------------------------------- the variants

def test_ablation_table_names_every_builder():
    assert ABLATIONS == {"unet": MSAUNetBaseline, "unet_msrb": MSAUNetWithMSRB,
                         "unet_aaspp": MSAUNetWithAASPP, "unet_rasm": MSAUNetWithRASM,
                         "msa_unet": MSAUNet}
    assert list(TABLE2_ROWS) == ["UNet", "UNet + MSRB", "UNet + AASPP", "UNet + RASM",
                                 "MSA-UNet"]                           # the paper's row labels
    assert list(TABLE2_ROWS.values()) == list(ABLATIONS)


@pytest.fixture(scope="module")
def published():
    """Each variant built once at its published configuration; keeps only what the tests read
    (the MSA-UNet holds 306 M parameters, so the models are not kept).

    Counting needs shapes only: He-normal draws truncated normals for 700 M weights over the
    five builds (~30 s on 2 CPU cores), so the initialiser returns zeros here; the builders and
    every shape are unchanged."""
    info = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.initializers.VarianceScaling, "__call__",
                   lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))
        for key, builder in ABLATIONS.items():
            keras.backend.clear_session()
            model = builder()                   # defaults = published configuration
            info[key] = dict(params=model.count_params(), input_shape=model.input_shape,
                             output_shape=model.output_shape, names=_names(model),
                             kinds={type(layer).__name__ for layer in model.layers})
            del model
            gc.collect()
    keras.backend.clear_session()
    return info


@pytest.mark.parametrize("key", sorted(ABLATIONS))
def test_published_parameter_counts(key, published):
    built = published[key]
    assert built["input_shape"] == (None, 512, 512, 1)
    assert built["output_shape"] == (None, 512, 512, 1)
    assert built["params"] == FULL_SIZE_PARAMS[key] == expected_params(key)


def test_published_variants_differ_where_table_2_says(published):
    def modules(key):
        names = published[key]["names"]
        return {"msrb": sum(n.endswith("_dropblock") for n in names),
                "msam": sum(n.endswith("_msam_mul") for n in names),
                "aaspp": any(n.startswith("bottom_aaspp") for n in names),
                "rasm": sum(n.endswith("_rasm_add") for n in names),
                "upconv": sum(n.endswith("_upconv") for n in names)}

    # MSRBs: 4 encoder levels + bottom; two in each RASM. MSAMs: 4 in AASPP, 1 per RASM.
    assert modules("unet") == dict(msrb=0, msam=0, aaspp=False, rasm=0, upconv=4)
    assert modules("unet_msrb") == dict(msrb=5, msam=0, aaspp=False, rasm=0, upconv=4)
    assert modules("unet_aaspp") == dict(msrb=0, msam=4, aaspp=True, rasm=0, upconv=4)
    assert modules("unet_rasm") == dict(msrb=8, msam=4, aaspp=False, rasm=4, upconv=0)
    assert modules("msa_unet") == dict(msrb=13, msam=8, aaspp=True, rasm=4, upconv=0)
    names = set(published["msa_unet"]["names"])
    for expected in ("enc2_msrb_b1_conv", "enc4_pool", "bottom_msrb_dropblock",
                     "bottom_aaspp_rate4_conv", "bottom_aaspp_rate8_msam_mask_sigmoid",
                     "bottom_aaspp_fuse_relu", "dec3_rasm_msam_mul", "dec4_rasm_msrb2_add",
                     "dec1_rasm_add", "head_conv", "head_sigmoid"):
        assert expected in names, expected
    assert "DropBlock" in published["msa_unet"]["kinds"]
    assert "DropBlock" not in published["unet_aaspp"]["kinds"]


def test_msa_unet_widths_initialisers_and_head():
    model = MSAUNet(input_shape=(128, 128, 1), base_filters=4)    # published depth, F = 4
    widths = [model.get_layer(f"enc{k}_msrb_fuse_conv").filters for k in (1, 2, 3, 4)]
    assert widths == [4, 8, 16, 32] and model.get_layer("bottom_msrb_fuse_conv").filters == 64
    assert model.get_layer("bottom_aaspp_fuse_conv").filters == 64
    assert model.get_layer("bottom_aaspp_rate8_msam_pool8").output.shape[1:3] == (1, 1)
    assert [model.get_layer(f"dec{k}_rasm_add").output.shape[-1] for k in (4, 3, 2, 1)] == \
        [32, 16, 8, 4]
    assert model.get_layer("head_conv").kernel_size == (1, 1)
    assert model.get_layer("head_sigmoid").dtype_policy.compute_dtype == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert convs and all(isinstance(c.kernel_initializer, keras.initializers.HeNormal)
                         for c in convs)
    assert model.count_params() == expected_params("msa_unet", base=4)


@pytest.mark.slow
def test_msa_unet_model_checks(tmp_path):
    """Shared checks at 128×128×1 (the smallest input of the published depth 4), F = 4;
    the SavedModel is served where keras_liver cannot be imported."""
    model = run_model_checks(MSAUNet, (128, 128, 1), tmp_path=tmp_path, base_filters=4,
                             isolated_saved_model=True)
    assert model.name == "msa_unet" and model.output_shape == (None, 128, 128, 1)


def test_baseline_model_checks(tmp_path):
    model = run_model_checks(MSAUNetBaseline, (64, 64, 1), tmp_path=tmp_path, base_filters=4)
    assert model.name == "msa_unet_baseline"
    assert model.count_params() == expected_params("unet", base=4)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(ABLATIONS))
def test_training_reduces_loss(key):
    keras.utils.set_random_seed(0)
    model = ABLATIONS[key](**SMALL)
    assert model.count_params() == expected_params(key, base=4, depth=2)
    check_training_reduces_loss(model, steps=5)


def test_multiclass_softmax_head():
    model = MSAUNet(input_shape=(32, 32, 1), base_filters=2, depth=2, num_classes=3)
    assert model.output_shape == (None, 32, 32, 3)
    assert model.get_layer("head_softmax").dtype_policy.compute_dtype == "float32"
    y = _np(model(np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("key", sorted(ABLATIONS))
def test_smallest_input_per_variant(key):
    side = MIN_SIDE[key]
    builder = ABLATIONS[key]
    model = builder(input_shape=(side, side, 1), base_filters=2)
    assert model.output_shape == (None, side, side, 1)
    with pytest.raises(ModelInputError, match=f"divisible by {side};"):
        builder(input_shape=(side // 2, side // 2, 1), base_filters=2)


@pytest.mark.parametrize("builder, shape, message", [
    (MSAUNet, (64, 64, 1),
     "MSAUNet needs spatial sizes divisible by 128; received input_shape=(64, 64, 1) "
     "(4 poolings bring the input to 1/16, where the MSAM inside AASPP max-pools by 8; "
     "the smallest input is 128×128)"),
    (MSAUNet, (512, 500, 1), "divisible by 128"),
    (MSAUNetWithRASM, (96, 96, 1), "MSAUNetWithRASM needs spatial sizes divisible by 64; "
                                   "received input_shape=(96, 96, 1) (the MSAM of the deepest "
                                   "RASM (dec4, 1/8 of the input) max-pools by 8"),
    (MSAUNetBaseline, (40, 40, 1), "MSAUNetBaseline needs spatial sizes divisible by 16; "
                                   "received input_shape=(40, 40, 1) (4 poolings; the "
                                   "smallest input is 16×16)"),
    (MSAUNet, (128, 128, 16, 1), "MSAUNet needs input_shape=(H, W, C)"),
    (MSAUNet, (None, 128, 1), "divisible by 128"),
])
def test_wrong_input_shape_raises(builder, shape, message):
    with pytest.raises(ModelInputError) as err:
        builder(input_shape=shape, base_filters=2)
    assert message in str(err.value)


def test_depth_changes_the_divisor():
    with pytest.raises(ModelInputError, match=r"divisible by 32; .*1/4, where the MSAM"):
        MSAUNet(input_shape=(48, 48, 1), base_filters=2, depth=2)
    assert MSAUNet(input_shape=(32, 32, 1), base_filters=2, depth=2).output_shape == \
        (None, 32, 32, 1)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="depth"):
        MSAUNet(input_shape=(128, 128, 1), depth=0)
    with pytest.raises(ValueError, match="base_filters"):
        MSAUNetBaseline(input_shape=(64, 64, 1), base_filters=0)
    with pytest.raises(ValueError, match="DropBlock rate"):
        MSAUNetWithMSRB(input_shape=(64, 64, 1), base_filters=2, dropblock_rate=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        MSAUNet(input_shape=(128, 128, 1), base_filters=2, num_classes=0)


def test_every_variant_is_registered_by_name():
    from keras_liver.models import MODELS, get_model

    registry = {"msa_unet": "msa_unet", "unet": "msa_unet_baseline",
                "unet_msrb": "msa_unet_with_msrb", "unet_aaspp": "msa_unet_with_aaspp",
                "unet_rasm": "msa_unet_with_rasm"}
    assert {key: MODELS[name] for key, name in registry.items()} == ABLATIONS
    model = get_model("msa_unet_with_msrb", input_shape=[32, 32, 1], base_filters=2, depth=2)
    assert model.name == "msa_unet_with_msrb" and model.output_shape == (None, 32, 32, 1)
