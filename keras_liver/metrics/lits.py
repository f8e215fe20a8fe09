"""LiTS segmentation scores (SPEC §7), implemented from the formulas.

Masks are binary: any nonzero voxel is foreground. For a prediction P and a reference G:

- Dice ``2|P∩G| / (|P| + |G|)``, Jaccard ``|P∩G| / |P∪G|``, VOE ``1 − Jaccard``,
  RVD ``(|P| − |G|) / |G|`` (positive = over-segmentation).
- Surface ``S(X)`` = X minus its erosion by the 18-neighbourhood (the 3×3×3 cube without its
  8 corners; in 2-D the full 3×3 square, the in-plane section of the same element). The array
  border counts as background, so a foreground voxel on the border is a surface voxel.
- Distances are between voxel centres, in mm, using the reference's spacing. ``d(p, S(G))`` is
  the Euclidean distance from a surface voxel p of P to the nearest surface voxel of G.
  ASSD is the sum of both directed distance sets divided by ``|S(P)| + |S(G)|``; RMSD is the root
  of the mean of the squares over the same union; MSD (maximum surface distance, the symmetric
  Hausdorff distance of the surfaces) is the larger of the two directed maxima.

Empty masks (the LiTS convention):

- exactly one of P, G empty: Dice 0, Jaccard 0, VOE 1, RVD/ASSD/RMSD/MSD = 9001;
- both empty: Dice 1, Jaccard 1, VOE 0, RVD 0, distances 0 — "both empty → Dice 1", the rule
  LiTS applies to lesions (a case without tumour where none is predicted is scored perfect).
  We apply it to every class.

The distance transforms run on the bounding box of P ∪ G plus a one-voxel margin, not on the
whole volume: every surface voxel lies inside that box, so the distances are exact.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from keras_liver.postprocess import bounding_box

#: Score given to a distance or RVD that cannot be computed (LiTS convention).
LITS_FAR = 9001.0

#: LiTS label groups: liver is scored as label ≥ 1 (liver including tumour), tumour as label 2.
LITS_CLASSES: dict[str, tuple[int, ...]] = {"liver": (1, 2), "tumour": (2,)}

SCORE_KEYS = ("dice", "jaccard", "voe", "rvd", "assd", "rmsd", "msd")


def _binary(x) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(bool) if x.dtype != bool else x


def _check_pair(prediction: np.ndarray, reference: np.ndarray, spacing) -> tuple[float, ...]:
    if prediction.shape != reference.shape:
        raise ValueError(
            f"prediction and reference must have the same shape; received "
            f"prediction {prediction.shape} and reference {reference.shape}")
    if prediction.ndim not in (2, 3):
        raise ValueError(f"masks must be 2-D or 3-D; received shape {prediction.shape}")
    spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(spacing) != prediction.ndim:
        raise ValueError(
            f"spacing needs one value per axis ({prediction.ndim}); received spacing={spacing}")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite; received spacing={spacing}")
    return spacing


def surface_structure(ndim: int) -> np.ndarray:
    """The 18-neighbourhood (3-D) or its in-plane section, the 3×3 square (2-D)."""
    if ndim not in (2, 3):
        raise ValueError(f"surface_structure needs ndim 2 or 3; received {ndim}")
    return ndimage.generate_binary_structure(ndim, 2)


def surface(mask) -> np.ndarray:
    """Surface voxels of ``mask``: the mask minus its erosion, the array border as background."""
    mask = _binary(mask)
    if not mask.any():
        return np.zeros_like(mask)
    # border_value=0 treats everything outside the array as background (the same as padding
    # with one layer of zeros before eroding).
    eroded = ndimage.binary_erosion(mask, structure=surface_structure(mask.ndim), border_value=0)
    return mask & ~eroded


def surface_distances(prediction, reference, spacing=(1.0, 1.0, 1.0)
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``(d(S(P) → S(G)), d(S(G) → S(P)))``.

    Each is a 1-D array with one entry per surface voxel of the first mask (in C order). Both
    masks must be non-empty.
    """
    pred, ref = _binary(prediction), _binary(reference)
    spacing = _check_pair(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("surface_distances needs two non-empty masks")
    box = bounding_box(pred | ref, margin=1)
    pred, ref = pred[box], ref[box]
    # Inside the box the erosion sees the same neighbourhoods as on the full array: the box
    # either reaches the array border (background on both) or has a background margin.
    s_pred, s_ref = surface(pred), surface(ref)
    dist_to_ref = ndimage.distance_transform_edt(~s_ref, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
    return dist_to_ref[s_pred], dist_to_pred[s_ref]


def lits_scores(prediction, reference, spacing=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """LiTS scores of one binary prediction against its reference (module docstring).

    Returns ``{"dice", "jaccard", "voe", "rvd", "assd", "rmsd", "msd"}`` as floats; distances in
    the unit of ``spacing`` (mm). ``spacing`` has one value per axis (2-D or 3-D masks).
    """
    pred, ref = _binary(prediction), _binary(reference)
    _check_pair(pred, ref, spacing)
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    if n_pred == 0 and n_ref == 0:
        return dict(dice=1.0, jaccard=1.0, voe=0.0, rvd=0.0, assd=0.0, rmsd=0.0, msd=0.0)
    if n_pred == 0 or n_ref == 0:
        return dict(dice=0.0, jaccard=0.0, voe=1.0, rvd=LITS_FAR,
                    assd=LITS_FAR, rmsd=LITS_FAR, msd=LITS_FAR)
    n_inter = int(np.count_nonzero(pred & ref))
    n_union = n_pred + n_ref - n_inter
    jaccard = n_inter / n_union
    d_pred, d_ref = surface_distances(pred, ref, spacing)
    n_surface = d_pred.size + d_ref.size
    return dict(
        dice=2.0 * n_inter / (n_pred + n_ref),
        jaccard=jaccard,
        voe=1.0 - jaccard,
        rvd=(n_pred - n_ref) / n_ref,
        assd=float((d_pred.sum() + d_ref.sum()) / n_surface),
        rmsd=float(np.sqrt((np.square(d_pred).sum() + np.square(d_ref).sum()) / n_surface)),
        msd=float(max(d_pred.max(), d_ref.max())),
    )


def dice(prediction, reference) -> float:
    """Dice of two binary masks; both empty → 1, one empty → 0."""
    pred, ref = _binary(prediction), _binary(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / total


def dice_per_case(predictions: Iterable, references: Iterable) -> float:
    """Mean over cases of the per-volume Dice (SPEC §7 "Dice per case")."""
    scores = [dice(p, r) for p, r in _zip_cases(predictions, references)]
    return float(np.mean(scores))


def dice_global(predictions: Iterable, references: Iterable) -> float:
    """``2 Σ|P∩G| / Σ(|P| + |G|)`` over all cases (SPEC §7 "Dice global"); all empty → 1."""
    inter = total = 0
    for p, r in _zip_cases(predictions, references):
        p, r = _binary(p), _binary(r)
        if p.shape != r.shape:
            raise ValueError(f"shapes differ: prediction {p.shape}, reference {r.shape}")
        inter += int(np.count_nonzero(p & r))
        total += int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    return 1.0 if total == 0 else 2.0 * inter / total


def _zip_cases(predictions, references):
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"need one reference per prediction; received {len(predictions)} "
                         f"predictions and {len(references)} references")
    if not predictions:
        raise ValueError("need at least one case")
    return zip(predictions, references)


def normalize_classes(classes: Mapping) -> dict[str, tuple[int, ...]]:
    """Normalise a class declaration to ``{name: (label, ...)}``.

    Accepts label → name (``{1: "liver", 2: "tumour"}``; a key may be a tuple of labels scored
    together, e.g. ``{(1, 2): "liver"}``) or name → label(s) (``{"liver": (1, 2), "tumour": 2}``).
    """
    if not classes:
        raise ValueError(f"classes must name at least one class; received {classes!r}")
    out: dict[str, tuple[int, ...]] = {}
    for key, value in classes.items():
        name, labels = (key, value) if isinstance(key, str) else (value, key)
        if not isinstance(name, str):
            raise ValueError(f"classes must map labels to names (or names to labels); "
                             f"received {key!r}: {value!r}")
        labels = tuple(int(v) for v in np.atleast_1d(labels))
        if not labels or 0 in labels:
            raise ValueError(f"class {name!r} must list foreground labels (not 0); "
                             f"received {labels}")
        if name in out:
            raise ValueError(f"class name {name!r} declared twice in {classes!r}")
        out[name] = labels
    return out


def class_mask(labels: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Boolean mask of the voxels whose label is one of ``members``."""
    labels = np.asarray(labels)
    if len(members) == 1:
        return labels == members[0]
    return np.isin(labels, members)


def lits_scores_per_class(pred_labels, ref_labels, classes=None, spacing=(1.0, 1.0, 1.0)
                          ) -> dict[str, dict[str, float]]:
    """:func:`lits_scores` for each class of two label maps: ``{name: scores}``.

    ``classes`` defaults to ``{1: "liver", 2: "tumour"}`` (one label each); see
    :func:`normalize_classes` for the accepted forms. For the LiTS grouping (liver = label ≥ 1)
    use :func:`lits_liver_tumour`.
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    groups = normalize_classes(classes if classes is not None else {1: "liver", 2: "tumour"})
    return {name: lits_scores(class_mask(pred_labels, members), class_mask(ref_labels, members),
                              spacing)
            for name, members in groups.items()}


def lits_liver_tumour(pred_labels, ref_labels, spacing=(1.0, 1.0, 1.0)
                      ) -> dict[str, dict[str, float]]:
    """LiTS scoring of 0/1/2 label maps: liver = label ≥ 1 (liver including tumour), tumour = 2."""
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    return {"liver": lits_scores(pred_labels >= 1, ref_labels >= 1, spacing),
            "tumour": lits_scores(pred_labels == 2, ref_labels == 2, spacing)}
