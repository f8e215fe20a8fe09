"""Voxel-wise classification scores: confusion counts, accuracy, precision, recall, specificity.

Binary masks: any nonzero voxel is foreground. Multi-class label maps are scored one class
against the rest, for each class declared in ``classes`` (same forms as
:func:`keras_liver.metrics.lits.normalize_classes`; a class may group several labels).

- accuracy    = (TP + TN) / (TP + FP + FN + TN)
- precision   = TP / (TP + FP)   (positive predictive value, PPV)
- recall      = TP / (TP + FN)   (sensitivity, true-positive rate)
- specificity = TN / (TN + FP)   (true-negative rate)

Zero division (``zero_division="agree"``, the default): a ratio whose denominator is 0 is 1.0
when prediction and reference agree that the quantity it measures is absent, else 0.0 — the
same rule as the LiTS Dice (both empty → 1, one empty → 0):

- precision, nothing predicted (TP + FP = 0): 1.0 if the reference is empty too (FN = 0), else 0.0;
- recall, empty reference (TP + FN = 0): 1.0 if nothing is predicted either (FP = 0), else 0.0;
- specificity, no reference background (TN + FP = 0): 1.0 if the prediction has no background
  either (FN = 0), else 0.0;
- accuracy of zero voxels: 1.0.

A number instead (``zero_division=float("nan")``, ``0.0``, ``1.0``) is returned for every 0/0.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_liver.metrics.lits import class_mask, normalize_classes

CLASSIFICATION_KEYS = ("accuracy", "precision", "recall", "specificity")


class ConfusionCounts(NamedTuple):
    """Voxel counts of a binary comparison."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def __add__(self, other):  # summing cases: ConfusionCounts(...) + ConfusionCounts(...)
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(*(a + b for a, b in zip(self, other)))


def confusion_counts(prediction, reference) -> ConfusionCounts:
    """TP, FP, FN, TN of two binary masks of the same shape (nonzero = foreground)."""
    pred = np.asarray(prediction).astype(bool, copy=False)
    ref = np.asarray(reference).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref))
    fp, fn = n_pred - tp, n_ref - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def confusion_counts_per_class(pred_labels, ref_labels, classes) -> dict[str, ConfusionCounts]:
    """:func:`confusion_counts` of each declared class (one against the rest)."""
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    return {name: confusion_counts(class_mask(pred_labels, members),
                                   class_mask(ref_labels, members))
            for name, members in normalize_classes(classes).items()}


def _ratio(num: int, den: int, agree: bool, zero_division) -> float:
    if den:
        return num / den
    if zero_division == "agree":
        return 1.0 if agree else 0.0
    return float(zero_division)


def _check_zero_division(zero_division):
    if zero_division == "agree":
        return
    try:
        float(zero_division)
    except (TypeError, ValueError):
        raise ValueError(f"zero_division must be 'agree' or a number; received "
                         f"{zero_division!r}") from None


def accuracy(c: ConfusionCounts, zero_division="agree") -> float:
    _check_zero_division(zero_division)
    return _ratio(c.tp + c.tn, c.total, True, zero_division)


def precision(c: ConfusionCounts, zero_division="agree") -> float:
    _check_zero_division(zero_division)
    return _ratio(c.tp, c.tp + c.fp, c.fn == 0, zero_division)


def recall(c: ConfusionCounts, zero_division="agree") -> float:
    _check_zero_division(zero_division)
    return _ratio(c.tp, c.tp + c.fn, c.fp == 0, zero_division)


def specificity(c: ConfusionCounts, zero_division="agree") -> float:
    _check_zero_division(zero_division)
    return _ratio(c.tn, c.tn + c.fp, c.fn == 0, zero_division)


#: Aliases used in the papers' tables.
sensitivity = recall
ppv = precision


def scores_from_counts(c: ConfusionCounts, zero_division="agree") -> dict[str, float]:
    """``{"accuracy", "precision", "recall", "specificity"}`` of one set of counts."""
    return {"accuracy": accuracy(c, zero_division), "precision": precision(c, zero_division),
            "recall": recall(c, zero_division), "specificity": specificity(c, zero_division)}


def classification_scores(prediction, reference, zero_division="agree") -> dict[str, float]:
    """Accuracy, precision, recall and specificity of two binary masks."""
    return scores_from_counts(confusion_counts(prediction, reference), zero_division)


def binary_scores(prediction, reference, zero_division="agree") -> dict[str, float]:
    """:func:`classification_scores` plus the counts ``tp``, ``fp``, ``fn``, ``tn`` (a results
    row with the counts gets pooled "global" scores from :func:`~keras_liver.metrics.report.summarize`)."""
    counts = confusion_counts(prediction, reference)
    return {**scores_from_counts(counts, zero_division), **counts._asdict()}


def classification_scores_per_class(pred_labels, ref_labels, classes, zero_division="agree"
                                    ) -> dict[str, dict[str, float]]:
    """:func:`classification_scores` of each declared class: ``{name: scores}``."""
    return {name: scores_from_counts(c, zero_division)
            for name, c in confusion_counts_per_class(pred_labels, ref_labels, classes).items()}
