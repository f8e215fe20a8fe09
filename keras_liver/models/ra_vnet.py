"""RA V-Net (Lee et al., "RA V-Net: deep learning network for automated liver segmentation",
papers/ra_vnet.txt) and the ablation baselines of its Tables 2–4.

No code was released; this is our reading (SPEC §2). Every choice the paper leaves open is
marked ``ASSUMPTION`` here and listed in ``docs/fidelity.md``.

Paper module → function → layer-name prefix
-------------------------------------------
=====================================  ==========================  =============================
Encoder level k, CofRes module (§2.3)  :func:`apply_cofres_block`  ``enc{k}_cofres_``
Bottom CofRes module, 16F (§2.1)       :func:`apply_cofres_block`  ``bottom_cofres_``
Max pooling after level k              ``MaxPooling2D``            ``enc{k}_pool``
CA module on skip k (§2.4)             :func:`apply_ca_module`     ``skip{k}_ca``
AR module at decoder level k (§2.5)    :func:`apply_ar_module`     ``dec{k}_ar_``
  upsampling block: Conv①, ×2, res,    (inside AR)                 ``dec{k}_ar_conv1_``,
  Conv②                                                            ``dec{k}_ar_up``,
                                                                   ``dec{k}_ar_res_``,
                                                                   ``dec{k}_ar_conv2_``
  LSTM block: skip projection, stack,  (inside AR)                 ``dec{k}_ar_skip_``,
  ConvLSTM2D, Conv③                                                ``dec{k}_ar_stack``,
                                                                   ``dec{k}_ar_convlstm``,
                                                                   ``dec{k}_ar_conv3_``
Head Conv 1×1 + sigmoid                :func:`~keras_liver.blocks.apply_head`  ``head_``
U-Net encoder level (baselines)        ``_plain_encoder_level``    ``enc{k}_conv{1,2}_``
Res U-Net encoder level                ``apply_residual_block``    ``enc{k}_res_``
U-Net decoder level (baselines)        ``_plain_decoder_level``    ``dec{k}_upconv``,
                                                                   ``dec{k}_concat``,
                                                                   ``dec{k}_conv{1,2}_``
=====================================  ==========================  =============================

Levels are numbered from the top: ``enc1``/``skip1``/``dec1`` work at the input resolution
with ``base_filters`` channels, ``enc{depth}`` is the deepest skip, ``bottom`` sits below it.

Builders (defaults = published configuration, 512×512×1, widths 64…1024, sigmoid head)
---------------------------------------------------------------------------------------
- :func:`RAVNet` — CofRes encoder + CA on the deepest skip + AR decoder (Table 4 "Ours").
- :func:`RAVNetWithoutCofRes` — U-Net encoder + CA + AR decoder (Tables 3–4 "Ours (without
  CofRes module)").
- :func:`CofResUNet` — CofRes encoder + U-Net decoder (Table 2).
- :func:`ResUNet` — basic residual blocks as encoder + U-Net decoder (Table 2).
- :func:`UNet` — plain U-Net with BN (Tables 2–4).

Deviations / readings (ASSUMPTION unless the paper says it)
-----------------------------------------------------------
- Every convolution has a bias (Keras default) and is followed by BN and ReLU (§2.3 says BN and
  an activation follow each convolution); projection shortcuts are Conv 1×1-BN with no ReLU.
- CofRes: the sum with the block input happens before Conv⑤ and has no activation of its own;
  the input goes through Conv 1×1-BN when its width differs (always, in this layout).
- AR upsampling block: "bilinear ×2" is ``UpSampling2D(interpolation="bilinear")``; the
  "classical residual block" is the basic He et al. block (Conv-BN-ReLU → Conv-BN, identity
  add, ReLU).
- AR LSTM block: the skip is brought to the width C of ② by Conv 1×1-BN-ReLU; the sequence
  order is [skip, ②]; ``ConvLSTM2D`` keeps its Keras defaults (tanh / sigmoid, orthogonal
  recurrent initialiser, unit forget bias).
- CA sits on the deepest skip connection only (``channel_attention="bottom"``); ``"all"``
  puts one on every skip, ``"none"`` removes it.
- Baselines: the paper gives no details. U-Net = two Conv 3×3-BN-ReLU per level (bottom too),
  decoder Conv2DTranspose 2×2 stride 2 (to the skip width, linear) → concat [skip, up] → two
  Conv 3×3-BN-ReLU. Res U-Net = one basic residual block per encoder level and at the bottom.
  CofRes U-Net = CofRes at every encoder level and at the bottom. All share the U-Net decoder
  and the 64…1024 widths.
"""
from __future__ import annotations

import keras
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import (apply_channel_attention, apply_conv_bn, apply_conv_bn_relu,
                                apply_convlstm_fusion, apply_head, apply_residual_block,
                                apply_unet_decoder_level, apply_unet_encoder_level)

CHANNEL_ATTENTION_PLACEMENTS = ("bottom", "all", "none")


# --------------------------------------------------------------------------- paper modules

def apply_cofres_block(x, filters: int, *, name: str):
    """CofRes module (§2.3, Fig. 3), output width ``filters`` (F).

    Conv①…④ = four sequential Conv 3×3 (F/4)-BN-ReLU (each takes the previous one's output);
    their outputs are concatenated (F channels) and summed with the block input (through
    Conv 1×1 (F)-BN when the input width differs from F); Conv⑤ = Conv 1×1 (F)-BN-ReLU
    integrates the sum. The output is the skip connection; max pooling of it feeds the next
    module.

    Layers: ``{name}_conv{1..4}_{conv,bn,relu}``, ``{name}_concat``,
    ``{name}_shortcut_{conv,bn}`` (only when widths differ), ``{name}_add``,
    ``{name}_conv5_{conv,bn,relu}``.
    """
    if filters % 4:
        raise ValueError(f"{name}: CofRes needs a width divisible by 4; received {filters}")
    branches, y = [], x
    for i in range(1, 5):
        y = apply_conv_bn_relu(y, filters // 4, 3, name=f"{name}_conv{i}")
        branches.append(y)
    stack = layers.Concatenate(axis=-1, name=f"{name}_concat")(branches)
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = apply_conv_bn(x, filters, 1, name=f"{name}_shortcut")
    y = layers.Add(name=f"{name}_add")([stack, shortcut])
    return apply_conv_bn_relu(y, filters, 1, name=f"{name}_conv5")


def apply_ca_module(x, *, name: str):
    """CA module (§2.4, Eq. 1–2) on a skip connection: one
    :class:`~keras_liver.layers.ChannelAttention` layer named ``name`` (e.g. ``skip4_ca``)."""
    return apply_channel_attention(x, name=name)


def apply_ar_module(x, skip, *, name: str):
    """AR module (§2.5, Fig. 5): input ① ``x`` (h, w, C) from below, ``skip`` (2h, 2w, C_s).

    Upsampling block: Conv① 1×1 (C/4)-BN-ReLU → bilinear ×2 → basic residual block (C/4) →
    Conv② 1×1 (C)-BN-ReLU = ② (2h, 2w, C).
    LSTM block: s' = skip, or Conv 1×1 (C)-BN-ReLU of it when C_s ≠ C; stack [s', ②] as a
    length-2 sequence → ``ConvLSTM2D(C, 3×3, same, return_sequences=False)`` → Conv③ 3×3
    (C/2)-BN-ReLU = ③ (2h, 2w, C/2), the input of the next AR module.
    """
    rank = ndim.rank_of(x)
    channels = x.shape[-1]
    if channels % 4:
        raise ValueError(f"{name}: AR module needs a width divisible by 4; received {channels}")
    # Upsampling block.
    y = apply_conv_bn_relu(x, channels // 4, 1, name=f"{name}_conv1")
    y = ndim.upsampling(rank, 2, interpolation="bilinear", name=f"{name}_up")(y)
    y = apply_residual_block(y, channels // 4, name=f"{name}_res")
    up = apply_conv_bn_relu(y, channels, 1, name=f"{name}_conv2")
    # LSTM block.
    if skip.shape[-1] != channels:
        skip = apply_conv_bn_relu(skip, channels, 1, name=f"{name}_skip")
    y = apply_convlstm_fusion(skip, up, channels, kernel_size=3, name=name)
    return apply_conv_bn_relu(y, channels // 2, 3, name=f"{name}_conv3")


# --------------------------------------------------------------------------- baseline levels

def _plain_encoder_level(x, filters, *, name):
    return apply_unet_encoder_level(x, filters, name=name)


def _residual_encoder_level(x, filters, *, name):
    return apply_residual_block(x, filters, name=f"{name}_res")


def _cofres_encoder_level(x, filters, *, name):
    return apply_cofres_block(x, filters, name=f"{name}_cofres")


def _plain_decoder_level(x, skip, *, name):
    return apply_unet_decoder_level(x, skip, name=name)


def _ar_decoder_level(x, skip, *, name):
    return apply_ar_module(x, skip, name=f"{name}_ar")


_ENCODERS = {"plain": _plain_encoder_level, "residual": _residual_encoder_level,
             "cofres": _cofres_encoder_level}
_DECODERS = {"plain": _plain_decoder_level, "ar": _ar_decoder_level}


# --------------------------------------------------------------------------- assembly

def _build(builder, *, input_shape, base_filters, depth, num_classes, encoder, decoder,
           channel_attention, name):
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"{builder} needs depth >= 1 poolings; received depth={depth!r}")
    quarter = encoder == "cofres" or decoder == "ar"   # CofRes and AR use F/4 channels
    if not isinstance(base_filters, int) or base_filters < 1 or (quarter and base_filters % 4):
        need = "a positive multiple of 4 (CofRes/AR use F/4 channels)" if quarter else ">= 1"
        raise ValueError(f"{builder} needs base_filters {need}; "
                         f"received base_filters={base_filters!r}")
    channel_attention = "none" if channel_attention in (None, False) else channel_attention
    if channel_attention not in CHANNEL_ATTENTION_PLACEMENTS:
        raise ValueError(f"{builder} channel_attention must be one of "
                         f"{CHANNEL_ATTENTION_PLACEMENTS}; received {channel_attention!r}")
    shape = ndim.check_input_shape(builder, input_shape, rank=2, divisor=2 ** depth)
    rank = len(shape) - 1
    widths = [base_filters * 2 ** level for level in range(depth + 1)]
    encode, decode = _ENCODERS[encoder], _DECODERS[decoder]

    inputs = keras.Input(shape=shape, name="input")
    x, skips = inputs, []
    for level in range(1, depth + 1):
        skip = encode(x, widths[level - 1], name=f"enc{level}")
        skips.append(skip)
        x = ndim.max_pool(rank, 2, name=f"enc{level}_pool")(skip)
    x = encode(x, widths[depth], name="bottom")
    for level in range(1, depth + 1):
        if channel_attention == "all" or (channel_attention == "bottom" and level == depth):
            skips[level - 1] = apply_ca_module(skips[level - 1], name=f"skip{level}_ca")
    for level in range(depth, 0, -1):
        x = decode(x, skips[level - 1], name=f"dec{level}")
    outputs = apply_head(x, num_classes, name="head")
    return keras.Model(inputs, outputs, name=name)


def RAVNet(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
           num_classes: int = 1, channel_attention: str = "bottom", name: str = "ra_vnet"):
    """RA V-Net (§2, Fig. 1): CofRes encoder and bottom, CA on the skip(s), AR decoder.

    Args:
        input_shape: ``(H, W, C)``; H and W divisible by ``2**depth``. Paper: 512×512×1.
        base_filters: width F of the first level; levels use F, 2F, …, bottom ``2**depth·F``
            (paper: 64 → 64, 128, 256, 512, 1024). Must be divisible by 4.
        depth: number of poolings (paper: 4).
        num_classes: 1 → Conv 1×1 + sigmoid (paper); K > 1 → K channels + softmax.
        channel_attention: ``"bottom"`` (CA on the deepest skip, paper), ``"all"`` or
            ``"none"``.

    ASSUMPTION: see the module docstring and ``docs/fidelity.md`` (RA V-Net).
    Raises ``keras_liver.errors.ModelInputError`` for an input shape it cannot take.
    """
    return _build("RAVNet", input_shape=input_shape, base_filters=base_filters, depth=depth,
                  num_classes=num_classes, encoder="cofres", decoder="ar",
                  channel_attention=channel_attention, name=name)


def RAVNetWithoutCofRes(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
                        num_classes: int = 1, channel_attention: str = "bottom",
                        name: str = "ra_vnet_without_cofres"):
    """RA V-Net without the CofRes module (Tables 3–4, "Ours (without CofRes module)").

    ASSUMPTION: the encoder and the bottom are the U-Net's (two Conv 3×3-BN-ReLU per level,
    §3.3.2: "replaced it with the encoding module of U-Net"); CA and AR as in :func:`RAVNet`.
    """
    return _build("RAVNetWithoutCofRes", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, encoder="plain", decoder="ar",
                  channel_attention=channel_attention, name=name)


def CofResUNet(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
               num_classes: int = 1, name: str = "cofres_unet"):
    """CofRes U-Net (Table 2): U-Net whose encoder modules are CofRes modules.

    ASSUMPTION: the bottom is a CofRes module too (it belongs to the encoder in RA V-Net);
    U-Net decoder as in :func:`UNet`; no CA.
    """
    return _build("CofResUNet", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, encoder="cofres", decoder="plain",
                  channel_attention="none", name=name)


def ResUNet(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
            num_classes: int = 1, name: str = "res_unet"):
    """Res U-Net (Tables 2 and 4): U-Net whose encoder levels are residual blocks.

    ASSUMPTION: one basic residual block (Conv 3×3-BN-ReLU → Conv 3×3-BN, projection
    Conv 1×1-BN shortcut when widths differ, add, ReLU) per encoder level and at the bottom;
    U-Net decoder as in :func:`UNet`.
    """
    return _build("ResUNet", input_shape=input_shape, base_filters=base_filters, depth=depth,
                  num_classes=num_classes, encoder="residual", decoder="plain",
                  channel_attention="none", name=name)


def UNet(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
         num_classes: int = 1, name: str = "unet"):
    """U-Net (Ronneberger et al. 2015) as the paper's backbone baseline, with BN.

    Two Conv 3×3 (same padding)-BN-ReLU per level and at the bottom, MaxPool 2; decoder level:
    Conv2DTranspose 2×2 stride 2 to the skip's width → concat [skip, up] → two
    Conv 3×3-BN-ReLU;
    head Conv 1×1 + sigmoid.
    ASSUMPTION: BN after every conv and same padding (as in RA V-Net), transposed-conv
    up-sampling (Ronneberger's "up-convolution"), no dropout.
    """
    return _build("UNet", input_shape=input_shape, base_filters=base_filters, depth=depth,
                  num_classes=num_classes, encoder="plain", decoder="plain",
                  channel_attention="none", name=name)
