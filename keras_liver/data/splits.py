"""Cross-validation folds of a converted dataset (RA-UNet §IV-A: "5-fold cross-validation").

A fold is the same dataset with another split: the cases of the converted dataset's train and
val splits are pooled and dealt into ``k`` folds by case; fold ``i`` validates on group ``i``
and trains on the others, and the test split is never touched (it stays held out for the
ensemble). :func:`write_fold_manifest` writes the fold as a manifest of its own (the original
manifest with absolute shard paths and the new split, nnU-Net's ``splits_final.json`` habit),
so the training runner, the pipelines and evaluation read a fold exactly as they read a
dataset.

The assignment depends only on the case ids, ``k`` and the seed: cases are ranked by the
SHA-256 of ``"seed/case_id"`` (as :func:`keras_liver.data.convert.split_cases` does) and dealt
round-robin, so fold sizes differ by at most one case.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from keras_liver.data import schema

POOLED_SPLITS = ("train", "val")


def kfold(case_ids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint groups of ``case_ids`` covering them all, each in the input order."""
    case_ids = [str(c) for c in case_ids]
    k = int(k)
    if k < 2:
        raise ValueError(f"cross-validation needs k >= 2 folds, received k={k}")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("kfold: case ids must be unique")
    if len(case_ids) < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} cases, "
                         f"received {len(case_ids)}")
    ranked = sorted(case_ids, key=lambda c: hashlib.sha256(f"{seed}/{c}".encode()).hexdigest())
    group = {c: i % k for i, c in enumerate(ranked)}
    return [[c for c in case_ids if group[c] == i] for i in range(k)]


def fold_split(manifest: dict, fold: int, k: int, seed: int = 0) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` case ids of fold ``fold`` (0-based) of ``k``."""
    if not 0 <= int(fold) < int(k):
        raise ValueError(f"fold must be in 0..{int(k) - 1}, received {fold}")
    pool = [c for s in POOLED_SPLITS for c in manifest["split"].get(s, [])]
    order = [c["id"] for c in manifest["cases"] if c["id"] in set(pool)]
    groups = kfold(order, k, seed)
    val = set(groups[int(fold)])
    return {"train": [c for c in order if c not in val], "val": [c for c in order if c in val],
            "test": list(manifest["split"].get("test", []))}


def write_fold_manifest(manifest_root: str, out_dir: str, *, fold: int, k: int,
                        seed: int = 0) -> str:
    """Write fold ``fold`` of ``k`` of the dataset at ``manifest_root`` as
    ``out_dir/manifest.json`` and return ``out_dir`` (a dataset folder for every reader).

    Shard paths become absolute (the shards stay where they are); ``counts`` are dropped
    (they describe the original split); ``fold`` records ``{"index", "k", "seed", "source"}``.
    """
    manifest = schema.load_manifest(manifest_root)
    return write_split_manifest(
        manifest, out_dir, fold_split(manifest, fold, k, seed), key="fold",
        provenance={"index": int(fold), "k": int(k), "seed": int(seed)})


def write_split_manifest(manifest: dict, out_dir: str, split: dict[str, list[str]], *,
                         key: str, provenance: dict) -> str:
    """Write ``manifest`` (as :func:`schema.load_manifest` returns it) with another ``split``
    as ``out_dir/manifest.json``; return ``out_dir``.

    Only the cases named in ``split`` are kept; shard paths become absolute (the shards stay
    where they are); ``counts`` are dropped (they describe the original split); the manifest
    gets ``key`` = ``provenance`` plus ``"source"`` (the original dataset folder).
    """
    manifest = dict(manifest)
    root = manifest.pop("root")
    named = {c for ids in split.values() for c in ids}
    unknown = sorted(named - {c["id"] for c in manifest["cases"]})
    if unknown:
        raise ValueError(f"{root}: split names cases the dataset does not have: {unknown}")
    manifest["split"] = {s: list(ids) for s, ids in split.items()}
    manifest.pop("counts", None)
    manifest[key] = {**provenance, "source": root}
    cases = []
    for case in manifest["cases"]:
        if case["id"] not in named:
            continue
        case = dict(case)
        for field in ("slices", "volume"):
            if case.get(field):
                case[field] = os.path.join(root, case[field])
        cases.append(case)
    manifest["cases"] = cases
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, schema.MANIFEST)
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return out_dir


# --------------------------------------------------------------------------- hold-out splits

def select_cases(manifest: dict, *, max_slices: int | None = None) -> list[str]:
    """Ids of the cases (manifest order) with fewer than ``max_slices`` axial slices
    (``None``: all). The Attention Residual UNet paper keeps liver volumes under 300 slices and
    hepatic-vessel volumes under 80 (§IV, Figs. 4-5)."""
    ids = [c["id"] for c in manifest["cases"]]
    if max_slices is None:
        return ids
    return [c["id"] for c in manifest["cases"] if int(c["shape"][2]) < int(max_slices)]


def holdout_split(case_ids: Sequence[str], *, val: float, test: float = 0.0,
                  seed: int = 42) -> dict[str, list[str]]:
    """Train/val(/test) split by case with scikit-learn's ``train_test_split``
    (``random_state=seed``), each split listed in the input order.

    ``test`` cases are drawn first (when ``test > 0``), then ``val`` of the remaining ones.
    scikit-learn rounds the held-out part up (``ceil(n · fraction)``), which is what gives the
    Attention Residual UNet paper's 43/11 liver and 172/44 vessel splits of 54 and 216 cases.
    """
    from sklearn.model_selection import train_test_split

    case_ids = [str(c) for c in case_ids]
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("holdout_split: case ids must be unique")
    for name, fraction in (("val", val), ("test", test)):
        if not 0.0 <= float(fraction) < 1.0:
            raise ValueError(f"holdout_split: {name} must be in [0, 1), received {fraction}")
    rest, held_test = case_ids, []
    if test > 0:
        rest, held_test = train_test_split(case_ids, test_size=float(test), random_state=int(seed))
    held_val = []
    if val > 0:
        if len(rest) < 2:
            raise ValueError(f"holdout_split: {len(case_ids)} cases cannot give train, val"
                             f"{' and test' if test > 0 else ''} cases")
        rest, held_val = train_test_split(rest, test_size=float(val), random_state=int(seed))
    order = {c: i for i, c in enumerate(case_ids)}
    return {name: sorted(ids, key=order.__getitem__)
            for name, ids in (("train", rest), ("val", held_val), ("test", held_test))}
