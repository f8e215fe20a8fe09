"""The one place that maps a spatial rank (2 or 3) to Keras layer classes.

Blocks never name ``Conv2D`` or ``Conv3D`` themselves: they read the rank from their input with
:func:`rank_of` and ask this module for the layer, so one code path serves 2-D ``(H, W, C)``
and 3-D ``(H, W, D, C)`` tensors (channels last, SPEC §0)::

    rank = ndim.rank_of(x)
    y = ndim.conv(rank, 32, 3, padding="same", name="enc1_conv1_conv")(x)

Linear up-sampling: Keras' ``UpSampling2D`` has ``interpolation="bilinear"`` but ``UpSampling3D``
has no interpolation argument (nearest only). :func:`upsampling` therefore returns
``UpSampling2D(interpolation="bilinear")`` in 2-D and the registered
:class:`keras_liver.layers.LinearUpSampling` in 3-D (trilinear, half-pixel centres, edges
clamped — the same convention as ``tf.image.resize``/``UpSampling2D`` bilinear, checked by
``tests/test_blocks.py``).
"""
from __future__ import annotations

import keras
from keras import layers

SUPPORTED_RANKS = (2, 3)

_CLASSES = {
    "conv": {2: layers.Conv2D, 3: layers.Conv3D},
    "conv_transpose": {2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose},
    "max_pool": {2: layers.MaxPooling2D, 3: layers.MaxPooling3D},
    "avg_pool": {2: layers.AveragePooling2D, 3: layers.AveragePooling3D},
    "upsampling": {2: layers.UpSampling2D, 3: layers.UpSampling3D},
    "global_avg_pool": {2: layers.GlobalAveragePooling2D, 3: layers.GlobalAveragePooling3D},
    "spatial_dropout": {2: layers.SpatialDropout2D, 3: layers.SpatialDropout3D},
    "conv_lstm": {2: layers.ConvLSTM2D, 3: layers.ConvLSTM3D},
}

LINEAR_INTERPOLATIONS = ("bilinear", "trilinear", "linear")


def rank_of(x) -> int:
    """Number of spatial axes of a channels-last batch tensor: ``len(x.shape) - 2``."""
    rank = len(x.shape) - 2
    if rank not in SUPPORTED_RANKS:
        raise ValueError(
            f"expected a batch of 2-D (B, H, W, C) or 3-D (B, H, W, D, C) feature maps; "
            f"received a tensor of shape {tuple(x.shape)}")
    return rank


def layer_class(kind: str, rank: int) -> type:
    """The Keras class for ``kind`` (a key of ``_CLASSES``) at spatial rank 2 or 3."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown layer kind {kind!r}; expected one of {sorted(_CLASSES)}")
    if rank not in SUPPORTED_RANKS:
        raise ValueError(f"spatial rank must be 2 or 3; received {rank}")
    return _CLASSES[kind][rank]


def conv(rank: int, filters: int, kernel_size, **kwargs) -> layers.Layer:
    return layer_class("conv", rank)(filters, kernel_size, **kwargs)


def conv_transpose(rank: int, filters: int, kernel_size, **kwargs) -> layers.Layer:
    return layer_class("conv_transpose", rank)(filters, kernel_size, **kwargs)


def max_pool(rank: int, pool_size=2, **kwargs) -> layers.Layer:
    return layer_class("max_pool", rank)(pool_size=pool_size, **kwargs)


def avg_pool(rank: int, pool_size=2, **kwargs) -> layers.Layer:
    return layer_class("avg_pool", rank)(pool_size=pool_size, **kwargs)


def global_avg_pool(rank: int, **kwargs) -> layers.Layer:
    return layer_class("global_avg_pool", rank)(**kwargs)


def spatial_dropout(rank: int, rate: float, **kwargs) -> layers.Layer:
    return layer_class("spatial_dropout", rank)(rate, **kwargs)


def conv_lstm(rank: int, filters: int, kernel_size, **kwargs) -> layers.Layer:
    """``ConvLSTM2D`` / ``ConvLSTM3D``: input ``(B, T, *spatial, C)``, i.e. rank + 3 axes."""
    return layer_class("conv_lstm", rank)(filters, kernel_size, **kwargs)


def upsampling(rank: int, size=2, interpolation: str = "nearest", **kwargs) -> layers.Layer:
    """Up-sampling by an integer factor per spatial axis.

    ``interpolation="nearest"`` gives ``UpSampling2D``/``UpSampling3D``; ``"bilinear"`` (aliases
    ``"linear"``, ``"trilinear"``) gives ``UpSampling2D(interpolation="bilinear")`` in 2-D and
    :class:`keras_liver.layers.LinearUpSampling` (trilinear) in 3-D.
    """
    sizes = _per_axis(size, rank)
    if interpolation == "nearest":
        return layer_class("upsampling", rank)(size=sizes, **kwargs)
    if interpolation not in LINEAR_INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be 'nearest' or one of {LINEAR_INTERPOLATIONS}; "
            f"received {interpolation!r}")
    if rank == 2:
        if "dtype" not in kwargs and keras.config.dtype_policy().compute_dtype != "float32":
            # Under a mixed policy the bilinear up-sampling computes in float32: the gradient
            # of tf.image.resize is float32 while the next ReLU's is 16-bit, and XLA refuses
            # to compile the mixed-precision train step (keras-team/keras#20931,
            # tensorflow/tensorflow#81273; the maintainers' workaround). No weights change.
            kwargs["dtype"] = "float32"
        return layers.UpSampling2D(size=sizes, interpolation="bilinear", **kwargs)
    from keras_liver.layers import LinearUpSampling

    layer_class("upsampling", rank)  # validates the rank
    return LinearUpSampling(size=sizes, **kwargs)


def _per_axis(size, rank: int) -> tuple[int, ...]:
    if isinstance(size, int):
        return (size,) * rank
    size = tuple(int(s) for s in size)
    if len(size) != rank:
        raise ValueError(f"size needs {rank} entries for a {rank}-D map; received {size}")
    return size


def check_input_shape(builder: str, input_shape, *, rank: int | tuple[int, ...],
                      divisor: int) -> tuple[int, ...]:
    """Validate a builder's channels-last ``input_shape`` and return it as a tuple of ints.

    ``rank`` is the spatial rank (or ranks) the network accepts; every spatial size must be a
    known multiple of ``divisor`` (``2**depth`` for a U-Net with ``depth`` poolings). Raises
    :class:`keras_liver.errors.ModelInputError` saying what was received and what was expected,
    e.g. "RAVNet needs spatial sizes divisible by 16; received input_shape=(250, 250, 1)".
    """
    from keras_liver.errors import ModelInputError

    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ModelInputError(f"{builder} needs input_shape as a tuple of ints; "
                              f"received input_shape={input_shape!r}") from None
    if len(shape) - 1 not in ranks:
        layouts = " or ".join({2: "(H, W, C)", 3: "(H, W, D, C)"}[r] for r in ranks)
        raise ModelInputError(f"{builder} needs input_shape={layouts}; "
                              f"received input_shape={shape}")
    if shape[-1] is None or shape[-1] < 1:
        raise ModelInputError(f"{builder} needs a known, positive channel count; "
                              f"received input_shape={shape}")
    if any(s is None or s < divisor or s % divisor for s in shape[:-1]):
        raise ModelInputError(f"{builder} needs spatial sizes divisible by {divisor}; "
                              f"received input_shape={shape}")
    return shape
