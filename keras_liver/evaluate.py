"""Score a folder of predicted label volumes against a folder of references (SPEC §7).

Pairing: a reference ``X.nii[.gz]`` is matched with the prediction of the same name (either
NIfTI suffix). LiTS names also match: reference ``segmentation-N`` with prediction
``segmentation-N`` or ``test-segmentation-N`` (the LiTS submission name). When a folder holds
LiTS ``segmentation-N`` files, its other files (e.g. ``volume-N``) are ignored, so a LiTS
training folder can serve as the reference folder directly. Every reference needs a
prediction; predictions without a reference are ignored with a warning.

Each pair must have the same shape and affine (``np.allclose``, ``atol=1e-4``) and hold only
the declared labels (0 and the classes' labels, integer-valued); otherwise
:class:`~keras_liver.errors.DataError` names the file and what is wrong.

Per case and class: the LiTS scores (Dice, Jaccard, VOE, RVD, ASSD, RMSD, MSD; distances in
mm from the header spacing), accuracy, precision, recall, specificity, and the voxel counts
tp/fp/fn/tn (for the pooled "global" Dice of :func:`keras_liver.metrics.report.summarize`).
Columns are ``<class>_<metric>``. The default classes are LiTS's: ``liver`` = label ≥ 1 (liver
including tumour) and ``tumour`` = label 2.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Mapping

import numpy as np
import pandas as pd

from keras_liver.data.volumes import is_nifti, read_volume, strip_nifti_suffix
from keras_liver.errors import DataError
from keras_liver.metrics.classification import confusion_counts, scores_from_counts
from keras_liver.metrics.lits import LITS_CLASSES, class_mask, lits_scores, normalize_classes
from keras_liver.metrics.report import write_results

_LITS_SEG = re.compile(r"^(?:test-)?segmentation-(\d+)$")
AFFINE_ATOL = 1e-4


def _nifti_files(folder: str, role: str) -> dict[str, str]:
    """``{name without suffix: path}`` of a folder's NIfTI files (LiTS segmentations only
    when the folder has any)."""
    if not os.path.isdir(folder):
        raise DataError(folder, f"{role} folder not found")
    files: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not (is_nifti(entry) and os.path.isfile(path)) or entry.startswith("."):
            continue
        stem = strip_nifti_suffix(entry)
        if stem in files:
            raise DataError(path, f"two {role} files for {stem!r}: {os.path.basename(files[stem])}"
                                  f" and {entry}")
        files[stem] = path
    if any(_LITS_SEG.match(stem) for stem in files):
        files = {stem: p for stem, p in files.items() if _LITS_SEG.match(stem)}
    if not files:
        raise DataError(folder, f"no NIfTI files (.nii, .nii.gz) in the {role} folder")
    return files


def _case_key(stem: str) -> str:
    match = _LITS_SEG.match(stem)
    return f"segmentation-{match.group(1)}" if match else stem


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def pair_files(pred_dir: str, ref_dir: str) -> list[tuple[str, str, str]]:
    """``[(case, prediction path, reference path)]`` in natural case order (module docstring)."""
    refs = _nifti_files(ref_dir, "reference")
    preds = _nifti_files(pred_dir, "prediction")
    by_key: dict[str, str] = {}
    for stem, path in preds.items():
        key = _case_key(stem)
        if key in by_key:
            raise DataError(path, f"two predictions for case {key!r}: "
                                  f"{os.path.basename(by_key[key])} and {os.path.basename(path)}")
        by_key[key] = path
    pairs, missing = [], []
    for stem in sorted(refs, key=_natural):
        key = _case_key(stem)
        if key in by_key:
            pairs.append((stem, by_key.pop(key), refs[stem]))
        else:
            missing.append(os.path.basename(refs[stem]))
    if missing:
        raise DataError(pred_dir, f"no prediction for {len(missing)} reference(s): "
                                  f"{', '.join(missing)}")
    if by_key:
        warnings.warn(f"{pred_dir}: ignoring {len(by_key)} prediction(s) without a reference: "
                      f"{', '.join(sorted(os.path.basename(p) for p in by_key.values()))}")
    return pairs


def _read_labels(path: str, allowed: np.ndarray):
    volume = read_volume(path, dtype=np.float32)
    data = volume.data
    values = np.unique(data)
    if not np.array_equal(values, np.round(values)):
        odd = values[values != np.round(values)][:5].tolist()
        raise DataError(path, f"label values must be integers; found {odd}")
    unexpected = np.setdiff1d(values, allowed)
    if unexpected.size:
        raise DataError(path, f"unexpected label values {unexpected.astype(int).tolist()}; "
                              f"expected labels in {allowed.astype(int).tolist()}")
    volume.data = data.astype(np.int16)
    return volume


def _check_geometry(pred, ref) -> None:
    ref_name = os.path.basename(ref.path)
    if pred.shape != ref.shape:
        raise DataError(pred.path, f"shape {pred.shape} differs from the reference {ref_name} "
                                   f"shape {ref.shape}")
    if not np.allclose(pred.affine, ref.affine, atol=AFFINE_ATOL):
        diff = float(np.max(np.abs(pred.affine - ref.affine)))
        raise DataError(pred.path, f"affine differs from the reference {ref_name} (largest "
                                   f"difference {diff:.6g}; prediction affine "
                                   f"{np.round(pred.affine, 4).tolist()}, reference "
                                   f"{np.round(ref.affine, 4).tolist()})")


def score_case(pred_labels: np.ndarray, ref_labels: np.ndarray, classes: Mapping,
               spacing) -> dict[str, dict]:
    """``{class: {LiTS scores, classification scores, tp, fp, fn, tn}}`` of one case."""
    out = {}
    for name, members in normalize_classes(classes).items():
        pred, ref = class_mask(pred_labels, members), class_mask(ref_labels, members)
        counts = confusion_counts(pred, ref)
        out[name] = {**lits_scores(pred, ref, spacing), **scores_from_counts(counts),
                     **counts._asdict()}
    return out


def evaluate_folders(pred_dir: str, ref_dir: str, *, classes: Mapping | None = None,
                     out_dir: str | None = None, spacing_from: str = "reference",
                     progress: bool = True) -> pd.DataFrame:
    """Score every reference in ``ref_dir`` against its prediction in ``pred_dir``.

    Args:
        classes: label → name (``{1: "liver", 2: "tumour"}``; a tuple key groups labels) or
            name → label(s); default LiTS (``liver`` = labels 1 and 2, ``tumour`` = 2).
        out_dir: when given, ``metrics.csv`` and ``metrics.md`` (per case, then the ``mean``,
            ``std`` and ``global`` rows) are written there.
        spacing_from: ``"reference"`` or ``"prediction"``: whose header spacing (mm) the
            surface distances use.
        progress: show a tqdm progress bar.

    Returns:
        The per-case frame (index ``case``: the reference's name without suffix; columns
        ``<class>_<metric>``). Summary rows: :func:`keras_liver.metrics.report.summarize`.
    """
    if spacing_from not in ("reference", "prediction"):
        raise ValueError(f"spacing_from must be 'reference' or 'prediction'; received "
                         f"{spacing_from!r}")
    groups = normalize_classes(classes if classes is not None else LITS_CLASSES)
    allowed = np.array(sorted({0, *(label for m in groups.values() for label in m)}),
                       dtype=np.float32)
    pairs = pair_files(str(pred_dir), str(ref_dir))
    from tqdm.auto import tqdm

    rows = {}
    for case, pred_path, ref_path in tqdm(pairs, desc="evaluate", unit="case",
                                          disable=not progress):
        ref = _read_labels(ref_path, allowed)
        pred = _read_labels(pred_path, allowed)
        _check_geometry(pred, ref)
        spacing = (ref if spacing_from == "reference" else pred).spacing
        rows[case] = score_case(pred.data, ref.data, groups, spacing)
    frame = pd.DataFrame.from_dict(
        {case: {f"{name}_{k}": v for name, scores in per_class.items() for k, v in scores.items()}
         for case, per_class in rows.items()}, orient="index")
    frame.index.name = "case"
    if out_dir is not None:
        write_results(frame, str(out_dir), name="metrics")
    return frame
