"""BADA (SPEC §4): the dual gated attention module in isolation, every variant of Tables 1–4 at
the published size with its parameter count pinned, the shared model checks at a small size,
training, attention maps and input errors."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from keras_liver.errors import ModelInputError
from keras_liver.models.bada import (BADA, NOT_BUILT, TABLE_ROWS, VARIANTS, BADAAttentionUNet,
                                     BADASpatialOnly, BADAUNet, apply_dual_attention,
                                     attention_map_layers, attention_maps, upsampling_plan)
from model_harness import check_training_reduces_loss, run_model_checks

SMALL = (64, 64, 1)

# `model.count_params()` at the published configuration (512×512×1, F = 32, 10 classes),
# BN moving statistics included. Each also equals `expected_params` below, a sum of per-block
# formulas written independently of the builder. Hand check of one block: the dual attention
# at level 4 (C = 256) holds W_l, W_h and the aggregation conv (3·(256² + 256) = 197,376),
# W_c (2·256·256 + 256 = 131,328) with its BN (4·256 = 1,024) and W_f (256 + 1 = 257):
# 329,985 = 5C² + 9C + 1 — summed from the layers in `test_published_bada_architecture`.
FULL_SIZE_PARAMS = {
    "bada": 8_575_854,
    "bada_spatial_only": 8_575_854,     # the semantic branch has no weights (Eq. 5–7)
    "bada_semantic_only": 8_398_890,
    "bada_fcn_1up": 9_138_091,
    "bada_fcn_2up": 8_226_988,
    "bada_fcn_3up": 8_459_565,
    "bada_unet": 7_771_594,
    "bada_resunet": 8_136_330,
    "bada_attention_unet": 7_860_089,
    "bada_attention_resunet": 8_224_825,
}
# Variant → (backbone, attention, up-samplings): what each row of Tables 1–4 is, by our reading.
CONFIG = {
    "bada": ("resunet_d", "dual", 4),
    "bada_spatial_only": ("resunet_d", "spatial", 4),
    "bada_semantic_only": ("resunet_d", "semantic", 4),
    "bada_fcn_1up": ("resunet_d", "dual", 1),
    "bada_fcn_2up": ("resunet_d", "dual", 2),
    "bada_fcn_3up": ("resunet_d", "dual", 3),
    "bada_unet": ("unet", "none", 4),
    "bada_resunet": ("resunet_d", "none", 4),
    "bada_attention_unet": ("unet", "gate", 4),
    "bada_attention_resunet": ("resunet_d", "gate", 4),
}


# --------------------------------------------------------------------------- formulas

def conv(k, cin, cout):
    return k * k * cin * cout + cout            # 2-D kernel + bias


def bn(c):
    return 4 * c                                # γ, β, moving mean, moving variance


def residual_block(cin, c, project):
    return conv(3, cin, c) + bn(c) + conv(3, c, c) + bn(c) + (conv(1, cin, c) + bn(c)
                                                              if project else 0)


def unet_level(cin, c):
    return conv(3, cin, c) + bn(c) + conv(3, c, c) + bn(c)


def dual_attention(c, spatial=True, semantic=True):
    del semantic                                # GAP + sigmoid: no weights
    return 3 * conv(1, c, c) + ((conv(1, 2 * c, c) + bn(c) + conv(1, c, 1)) if spatial else 0)


def gate(c):
    f_int = c // 2
    return 2 * (conv(1, c, f_int) + bn(f_int)) + conv(1, f_int, 1) + bn(1)


def expected_params(key, base=32, classes=10, channels=1):
    backbone, attention, ups = CONFIG[key]
    widths = [base * 2 ** k for k in range(5)]
    if backbone == "resunet_d":
        total = conv(3, channels, base) + bn(base) + residual_block(base, base, False)
        total += sum(residual_block(widths[k], widths[k + 1], True) for k in range(4))
    else:
        total = unet_level(channels, base) + sum(unet_level(widths[k], widths[k + 1])
                                                 for k in range(4))
    x_width = widths[4]
    for level, factor in upsampling_plan(ups):
        c = widths[level - 1]
        total += factor * factor * x_width * c + c                     # transposed conv
        if attention in ("dual", "spatial", "semantic"):
            total += dual_attention(c, attention != "semantic", attention != "spatial")
        elif attention == "gate" and level > 1:
            total += gate(c)
        total += residual_block(2 * c, c, True) if backbone == "resunet_d" else unet_level(2 * c, c)
        x_width = c
    return total + conv(1, base, classes)


# --------------------------------------------------------------------------- the module

def _conv1x1(layer, y):
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return y @ kernel.reshape(kernel.shape[-2:]) + bias


def _bn(layer, y):
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return gamma * (y - mean) / np.sqrt(var + layer.epsilon) + beta


def _sigmoid(y):
    return 1.0 / (1.0 + np.exp(-y))


def _module(spatial_size, channels, **kwargs):
    low, high = keras.Input(spatial_size + (channels,)), keras.Input(spatial_size + (channels,))
    out = apply_dual_attention(low, high, name="dec2_dual_attention", **kwargs)
    return keras.Model([low, high], out), low, high


@pytest.mark.parametrize("spatial_size", [(8, 6), (4, 6, 5)], ids=["2d", "3d"])
def test_dual_attention_follows_eq_1_to_7(spatial_size):
    rng = np.random.default_rng(5)
    c = 6
    module, _, _ = _module(spatial_size, c)
    get = module.get_layer
    psi_s_t = get("dec2_dual_attention_spatial_sigmoid").output
    psi_c_t = get("dec2_dual_attention_semantic_sigmoid").output
    model = keras.Model(module.inputs, [module.output, psi_s_t, psi_c_t])
    # Random weights, BN statistics included, so the NumPy reference sees every term.
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               if "variance" in w.path else
                               rng.normal(0, 0.5, w.shape).astype("float32")
                               for w in layer.weights])
    f_l = rng.normal(size=(2,) + spatial_size + (c,)).astype("float32")
    f_h = rng.normal(size=(2,) + spatial_size + (c,)).astype("float32")
    out, psi_s, psi_c = (keras.ops.convert_to_numpy(t) for t in model([f_l, f_h], training=False))

    # Spatial map: one channel at the feature map's size, in [0, 1]; semantic map: one value
    # per channel, in [0.5, 1) since GAP follows a ReLU (Eq. 6).
    assert psi_s.shape == f_l.shape[:-1] + (1,)
    assert psi_s.min() >= 0.0 and psi_s.max() <= 1.0 and psi_s.std() > 0
    assert psi_c.shape == (2,) + (1,) * len(spatial_size) + (c,)
    assert psi_c.min() >= 0.5 and psi_c.max() <= 1.0 and psi_c.std() > 0
    assert out.shape == f_l.shape

    lp = _conv1x1(get("dec2_dual_attention_wl_conv"), f_l)                     # W_l F_l + b_l
    hp = _conv1x1(get("dec2_dual_attention_wh_conv"), f_h)                     # W_h F_h + b_h
    fuse = np.maximum(np.concatenate([lp, hp], axis=-1), 0.0)                  # Eq. 1
    fuse = np.maximum(_bn(get("dec2_dual_attention_spatial_wc_bn"),            # Eq. 2
                          _conv1x1(get("dec2_dual_attention_spatial_wc_conv"), fuse)), 0.0)
    ref_s = _sigmoid(_conv1x1(get("dec2_dual_attention_spatial_wf_conv"), fuse))  # Eq. 3
    axes = tuple(range(1, 1 + len(spatial_size)))
    ref_c = _sigmoid(np.maximum(lp + hp, 0.0).mean(axis=axes, keepdims=True))  # Eq. 5–6
    ref_out = _conv1x1(get("dec2_dual_attention_aggregate_conv"),              # Eq. 4, 7, §3.4
                       ref_s * f_l + ref_c * f_l)
    np.testing.assert_allclose(psi_s, ref_s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(psi_c, ref_c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)


def test_wl_and_wh_are_shared_by_both_branches():
    c = 8
    module, low, high = _module((8, 8), c)
    get = module.get_layer
    wl, wh = get("dec2_dual_attention_wl_conv"), get("dec2_dual_attention_wh_conv")
    # One W_l and one W_h in the whole module, each applied once…
    convs_on_inputs = [layer.name for layer in module.layers
                       if isinstance(layer, layers.Conv2D)
                       and (layer.input is low or layer.input is high)]
    assert sorted(convs_on_inputs) == sorted([wl.name, wh.name])
    assert len(wl._inbound_nodes) == 1 and len(wh._inbound_nodes) == 1
    # …and the same two tensors feed the spatial concat (Eq. 1) and the semantic sum (Eq. 5).
    concat = get("dec2_dual_attention_spatial_concat")
    add = get("dec2_dual_attention_semantic_add")
    assert concat.input[0] is wl.output and concat.input[1] is wh.output
    assert add.input[0] is wl.output and add.input[1] is wh.output
    # Both branches weight F_l itself.
    assert get("dec2_dual_attention_spatial_multiply").input[0] is low
    assert get("dec2_dual_attention_semantic_multiply").input[0] is low
    # Weights: W_l and W_h counted once (separate copies per branch would add 2(C² + C)).
    assert module.count_params() == dual_attention(c) == 5 * c * c + 9 * c + 1
    assert wl.kernel.shape == (1, 1, c, c) and wh.kernel.shape == (1, 1, c, c)
    assert get("dec2_dual_attention_spatial_wf_conv").filters == 1


def test_one_branch_modules_and_errors():
    c = 4
    spatial, _, _ = _module((8, 8), c, semantic=False)
    names = {layer.name for layer in spatial.layers}
    assert "dec2_dual_attention_spatial_sigmoid" in names
    assert not any("semantic" in n or "aggregate_add" in n for n in names)
    assert spatial.count_params() == dual_attention(c, semantic=False)
    semantic, _, _ = _module((8, 8), c, spatial=False)
    names = {layer.name for layer in semantic.layers}
    assert "dec2_dual_attention_semantic_sigmoid" in names
    assert not any("spatial" in n or "aggregate_add" in n for n in names)
    assert semantic.count_params() == dual_attention(c, spatial=False) == 3 * (c * c + c)
    with pytest.raises(ValueError, match="spatial or the semantic"):
        _module((8, 8), c, spatial=False, semantic=False)
    with pytest.raises(ValueError, match="spatial size"):
        apply_dual_attention(keras.Input((8, 8, 4)), keras.Input((4, 4, 4)), name="bad")


# --------------------------------------------------------------------------- the variants

def test_variants_and_table_rows():
    assert list(VARIANTS) == list(CONFIG)
    assert VARIANTS["bada"] is BADA
    rows = {label: key for table in TABLE_ROWS.values() for label, key in table.items()}
    assert set(rows.values()) == set(VARIANTS)              # every variant is a paper row
    assert TABLE_ROWS["Table 2"]["Proposed(with 4 Upsample)"] == "bada"
    assert TABLE_ROWS["Table 1"]["Our method (with dual attention)"] == "bada"
    assert len(TABLE_ROWS["Table 1"]) == 5 and len(TABLE_ROWS["Table 2"]) == 4
    assert set(NOT_BUILT) == {"U-Net++", "SE+ResUNet", "DA+ResUNet", "DANet"}


def test_upsampling_plan():
    assert upsampling_plan(4) == ((4, 2), (3, 2), (2, 2), (1, 2))
    assert upsampling_plan(3) == ((4, 2), (3, 2), (1, 4))
    assert upsampling_plan(2) == ((4, 2), (1, 8))
    assert upsampling_plan(1) == ((1, 16),)
    for n in (1, 2, 3, 4):                      # every plan ends at the input size
        assert np.prod([factor for _, factor in upsampling_plan(n)]) == 16
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="upsamplings"):
            upsampling_plan(bad)


@pytest.fixture(scope="module")
def published():
    """Every variant built once at its published configuration. Counting needs shapes only,
    so the Glorot initialiser returns zeros here (the builders and shapes are unchanged);
    BADA itself is kept for the wiring checks."""
    info = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keras.initializers.VarianceScaling, "__call__",
                   lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))
        keras.backend.clear_session()
        for key, builder in VARIANTS.items():
            model = builder()                   # defaults = published configuration
            info[key] = dict(
                params=model.count_params(), input_shape=model.input_shape,
                output_shape=model.output_shape, name=model.name,
                names={layer.name for layer in model.layers},
                upconvs={layer.name: (layer.kernel_size, layer.strides, layer.filters)
                         for layer in model.layers if isinstance(layer, layers.Conv2DTranspose)},
                model=model if key == "bada" else None)
    return info


@pytest.mark.parametrize("key", list(VARIANTS))
def test_published_parameter_counts(key, published):
    built = published[key]
    assert built["input_shape"] == (None, 512, 512, 1)
    assert built["output_shape"] == (None, 512, 512, 10)
    assert built["name"] == key
    assert built["params"] == FULL_SIZE_PARAMS[key] == expected_params(key)


def _levels(names, suffix):
    return sorted(int(n[3]) for n in names if n.startswith("dec") and n.endswith(suffix))


@pytest.mark.parametrize("key", list(VARIANTS))
def test_variant_structure(key, published):
    backbone, attention, ups = CONFIG[key]
    names, plan = published[key]["names"], upsampling_plan(ups)
    levels = sorted(level for level, _ in plan)
    spatial = attention in ("dual", "spatial")
    semantic = attention in ("dual", "semantic")
    assert _levels(names, "_dual_attention_spatial_sigmoid") == (levels if spatial else [])
    assert _levels(names, "_dual_attention_semantic_sigmoid") == (levels if semantic else [])
    assert _levels(names, "_dual_attention_aggregate_add") == (
        levels if spatial and semantic else [])
    assert _levels(names, "_gate_psi_sigmoid") == ([2, 3, 4] if attention == "gate" else [])
    assert ("enc2_res_shortcut_pool" in names) == (backbone == "resunet_d")
    assert ("enc1_pool" in names) == (backbone == "unet")
    widths = {1: 32, 2: 64, 3: 128, 4: 256}
    assert published[key]["upconvs"] == {
        f"dec{level}_upconv": ((factor, factor), (factor, factor), widths[level])
        for level, factor in plan}


def test_published_bada_architecture(published):
    model = published["bada"]["model"]
    get = model.get_layer
    # ResUNet-D encoder: stem, level 1 at full resolution, stride-2 blocks with the
    # AvgPool 2×2 → Conv 1×1 → BN shortcut.
    assert get("enc1_stem_conv").filters == 32 and get("enc1_stem_conv").kernel_size == (3, 3)
    assert "enc1_res_shortcut_conv" not in published["bada"]["names"]    # identity shortcut
    for stage, width in (("enc2", 64), ("enc3", 128), ("enc4", 256), ("bottom", 512)):
        assert get(f"{stage}_res_conv1_conv").strides == (2, 2)
        assert get(f"{stage}_res_conv2_conv").filters == width
        pool = get(f"{stage}_res_shortcut_pool")
        assert isinstance(pool, layers.AveragePooling2D)
        assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
        shortcut = get(f"{stage}_res_shortcut_conv")
        assert shortcut.input is pool.output
        assert shortcut.kernel_size == (1, 1) and shortcut.strides == (1, 1)
        assert get(f"{stage}_res_shortcut_bn").input is shortcut.output
    assert get("bottom_res_out").output.shape[1:] == (32, 32, 512)
    # Decoder: F_l = encoder skip, F_h = up-conv to F_l's width; concat [attention, F_h].
    for level, width in ((4, 256), (3, 128), (2, 64), (1, 32)):
        att = f"dec{level}_dual_attention"
        skip, up = get(f"enc{level}_res_out").output, get(f"dec{level}_upconv").output
        assert get(f"{att}_wl_conv").input is skip and get(f"{att}_wh_conv").input is up
        assert get(f"{att}_wl_conv").filters == width
        assert get(f"{att}_spatial_sigmoid").output.shape[1:] == skip.shape[1:-1] + (1,)
        assert get(f"{att}_semantic_sigmoid").output.shape[1:] == (1, 1, width)
        concat = get(f"dec{level}_concat")
        assert concat.input[0] is get(f"{att}_aggregate_conv").output and concat.input[1] is up
        assert get(f"dec{level}_res_conv1_conv").input is concat.output
    # Hand-checked block count (see FULL_SIZE_PARAMS): the level-4 dual attention.
    assert sum(layer.count_params() for layer in model.layers
               if layer.name.startswith("dec4_dual_attention_")) == 329_985
    head = get("head_conv")
    assert head.filters == 10 and head.kernel_size == (1, 1)
    assert head.input is get("dec1_res_out").output
    assert get("head_softmax").dtype_policy.compute_dtype == "float32"


def test_unet_baseline_is_the_project_unet():
    """The U-Net baseline has the layout of ra_vnet.UNet (same blocks): same count."""
    from keras_liver.models.ra_vnet import UNet

    keras.backend.clear_session()
    ours = BADAUNet(input_shape=(32, 32, 1), base_filters=8)
    theirs = UNet(input_shape=(32, 32, 1), base_filters=8, num_classes=10)
    assert ours.count_params() == theirs.count_params() == expected_params("bada_unet", base=8)


# --------------------------------------------------------------------------- small size

def test_bada_model_checks(tmp_path):
    """Shared checks at 64×64×1, F = 4: softmax sums to 1, JSON, .keras and a SavedModel
    served where keras_liver cannot be imported."""
    keras.backend.clear_session()
    model = run_model_checks(BADA, SMALL, tmp_path=tmp_path, base_filters=4,
                             isolated_saved_model=True)
    assert model.output_shape == (None, 64, 64, 10)
    assert model.count_params() == expected_params("bada", base=4)


def test_attention_unet_model_checks(tmp_path):
    keras.backend.clear_session()
    model = run_model_checks(BADAAttentionUNet, SMALL, tmp_path=tmp_path, base_filters=4)
    assert model.output_shape == (None, 64, 64, 10)
    assert model.count_params() == expected_params("bada_attention_unet", base=4)


def test_attention_maps():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    model = BADA(input_shape=(32, 32, 1), base_filters=4)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    maps = attention_maps(model, x)
    assert list(maps) == [4, 3, 2, 1]
    for level, branches in maps.items():
        side, width = 32 // 2 ** (level - 1), 4 * 2 ** (level - 1)
        assert branches["spatial"].shape == (2, side, side, 1)
        assert branches["semantic"].shape == (2, width)
        assert 0.0 <= branches["spatial"].min() and branches["spatial"].max() <= 1.0
        assert 0.5 <= branches["semantic"].min() and branches["semantic"].max() <= 1.0
    assert attention_map_layers(model)[3] == {
        "spatial": "dec3_dual_attention_spatial_sigmoid",
        "semantic": "dec3_dual_attention_semantic_sigmoid"}
    spatial_only = BADASpatialOnly(input_shape=(32, 32, 1), base_filters=4)
    assert all(set(b) == {"spatial"} for b in attention_map_layers(spatial_only).values())
    with pytest.raises(ValueError, match="no dual attention"):
        attention_maps(BADAUNet(input_shape=(32, 32, 1), base_filters=4), x)


@pytest.mark.slow
def test_training_reduces_loss():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = BADA(input_shape=(32, 32, 1), base_filters=4)
    check_training_reduces_loss(model, steps=5)


@pytest.mark.parametrize("builder, shape, message", [
    (BADA, (250, 250, 1), "BADA needs spatial sizes divisible by 16; received "
                          "input_shape=(250, 250, 1) (the encoder down-samples 4 times; "
                          "the smallest input is 16×16)"),
    (BADA, (8, 8, 1), "divisible by 16"),
    (VARIANTS["bada_fcn_2up"], (64, 40, 1), "BADAFCN2 needs spatial sizes divisible by 16"),
    (BADA, (32, 32, 16, 1), "BADA needs input_shape=(H, W, C)"),
])
def test_wrong_input_shape_raises(builder, shape, message):
    with pytest.raises(ModelInputError) as err:
        builder(input_shape=shape, base_filters=4)
    assert message in str(err.value)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="base_filters"):
        BADA(input_shape=SMALL, base_filters=0)
    with pytest.raises(ValueError, match="num_classes"):
        BADA(input_shape=SMALL, base_filters=4, num_classes=0)


def test_every_variant_is_registered_by_name():
    from keras_liver.models import MODELS, get_model

    assert {name: MODELS[name] for name in VARIANTS} == VARIANTS
    model = get_model("bada_semantic_only", input_shape=[64, 64, 1], base_filters=4)
    assert model.output_shape == (None, 64, 64, 10)
