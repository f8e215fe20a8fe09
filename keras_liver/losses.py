"""Segmentation losses (Keras 3, ``keras.ops`` only), registered as ``keras_liver>...``.

Shapes: ``y_pred`` is ``(B, H, W, K)`` or ``(B, H, W, D, K)`` probabilities — a sigmoid output
when ``K == 1`` (binary), a softmax output when ``K ≥ 2``. ``y_true`` is a float mask of the
same shape for binary tasks, one-hot ``(B, ..., K)`` for multi-class tasks, or integer labels
``(B, ..., 1)`` / ``(B, ...)`` (converted to one-hot). Everything is computed in float32, also
when ``y_pred`` is float16/bfloat16 under a mixed-precision policy.

Soft Dice of class k: ``(2 Σ y·p + smooth) / (Σ y + Σ p + smooth)``. ``dice_over`` says what
the sums run over:

- ``"batch"``: the whole batch flattened, one Dice per class (RA-UNet's authors' code:
  ``1 − dice`` with ``smooth = 1`` over the batch). Every sample's loss value is that number.
- ``"sample"``: each sample on its own, one loss per sample (Keras then averages them).

Multi-class Dice is the mean over classes (``include_background=False`` drops class 0).

- :class:`SoftDiceLoss` (``"dice"``): ``1 − Dice``.
- :class:`BCEDiceLoss` (``"bce_dice"``): ``bce_weight · BCE + dice_weight · (1 − Dice)``,
  binary (MSA-UNet: 0.5 and 1.0). BCE is the voxel mean per sample.
- :class:`DiceCELoss` (``"dice_ce"``): ``lambda_dice · (1 − Dice) + lambda_ce · CE``; CE is
  categorical cross-entropy (binary cross-entropy when K = 1), voxel mean per sample.
- :class:`GeneralizedDiceLoss` (``"generalized_dice"``), Sudre et al. 2017:
  ``1 − (2 Σ_k w_k Σ y·p + ε) / (Σ_k w_k Σ (y + p) + ε)`` with ``w_k = 1 / (Σ y_k)²``. A class
  absent from the target has no finite weight; it gets the largest weight of the present
  classes (as MONAI's ``GeneralizedDiceLoss``, which the Attention Residual UNet code used).
  A binary (K = 1) output is scored as two classes, background ``1 − p`` and foreground ``p``,
  as in the paper. Defaults follow MONAI: ``epsilon = 1e-5``, ``dice_over="sample"``.

:func:`get_loss` builds any of them (and ``"bce"``, ``"ce"``) from a name and keyword
arguments, as read from an experiment's JSON config.
"""
from __future__ import annotations

import keras
from keras import ops

DICE_OVER = ("batch", "sample")


def _check_dice_over(dice_over: str) -> str:
    if dice_over not in DICE_OVER:
        raise ValueError(f"dice_over must be one of {DICE_OVER}; received dice_over={dice_over!r}")
    return dice_over


def _prepare(y_true, y_pred):
    """float32 ``(y_true, y_pred)`` of the same shape ``(B, ..., K)``, targets one-hot."""
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_pred.shape)
    if rank not in (4, 5):
        raise ValueError(f"expected y_pred of rank 4 (B, H, W, K) or 5 (B, H, W, D, K); "
                         f"received shape {tuple(y_pred.shape)}")
    k = y_pred.shape[-1]
    if k is None:
        raise ValueError("y_pred needs a known number of channels")
    if len(y_true.shape) == rank - 1:
        y_true = ops.expand_dims(y_true, -1)
    if len(y_true.shape) != rank:
        raise ValueError(f"y_true of shape {tuple(y_true.shape)} does not match y_pred of "
                         f"shape {tuple(y_pred.shape)}")
    if k > 1 and y_true.shape[-1] == 1:
        y_true = ops.one_hot(ops.cast(ops.squeeze(y_true, -1), "int32"), k)
    elif y_true.shape[-1] not in (None, k):
        raise ValueError(f"y_true has {y_true.shape[-1]} channels, y_pred has {k}")
    return ops.cast(y_true, "float32"), y_pred


def _sum_axes(rank: int, dice_over: str) -> tuple[int, ...]:
    """Axes summed for the per-class terms: all but K ("batch") or the spatial ones ("sample")."""
    return tuple(range(rank - 1)) if dice_over == "batch" else tuple(range(1, rank - 1))


def _per_sample(value, y_pred):
    """A batch-level scalar repeated once per sample, so Keras' reductions keep its value."""
    return ops.broadcast_to(value, ops.shape(y_pred)[:1])


def _voxel_mean(values):
    """Mean over every axis but the batch axis: ``(B, ...)`` → ``(B,)``."""
    return ops.mean(values, axis=tuple(range(1, len(values.shape))))


def soft_dice_loss(y_true, y_pred, smooth=1.0, dice_over="batch", include_background=True):
    """``1 − mean_k Dice_k``: shape ``(B,)`` (per sample, or the batch value repeated)."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if not include_background and y_pred.shape[-1] > 1:
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    axes = _sum_axes(len(y_pred.shape), dice_over)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    loss = 1.0 - ops.mean(dice, axis=-1)
    return _per_sample(loss, y_pred) if dice_over == "batch" else loss


def cross_entropy(y_true, y_pred):
    """Voxel-mean cross-entropy per sample ``(B,)``: binary when K = 1, categorical otherwise."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        return _voxel_mean(ops.binary_crossentropy(y_true, y_pred))
    return _voxel_mean(ops.categorical_crossentropy(y_true, y_pred, axis=-1))


def generalized_dice_loss(y_true, y_pred, epsilon=1e-5, dice_over="sample"):
    """Sudre et al. 2017 generalised Dice loss (module docstring): shape ``(B,)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        y_true = ops.concatenate([1.0 - y_true, y_true], axis=-1)
        y_pred = ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
    axes = _sum_axes(len(y_pred.shape), dice_over)
    intersection = ops.sum(y_true * y_pred, axis=axes)          # (K,) or (B, K)
    reference = ops.sum(y_true, axis=axes)
    total = reference + ops.sum(y_pred, axis=axes)
    present = reference > 0
    weight = ops.where(present, 1.0 / ops.square(ops.maximum(reference, 1e-12)), 0.0)
    weight = ops.where(present, weight, ops.max(weight, axis=-1, keepdims=True))
    numerator = 2.0 * ops.sum(weight * intersection, axis=-1) + epsilon
    denominator = ops.sum(weight * total, axis=-1) + epsilon
    loss = 1.0 - numerator / denominator
    return _per_sample(loss, y_pred) if dice_over == "batch" else loss


class _SegmentationLoss(keras.losses.Loss):
    def __init__(self, name, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self.dtype
        return config


@keras.saving.register_keras_serializable(package="keras_liver")
class SoftDiceLoss(_SegmentationLoss):
    """``1 − soft Dice`` (module docstring); binary sigmoid or multi-class softmax."""

    def __init__(self, smooth=1.0, dice_over="batch", include_background=True,
                 name="dice_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)
        self.dice_over = _check_dice_over(dice_over)
        self.include_background = bool(include_background)

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred, self.smooth, self.dice_over, self.include_background)

    def get_config(self):
        config = super().get_config()
        config.update(smooth=self.smooth, dice_over=self.dice_over,
                      include_background=self.include_background)
        return config


@keras.saving.register_keras_serializable(package="keras_liver")
class BCEDiceLoss(_SegmentationLoss):
    """``bce_weight · BCE + dice_weight · (1 − Dice)`` for a sigmoid output (MSA-UNet: 0.5, 1.0)."""

    def __init__(self, bce_weight=1.0, dice_weight=1.0, smooth=1.0, dice_over="batch",
                 name="bce_dice_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.dice_over = _check_dice_over(dice_over)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] != 1:
            raise ValueError(f"BCEDiceLoss needs a one-channel sigmoid output; received y_pred "
                             f"of shape {tuple(y_pred.shape)} (use DiceCELoss for softmax)")
        return (self.bce_weight * cross_entropy(y_true, y_pred)
                + self.dice_weight * soft_dice_loss(y_true, y_pred, self.smooth, self.dice_over))

    def get_config(self):
        config = super().get_config()
        config.update(bce_weight=self.bce_weight, dice_weight=self.dice_weight,
                      smooth=self.smooth, dice_over=self.dice_over)
        return config


@keras.saving.register_keras_serializable(package="keras_liver")
class DiceCELoss(_SegmentationLoss):
    """``lambda_dice · (1 − Dice) + lambda_ce · CE`` (BADA: λ1 = λ2 = 1)."""

    def __init__(self, lambda_dice=1.0, lambda_ce=1.0, smooth=1.0, dice_over="batch",
                 include_background=True, name="dice_ce_loss", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.smooth = float(smooth)
        self.dice_over = _check_dice_over(dice_over)
        self.include_background = bool(include_background)

    def call(self, y_true, y_pred):
        dice = soft_dice_loss(y_true, y_pred, self.smooth, self.dice_over, self.include_background)
        return self.lambda_dice * dice + self.lambda_ce * cross_entropy(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(lambda_dice=self.lambda_dice, lambda_ce=self.lambda_ce, smooth=self.smooth,
                      dice_over=self.dice_over, include_background=self.include_background)
        return config


@keras.saving.register_keras_serializable(package="keras_liver")
class GeneralizedDiceLoss(_SegmentationLoss):
    """Generalised Dice loss, Sudre et al. 2017 (module docstring)."""

    def __init__(self, epsilon=1e-5, dice_over="sample", name="generalized_dice_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = float(epsilon)
        self.dice_over = _check_dice_over(dice_over)

    def call(self, y_true, y_pred):
        return generalized_dice_loss(y_true, y_pred, self.epsilon, self.dice_over)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, dice_over=self.dice_over)
        return config


_LOSSES = {
    "dice": SoftDiceLoss,
    "bce_dice": BCEDiceLoss,
    "dice_ce": DiceCELoss,
    "generalized_dice": GeneralizedDiceLoss,
    "bce": keras.losses.BinaryCrossentropy,
    "ce": keras.losses.CategoricalCrossentropy,
}
_ALIASES = {"soft_dice": "dice", "generalised_dice": "generalized_dice", "gdl": "generalized_dice",
            "binary_crossentropy": "bce", "categorical_crossentropy": "ce"}


def loss_names() -> list[str]:
    return sorted(_LOSSES)


def get_loss(name: str, **kwargs) -> keras.losses.Loss:
    """A loss instance from its config name (``"dice"``, ``"bce_dice"``, ``"dice_ce"``,
    ``"generalized_dice"``, ``"bce"``, ``"ce"``) and constructor keyword arguments."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {loss_names()}")
    try:
        return _LOSSES[key](**kwargs)
    except TypeError as err:
        raise ValueError(f"loss {name!r} does not take these arguments: {sorted(kwargs)} "
                         f"({err})") from None
