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
