"""Evaluation metrics (SPEC §7): LiTS scores, voxel classification scores, result tables.

The NumPy/SciPy scores import without TensorFlow. The Keras training metrics
(:class:`DiceCoefficient`, :class:`JaccardIndex`, :class:`OverlapAccuracy`,
:func:`training_metrics`) live in
:mod:`keras_liver.metrics.keras_metrics` and are loaded on first use of those names;
importing that module registers them for ``keras.saving``.
"""
from keras_liver.metrics.classification import (
    CLASSIFICATION_KEYS,
    ConfusionCounts,
    accuracy,
    binary_scores,
    classification_scores,
    classification_scores_per_class,
    confusion_counts,
    confusion_counts_per_class,
    ppv,
    precision,
    recall,
    scores_from_counts,
    sensitivity,
    specificity,
)
from keras_liver.metrics.lits import (
    LITS_CLASSES,
    LITS_FAR,
    SCORE_KEYS,
    dice,
    dice_global,
    dice_per_case,
    lits_liver_tumour,
    lits_scores,
    lits_scores_per_class,
    normalize_classes,
    surface,
    surface_distances,
)
from keras_liver.metrics.report import (
    compare_with_paper,
    print_comparison,
    results_frame,
    summarize,
    to_markdown,
    with_summary,
    write_results,
)
from keras_liver.metrics.segments import segment_scores, summarize_segments, with_segment_summary

_KERAS_NAMES = ("DiceCoefficient", "JaccardIndex", "OverlapAccuracy", "training_metrics")


def __getattr__(name):  # PEP 562: import TensorFlow/Keras only when a Keras metric is asked for
    if name in _KERAS_NAMES:
        from keras_liver.metrics import keras_metrics

        return getattr(keras_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
