"""Attention blocks shared across papers, rank-generic."""
from __future__ import annotations

from keras_liver.layers import ChannelAttention


def apply_channel_attention(x, *, name: str):
    """Channel attention (RA V-Net CA module, §2.4): ``E = β·softmax(A Aᵀ) A + A``, β₀ = 0.

    One :class:`~keras_liver.layers.ChannelAttention` layer named ``name`` (e.g. ``skip4_ca``).
    """
    return ChannelAttention(name=name)(x)
