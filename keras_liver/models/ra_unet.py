"""RA-UNet (Jin et al., "RA-UNet: A hybrid deep attention-aware network to extract liver and
tumor in CT scans", papers/ra_unet.txt): RA-UNet-I (2-D liver localisation, Table II),
RA-UNet-II (3-D liver and tumour, Table III) and the brain-tumour variant (Table VIII).

The authors released Keras code (github.com/RanSuLab/RAUNet-tumor-segmentation,
``build_model.py``); SPEC §1 follows it, and so do these builders, layer for layer: at the
published sizes they have exactly the code's parameter counts and the paper's "depth of 641"
(§III-F) as ``len(model.layers)``, InputLayer included. See ``docs/fidelity.md`` (RA-UNet).

Paper module → function → layer-name prefix
-------------------------------------------
==================================  ===================================  =====================
Paper module (Table II/III/VIII)    Function / layer                     Layer-name prefix
==================================  ===================================  =====================
Conv1: Conv 3×3 (4F)-BN-ReLU        ``apply_conv_bn_relu``               ``enc1_conv1_``
Pooling after level k               ``MaxPooling{2,3}D``                 ``enc{k}_pool``
Res1…Res4 at levels 2…5 (§III-D2,   ``apply_preact_residual_unit``       ``enc{k}_res{k-1}_``
Fig. 5)
Res5, Res6 (bottom)                 ``apply_preact_residual_unit`` ×2    ``bottom_res5_``,
                                                                         ``bottom_res6_``
Att1…Att4 on Res4…Res1, D = 0…3     ``apply_attention_residual_module``  ``skip{k}_att{6-k}_``
(§III-D3, Eq. 2, Fig. 4)
Up1…Up4 (nearest ×2), concat        ``UpSampling{2,3}D``,                ``dec{k}_up{6-k}``,
[Up, Att], Res7…Res10 (levels 5…2)  ``Concatenate``, residual unit       ``dec{k}_concat``,
                                                                         ``dec{k}_res{12-k}_``
Up5, concat [Up5, Conv1], Conv2     up-sampling, ``Concatenate``,        ``dec1_up5``,
(Conv 3×3 (4F)-BN-ReLU)             ``apply_conv_bn_relu``               ``dec1_concat``,
                                                                         ``dec1_conv2_``
Conv3: Conv 3×3 (1) + sigmoid       one ``Conv{2,3}D`` layer             ``head_conv3``
==================================  ===================================  =====================

The blocks are :func:`keras_liver.blocks.apply_preact_residual_unit` and
:func:`keras_liver.blocks.apply_attention_residual_module`, shared by 2-D and 3-D.

Levels are numbered from the top: level 1 works at the input resolution, level k at
1/2^(k-1) of it; ``bottom`` is level 6 (1/32). Inside each residual unit and attention module
the names follow the blocks' docstrings (``enc2_res1_conv2_conv``,
``skip2_att4_mask_down3_res1_add``, ``skip5_att1_mask_sigmoid``).

Builders (defaults = published configuration, sigmoid head)
------------------------------------------------------------
- :func:`RAUNet2D` — RA-UNet-I, 256×256×1, F = 4 (Table II): 747,321 params, 641 layers.
- :func:`RAUNet3D` — RA-UNet-II, 224×224×32×1 (liver; 128×128×32×1 for tumour patches), F = 8
  (Table III): 4,439,697 params, 641 layers.
- :func:`RAUNetBrain` — Table VIII, 64×64×64×4, F = 8 with encoder widths 8F…64F:
  12,813,377 params, 641 layers.

Readings (all from the authors' code; none is an ASSUMPTION of ours)
--------------------------------------------------------------------
- Residual unit: pre-activation bottleneck (C/4, C/4, C) with a Conv 1×1 shortcut always; no
  activation after the add. Convs keep their bias and Keras' default initialisers; BN has
  Keras' default settings.
- Attention module: p = 1, t = 2, r = 1, width kept, nearest up-sampling, two linear Conv 1×1
  before the sigmoid, output (1 + M) ⊙ T then one residual unit; soft-mask depth D = 0 on the
  deepest skip (Res4) … 3 on the shallowest (Res1).
- Head: Conv 3×3 (not 1×1) with one filter and the sigmoid inside the conv layer (one layer:
  the code's ``Conv(1, 3, activation='sigmoid')``; a separate Activation layer would make
  642 layers). ``num_classes`` K > 1 (not in the paper) gives a K-filter softmax conv.
- Where the code's layers cannot be written in this project's style: ``Lambda(x + 1)`` is a
  ``Rescaling(scale=1, offset=1)`` layer (same count, no Python in the saved model).
"""
from __future__ import annotations

import keras
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import (apply_attention_residual_module, apply_conv_bn_relu,
                                apply_preact_residual_unit, head_activation)

#: Five max-poolings in the U-Net, and the deepest soft mask bottoms out at the same 1/32
#: resolution, so every spatial size must be a multiple of 32 (SPEC §1).
DIVISOR = 32
#: Soft-mask depth D of the attention module on skip level k (Table II: Att1 on Res4 has
#: depth 0 … Att4 on Res1 has depth 3).
ATTENTION_DEPTH = {5: 0, 4: 1, 3: 2, 2: 3}


def _check_base_filters(builder, base_filters):
    # The narrowest residual unit has 4F channels and a 4F/4 = F bottleneck.
    if not isinstance(base_filters, int) or isinstance(base_filters, bool) or base_filters < 1:
        raise ValueError(f"{builder} needs base_filters >= 1; "
                         f"received base_filters={base_filters!r}")


def _build(builder, *, input_shape, rank, stem_filters, encoder_filters, num_classes, name):
    """RA-UNet (Fig. 2(d), Tables II, III, VIII).

    ``stem_filters``: width of Conv1 and Conv2. ``encoder_filters``: widths of Res1…Res4 and
    of the bottom Res5/Res6; the decoder residual unit at level k has the width of the skip it
    joins (Res7…Res10 = widths of Res4…Res1).
    """
    shape = ndim.check_input_shape(builder, input_shape, rank=rank, divisor=DIVISOR)
    activation = head_activation(num_classes)
    *res_filters, bottom_filters = encoder_filters

    inputs = keras.Input(shape=shape, name="input")
    # Encoder (Table II, left column).
    conv1 = apply_conv_bn_relu(inputs, stem_filters, 3, name="enc1_conv1")
    x, skips = conv1, {}
    for level, filters in enumerate(res_filters, start=2):      # Res1..Res4 at levels 2..5
        x = ndim.max_pool(rank, 2, name=f"enc{level - 1}_pool")(x)
        x = apply_preact_residual_unit(x, filters, name=f"enc{level}_res{level - 1}")
        skips[level] = x
    x = ndim.max_pool(rank, 2, name=f"enc{len(res_filters) + 1}_pool")(x)
    x = apply_preact_residual_unit(x, bottom_filters, name="bottom_res5")
    x = apply_preact_residual_unit(x, bottom_filters, name="bottom_res6")
    # Decoder (Table II, right column): Att_i on the skip, Up_i, concat [Up_i, Att_i], Res_{6+i}.
    for index, level in enumerate(sorted(skips, reverse=True), start=1):   # levels 5..2
        skip = skips[level]
        att = apply_attention_residual_module(skip, depth=ATTENTION_DEPTH[level],
                                              name=f"skip{level}_att{index}")
        up = ndim.upsampling(rank, 2, name=f"dec{level}_up{index}")(x)
        x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([up, att])
        x = apply_preact_residual_unit(x, int(skip.shape[-1]), name=f"dec{level}_res{6 + index}")
    # Level 1 and head: Up5, concat [Up5, Conv1], Conv2 (Conv-BN-ReLU), Conv3 (sigmoid).
    up = ndim.upsampling(rank, 2, name="dec1_up5")(x)
    x = layers.Concatenate(axis=-1, name="dec1_concat")([up, conv1])
    x = apply_conv_bn_relu(x, stem_filters, 3, name="dec1_conv2")
    # One layer, as the authors' Conv(1, 3, activation='sigmoid'); float32 so a mixed-precision
    # model still returns float32 probabilities.
    outputs = ndim.conv(rank, num_classes, 3, padding="same", activation=activation,
                        dtype="float32", name="head_conv3")(x)
    return keras.Model(inputs, outputs, name=name)


def RAUNet2D(input_shape=(256, 256, 1), base_filters: int = 4, num_classes: int = 1,
             name: str = "ra_unet_2d"):
    """RA-UNet-I (§III-E, Table II): the 2-D network that localises the liver (Fig. 2(a)).

    Conv1 4F → Res1…Res4 at 4F, 8F, 16F, 32F → bottom Res5, Res6 at 64F → four decoder levels
    (Att D = 0…3, nearest up-sampling, concat, residual unit at 32F, 16F, 8F, 4F) → Up5,
    concat Conv1, Conv2 (4F) → Conv3 (3×3, sigmoid). Authors' code:
    ``build_res_atten_unet_2d(filter_num=4)``.

    Args:
        input_shape: ``(H, W, C)``, H and W multiples of 32. Paper: 256×256×1 slices.
        base_filters: F (paper: 4 → widths 16, 16, 32, 64, 128, 256 as in Table II).
        num_classes: 1 → sigmoid (paper); K > 1 → K-channel softmax (not in the paper).

    Published defaults: 747,321 parameters, 641 layers (InputLayer included).
    Raises ``keras_liver.errors.ModelInputError`` for an input shape it cannot take.
    """
    _check_base_filters("RAUNet2D", base_filters)
    f = base_filters
    return _build("RAUNet2D", input_shape=input_shape, rank=2, stem_filters=4 * f,
                  encoder_filters=(4 * f, 8 * f, 16 * f, 32 * f, 64 * f),
                  num_classes=num_classes, name=name)


def RAUNet3D(input_shape=(224, 224, 32, 1), base_filters: int = 8, num_classes: int = 1,
             name: str = "ra_unet_3d"):
    """RA-UNet-II (§III-F, §III-G, Table III): the 3-D network for the liver VOI (Fig. 2(b))
    and, trained again on 128×128×32×1 patches, for tumours (Fig. 2(c)).

    Same layout as :func:`RAUNet2D` in 3-D with F = 8 (Table III: 32, 32, 64, 128, 256, 512).
    Authors' code: ``build_res_atten_unet_3d(filter_num=8)``. Tensors are ``(H, W, D, C)``
    (SPEC §0): 224×224 in-plane, 32 slices.

    Args:
        input_shape: ``(H, W, D, C)``, every spatial size a multiple of 32. Paper:
            224×224×32×1 (liver), 128×128×32×1 (tumour).
        base_filters: F (paper: 8).
        num_classes: 1 → sigmoid (paper); K > 1 → K-channel softmax (not in the paper).

    Published defaults: 4,439,697 parameters (the paper's "4M"), 641 layers (its "depth of
    641", §III-F) at either input size.
    """
    _check_base_filters("RAUNet3D", base_filters)
    f = base_filters
    return _build("RAUNet3D", input_shape=input_shape, rank=3, stem_filters=4 * f,
                  encoder_filters=(4 * f, 8 * f, 16 * f, 32 * f, 64 * f),
                  num_classes=num_classes, name=name)


def RAUNetBrain(input_shape=(64, 64, 64, 4), base_filters: int = 8, num_classes: int = 1,
                name: str = "ra_unet_brain"):
    """RA-UNet for brain tumours (§IV-E, Table VIII): 3-D, four MRI modalities stacked as
    channels, whole tumour as one class.

    Conv1 4F (32) → Res1…Res4 at 8F, 16F, 32F, 64F (64 … 512) → bottom 64F ×2 (512) →
    decoder units at 64F, 32F, 16F, 8F (512, 256, 128, 64) → Conv2 4F (32) → Conv3 sigmoid.
    Authors' code: ``build_brain_tumor_res_atten_unet_3d(filter_num=8)``.

    Args:
        input_shape: ``(H, W, D, C)``, multiples of 32. Paper: 64×64×64×4 patches.
        base_filters: F (paper: 8).
        num_classes: 1 → sigmoid (paper); K > 1 → K-channel softmax (not in the paper).

    Published defaults: 12,813,377 parameters (the paper's "12M"), 641 layers.
    """
    _check_base_filters("RAUNetBrain", base_filters)
    f = base_filters
    return _build("RAUNetBrain", input_shape=input_shape, rank=3, stem_filters=4 * f,
                  encoder_filters=(8 * f, 16 * f, 32 * f, 64 * f, 64 * f),
                  num_classes=num_classes, name=name)
