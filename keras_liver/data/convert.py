"""NIfTI dataset → sharded GZIP TFRecords + ``manifest.json``, resumable and idempotent (SPEC §6).

:func:`convert` runs in two passes:

1. **Validate.** Discover the cases (:func:`keras_liver.data.datasets.discover`), hash both
   source files of every case (SHA-256) and check every case with
   :func:`~keras_liver.data.datasets.validate_case`. A case already converted from files with
   the same checksums is not decoded again (it was checked when it was converted; its label
   values are re-checked against the declared labels). Any bad case raises
   :class:`~keras_liver.errors.DataError` here, before anything is written or removed: a
   failed conversion never creates ``out`` and never touches a previous conversion in it.
2. **Write.** For each case that needs it, one shard per kind (``schema.shard_path``):
   ``slices`` holds one example per axial slice ``image[:, :, z]`` (``slice_index = z``),
   ``volumes`` one example of the whole volume, encoded with ``schema.encode_example``.
   A shard is written to ``<shard>.partial`` and renamed into place, then the case's record
   ``cases/<case_id>.json`` is written (atomically). The manifest is written last.

Progress record and resumption: ``cases/<case_id>.json`` holds the case's manifest entry,
the source folder, and the byte size of each shard written. A case is skipped when its
record exists, its source checksums equal the files' current ones and its shards exist with
the recorded sizes; missing kinds are added, a changed source file re-converts the case (its
old record and shards are removed first). An interruption therefore loses at most the shard
being written. ``manifest.json`` exists only for a complete conversion: it is removed before
the first shard of a run that has work to do and written (atomically) when all cases are
done; a run with nothing to do rewrites nothing (the manifest only if its content changes,
e.g. another seed or split). Records and shards of cases no longer in the source are removed.

A folder converted from another source folder is refused unless ``overwrite=True``; then,
once every case has validated, the previous manifest, records and shards are removed and the
new dataset converted from scratch. ``overwrite`` does not force re-encoding a conversion of
the same source. One conversion at a time may write into a folder.

Split by case (deterministic, independent of NumPy's generators): cases are ordered by
``sha256(f"{seed}/{case_id}")``; the first ``n_val`` go to val, the next ``n_test`` to test,
the rest to train, each split listed in case order. ``n_val = round_half_up(n · f_val)`` and
``n_test = round_half_up(n · f_test)``; with n ≥ 3 every split whose fraction is positive gets
at least one case (taken from the largest other split), and train gets the remainder.

Manifest (keys ``schema.MANIFEST_KEYS``)::

    {"format_version": 1, "name": "tiny", "source": "/data/LiTS", "layout": "lits",
     "labels": {"0": "background", "1": "liver", "2": "tumour"}, "seed": 42,
     "split_fractions": [0.64, 0.16, 0.2],
     "split": {"train": ["lits-000", ...], "val": [...], "test": [...]},
     "counts": {"train": {"cases": 3, "slices": 60, "foreground_slices": 21}, "val": {...},
                "test": {...}, "total": {...}},
     "cases": [{"id": "lits-000", "image": "/data/LiTS/volume-0.nii", "label": ".../segmentation-0.nii",
                "image_sha256": "...", "label_sha256": "...", "shape": [512, 512, 75],
                "spacing": [0.70, 0.70, 5.0], "affine": [[...], ...], "label_values": [0, 1, 2],
                "num_slices": 75, "foreground_slices": 28,
                "slices": "slices/lits-000.tfrecord.gz", "volume": "volumes/lits-000.tfrecord.gz"}, ...]}
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from keras_liver.data import schema
from keras_liver.data.datasets import Case, Dataset, discover, validate_case
from keras_liver.errors import DataError

KINDS = (schema.SLICES_DIR, schema.VOLUMES_DIR)
SPLITS = ("train", "val", "test")
RECORDS_DIR = "cases"
PARTIAL = ".partial"
#: Manifest key of each kind's shard path in a case entry.
ENTRY_KEY = {schema.SLICES_DIR: "slices", schema.VOLUMES_DIR: "volume"}


# --------------------------------------------------------------------------- small helpers

def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _dumps(obj) -> str:
    return json.dumps(obj, indent=1) + "\n"


def _write_text_atomic(path: str, text: str) -> None:
    partial = path + PARTIAL
    try:
        with open(partial, "w") as f:
            f.write(text)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _check_split(split) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions) \
            or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions (train, val, test) summing to 1, "
                         f"e.g. (0.64, 0.16, 0.2); received {split!r}")
    return fractions


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, received {kinds!r}")
    return tuple(k for k in KINDS if k in kinds)


# --------------------------------------------------------------------------- split

def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def split_sizes(n: int, fractions) -> tuple[int, int, int]:
    """Number of (train, val, test) cases for ``n`` cases (rounding in the module docstring)."""
    fractions = _check_split(fractions)
    sizes = [0, _round_half_up(n * fractions[1]), _round_half_up(n * fractions[2])]
    sizes[0] = n - sizes[1] - sizes[2]
    if n >= 3:
        for i in range(3):
            while fractions[i] > 0 and sizes[i] < 1:
                donor = max((j for j in range(3) if j != i), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    while sizes[0] < 0:  # rounding val and test up overshot n (only when train's fraction is ~0)
        donor = 1 if sizes[1] >= sizes[2] else 2
        sizes[donor] -= 1
        sizes[0] += 1
    return tuple(sizes)


def split_cases(case_ids: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """Deterministic split by case: ``{"train": [...], "val": [...], "test": [...]}``.

    Each list keeps the order of ``case_ids``; the assignment depends only on the ids, the
    fractions and ``seed`` (SHA-256 of ``"seed/case_id"``).
    """
    n_train, n_val, n_test = split_sizes(len(case_ids), fractions)
    ranked = sorted(case_ids, key=lambda c: hashlib.sha256(f"{seed}/{c}".encode()).hexdigest())
    chosen = {"val": set(ranked[:n_val]), "test": set(ranked[n_val:n_val + n_test])}
    chosen["train"] = set(ranked[n_val + n_test:])
    assert len(chosen["train"]) == n_train
    return {s: [c for c in case_ids if c in chosen[s]] for s in SPLITS}


# --------------------------------------------------------------------------- records

def _record_path(out: str, case_id: str) -> str:
    return os.path.join(out, RECORDS_DIR, f"{case_id}.json")


def _load_records(out: str) -> dict[str, dict]:
    folder = os.path.join(out, RECORDS_DIR)
    records = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                record = _read_json(os.path.join(folder, name))
                if isinstance(record, dict) and record.get("format_version") == schema.FORMAT_VERSION \
                        and isinstance(record.get("entry"), dict):
                    records[name[: -len(".json")]] = record
    return records


def _shard_ok(out: str, record: dict | None, kind: str) -> bool:
    info = (record or {}).get("shards", {}).get(kind)
    if not info:
        return False
    path = os.path.join(out, info["path"])
    return os.path.isfile(path) and os.path.getsize(path) == info["bytes"]


def _previous_sources(out: str) -> set[str]:
    """Source folders of the conversion (complete or interrupted) already in ``out``."""
    sources = set()
    manifest_path = os.path.join(out, schema.MANIFEST)
    if os.path.exists(manifest_path):
        manifest = _read_json(manifest_path)
        if not isinstance(manifest, dict) or "source" not in manifest:
            sources.add(f"an unreadable {schema.MANIFEST}")
        else:
            sources.add(os.path.normpath(str(manifest["source"])))
    for record in _load_records(out).values():
        sources.add(os.path.normpath(str(record.get("source"))))
    return sources


def _remove_conversion(out: str) -> None:
    """Delete the manifest, records and shards of a previous conversion (nothing else)."""
    _remove(os.path.join(out, schema.MANIFEST))
    for sub, suffix in ((RECORDS_DIR, ".json"), (schema.SLICES_DIR, schema.SHARD_SUFFIX),
                        (schema.VOLUMES_DIR, schema.SHARD_SUFFIX)):
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith((suffix, suffix + PARTIAL)):
                    os.remove(os.path.join(folder, name))


def _remove_partials(out: str) -> None:
    for sub in ("", RECORDS_DIR, schema.SLICES_DIR, schema.VOLUMES_DIR):
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(PARTIAL):
                    os.remove(os.path.join(folder, name))


def _remove_case(out: str, case_id: str) -> None:
    _remove(_record_path(out, case_id))
    for kind in KINDS:
        _remove(schema.shard_path(out, kind, case_id))


def _remove_stale(out: str, current: set[str]) -> None:
    """Delete the records and shards of cases that are no longer in the source."""
    for sub, suffix in ((RECORDS_DIR, ".json"), (schema.SLICES_DIR, schema.SHARD_SUFFIX),
                        (schema.VOLUMES_DIR, schema.SHARD_SUFFIX)):
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(suffix) and name[: -len(suffix)] not in current:
                    os.remove(os.path.join(folder, name))


# --------------------------------------------------------------------------- one case

def _case_entry(case: Case, image, label, image_sha: str, label_sha: str) -> dict[str, Any]:
    """The manifest entry of a validated case (without shard paths)."""
    per_slice_fg = np.any(label.data > 0, axis=(0, 1))
    return {
        "id": case.case_id,
        "image": case.image,
        "label": case.label,
        "image_sha256": image_sha,
        "label_sha256": label_sha,
        "shape": [int(s) for s in image.shape],
        # The header stores float32: keep its shortest exact decimal (0.8, not 0.800000011920929).
        "spacing": [float(str(np.float32(s))) for s in image.spacing],
        "affine": [[float(v) for v in row] for row in image.affine],
        "label_values": [int(v) for v in np.unique(label.data)],
        "num_slices": int(image.shape[2]),
        "foreground_slices": int(np.count_nonzero(per_slice_fg)),
    }


def _examples(kind: str, case_id: str, image: np.ndarray, label: np.ndarray, spacing) -> Iterator[bytes]:
    if kind == schema.VOLUMES_DIR:
        yield schema.encode_example(image, label, case_id=case_id, spacing=spacing)
        return
    for z in range(image.shape[2]):
        yield schema.encode_example(image[:, :, z], label[:, :, z], case_id=case_id,
                                    spacing=spacing, slice_index=z)


def _write_shard(path: str, examples: Iterable[bytes]) -> int:
    """Write records to ``path`` via ``path.partial`` + rename; returns the shard's size."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + PARTIAL
    try:
        options = tf.io.TFRecordOptions(compression_type=schema.COMPRESSION,
                                        compression_level=schema.COMPRESSION_LEVEL)
        with tf.io.TFRecordWriter(partial, options=options) as writer:
            for example in examples:
                writer.write(example)
        os.replace(partial, path)
    finally:
        _remove(partial)
    return os.path.getsize(path)


def _convert_case(out: str, source: str, case: Case, labels, entry: dict, record: dict | None,
                  kinds: tuple[str, ...]) -> dict:
    """Write ``kinds`` shards of one case and its record; returns the new record."""
    image, label = validate_case(case, labels)
    shards = dict(record["shards"]) if record else {}
    for kind in kinds:
        path = schema.shard_path(out, kind, case.case_id)
        size = _write_shard(path, _examples(kind, case.case_id, image.data, label.data, image.spacing))
        shards[kind] = {"path": os.path.relpath(path, out), "bytes": size}
    record = {"format_version": schema.FORMAT_VERSION, "source": source, "entry": entry,
              "shards": shards}
    os.makedirs(os.path.join(out, RECORDS_DIR), exist_ok=True)
    _write_text_atomic(_record_path(out, case.case_id), _dumps(record))
    return record


# --------------------------------------------------------------------------- convert

def _plan(dataset: Dataset, out: str, records: dict[str, dict], kinds, progress: bool):
    """Validate every case; returns ``[(case, entry, record_or_None, kinds_to_write)]``."""
    plans = []
    for case in tqdm(dataset.cases, desc="validate", unit="case", file=sys.stderr,
                     disable=not progress):
        image_sha, label_sha = file_sha256(case.image), file_sha256(case.label)
        record = records.get(case.case_id)
        if record is not None and record["entry"].get("image_sha256") == image_sha \
                and record["entry"].get("label_sha256") == label_sha:
            entry = dict(record["entry"], image=case.image, label=case.label)
            if not set(entry.get("label_values", [])) <= set(dataset.labels):
                validate_case(case, dataset.labels)  # raises, naming the label file and values
            todo = tuple(k for k in kinds if not _shard_ok(out, record, k))
        else:
            image, label = validate_case(case, dataset.labels)
            entry = _case_entry(case, image, label, image_sha, label_sha)
            record, todo = None, kinds
            del image, label
        plans.append((case, entry, record, todo))
    return plans


def _manifest(dataset: Dataset, name: str, seed: int, fractions, entries: list[dict]) -> dict:
    split = split_cases([e["id"] for e in entries], fractions, seed)
    by_id = {e["id"]: e for e in entries}

    def count(ids):
        return {"cases": len(ids),
                "slices": sum(by_id[c]["num_slices"] for c in ids),
                "foreground_slices": sum(by_id[c]["foreground_slices"] for c in ids)}

    counts = {s: count(split[s]) for s in SPLITS}
    counts["total"] = count(list(by_id))
    manifest = {
        "format_version": schema.FORMAT_VERSION,
        "name": name,
        "source": dataset.root,
        "layout": dataset.layout,
        "labels": {str(k): v for k, v in dataset.labels.items()},
        "seed": int(seed),
        "split_fractions": list(fractions),
        "split": split,
        "counts": counts,
        "cases": entries,
    }
    assert tuple(manifest) == schema.MANIFEST_KEYS
    return manifest


def convert(src, out, *, layout: str = "auto", name: str | None = None, seed: int = 42,
            split=(0.64, 0.16, 0.2), kinds=KINDS, labels=None, progress: bool = True,
            overwrite: bool = False) -> dict:
    """Convert the NIfTI dataset at ``src`` into TFRecord shards and a manifest in ``out``.

    ``layout``: ``"auto"``, ``"lits"``, ``"msd"`` or ``"flat"`` (see
    :mod:`keras_liver.data.datasets`); ``name``: the manifest's name (default: ``out``'s
    folder name); ``seed``/``split``: the split by case (train, val, test fractions);
    ``kinds``: ``"slices"`` and/or ``"volumes"``; ``labels``: ``{value: name}`` overriding the
    layout's labels; ``progress``: tqdm bars on stderr; ``overwrite``: allow replacing a
    conversion of another source folder.

    Returns the manifest as :func:`schema.load_manifest` reads it (with ``"root"``). Raises
    :class:`DataError` for a bad case (before writing anything) or an ``out`` holding another
    dataset's conversion; ``ValueError`` for bad arguments.
    """
    fractions = _check_split(split)
    kinds = _check_kinds(kinds)
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(out, "output exists and is not a folder")
    dataset = discover(src, layout, labels)
    name = name or os.path.basename(out)

    others = (_previous_sources(out) if os.path.isdir(out) else set()) - {dataset.root}
    replace = bool(others)
    if replace and not overwrite:
        raise DataError(out, f"holds a conversion of another dataset ({', '.join(sorted(others))}), "
                             f"not of {dataset.root}; choose another output folder or pass "
                             "overwrite=True (--overwrite)")
    records = {} if replace else _load_records(out)

    plans = _plan(dataset, out, records, kinds, progress)   # raises before anything is written

    if replace:
        _remove_conversion(out)
    os.makedirs(out, exist_ok=True)
    work = [p for p in plans if p[3]]
    if work:
        _remove(os.path.join(out, schema.MANIFEST))   # present only for a complete conversion
        _remove_partials(out)
    for case, entry, record, todo in tqdm(work, desc="convert", unit="case", file=sys.stderr,
                                          disable=not progress):
        if record is None:
            _remove_case(out, case.case_id)   # stale shards of changed sources go first
        _convert_case(out, dataset.root, case, dataset.labels, entry, record, todo)

    _remove_stale(out, {case.case_id for case, *_ in plans})

    entries = []
    for _, entry, _, _ in plans:
        entry = dict(entry)
        for kind in kinds:
            entry[ENTRY_KEY[kind]] = os.path.relpath(schema.shard_path(out, kind, entry["id"]), out)
        entries.append(entry)
    manifest = _manifest(dataset, name, seed, fractions, entries)
    manifest_path = os.path.join(out, schema.MANIFEST)
    text = _dumps(manifest)
    existing = None
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            existing = f.read()
    if text != existing:
        _write_text_atomic(manifest_path, text)
    return schema.load_manifest(out)
