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

Binary accuracy, precision and recall come from Keras' own metrics; :func:`training_metrics`
returns the list for a task. Registered as ``keras_liver>DiceCoefficient``,
``keras_liver>JaccardIndex`` and ``keras_liver>OverlapAccuracy``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
from keras import ops


class _OverlapMetric(keras.metrics.Metric):
    """Accumulates per-class intersection and ``|P| + |G|`` over batches.

    ``counts_of``: another overlap metric of the same classes whose counts this one reads
    instead of keeping its own (its ``update_state`` and ``reset_state`` then do nothing), so
    several scores compiled together cost one pass over the batch (:func:`training_metrics`).
    Not serialised: a deserialised metric keeps its own counts, with the same results.
    """

    def __init__(self, num_classes: int | None = None, class_ids: Sequence[int] | None = None,
                 threshold: float = 0.5, name: str | None = None, dtype=None,
                 counts_of: "_OverlapMetric | None" = None):
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
        if counts_of is not None:
            if (counts_of.num_classes, counts_of.threshold) != (self.num_classes, self.threshold) \
                    or counts_of._counts_of is not None:
                raise ValueError(f"{self.name}: counts_of must be an overlap metric that keeps "
                                 f"its own counts, with num_classes {self.num_classes} and "
                                 f"threshold {self.threshold}")
            # Not an attribute Keras tracks: the source's variables stay the source's alone.
            object.__setattr__(self, "_counts_of", counts_of)
            return
        object.__setattr__(self, "_counts_of", None)
        self.intersection = self.add_variable(shape=(n_slots,), initializer="zeros",
                                              dtype="float32", name="intersection")
        self.total = self.add_variable(shape=(n_slots,), initializer="zeros",
                                       dtype="float32", name="total")

    def _counts(self):
        """``(intersection, |P| + |G|)`` per class, this metric's or ``counts_of``'s."""
        source = self._counts_of if self._counts_of is not None else self
        return source.intersection, source.total

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
        if self._counts_of is not None:
            return  # the source metric, compiled beside this one, counts the batch
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

    def reset_state(self):
        if self._counts_of is None:
            super().reset_state()

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

    def __init__(self, num_classes=None, class_ids=None, threshold=0.5, name="dice", dtype=None,
                 counts_of=None):
        super().__init__(num_classes=num_classes, class_ids=class_ids, threshold=threshold,
                         name=name, dtype=dtype, counts_of=counts_of)

    def _per_class(self):
        inter, total = self._counts()
        return ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1e-12), 1.0)


@keras.saving.register_keras_serializable(package="keras_liver")
class JaccardIndex(_OverlapMetric):
    """Global (streaming) Jaccard ``Σ|P∩G| / Σ|P∪G|``.

    Same arguments as :class:`DiceCoefficient`.
    """

    def __init__(self, num_classes=None, class_ids=None, threshold=0.5, name="jaccard",
                 dtype=None, counts_of=None):
        super().__init__(num_classes=num_classes, class_ids=class_ids, threshold=threshold,
                         name=name, dtype=dtype, counts_of=counts_of)

    def _per_class(self):
        inter, total = self._counts()
        union = total - inter
        return ops.where(union > 0, inter / ops.maximum(union, 1e-12), 1.0)


@keras.saving.register_keras_serializable(package="keras_liver")
class OverlapAccuracy(_OverlapMetric):
    """Voxel accuracy of a softmax output, ``Σ_k |P_k∩G_k| / N`` (every voxel counts once in
    ``Σ_k (|P_k| + |G_k|) = 2N``): the value of ``keras.metrics.CategoricalAccuracy`` (argmax
    against argmax), read from the per-class counts an overlap metric already keeps
    (``counts_of``) instead of a second pass over the batch. Multi-class only; 0 before any
    voxel was seen, as Keras' accuracy."""

    def __init__(self, num_classes=None, name="accuracy", dtype=None, counts_of=None):
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"OverlapAccuracy needs num_classes >= 2; received {num_classes}")
        super().__init__(num_classes=num_classes, name=name, dtype=dtype, counts_of=counts_of)

    def result(self):
        inter, total = self._counts()
        voxels = ops.sum(total) / 2.0
        return ops.where(voxels > 0, ops.sum(inter) / ops.maximum(voxels, 1e-12), 0.0)

    def get_config(self):
        config = super().get_config()
        del config["class_ids"], config["threshold"]
        return config


def training_metrics(task: str = "binary", num_classes: int | None = None,
                     class_names: Mapping[int, str] | None = None, threshold: float = 0.5,
                     share_counts: bool = True) -> list[keras.metrics.Metric]:
    """Metrics to ``compile`` a model with.

    ``task="binary"`` (sigmoid output): Dice, Jaccard, ``BinaryAccuracy``, ``Precision``,
    ``Recall`` (named ``dice``, ``jaccard``, ``accuracy``, ``precision``, ``recall``).
    ``task="multiclass"`` (softmax output, one-hot targets, ``num_classes`` needed): mean
    foreground Dice and Jaccard and ``CategoricalAccuracy``, plus one Dice per entry of
    ``class_names`` (``{1: "liver", 2: "tumour"}`` → ``dice_liver``, ``dice_tumour``).

    Every overlap score (and the multi-class accuracy, :class:`OverlapAccuracy`) reads the
    per-class counts of the first, ``dice``: one argmax, one-hot and sum per batch for all of
    them instead of one each. ``share_counts=False`` gives the same scores with their own
    counts each (and Keras' ``CategoricalAccuracy``), what ``benchmarks.train_metrics``
    compares against; measured on the BADA demo (12 multi-class metrics, XLA, 2 CPU cores):
    see docs/benchmarks.md.
    """
    if task == "binary":
        dice = DiceCoefficient(threshold=threshold, name="dice")
        shared = dice if share_counts else None
        return [dice, JaccardIndex(threshold=threshold, name="jaccard", counts_of=shared),
                keras.metrics.BinaryAccuracy(threshold=threshold, name="accuracy"),
                keras.metrics.Precision(thresholds=threshold, name="precision"),
                keras.metrics.Recall(thresholds=threshold, name="recall")]
    if task == "multiclass":
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"training_metrics('multiclass') needs num_classes ≥ 2; "
                             f"received num_classes={num_classes}")
        dice = DiceCoefficient(num_classes=num_classes, name="dice")
        shared = dice if share_counts else None
        accuracy = (OverlapAccuracy(num_classes=num_classes, name="accuracy", counts_of=dice)
                    if share_counts else keras.metrics.CategoricalAccuracy(name="accuracy"))
        metrics = [dice, JaccardIndex(num_classes=num_classes, name="jaccard", counts_of=shared),
                   accuracy]
        for class_id, class_name in (class_names or {}).items():
            metrics.append(DiceCoefficient(num_classes=num_classes, class_ids=[int(class_id)],
                                           name=f"dice_{class_name}", counts_of=shared))
        return metrics
    raise ValueError(f"training_metrics: task must be 'binary' or 'multiclass'; received {task!r}")
