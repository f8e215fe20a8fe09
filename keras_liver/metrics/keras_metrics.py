"""Keras 3 training metrics: streaming Dice and Jaccard (``keras.ops`` only).

Both metrics accumulate, per class, the intersection ``|P∩G|`` and the sum ``|P| + |G|`` over
every batch since the last reset, so ``result()`` is the *global* Dice (Jaccard) over the
epoch (SPEC §7 "Dice global"), not a mean of batch scores.

- Binary (``num_classes=None`` or 1): ``y_pred`` holds sigmoid probabilities ``(B, ..., 1)``
  (or without the channel axis); a voxel is foreground when ``y_pred > threshold`` (0.5, the
  same strict comparison as ``keras.metrics.BinaryAccuracy``); the target is foreground when
  ``y_true > 0.5``.
- Multi-class (``num_classes=K ≥ 2``): ``y_pred`` holds softmax probabilities ``(B, ..., K)``;
  the predicted class is the argmax. ``y_true`` is one-hot ``(B, ..., K)`` (argmax taken) or
  integer labels ``(B, ..., 1)`` / ``(B, ...)``. ``result()`` is the mean over ``class_ids``
  (default: every class except 0, the background) of the per-class global score.

A class with an empty prediction and an empty target over the whole epoch scores 1 (both
empty → Dice 1, as LiTS does for lesions). ``sample_weight`` (per sample ``(B,)`` or per voxel)
weights the counted voxels.

Accuracy, precision and recall come from Keras' own metrics; :func:`training_metrics` returns
the list for a task. Registered as ``keras_liver>DiceCoefficient`` and
``keras_liver>JaccardIndex``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops


class _OverlapMetric(keras.metrics.Metric):
    """Accumulates per-class intersection and ``|P| + |G|`` over batches."""

    def __init__(self, num_classes: int | None = None, class_ids: Sequence[int] | None = None,
                 threshold: float = 0.5, name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be None, 1 (binary) or ≥ 2; received {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.threshold = float(threshold)
        if self._binary:
            if class_ids not in (None, [1], (1,)):
                raise ValueError(f"a binary {type(self).__name__} scores class 1 only; "
                                 f"received class_ids={class_ids}")
            self.class_ids = None
            ids = [1]
            n_slots = 2
        else:
            if class_ids is None:
                ids = list(range(1, self.num_classes))
            else:
                ids = [int(c) for c in class_ids]
            bad = [c for c in ids if not 0 <= c < self.num_classes]
            if not ids or bad:
                raise ValueError(f"class_ids must be a non-empty subset of "
                                 f"0..{self.num_classes - 1}; received class_ids={class_ids}")
            self.class_ids = None if class_ids is None else ids
            n_slots = self.num_classes
        self._ids = ids
        self.intersection = self.add_variable(shape=(n_slots,), initializer="zeros",
                                              dtype="float32", name="intersection")
        self.total = self.add_variable(shape=(n_slots,), initializer="zeros",
                                       dtype="float32", name="total")

    @property
    def _binary(self) -> bool:
        return self.num_classes is None or self.num_classes == 1

    def _one_hot_maps(self, y_true, y_pred):
        """Predicted and true one-hot maps ``(B, ..., K)`` as float32."""
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if self._binary:
            pred = ops.cast(ops.cast(y_pred, "float32") > self.threshold, "float32")
            true = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
            if len(pred.shape) == len(true.shape) + 1 and pred.shape[-1] == 1:
                true = ops.expand_dims(true, -1)
            elif len(true.shape) == len(pred.shape) + 1 and true.shape[-1] == 1:
                pred = ops.expand_dims(pred, -1)
            if pred.shape[-1] != 1:
                pred, true = ops.expand_dims(pred, -1), ops.expand_dims(true, -1)
            return ops.concatenate([1.0 - pred, pred], -1), ops.concatenate([1.0 - true, true], -1)
        k = self.num_classes
        if y_pred.shape[-1] != k:
            raise ValueError(f"{type(self).__name__}(num_classes={k}) needs y_pred with {k} "
                             f"channels; received shape {tuple(y_pred.shape)}")
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), k, dtype="float32")
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == k:
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = y_true
            if len(labels.shape) == len(y_pred.shape):
                labels = ops.squeeze(labels, -1)
            labels = ops.cast(labels, "int32")
        return pred, ops.one_hot(labels, k, dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        pred, true = self._one_hot_maps(y_true, y_pred)
        rank = len(pred.shape)
        axes = tuple(range(rank - 1))  # everything but the class axis
        inter, total = pred * true, pred + true
        if sample_weight is not None:
            # (B,) per sample or (B, ...) per voxel; broadcast over (B, ..., K).
            w = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(w.shape) == rank and w.shape[-1] == 1:
                pass
            else:
                while len(w.shape) < rank:
                    w = ops.expand_dims(w, -1)
            inter, total = inter * w, total * w
        self.intersection.assign_add(ops.sum(inter, axis=axes))
        self.total.assign_add(ops.sum(total, axis=axes))

    def _per_class(self):
        raise NotImplementedError

    def result(self):
        scores = self._per_class()
        return ops.mean(ops.take(scores, self._ids))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "class_ids": self.class_ids,
                       "threshold": self.threshold})
        return config


@keras.saving.register_keras_serializable(package="keras_liver")
class DiceCoefficient(_OverlapMetric):
    """Global (streaming) Dice ``2Σ|P∩G| / Σ(|P|+|G|)``; binary or multi-class (module docstring).

    Args:
        num_classes: None or 1 for a sigmoid (binary) output; K ≥ 2 for a softmax output.
        class_ids: classes averaged in ``result()`` (multi-class; default 1..K−1).
        threshold: probability above which a binary voxel is foreground.
    """

    def __init__(self, num_classes=None, class_ids=None, threshold=0.5, name="dice", dtype=None):
        super().__init__(num_classes=num_classes, class_ids=class_ids, threshold=threshold,
                         name=name, dtype=dtype)

    def _per_class(self):
        return ops.where(self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1e-12),
                         1.0)


@keras.saving.register_keras_serializable(package="keras_liver")
class JaccardIndex(_OverlapMetric):
    """Global (streaming) Jaccard ``Σ|P∩G| / Σ|P∪G|``.

    Same arguments as :class:`DiceCoefficient`.
    """

    def __init__(self, num_classes=None, class_ids=None, threshold=0.5, name="jaccard",
                 dtype=None):
        super().__init__(num_classes=num_classes, class_ids=class_ids, threshold=threshold,
                         name=name, dtype=dtype)

    def _per_class(self):
        union = self.total - self.intersection
        return ops.where(union > 0, self.intersection / ops.maximum(union, 1e-12), 1.0)


def training_metrics(task: str = "binary", num_classes: int | None = None,
                     class_names: Mapping[int, str] | None = None, threshold: float = 0.5
                     ) -> list[keras.metrics.Metric]:
    """Metrics to ``compile`` a model with.

    ``task="binary"`` (sigmoid output): Dice, Jaccard, ``BinaryAccuracy``, ``Precision``,
    ``Recall`` (named ``dice``, ``jaccard``, ``accuracy``, ``precision``, ``recall``).
    ``task="multiclass"`` (softmax output, one-hot targets, ``num_classes`` needed): mean
    foreground Dice and Jaccard and ``CategoricalAccuracy``, plus one Dice per entry of
    ``class_names`` (``{1: "liver", 2: "tumour"}`` → ``dice_liver``, ``dice_tumour``).
    """
    if task == "binary":
        return [DiceCoefficient(threshold=threshold, name="dice"),
                JaccardIndex(threshold=threshold, name="jaccard"),
                keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"),
                keras.metrics.Precision(thresholds=threshold, name="precision"),
                keras.metrics.Recall(thresholds=threshold, name="recall")]
    if task == "multiclass":
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"training_metrics('multiclass') needs num_classes ≥ 2; "
                             f"received num_classes={num_classes}")
        metrics = [DiceCoefficient(num_classes=num_classes, name="dice"),
                   JaccardIndex(num_classes=num_classes, name="jaccard"),
                   keras.metrics.CategoricalAccuracy(name="accuracy")]
        for class_id, class_name in (class_names or {}).items():
            metrics.append(DiceCoefficient(num_classes=num_classes, class_ids=[int(class_id)],
                                           name=f"dice_{class_name}"))
        return metrics
    raise ValueError(f"training_metrics: task must be 'binary' or 'multiclass'; received {task!r}")
