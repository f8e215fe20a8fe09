"""Convolution units and segmentation heads, rank-generic (2-D and 3-D by the input's rank).

Layer names follow keras-hub: ``apply_conv_bn_relu(x, 64, name="enc1_conv1")`` creates
``enc1_conv1_conv``, ``enc1_conv1_bn`` and ``enc1_conv1_relu``.
"""
from __future__ import annotations

from keras import layers

from keras_liver import ndim


def apply_conv_bn_relu(x, filters: int, kernel_size=3, *, strides=1, dilation_rate=1,
                       padding: str = "same", use_bias: bool = True,
                       kernel_initializer="glorot_uniform", activation: str | None = "relu",
                       name: str):
    """Conv → BatchNorm → activation (ReLU by default; ``activation=None`` stops after BN).

    Layers: ``{name}_conv``, ``{name}_bn`` and ``{name}_relu`` (``{name}_{activation}`` for
    another activation).
    """
    rank = ndim.rank_of(x)
    x = ndim.conv(rank, filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                  padding=padding, use_bias=use_bias, kernel_initializer=kernel_initializer,
                  name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def apply_conv_bn(x, filters: int, kernel_size=3, *, name: str, **kwargs):
    """Conv → BatchNorm, no activation (projection shortcuts, pre-add branches)."""
    return apply_conv_bn_relu(x, filters, kernel_size, activation=None, name=name, **kwargs)


def apply_unet_encoder_level(x, filters: int, *, kernel_initializer="glorot_uniform",
                             name: str):
    """U-Net encoder level (Ronneberger et al.): two Conv 3×3-BN-ReLU, ``{name}_conv1``,
    ``{name}_conv2``. The baseline of RA V-Net's and MSA-UNet's ablation tables."""
    x = apply_conv_bn_relu(x, filters, 3, kernel_initializer=kernel_initializer,
                           name=f"{name}_conv1")
    return apply_conv_bn_relu(x, filters, 3, kernel_initializer=kernel_initializer,
                              name=f"{name}_conv2")


def apply_unet_decoder_level(x, skip, *, kernel_initializer="glorot_uniform", name: str):
    """U-Net decoder level: up-conv 2×2 stride 2 to the skip's width (linear,
    ``{name}_upconv``), concat [skip, up] (``{name}_concat``), two Conv 3×3-BN-ReLU."""
    rank = ndim.rank_of(x)
    filters = skip.shape[-1]
    up = ndim.conv_transpose(rank, filters, 2, strides=2, padding="same",
                             kernel_initializer=kernel_initializer, name=f"{name}_upconv")(x)
    y = layers.Concatenate(axis=-1, name=f"{name}_concat")([skip, up])
    return apply_unet_encoder_level(y, filters, kernel_initializer=kernel_initializer, name=name)


def head_activation(num_classes: int) -> str:
    """``sigmoid`` for one foreground class, ``softmax`` over ``num_classes`` otherwise."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1; received {num_classes}")
    return "sigmoid" if num_classes == 1 else "softmax"


def apply_head(x, num_classes: int, *, activation: str | None = None, name: str = "head",
               kernel_initializer="glorot_uniform"):
    """Segmentation head: Conv 1×1 (``num_classes``) → sigmoid (1 class) or softmax (K > 1).

    Layers ``{name}_conv`` and ``{name}_{activation}``; the activation runs in float32
    (``dtype="float32"``), so a mixed-precision model still returns float32 probabilities.
    ``activation="linear"`` returns float32 logits. ``kernel_initializer`` defaults to Keras'
    (MSA-UNet's paper asks for He-normal everywhere).
    """
    rank = ndim.rank_of(x)
    activation = activation or head_activation(num_classes)
    x = ndim.conv(rank, num_classes, 1, kernel_initializer=kernel_initializer,
                  name=f"{name}_conv")(x)
    return layers.Activation(activation, dtype="float32", name=f"{name}_{activation}")(x)
