"""Rank-generic building blocks shared by two or more papers.

Every block is ``apply_*(x, ..., name=...)``; the spatial rank (2-D or 3-D) comes from ``x``
through :mod:`keras_liver.ndim`. Pieces used by a single paper live in that paper's model file.
"""
from keras_liver.blocks.attention import (apply_attention_gate, apply_attention_residual_module,
                                         apply_channel_attention)
from keras_liver.blocks.conv import (apply_conv_bn, apply_conv_bn_relu, apply_head,
                                     apply_unet_decoder_level, apply_unet_encoder_level,
                                     head_activation)
from keras_liver.blocks.recurrent import apply_convlstm_fusion
from keras_liver.blocks.residual import apply_preact_residual_unit, apply_residual_block

__all__ = [
    "apply_attention_gate",
    "apply_attention_residual_module",
    "apply_channel_attention",
    "apply_conv_bn",
    "apply_conv_bn_relu",
    "apply_convlstm_fusion",
    "apply_head",
    "apply_preact_residual_unit",
    "apply_residual_block",
    "apply_unet_decoder_level",
    "apply_unet_encoder_level",
    "head_activation",
]
