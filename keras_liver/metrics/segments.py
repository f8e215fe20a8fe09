"""Couinaud liver-segment scores of BADA's Tables 1–4 (papers/bada_liver_segments.txt §4.2).

Label maps hold 0 = background and 1..9 = segments I, II, III, IVa, IVb, V, VI, VII, VIII
(:data:`SEGMENT_CLASSES`, the names of ``keras_liver.models.bada.CLASS_NAMES`` and
``keras_liver.data.phantom.COUINAUD_NAMES``; this module does not import either, so it loads
without TensorFlow). Each segment is scored one against the rest (Eq. 11–13):

- Dice        = 2TP / (2TP + FP + FN)      (Table 3: per segment, and their mean)
- sensitivity = TP / (TP + FN)              (Table 4 "Mean Sens": mean over the 9 segments)
- PPV         = TP / (TP + FP)              (Table 4 "Mean PPV")

:func:`segment_scores` gives one flat results row per case, in the column convention of
:mod:`keras_liver.metrics.report`: ``{segment}_dice``, ``{segment}_recall`` (sensitivity),
``{segment}_precision`` (PPV) — the names :func:`~keras_liver.metrics.report.summarize` pools —
the voxel counts ``{segment}_tp``/``_fp``/``_fn``/``_tn``, and ``mean_dice``,
``mean_sensitivity``, ``mean_ppv`` (unweighted means over the declared segments).
:func:`summarize_segments` adds the ``mean``/``std``/``global`` rows; the ``global`` row holds
each segment's scores from the counts summed over the cases and, as its ``mean_*``, their mean
over the segments.

A segment absent from both maps (no reference and no predicted voxel; only partial volumes or
single slices, a whole liver has all nine):

- ``both_absent="one"`` (default): Dice 1 (the LiTS convention of
  :func:`keras_liver.metrics.lits.dice`), sensitivity 1 and PPV 1 (``zero_division="agree"``
  of :mod:`keras_liver.metrics.classification`), and it **enters** the means over segments:
  the mean of a case is always over all nine, so the ``mean`` row's ``mean_dice`` equals the
  mean of its nine ``{segment}_dice``, as Table 3's "Mean" is the mean of its nine columns
  (to the rounding) on every printed row but "Our method" (printed 89.01; its nine average
  88.35).
- ``both_absent="nan"``: the three scores are NaN and the means run over the segments present
  in the reference or the prediction (NaN when none is); the ``mean``/``std`` rows skip NaN.

A segment in only one of the maps scores Dice 0 and sensitivity 0 (missed) or PPV 0 (only
predicted); the other ratio is the agree rule's: a segment only predicted has no reference
voxels, so its sensitivity is 0 (FP > 0), and a segment only in the reference has PPV 0.
The paper does not say whether it scored 3-D volumes or its 597 2-D test images, nor how it
averaged; these are our choices (``docs/fidelity.md``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from keras_liver.metrics.classification import ConfusionCounts, precision, recall
from keras_liver.metrics.lits import normalize_classes
from keras_liver.metrics.report import COUNT_KEYS, SUMMARY_ROWS, _case_indexed, summarize

#: Segment names in label order 1..9 (= ``keras_liver.models.bada.CLASS_NAMES[1:]``).
SEGMENT_NAMES = ("I", "II", "III", "IVa", "IVb", "V", "VI", "VII", "VIII")
#: Label → segment name, BADA's 9 foreground classes.
SEGMENT_CLASSES = {label: name for label, name in enumerate(SEGMENT_NAMES, start=1)}
#: BADA's label maps: background + 9 segments.
NUM_CLASSES = 10
MEAN_KEYS = ("mean_dice", "mean_sensitivity", "mean_ppv")
BOTH_ABSENT = ("one", "nan")


def segment_classes(classes=None) -> dict[str, tuple[int, ...]]:
    """``{name: (label, ...)}`` of the segments to score.

    ``classes``: ``None`` (:data:`SEGMENT_CLASSES`), a mapping in any form
    :func:`~keras_liver.metrics.lits.normalize_classes` accepts (``{1: "I", ...}``,
    ``{"1": "I"}`` as read from JSON, ``{"I": 1}``), or a sequence of names indexed by label
    whose entry 0 is the background (``keras_liver.models.bada.CLASS_NAMES``).
    """
    if classes is None:
        classes = SEGMENT_CLASSES
    elif not isinstance(classes, Mapping):
        names = list(classes)
        if len(names) < 2 or not all(isinstance(n, str) for n in names):
            raise ValueError(f"classes as a sequence must be names indexed by label, entry 0 "
                             f"the background; received {classes!r}")
        classes = {label: name for label, name in enumerate(names) if label > 0}
    else:
        classes = {(int(k) if isinstance(k, str) and k.strip().isdigit() else k): v
                   for k, v in classes.items()}
    return normalize_classes(classes)


def _labels(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.integer):
        if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)) \
                or not np.array_equal(x, np.round(x)):
            raise ValueError(f"{name} must be an integer label map; received dtype {x.dtype}")
        x = x.astype(np.int64)
    if x.size and x.min() < 0:
        raise ValueError(f"{name} has negative labels (min {x.min()})")
    return x


def confusion_matrix(pred_labels, ref_labels, num_classes: int | None = None) -> np.ndarray:
    """Voxel counts ``M[r, p]`` = voxels with reference label r and predicted label p, shape
    ``(K, K)`` with ``K = num_classes`` (default: :data:`NUM_CLASSES`, or more if a label needs
    it — a label ≥ an explicit ``num_classes`` raises ``ValueError``)."""
    pred = _labels(pred_labels, "prediction")
    ref = _labels(ref_labels, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    top = int(max(pred.max(initial=0), ref.max(initial=0))) + 1
    if num_classes is None:
        k = max(NUM_CLASSES, top)
    else:
        k = int(num_classes)
        if top > k:
            raise ValueError(f"label {top - 1} >= num_classes={k}")
    flat = ref.ravel().astype(np.int64) * k + pred.ravel().astype(np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k)


def _counts_from_matrix(m: np.ndarray, labels: Sequence[int]) -> ConfusionCounts:
    labels = [lab for lab in labels if lab < m.shape[0]]
    tp = int(m[np.ix_(labels, labels)].sum())
    n_ref = int(m[labels, :].sum())
    n_pred = int(m[:, labels].sum())
    fp, fn = n_pred - tp, n_ref - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(m.sum()) - tp - fp - fn)


def segment_counts(pred_labels, ref_labels, classes=None) -> dict[str, ConfusionCounts]:
    """TP, FP, FN, TN of each segment (one against the rest), from one pass over the maps."""
    groups = segment_classes(classes)
    top = max(max(members) for members in groups.values()) + 1
    m = confusion_matrix(pred_labels, ref_labels)
    if m.shape[0] < top:
        m = np.pad(m, ((0, top - m.shape[0]), (0, top - m.shape[0])))
    return {name: _counts_from_matrix(m, members) for name, members in groups.items()}


def _check_both_absent(both_absent: str) -> str:
    if both_absent not in BOTH_ABSENT:
        raise ValueError(f"both_absent must be one of {BOTH_ABSENT}; received {both_absent!r}")
    return both_absent


def _dice(c: ConfusionCounts) -> float:
    den = 2 * c.tp + c.fp + c.fn
    return 1.0 if den == 0 else 2.0 * c.tp / den


def scores_from_segment_counts(counts: Mapping[str, ConfusionCounts], both_absent: str = "one"
                               ) -> dict[str, float | int]:
    """The flat row of :func:`segment_scores` from per-segment counts (also summed ones)."""
    _check_both_absent(both_absent)
    row: dict[str, float | int] = {}
    per_metric: dict[str, list[float]] = {k: [] for k in MEAN_KEYS}
    for name, c in counts.items():
        absent = c.tp + c.fp + c.fn == 0
        if absent and both_absent == "nan":
            d = s = p = float("nan")
        else:
            d, s, p = _dice(c), recall(c), precision(c)
        row.update({f"{name}_dice": d, f"{name}_recall": s, f"{name}_precision": p,
                    **{f"{name}_{k}": v for k, v in c._asdict().items()}})
        for key, value in zip(MEAN_KEYS, (d, s, p)):
            per_metric[key].append(value)
    for key, values in per_metric.items():
        values = np.asarray(values, float)
        row[key] = float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) \
            else float("nan")
    return row


def segment_scores(pred_labels, ref_labels, classes=None, *, both_absent: str = "one"
                   ) -> dict[str, float | int]:
    """One case's results row: per segment ``_dice``, ``_recall`` (sensitivity),
    ``_precision`` (PPV) and ``_tp``/``_fp``/``_fn``/``_tn``, then ``mean_dice``,
    ``mean_sensitivity``, ``mean_ppv`` over the segments (module docstring for
    ``both_absent``). Works on a volume or a slice (any shape, the two maps alike)."""
    _check_both_absent(both_absent)
    return scores_from_segment_counts(segment_counts(pred_labels, ref_labels, classes),
                                      both_absent)


def _segments_in(frame: pd.DataFrame) -> list[str]:
    return [c[:-len("_dice")] for c in frame.columns
            if c.endswith("_dice") and c != "mean_dice"
            and all(f"{c[:-len('_dice')]}_{k}" in frame.columns for k in ("tp", "fp", "fn", "tn"))]


def summarize_segments(frame: pd.DataFrame, ddof: int = 0, both_absent: str = "one"
                       ) -> pd.DataFrame:
    """:func:`keras_liver.metrics.report.summarize` of a frame of :func:`segment_scores` rows,
    with the ``global`` row completed: each segment's Dice, sensitivity and PPV from its
    summed counts and ``mean_dice``/``mean_sensitivity``/``mean_ppv`` = their mean over the
    segments (``both_absent`` as for the cases: a segment absent from every case)."""
    summary = summarize(frame, ddof=ddof)
    segments = _segments_in(summary)
    pooled = {name: ConfusionCounts(*(int(summary.loc["global", f"{name}_{k}"])
                                      for k in COUNT_KEYS)) for name in segments}
    for key, value in scores_from_segment_counts(pooled, both_absent).items():
        if key in summary.columns:
            summary.loc["global", key] = value
    return summary


def with_segment_summary(frame: pd.DataFrame, ddof: int = 0, both_absent: str = "one"
                         ) -> pd.DataFrame:
    """The per-case rows followed by the :func:`summarize_segments` rows."""
    frame = _case_indexed(frame)
    cases = frame.drop(index=[r for r in SUMMARY_ROWS if r in frame.index])
    return pd.concat([cases, summarize_segments(cases, ddof=ddof, both_absent=both_absent)])


__all__ = ["BOTH_ABSENT", "MEAN_KEYS", "NUM_CLASSES", "SEGMENT_CLASSES", "SEGMENT_NAMES",
           "confusion_matrix", "scores_from_segment_counts", "segment_classes",
           "segment_counts", "segment_scores", "summarize_segments", "with_segment_summary"]
