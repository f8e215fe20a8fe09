"""Attention Residual UNet (Abouabdallah, "Liver and Hepatic Vessel Segmentation Using
Attention Residual UNet Architecture", papers/arunet_liver_vessels.txt).

The paper describes its building blocks with textbook formulas (a scaled dot-product attention,
"two convolutional layers followed by a ReLU activation function and batch normalization");
the authors' released code, which produced the published numbers, builds something more
specific. We follow the code as SPEC §5 records it; ``docs/fidelity.md`` lists the
differences. The trainable parameter counts of the released models (SPEC §5; PyTorch
parameters = Keras trainable weights, 512×512×1 input; the paper itself gives none) are the
acceptance test: **515,812** for the liver model (f = 8) and **2,055,356** for the vessel
model (f = 16).

Paper module → function → layer-name prefix
-------------------------------------------
===============================  ===============================  ===================
Paper module                     Function / layer                 Layer-name prefix
===============================  ===============================  ===================
Encoder level k = 1…4 residual   ``blocks.apply_residual_block``  ``enc{k}_res_``
block (f, 2f, 4f, 8f)
Max pooling after level k        ``MaxPooling2D``                 ``enc{k}_pool``
Bottleneck residual block (16f)  ``blocks.apply_residual_block``  ``bottom_res_``
Up-sampling, transposed conv     ``Conv2DTranspose``              ``dec{k}_up``
2×2 stride 2
Attention gate, levels 2…4       ``blocks.apply_attention_gate``  ``dec{k}_gate_``
Concatenation                    ``Concatenate``                  ``dec{k}_concat``
Decoder residual block           ``blocks.apply_residual_block``  ``dec{k}_res_``
Head Conv 1×1 (3) + softmax      ``blocks.apply_head``            ``head_``
===============================  ===============================  ===================

Levels are numbered from the top: ``enc1``/``dec1`` work at the input resolution with f
channels, ``enc4``/``dec4`` at 1/8 with 8f, ``bottom`` at 1/16 with 16f.

Published configurations (both 512×512×1, 3 classes, softmax)
--------------------------------------------------------------
- :data:`ARUNET_LIVER` = ``dict(base_filters=8)``: liver model, classes 0/1/2 =
  background/liver/tumour (MSD Task03) — ``AttentionResUNet(**ARUNET_LIVER)``.
- :data:`ARUNET_VESSEL` = ``dict(base_filters=16)``: vessel model, classes 0/1/2 =
  background/vessel/tumour (MSD Task08).

Readings (released code, pinned by the two parameter counts)
------------------------------------------------------------
- Residual block: Conv 3×3-BN-ReLU → Conv 3×3-BN; shortcut identity when the width is kept,
  otherwise Conv 1×1-BN; add; ReLU (post-activation, He et al. 2016) — exactly
  :func:`~keras_liver.blocks.apply_residual_block`.
- Every convolution has a bias: the 3×3 convs, the 1×1 shortcut convs, the transposed convs,
  the three 1×1 convs of each attention gate, the head. BN is affine (γ, β trainable).
- The transposed conv halves the width (to the skip's width); the gate's F_int is half the
  skip's width; the gate's ψ branch is Conv 1×1 (1)-BN-sigmoid.
- Concatenation order: [gated skip, up] at levels 4…2, [up, skip] at level 1 (no gate there).
  The order does not change the count; it fixes the weight layout of the following conv.
- ASSUMPTION: encoder level = residual block, then MaxPool 2 of its output; the skip is the
  block's output (the count does not see where the pooling sits).
- ASSUMPTION: Keras default initialisers and BN settings (momentum 0.99, ε 1e-3) where the
  PyTorch code has PyTorch's (momentum 0.1 ≙ 0.9, ε 1e-5); they do not change the count.
"""
from __future__ import annotations

import keras
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import apply_attention_gate, apply_head, apply_residual_block

#: Liver model of the paper (f = 8 → 515,812 trainable parameters at 512×512×1).
ARUNET_LIVER = dict(base_filters=8)
#: Hepatic vessel model of the paper (f = 16 → 2,055,356 trainable parameters at 512×512×1).
ARUNET_VESSEL = dict(base_filters=16)

DEPTH = 4  # poolings; encoder f, 2f, 4f, 8f, bottleneck 16f


def AttentionResUNet(input_shape=(512, 512, 1), base_filters: int = 8, num_classes: int = 3,
                     name: str = "attention_res_unet"):
    """Attention Residual UNet as the authors' released code builds it (SPEC §5).

    Encoder: residual blocks at f, 2f, 4f, 8f, each followed by MaxPool 2; bottleneck residual
    block at 16f. Decoder level k = 4…1: Conv2DTranspose 2×2 stride 2 to the skip's width →
    (k ≥ 2) additive attention gate on the skip with g = the up-sampled map and
    F_int = width(skip)/2 → concat [gated skip, up] (level 1: [up, skip], no gate) → residual
    block at the skip's width. Head Conv 1×1 (``num_classes``) → softmax (sigmoid for 1 class),
    returned in float32.

    Args:
        input_shape: ``(H, W, C)``; H and W divisible by 16. Paper: 512×512×1.
        base_filters: f, the width of the first level (paper: 8 for the liver model, 16 for
            the vessel model; see :data:`ARUNET_LIVER`, :data:`ARUNET_VESSEL`).
        num_classes: output channels (paper: 3, softmax).
        name: the model's name.

    Readings and ASSUMPTIONs: see the module docstring and ``docs/fidelity.md``.
    Raises ``keras_liver.errors.ModelInputError`` for an input shape it cannot take.
    """
    builder = "AttentionResUNet"
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ValueError(f"{builder} needs base_filters >= 1; "
                         f"received base_filters={base_filters!r}")
    shape = ndim.check_input_shape(builder, input_shape, rank=2, divisor=2 ** DEPTH)
    rank = len(shape) - 1
    widths = [base_filters * 2 ** level for level in range(DEPTH + 1)]

    inputs = keras.Input(shape=shape, name="input")
    x, skips = inputs, []
    for level in range(1, DEPTH + 1):
        skip = apply_residual_block(x, widths[level - 1], name=f"enc{level}_res")
        skips.append(skip)
        x = ndim.max_pool(rank, 2, name=f"enc{level}_pool")(skip)
    x = apply_residual_block(x, widths[DEPTH], name="bottom_res")

    for level in range(DEPTH, 0, -1):
        skip, width = skips[level - 1], widths[level - 1]
        up = ndim.conv_transpose(rank, width, 2, strides=2, padding="same",
                                 name=f"dec{level}_up")(x)
        if level > 1:
            gated = apply_attention_gate(skip, up, width // 2, name=f"dec{level}_gate")
            x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([gated, up])
        else:
            x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([up, skip])
        x = apply_residual_block(x, width, name=f"dec{level}_res")

    outputs = apply_head(x, num_classes, name="head")
    return keras.Model(inputs, outputs, name=name)


__all__ = ["ARUNET_LIVER", "ARUNET_VESSEL", "AttentionResUNet"]
