"""Registered custom layers (``keras.ops`` only; no ``Lambda``, no ``tf.*``).

Each layer stores one attribute per constructor argument and returns them from
``get_config``, so models survive ``to_json``/``model_from_json`` and ``.keras`` save/load.
All are rank-generic: they work on ``(B, H, W, C)`` and ``(B, H, W, D, C)`` alike.

- :class:`ChannelAttention` — the CA module of RA V-Net (§2.4, Eq. 1–2).
- :class:`LinearUpSampling` — bi-/trilinear up-sampling by integer factors (Keras'
  ``UpSampling3D`` is nearest-only).
- :class:`StackSequence` — stack feature maps on a new "time" axis for ``ConvLSTM``.
- :class:`DropBlock` — structured dropout of contiguous blocks (Ghiasi et al. 2018), used at
  the end of MSA-UNet's MSRB (Eq. 1).
"""
from __future__ import annotations

import keras
import numpy as np
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropBlock(keras.layers.Layer):
    """DropBlock (Ghiasi, Lin and Le, "DropBlock: A regularization method for convolutional
    networks", NeurIPS 2018, Algorithm 1), for 2-D ``(B, H, W, C)`` and 3-D
    ``(B, H, W, D, C)`` maps.

    At training time, with ``b`` the block size and ``n_i`` the spatial sizes::

        b_i   = min(b, n_i)                                  # block clipped to the map
        gamma = rate / prod(b_i) * prod(n_i) / prod(n_i - b_i + 1)
        seeds ~ Bernoulli(gamma), only where a block centred there fits inside the map
        M     = 1 - max_pool(seeds, b_i, stride 1, same)     # zero a b×b(×b) block per seed
        out   = x * M * count(M) / count_ones(M)             # keep the mean

    ``gamma`` is the paper's Eq. 1 with its valid-seed-region correction, so the expected
    fraction of seeded units times the block volume equals ``rate`` (overlapping blocks make
    the zeroed fraction a little lower). Masks are drawn independently for every sample and
    channel, as in the authors' TPU ResNet code; the normalisation uses the kept fraction
    of the whole batch tensor, as that code does. ``rate`` is constant (the paper's linear
    ``keep_prob`` schedule is left to a callback if wanted). At inference (``training``
    false) or with ``rate=0`` the layer is the identity.

    Training needs known spatial sizes (the block is a static pooling window); the batch
    size may be unknown.

    Args:
        rate: probability of dropping a unit, ``1 - keep_prob`` in the paper; in [0, 1).
        block_size: side of the dropped square (cube in 3-D), clipped to the map size.
        seed: int or None, for the layer's ``keras.random.SeedGenerator``.
    """

    def __init__(self, rate=0.1, block_size=7, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"DropBlock rate must be in [0, 1); received rate={rate!r}")
        if int(block_size) != block_size or int(block_size) < 1:
            raise ValueError(f"DropBlock block_size must be a positive int; "
                             f"received block_size={block_size!r}")
        self.rate = float(rate)
        self.block_size = int(block_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def block_shape(self, spatial_shape):
        """The block per spatial axis for a map of ``spatial_shape``: ``min(b, n_i)``."""
        return tuple(min(self.block_size, int(n)) for n in spatial_shape)

    def gamma(self, spatial_shape) -> float:
        """Seed probability for a map of ``spatial_shape`` (Ghiasi et al., Eq. 1)."""
        blocks = self.block_shape(spatial_shape)
        total = valid = volume = 1
        for n, b in zip(spatial_shape, blocks):
            total, valid, volume = total * int(n), valid * (int(n) - b + 1), volume * b
        return min(1.0, self.rate * total / (volume * valid))

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        spatial = tuple(inputs.shape[1:-1])
        if any(n is None for n in spatial):
            raise ValueError(f"DropBlock needs known spatial sizes when training; received "
                             f"a tensor of shape {tuple(inputs.shape)}")
        blocks = self.block_shape(spatial)
        noise = keras.random.uniform(ops.shape(inputs), dtype="float32",
                                     seed=self.seed_generator)
        seeds = ops.cast(ops.less(noise, self.gamma(spatial)), "float32")
        seeds = seeds * ops.convert_to_tensor(_valid_seed_region(spatial, blocks), "float32")
        dropped = ops.max_pool(seeds, pool_size=blocks, strides=1, padding="same")
        keep = 1.0 - dropped
        scale = ops.cast(ops.size(keep), "float32") / ops.maximum(ops.sum(keep), 1.0)
        return inputs * ops.cast(keep * scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size, seed=self.seed)
        return config


def _valid_seed_region(spatial, blocks):
    """``(1, *spatial, 1)`` array of ones where a block seeded there lies inside the map.

    ``max_pool(..., padding="same")`` with window ``b`` covers inputs ``j - (b-1)//2 …
    j + b//2`` for output ``j``, so a seed at ``i`` zeroes ``i - b//2 … i + (b-1)//2``: it
    must satisfy ``b//2 <= i <= n - 1 - (b-1)//2`` (``n - b + 1`` positions per axis).
    """
    region = np.ones((1,) + tuple(spatial) + (1,), dtype="float32")
    for axis, (n, b) in enumerate(zip(spatial, blocks), start=1):
        index = np.arange(n)
        inside = (index >= b // 2) & (index <= n - 1 - (b - 1) // 2)
        shape = [1] * region.ndim
        shape[axis] = n
        region = region * inside.reshape(shape)
    return region
