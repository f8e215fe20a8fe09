"""Registered custom layers (``keras.ops`` only; no ``Lambda``, no ``tf.*``).

Each layer stores one attribute per constructor argument and returns them from
``get_config``, so models survive ``to_json``/``model_from_json`` and ``.keras`` save/load.
All are rank-generic: they work on ``(B, H, W, C)`` and ``(B, H, W, D, C)`` alike.

- :class:`ChannelAttention` — the CA module of RA V-Net (§2.4, Eq. 1–2).
- :class:`LinearUpSampling` — bi-/trilinear up-sampling by integer factors (Keras'
  ``UpSampling3D`` is nearest-only).
- :class:`StackSequence` — stack feature maps on a new "time" axis for ``ConvLSTM``.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "keras_liver"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelAttention(keras.layers.Layer):
    """Channel attention, RA V-Net §2.4 (Eq. 1–2), after DANet's CAM.

    With ``A`` the input reshaped to ``N × C`` (``N`` = all spatial positions flattened)::

        G[y, x] = softmax_x( A_y · A_x )          # C × C, Eq. 1
        E       = β · (G A) + A                   # Eq. 2, E_y = β Σ_x G[y, x] A_x + A_y

    ``β`` is one scalar weight initialised to 0, so the layer is the identity at
    initialisation. This is the paper's formula; DANet's code applies the softmax to
    ``rowmax(energy) − energy`` instead, which we do not.

    The product and the softmax are computed in float32 whatever the dtype policy (the
    ``C × C`` energies overflow float16), and ``β`` is read in float32 (``autocast=False``);
    the output is cast back to the layer's compute dtype.
    """

    def __init__(self, beta_initializer="zeros", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.supports_masking = False

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("ChannelAttention needs a known channel count; "
                             f"received input shape {tuple(input_shape)}")
        self.beta = self.add_weight(name="beta", shape=(), initializer=self.beta_initializer,
                                    trainable=True, dtype="float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        shape = ops.shape(x)
        channels = x.shape[-1]
        a = ops.reshape(x, (shape[0], -1, channels))                 # (B, N, C)
        energy = ops.matmul(ops.transpose(a, (0, 2, 1)), a)          # (B, C, C): A_y · A_x
        g = ops.softmax(energy, axis=-1)                             # softmax over x
        weighted = ops.matmul(a, ops.transpose(g, (0, 2, 1)))        # (B, N, C): Σ_x G[y,x] A_x
        e = ops.cast(self.beta, "float32") * weighted + a
        return ops.cast(ops.reshape(e, shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["beta_initializer"] = keras.initializers.serialize(self.beta_initializer)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LinearUpSampling(keras.layers.Layer):
    """Up-sample every spatial axis by an integer factor with linear interpolation.

    Separable, so 2 spatial axes give bilinear and 3 give trilinear interpolation. Sampling
    uses half-pixel centres with edges clamped — the convention of ``tf.image.resize`` and
    ``UpSampling2D(interpolation="bilinear")`` (no anti-aliasing is involved when enlarging).
    For a factor ``s``, output sample ``s·i + k`` sits at input coordinate
    ``i + d`` with ``d = (k + 0.5)/s − 0.5`` and mixes ``x[i]`` with ``x[i−1]`` (``d < 0``)
    or ``x[i+1]`` (``d > 0``).

    Args:
        size: an int (same factor on every spatial axis) or one int per spatial axis.
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = size if isinstance(size, int) else tuple(int(s) for s in size)

    def _sizes(self, rank):
        sizes = (self.size,) * rank if isinstance(self.size, int) else self.size
        if len(sizes) != rank:
            raise ValueError(f"LinearUpSampling size {self.size} does not fit a {rank}-D map")
        return sizes

    def call(self, inputs):
        rank = len(inputs.shape) - 2
        x = inputs
        for axis, factor in enumerate(self._sizes(rank), start=1):
            if factor != 1:
                x = _linear_upsample_axis(x, axis, factor)
        return x

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) - 2
        spatial = tuple(None if n is None else n * s
                        for n, s in zip(input_shape[1:-1], self._sizes(rank)))
        return (input_shape[0],) + spatial + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


def _take(x, axis, start, stop):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _linear_upsample_axis(x, axis, factor):
    previous = ops.concatenate([_take(x, axis, 0, 1), _take(x, axis, None, -1)], axis=axis)
    following = ops.concatenate([_take(x, axis, 1, None), _take(x, axis, -1, None)], axis=axis)
    phases = []
    for k in range(factor):
        d = (k + 0.5) / factor - 0.5
        if d < 0:
            phases.append((1.0 + d) * x + (-d) * previous)
        elif d > 0:
            phases.append((1.0 - d) * x + d * following)
        else:
            phases.append(x)
    y = ops.stack(phases, axis=axis + 1)                 # (..., n, factor, ...)
    shape = list(ops.shape(x))
    shape[axis] = shape[axis] * factor
    return ops.reshape(y, shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StackSequence(keras.layers.Layer):
    """Stack same-shaped tensors on a new axis: ``[(B, *S, C)] * T -> (B, T, *S, C)``.

    The RA V-Net AR module (§2.5) reshapes the skip and the up-sampled map to
    ``(B, 1, H, W, C)`` and concatenates them on axis 1 before ``ConvLSTM2D``; this is that
    reshape + concatenate in one layer, valid for unknown spatial sizes too.
    """

    def __init__(self, axis=1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, inputs):
        return ops.stack(list(inputs), axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape[0])
        axis = self.axis if self.axis >= 0 else len(shape) + 1 + self.axis
        shape.insert(axis, len(input_shape))
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config
