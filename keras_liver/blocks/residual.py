"""Residual units shared across papers, rank-generic."""
from __future__ import annotations

from keras import layers

from keras_liver import ndim
from keras_liver.blocks.conv import apply_conv_bn, apply_conv_bn_relu


def apply_residual_block(x, filters: int, *, kernel_size=3, strides=1, avg_down: bool = False,
                         use_bias: bool = True, kernel_initializer="glorot_uniform", name: str):
    """Basic residual block (He et al. 2016): Conv-BN-ReLU → Conv-BN, + shortcut, ReLU.

    The shortcut is the identity when the width and the resolution are kept, otherwise a
    projection Conv 1×1 (``filters``, stride ``strides``)-BN. ``avg_down=True`` is the
    ResNet-D shortcut for ``strides > 1`` (AvgPool → Conv 1×1 → BN, "bag of tricks").

    Layers: ``{name}_conv1_{conv,bn,relu}``, ``{name}_conv2_{conv,bn}``,
    ``{name}_shortcut_{conv,bn}`` (and ``{name}_shortcut_pool``), ``{name}_add``,
    ``{name}_out`` (the final ReLU).
    """
    rank = ndim.rank_of(x)
    conv_kwargs = dict(use_bias=use_bias, kernel_initializer=kernel_initializer)
    y = apply_conv_bn_relu(x, filters, kernel_size, strides=strides, name=f"{name}_conv1",
                           **conv_kwargs)
    y = apply_conv_bn(y, filters, kernel_size, name=f"{name}_conv2", **conv_kwargs)
    shortcut = x
    if x.shape[-1] != filters or strides != 1:
        if avg_down and strides != 1:
            shortcut = ndim.avg_pool(rank, strides, strides=strides, padding="same",
                                     name=f"{name}_shortcut_pool")(shortcut)
            shortcut = apply_conv_bn(shortcut, filters, 1, name=f"{name}_shortcut", **conv_kwargs)
        else:
            shortcut = apply_conv_bn(shortcut, filters, 1, strides=strides,
                                     name=f"{name}_shortcut", **conv_kwargs)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def apply_preact_residual_unit(x, filters: int | None = None, *, bottleneck_ratio: int = 4,
                               kernel_size=3, name: str):
    """Full pre-activation bottleneck residual unit (He et al. 2016, "Identity Mappings in Deep
    Residual Networks"), as Wang et al. 2017's Residual Attention Network and RA-UNet use it
    (RA-UNet §III-D2, Fig. 5; the authors' ``residual_block``/``residual_block_2d``).

    BN → ReLU → Conv 1×1 (``filters // bottleneck_ratio``) → BN → ReLU → Conv
    ``kernel_size`` (same width, ``same`` padding) → BN → ReLU → Conv 1×1 (``filters``); the
    shortcut is a Conv 1×1 (``filters``) of the block input — ALWAYS, also when the widths
    match (the authors' code compares the output width with the bottleneck width, so it always
    projects); add; no activation after the add. Convs keep their bias and Keras' default
    initialisers. ``filters=None`` keeps the input's width.

    Layers (11): ``{name}_conv{i}_bn``, ``{name}_conv{i}_relu``, ``{name}_conv{i}_conv`` for
    i = 1, 2, 3 in that (pre-activation) order, ``{name}_shortcut_conv``, ``{name}_add``.
    """
    rank = ndim.rank_of(x)
    filters = int(x.shape[-1]) if filters is None else int(filters)
    inner = filters // bottleneck_ratio
    if inner < 1:
        raise ValueError(f"{name}: a bottleneck unit needs filters >= bottleneck_ratio "
                         f"({bottleneck_ratio}); received filters={filters}")
    y = x
    for i, (width, size) in enumerate(((inner, 1), (inner, kernel_size), (filters, 1)), start=1):
        y = layers.BatchNormalization(name=f"{name}_conv{i}_bn")(y)
        y = layers.Activation("relu", name=f"{name}_conv{i}_relu")(y)
        y = ndim.conv(rank, width, size, padding="same", name=f"{name}_conv{i}_conv")(y)
    shortcut = ndim.conv(rank, filters, 1, padding="same", name=f"{name}_shortcut_conv")(x)
    return layers.Add(name=f"{name}_add")([y, shortcut])
