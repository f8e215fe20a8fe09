"""Recurrent (ConvLSTM) fusion of feature maps, rank-generic (ConvLSTM2D / ConvLSTM3D)."""
from __future__ import annotations

from keras_liver import ndim
from keras_liver.layers import StackSequence


def apply_convlstm_fusion(first, second, filters: int, *, kernel_size=3, name: str):
    """Fuse two same-shaped maps with a ConvLSTM read over the sequence ``[first, second]``.

    Both maps ``(B, *S, C)`` are stacked as a length-2 sequence ``(B, 2, *S, C)`` (time axis 1)
    and fed to ``ConvLSTM{2,3}D(filters, kernel_size, padding="same",
    return_sequences=False)``, whose last hidden state ``(B, *S, filters)`` is returned. One
    ConvLSTM layer, so both steps share its weights (BCDU-Net, RA V-Net §2.5). The two steps
    are unrolled (identical results to the loop; much faster to trace).

    Layers: ``{name}_stack`` (:class:`~keras_liver.layers.StackSequence`), ``{name}_convlstm``.
    """
    if tuple(first.shape[1:]) != tuple(second.shape[1:]):
        raise ValueError(f"{name}: ConvLSTM fusion needs two maps of one shape; received "
                         f"{tuple(first.shape)} and {tuple(second.shape)}")
    rank = ndim.rank_of(first)
    sequence = StackSequence(axis=1, name=f"{name}_stack")([first, second])
    # unroll: the sequence always has two steps, and an unrolled graph traces in seconds where
    # the symbolic while-loop takes tens of seconds per model (same weights, same outputs).
    return ndim.conv_lstm(rank, filters, kernel_size, padding="same", return_sequences=False,
                          unroll=True, name=f"{name}_convlstm")(sequence)
