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
    root = manifest.pop("root")
    fold_manifest = dict(manifest)
    fold_manifest["split"] = fold_split(manifest, fold, k, seed)
    fold_manifest.pop("counts", None)
    fold_manifest["fold"] = {"index": int(fold), "k": int(k), "seed": int(seed), "source": root}
    cases = []
    for case in manifest["cases"]:
        case = dict(case)
        for key in ("slices", "volume"):
            if case.get(key):
                case[key] = os.path.join(root, case[key])
        cases.append(case)
    fold_manifest["cases"] = cases
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, schema.MANIFEST)
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(fold_manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return out_dir
