"""BADA (Boundary-Aware Dual Attention liver segment segmentation, papers/bada_liver_segments.txt)
and the ablations and baselines of its Tables 1–4.

No code was released; this is our reading (SPEC §4). Every choice the paper leaves open is
marked ``ASSUMPTION`` here and listed in the fidelity notes (``docs/_bada_fidelity.md``, to be
merged into ``docs/fidelity.md``).

Paper module → function → layer-name prefix
-------------------------------------------
====================================  ============================  ================================
Paper module                          Function / layer              Layer-name prefix
====================================  ============================  ================================
ResUNet-D stem, Conv 3×3 (F) (§4.3)   ``apply_conv_bn_relu``        ``enc1_stem_``
Level 1 basic residual block (F)      ``apply_residual_block``      ``enc1_res_``
Levels 2…4, bottom: stride-2 block,   ``apply_residual_block``      ``enc{k}_res_``,
shortcut AvgPool 2×2 → Conv 1×1 → BN  (``avg_down=True``)           ``bottom_res_``
Up-sampling to F_l's width = F_h      ``Conv2DTranspose`` s×s/s     ``dec{k}_upconv``
Dual gated attention (§3.2–3.4)       :func:`apply_dual_attention`  ``dec{k}_dual_attention_``
- W_l, W_h, shared by both branches   Conv 1×1 (C) each             ``…_wl_conv``, ``…_wh_conv``
- spatial (Eq. 1–4): concat, ReLU,    (inside)                      ``…_spatial_concat``,
  W_c-BN-ReLU, W_f, sigmoid = ψ_s,                                  ``…_spatial_relu``,
  ψ_s ⊗ F_l                                                         ``…_spatial_wc_{conv,bn,relu}``,
                                                                    ``…_spatial_wf_conv``,
                                                                    ``…_spatial_sigmoid``,
                                                                    ``…_spatial_multiply``
- semantic (Eq. 5–7): sum, ReLU,      (inside)                      ``…_semantic_add``,
  GAP, sigmoid = ψ_c, ψ_c ⊗ F_l                                     ``…_semantic_relu``,
                                                                    ``…_semantic_gap``,
                                                                    ``…_semantic_sigmoid``,
                                                                    ``…_semantic_multiply``
- aggregation (§3.4): sum, Conv 1×1   (inside)                      ``…_aggregate_add``,
                                                                    ``…_aggregate_conv``
Skip: concat [attention, F_h]         ``Concatenate``               ``dec{k}_concat``
Decoder residual block (2C → C)       ``apply_residual_block``      ``dec{k}_res_``
Head Conv 1×1 (10) + softmax          ``apply_head``                ``head_``
Attention gate (baselines)            ``apply_attention_gate``      ``dec{k}_gate_``
U-Net level (baselines): two          ``apply_unet_encoder_level``  ``enc{k}_conv{1,2}_``,
Conv 3×3-BN-ReLU; MaxPool 2           ``MaxPooling2D``              ``enc{k}_pool``,
                                                                    ``bottom_conv{1,2}_``,
                                                                    ``dec{k}_conv{1,2}_``
====================================  ============================  ================================
(blocks from :mod:`keras_liver.blocks`.)

Levels are numbered from the top: ``enc1``/``dec1`` work at the input resolution with F
channels, ``enc{k}``/``dec{k}`` at 1/2^(k−1) with 2^(k−1)·F, ``bottom`` at 1/16 with 16F
(F = 32: 32, 64, 128, 256 and 512). A decoder stage is named after the encoder level whose
skip it takes, so the attention maps of level k are always ``dec{k}_dual_attention_*``.

Builders and the paper's tables (defaults = published configuration: 512×512×1, F = 32,
10 classes, softmax)
-----------------------------------------------------------------------------------------
Backbone / attention / decoder up-samplings (factors) of each builder:

- :func:`BADA` (``bada``): ResUNet-D / dual / 4 (×2 each). Table 1 "Our method (with dual
  attention)", Table 2 "Proposed(with 4 Upsample)", Tables 3–4 "Our method".
- :func:`BADASpatialOnly` (``bada_spatial_only``): ResUNet-D / spatial / 4. Table 1 "Our
  method (with only Spatial)".
- :func:`BADASemanticOnly` (``bada_semantic_only``): ResUNet-D / semantic / 4. Table 1 "Our
  method (with only Semantic)".
- :func:`BADAFCN1`, :func:`BADAFCN2`, :func:`BADAFCN3` (``bada_fcn_{1,2,3}up``): ResUNet-D /
  dual / 1 (×16), 2 (×2, ×8), 3 (×2, ×2, ×4). Table 2 "Proposed(with n Upsample)".
- :func:`BADAUNet` (``bada_unet``): U-Net / none / 4. Table 1 "Baseline(U-Net)", Tables 3–4
  "U-Net".
- :func:`BADAResUNet` (``bada_resunet``): ResUNet-D / none / 4. Table 1
  "Baseline(ResUNet)", Tables 3–4 "ResUNet".
- :func:`BADAAttentionUNet` (``bada_attention_unet``): U-Net / attention gate on levels 2–4 /
  4. Tables 3–4 "Attention U-Net".
- :func:`BADAAttentionResUNet` (``bada_attention_resunet``): ResUNet-D / attention gate on
  levels 2–4 / 4. Tables 3–4 "Attention ResUNet".

:data:`VARIANTS` maps the keys to the builders, :data:`TABLE_ROWS` each table's row labels
(verbatim) to the keys; :data:`NOT_BUILT` lists the rows we do not build (U-Net++,
SE+ResUNet, DA+ResUNet, DANet: other papers' networks the BADA paper gives no details of).
All variants go through one function, ``_build``, with ``backbone``, ``attention`` and
``upsamplings``.

Parameters at the published configuration (``model.count_params()``, BN moving statistics
included; pinned and re-derived from per-block formulas in ``tests/test_bada.py``): BADA
8,575,854; spatial only 8,575,854 (the semantic branch has no weights); semantic only
8,398,890; FCN with 1/2/3 up-samplings 9,138,091 / 8,226,988 / 8,459,565; U-Net 7,771,594;
ResUNet 8,136,330; Attention U-Net 7,860,089; Attention ResUNet 8,224,825. The paper gives
no parameter counts.

Readings (ASSUMPTION unless the paper or SPEC §4 says it)
---------------------------------------------------------
- ResUNet-D (§4.3, He et al. "bag of tricks"): stem Conv 3×3 (F)-BN-ReLU, then ONE basic
  residual block per level (ASSUMPTION: the paper gives no block counts): level 1 at F,
  stride 1 (identity shortcut); levels 2…4 and the bottom at 2F…16F, stride 2 in the first
  3×3 conv, shortcut AvgPool 2×2 → Conv 1×1 → BN — exactly
  ``blocks.apply_residual_block(..., strides=2, avg_down=True)``. F = 32 (ASSUMPTION, SPEC §4).
- Stride-2 convs use Keras' ``same`` padding (TF pads one pixel after, PyTorch's padding 1
  one on each side): same shapes and counts; the 3×3 windows sit one input pixel apart.
- Every convolution keeps its bias (Eq. 1–3 write b_l, b_h, b_c, b_f; the backbone follows the
  project convention); Keras default initialisers and BN settings.
- F_h (§3.1 "upsampled high-level feature map"): ``Conv2DTranspose`` with kernel = stride = s
  to F_l's width, linear (ASSUMPTION: U-Net's 2×2 "up-convolution", generalised to the
  asymmetric variants' larger factors).
- Dual attention: W_l, W_h are two Conv 1×1 (C) layers, each called once; their outputs feed
  both branches (§3.3 "shared parameters W_l, W_h"). Spatial (Eq. 1–4): ReLU(concat[W_l F_l,
  W_h F_h]) → W_c = Conv 1×1 (C)-BN-ReLU → W_f = Conv 1×1 (1) → sigmoid = ψ_s (one channel,
  in [0, 1]); ψ_s ⊗ F_l. Semantic (Eq. 5–7): ψ_c = sigmoid(GAP(ReLU(W_l F_l + W_h F_h))) (one
  value per channel; after the ReLU the mean is ≥ 0, so ψ_c lies in [0.5, 1) — the paper's
  formula, kept); ψ_c ⊗ F_l. Aggregation (§3.4): the two weighted maps are summed and sent
  through a Conv 1×1 (C), linear (ASSUMPTION: no BN/activation is mentioned).
- Skip connection (§3.4 "the final attention map concatenates with the previous layer feature
  map"): concat [attention output, F_h] → basic residual block at C (projection shortcut
  Conv 1×1-BN, 2C → C). SPEC §4.
- One-branch ablations (Table 1): the other branch's layers are absent; W_l, W_h and the
  aggregation Conv 1×1 stay (ASSUMPTION), so the variants differ only in the branch.
- Asymmetric FCN variants (§3.5, Table 2; Fig. 4 is not in the text): with n up-samplings,
  each with dual attention and the level's residual block, the first n − 1 up-sample ×2
  through the deepest skips (levels 4, 3, …) and the last one goes straight to the input size
  against the level-1 skip (×16, ×8 or ×4), as FCN-16s/8s fuse the deep pools and up-sample
  the rest at once (ASSUMPTION). With 4 up-samplings this is BADA.
- Baselines (no details in the paper): the same widths F…16F, 4 down-samplings and head.
  U-Net = two Conv 3×3-BN-ReLU per level and at the bottom, MaxPool 2, decoder up-conv 2×2 →
  concat [skip, up] → two Conv 3×3-BN-ReLU (the layout and count of
  :func:`keras_liver.models.ra_vnet.UNet`). ResUNet = BADA's ResUNet-D without attention
  (§4.3 names ResUNet as the backbone). Attention U-Net / Attention ResUNet = these with
  ``blocks.apply_attention_gate`` on the skips of levels 2–4 (Oktay et al.'s code gates the
  three coarser levels only), g = the up-sampled map, F_int = C/2; concat [gated skip, up].
"""
from __future__ import annotations

import re

import keras
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import (apply_attention_gate, apply_conv_bn_relu, apply_head,
                                apply_residual_block, apply_unet_encoder_level,
                                head_activation)
from keras_liver.errors import ModelInputError

DEPTH = 4               # down-samplings; encoder F, 2F, 4F, 8F, bottom 16F
BACKBONES = ("resunet_d", "unet")
ATTENTIONS = ("dual", "spatial", "semantic", "gate", "none")
#: Couinaud classes of the paper's dataset (§4.1), in label order.
CLASS_NAMES = ("background", "I", "II", "III", "IVa", "IVb", "V", "VI", "VII", "VIII")
_MAP_LAYER = re.compile(r"^dec(\d+)_dual_attention_(spatial|semantic)_sigmoid$")


# --------------------------------------------------------------------------- paper module

def apply_dual_attention(low, high, *, spatial: bool = True, semantic: bool = True,
                         name: str):
    """Boundary-aware dual gated attention (§3.2–3.4, Eq. 1–7, Fig. 2–3), rank-generic.

    ``low`` is F_l (the encoder skip, C channels), ``high`` F_h (the up-sampled decoder map,
    same spatial size). W_l, W_h = Conv 1×1 (C) on each, called once and shared by both
    branches:

    - spatial (Eq. 1–4): ψ_s = sigmoid(W_f(ReLU(BN(W_c(ReLU(concat[W_l F_l, W_h F_h])))))),
      W_c = Conv 1×1 (C), W_f = Conv 1×1 (1); S = ψ_s ⊗ F_l. ψ_s: one channel, in [0, 1].
    - semantic (Eq. 5–7): ψ_c = sigmoid(GAP(ReLU(W_l F_l + W_h F_h))), one value per channel
      (shape (1, …, 1, C)); K = ψ_c ⊗ F_l.
    - aggregation (§3.4): Conv 1×1 (C)(S + K), linear; with one branch, Conv 1×1 (C) of it.

    Returns the aggregated map (F_l's shape). Layers ``{name}_wl_conv``, ``{name}_wh_conv``,
    ``{name}_spatial_{concat,relu,wc_conv,wc_bn,wc_relu,wf_conv,sigmoid,multiply}``,
    ``{name}_semantic_{add,relu,gap,sigmoid,multiply}``, ``{name}_aggregate_add`` (both
    branches only), ``{name}_aggregate_conv``. The maps are the outputs of
    ``{name}_spatial_sigmoid`` and ``{name}_semantic_sigmoid``.

    Parameters (C = F_l's width, C_h = F_h's width, BN 4 per channel): W_l ``C² + C``,
    W_h ``C_h·C + C``, spatial ``2C² + C`` (W_c) ``+ 4C`` (BN) ``+ C + 1`` (W_f), semantic 0,
    aggregation ``C² + C``; both branches at C_h = C: ``5C² + 9C + 1``.
    """
    if not (spatial or semantic):
        raise ValueError(f"{name}: dual attention needs the spatial or the semantic branch "
                         f"(or both); received spatial=False, semantic=False")
    rank = ndim.rank_of(low)
    if ndim.rank_of(high) != rank or tuple(high.shape[1:-1]) != tuple(low.shape[1:-1]):
        raise ValueError(f"{name}: F_h must have F_l's spatial size; received F_l of shape "
                         f"{tuple(low.shape)} and F_h of shape {tuple(high.shape)}")
    channels = int(low.shape[-1])

    low_proj = ndim.conv(rank, channels, 1, name=f"{name}_wl_conv")(low)       # W_l F_l + b_l
    high_proj = ndim.conv(rank, channels, 1, name=f"{name}_wh_conv")(high)     # W_h F_h + b_h
    weighted = []
    if spatial:
        y = layers.Concatenate(axis=-1, name=f"{name}_spatial_concat")([low_proj, high_proj])
        y = layers.Activation("relu", name=f"{name}_spatial_relu")(y)                # Eq. 1
        y = apply_conv_bn_relu(y, channels, 1, name=f"{name}_spatial_wc")            # Eq. 2
        y = ndim.conv(rank, 1, 1, name=f"{name}_spatial_wf_conv")(y)
        psi_s = layers.Activation("sigmoid", name=f"{name}_spatial_sigmoid")(y)      # Eq. 3
        weighted.append(layers.Multiply(name=f"{name}_spatial_multiply")([low, psi_s]))
    if semantic:
        y = layers.Add(name=f"{name}_semantic_add")([low_proj, high_proj])          # Eq. 5
        y = layers.Activation("relu", name=f"{name}_semantic_relu")(y)
        y = ndim.global_avg_pool(rank, keepdims=True, name=f"{name}_semantic_gap")(y)
        psi_c = layers.Activation("sigmoid", name=f"{name}_semantic_sigmoid")(y)     # Eq. 6
        weighted.append(layers.Multiply(name=f"{name}_semantic_multiply")([low, psi_c]))
    y = weighted[0]
    if len(weighted) == 2:
        y = layers.Add(name=f"{name}_aggregate_add")(weighted)
    return ndim.conv(rank, channels, 1, name=f"{name}_aggregate_conv")(y)


# --------------------------------------------------------------------------- assembly

def upsampling_plan(upsamplings: int, depth: int = DEPTH) -> tuple[tuple[int, int], ...]:
    """The decoder stages as ``(skip level, up-sampling factor)``, deepest first.

    ``upsamplings = depth`` is the symmetric U-Net decoder (every factor 2); fewer give the
    asymmetric FCN variants of Table 2: ×2 through the deepest skips, then one jump to the
    input size against the level-1 skip — e.g. 2 → ``((4, 2), (1, 8))``.
    """
    if (not isinstance(upsamplings, int) or isinstance(upsamplings, bool)
            or not 1 <= upsamplings <= depth):
        raise ValueError(f"upsamplings must be an int from 1 to {depth}; "
                         f"received upsamplings={upsamplings!r}")
    steps = [(level, 2) for level in range(depth, depth - upsamplings + 1, -1)]
    last_from = depth - upsamplings + 2           # level reached before the last step
    return tuple(steps) + ((1, 2 ** (last_from - 1)),)


def _encode(inputs, widths, backbone):
    """Encoder and bottom; returns the skips of levels 1…DEPTH and the bottom map."""
    rank = ndim.rank_of(inputs)
    skips = []
    if backbone == "resunet_d":
        x = apply_conv_bn_relu(inputs, widths[0], 3, name="enc1_stem")
        for level in range(1, DEPTH + 1):
            stride = 1 if level == 1 else 2
            x = apply_residual_block(x, widths[level - 1], strides=stride, avg_down=True,
                                     name=f"enc{level}_res")
            skips.append(x)
        bottom = apply_residual_block(x, widths[DEPTH], strides=2, avg_down=True,
                                      name="bottom_res")
    else:
        x = inputs
        for level in range(1, DEPTH + 1):
            skip = apply_unet_encoder_level(x, widths[level - 1], name=f"enc{level}")
            skips.append(skip)
            x = ndim.max_pool(rank, 2, name=f"enc{level}_pool")(skip)
        bottom = apply_unet_encoder_level(x, widths[DEPTH], name="bottom")
    return skips, bottom


def _decode_level(x, skip, factor, level, *, backbone, attention):
    """One decoder stage ``dec{level}``: up-conv (×factor, to the skip's width) → attention on
    the skip → concat [skip', up] → the backbone's level block."""
    rank = ndim.rank_of(x)
    stage = f"dec{level}"
    width = int(skip.shape[-1])
    up = ndim.conv_transpose(rank, width, factor, strides=factor, padding="same",
                             name=f"{stage}_upconv")(x)
    if attention in ("dual", "spatial", "semantic"):
        skip = apply_dual_attention(skip, up, spatial=attention != "semantic",
                                    semantic=attention != "spatial",
                                    name=f"{stage}_dual_attention")
    elif attention == "gate" and level > 1:
        skip = apply_attention_gate(skip, up, width // 2, name=f"{stage}_gate")
    y = layers.Concatenate(axis=-1, name=f"{stage}_concat")([skip, up])
    if backbone == "resunet_d":
        return apply_residual_block(y, width, name=f"{stage}_res")
    return apply_unet_encoder_level(y, width, name=stage)


def _build(builder, *, input_shape, base_filters, num_classes, backbone, attention,
           upsamplings, name):
    if not isinstance(base_filters, int) or isinstance(base_filters, bool) or base_filters < 1:
        raise ValueError(f"{builder} needs base_filters >= 1; "
                         f"received base_filters={base_filters!r}")
    head_activation(num_classes)  # validates num_classes
    if backbone not in BACKBONES or attention not in ATTENTIONS:
        raise ValueError(f"{builder}: backbone must be one of {BACKBONES} and attention one of "
                         f"{ATTENTIONS}; received {backbone!r}, {attention!r}")
    plan = upsampling_plan(upsamplings)
    divisor = 2 ** DEPTH
    try:
        shape = ndim.check_input_shape(builder, input_shape, rank=2, divisor=divisor)
    except ModelInputError as err:
        if "divisible" not in str(err):
            raise
        raise ModelInputError(f"{err} (the encoder down-samples {DEPTH} times; the smallest "
                              f"input is {divisor}×{divisor})") from None
    widths = [base_filters * 2 ** level for level in range(DEPTH + 1)]

    inputs = keras.Input(shape=shape, name="input")
    skips, x = _encode(inputs, widths, backbone)
    for level, factor in plan:
        x = _decode_level(x, skips[level - 1], factor, level, backbone=backbone,
                          attention=attention)
    outputs = apply_head(x, num_classes, name="head")
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- builders

def BADA(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
         name: str = "bada"):
    """BADA (Fig. 1): ResUNet-D encoder, dual gated attention on the skip of each of the 4
    decoder levels, residual decoder, Conv 1×1 + softmax head (SPEC §4).

    Args:
        input_shape: ``(H, W, C)``; H and W divisible by 16. Paper: 512×512×1 (MRI slices).
        base_filters: F, the width of level 1; levels F, 2F, 4F, 8F, bottom 16F
            (ASSUMPTION: 32).
        num_classes: 10 = background + Couinaud I, II, III, IVa, IVb, V, VI, VII, VIII
            (:data:`CLASS_NAMES`), softmax; 1 gives a sigmoid head.
        name: the model's name.

    The attention maps are the outputs of ``dec{k}_dual_attention_spatial_sigmoid`` and
    ``dec{k}_dual_attention_semantic_sigmoid`` (k = 1…4); :func:`attention_maps` returns them.
    ASSUMPTION: see the module docstring. Raises ``keras_liver.errors.ModelInputError`` for an
    input shape it cannot take.
    """
    return _build("BADA", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="dual",
                  upsamplings=DEPTH, name=name)


def BADASpatialOnly(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
                    name: str = "bada_spatial_only"):
    """Table 1 "Our method (with only Spatial)": BADA whose attention has the spatial branch
    only (W_l, W_h, Eq. 1–4, aggregation Conv 1×1)."""
    return _build("BADASpatialOnly", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="spatial",
                  upsamplings=DEPTH, name=name)


def BADASemanticOnly(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
                     name: str = "bada_semantic_only"):
    """Table 1 "Our method (with only Semantic)": BADA whose attention has the semantic branch
    only (W_l, W_h, Eq. 5–7, aggregation Conv 1×1)."""
    return _build("BADASemanticOnly", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="semantic",
                  upsamplings=DEPTH, name=name)


def BADAFCN1(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
             name: str = "bada_fcn_1up"):
    """Table 2 "Proposed(with 1 Upsample)": asymmetric FCN decoder, one ×16 up-sampling from
    the bottom with dual attention against the level-1 skip (ASSUMPTION, §3.5)."""
    return _build("BADAFCN1", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="dual",
                  upsamplings=1, name=name)


def BADAFCN2(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
             name: str = "bada_fcn_2up"):
    """Table 2 "Proposed(with 2 Upsample)" (Fig. 4): ×2 against the level-4 skip, then ×8
    against the level-1 skip, dual attention at both (ASSUMPTION, §3.5)."""
    return _build("BADAFCN2", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="dual",
                  upsamplings=2, name=name)


def BADAFCN3(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
             name: str = "bada_fcn_3up"):
    """Table 2 "Proposed(with 3 Upsample)": ×2 (level 4), ×2 (level 3), then ×4 against the
    level-1 skip, dual attention at each (ASSUMPTION, §3.5)."""
    return _build("BADAFCN3", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="dual",
                  upsamplings=3, name=name)


def BADAUNet(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
             name: str = "bada_unet"):
    """Table 1 "Baseline(U-Net)", Tables 3–4 "U-Net": plain U-Net with BN at BADA's widths.

    ASSUMPTION: two Conv 3×3-BN-ReLU per level and at the bottom, MaxPool 2; decoder
    up-conv 2×2 stride 2 to the skip's width → concat [skip, up] → two Conv 3×3-BN-ReLU.
    """
    return _build("BADAUNet", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="unet", attention="none",
                  upsamplings=DEPTH, name=name)


def BADAResUNet(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
                name: str = "bada_resunet"):
    """Table 1 "Baseline(ResUNet)", Tables 3–4 "ResUNet": BADA's ResUNet-D backbone without
    attention (concat [skip, up] → residual block). ASSUMPTION: §4.3 names ResUNet as BADA's
    backbone, so the baseline is that backbone."""
    return _build("BADAResUNet", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="none",
                  upsamplings=DEPTH, name=name)


def BADAAttentionUNet(input_shape=(512, 512, 1), base_filters: int = 32, num_classes: int = 10,
                      name: str = "bada_attention_unet"):
    """Tables 3–4 "Attention U-Net" (Oktay et al., ref. [29]): :func:`BADAUNet` with an
    additive attention gate (``blocks.apply_attention_gate``, g = the up-sampled map,
    F_int = C/2) on the skips of levels 2–4. ASSUMPTION: the gate's placement and F_int follow
    Oktay et al.'s code; concat [gated skip, up]."""
    return _build("BADAAttentionUNet", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="unet", attention="gate",
                  upsamplings=DEPTH, name=name)


def BADAAttentionResUNet(input_shape=(512, 512, 1), base_filters: int = 32,
                         num_classes: int = 10, name: str = "bada_attention_resunet"):
    """Tables 3–4 "Attention ResUNet": :func:`BADAResUNet` with the attention gates of
    :func:`BADAAttentionUNet` (§4.5: it "only differs in the feature fusion method" from the
    spatial-only BADA). Not the Attention Residual UNet of SPEC §5
    (:func:`keras_liver.models.arunet.AttentionResUNet`). ASSUMPTION as for Attention U-Net."""
    return _build("BADAAttentionResUNet", input_shape=input_shape, base_filters=base_filters,
                  num_classes=num_classes, backbone="resunet_d", attention="gate",
                  upsamplings=DEPTH, name=name)


#: Variant name → builder (defaults = the published configuration). Keys are prefixed
#: ``bada`` so they can join the model registry as they are.
VARIANTS = {
    "bada": BADA,
    "bada_spatial_only": BADASpatialOnly,
    "bada_semantic_only": BADASemanticOnly,
    "bada_fcn_1up": BADAFCN1,
    "bada_fcn_2up": BADAFCN2,
    "bada_fcn_3up": BADAFCN3,
    "bada_unet": BADAUNet,
    "bada_resunet": BADAResUNet,
    "bada_attention_unet": BADAAttentionUNet,
    "bada_attention_resunet": BADAAttentionResUNet,
}

#: The paper's row labels, verbatim (Tables 3 and 4 share their rows) → ``VARIANTS`` keys.
TABLE_ROWS = {
    "Table 1": {
        "Baseline(U-Net)": "bada_unet",
        "Baseline(ResUNet)": "bada_resunet",
        "Our method (with only Spatial)": "bada_spatial_only",
        "Our method (with only Semantic)": "bada_semantic_only",
        "Our method (with dual attention)": "bada",
    },
    "Table 2": {
        "Proposed(with 1 Upsample)": "bada_fcn_1up",
        "Proposed(with 2 Upsample)": "bada_fcn_2up",
        "Proposed(with 3 Upsample)": "bada_fcn_3up",
        "Proposed(with 4 Upsample)": "bada",
    },
    "Tables 3-4": {
        "U-Net": "bada_unet",
        "ResUNet": "bada_resunet",
        "Attention U-Net": "bada_attention_unet",
        "Attention ResUNet": "bada_attention_resunet",
        "Our method": "bada",
    },
}
#: Rows of Tables 3–4 not built here: other papers' networks, no details in the BADA paper.
NOT_BUILT = ("U-Net++", "SE+ResUNet", "DA+ResUNet", "DANet")


# --------------------------------------------------------------------------- attention maps

def attention_map_layers(model: keras.Model) -> dict[int, dict[str, str]]:
    """``{level: {"spatial": layer name, "semantic": layer name}}`` of the model's dual
    attention maps (a branch a variant lacks is left out), levels in decreasing order."""
    found: dict[int, dict[str, str]] = {}
    for layer in model.layers:
        match = _MAP_LAYER.match(layer.name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = layer.name
    return {level: found[level] for level in sorted(found, reverse=True)}


def attention_maps(model: keras.Model, x) -> dict[int, dict[str, object]]:
    """Run ``model`` on ``x`` (inference mode) and return its attention maps as NumPy arrays:
    ``{level: {"spatial": ψ_s (B, H_k, W_k, 1), "semantic": ψ_c (B, C_k)}}``.

    Raises ``ValueError`` for a model without dual attention layers.
    """
    names = attention_map_layers(model)
    if not names:
        raise ValueError(f"model {model.name!r} has no dual attention layers "
                         f"(dec{{k}}_dual_attention_{{spatial,semantic}}_sigmoid)")
    outputs = {f"{level}_{branch}": model.get_layer(layer).output
               for level, branches in names.items() for branch, layer in branches.items()}
    probe = keras.Model(model.input, outputs, name=f"{model.name}_attention_maps")
    values = probe(x, training=False)
    maps: dict[int, dict[str, object]] = {}
    for level, branches in names.items():
        for branch in branches:
            value = keras.ops.convert_to_numpy(values[f"{level}_{branch}"])
            if branch == "semantic":
                value = value.reshape(value.shape[0], value.shape[-1])
            maps.setdefault(level, {})[branch] = value
    return maps


__all__ = ["BADA", "BADAAttentionResUNet", "BADAAttentionUNet", "BADAFCN1", "BADAFCN2",
           "BADAFCN3", "BADAResUNet", "BADASemanticOnly", "BADASpatialOnly", "BADAUNet",
           "CLASS_NAMES", "NOT_BUILT", "TABLE_ROWS", "VARIANTS", "apply_dual_attention",
           "attention_map_layers", "attention_maps", "upsampling_plan"]
