"""Finding the cases of a NIfTI dataset and checking each one before conversion (SPEC §6).

Three folder layouts are understood; :func:`discover` detects which one ``root`` holds.

``lits`` (LiTS challenge)
    ``volume-N.nii[.gz]`` with ``segmentation-N.nii[.gz]``, anywhere below ``root`` (the
    official archive spreads them over ``Training Batch 1/`` and ``Training Batch 2/``).
    Case id ``lits-NNN`` (N zero-padded to at least three digits), cases sorted by N.
    Labels: 0 background, 1 liver, 2 tumour.

``msd`` (Medical Segmentation Decathlon, also nnU-Net raw data)
    ``dataset.json`` at ``root`` whose ``"training"`` list holds ``{"image", "label"}`` paths
    relative to ``root`` (usually ``imagesTr/`` and ``labelsTr/``). Without that list every
    ``labelsTr/X.nii[.gz]`` is paired with ``imagesTr/X.nii[.gz]`` or ``imagesTr/X_0000.nii[.gz]``
    (nnU-Net v2). Case id = the label file's name without its NIfTI suffix (``liver_7``).
    Labels from ``"labels"``: MSD style ``{"0": "background", ...}`` or nnU-Net v2 style
    ``{"background": 0, ...}``.

``flat``
    Either ``images/`` + ``labels/`` folders holding files of the same names (a label may
    differ from its image only by ``.nii`` vs ``.nii.gz``), or one folder of
    ``X.nii[.gz]`` images each with ``X_seg.nii[.gz]`` or ``X_label.nii[.gz]``. Case id = ``X``
    (the image's name without its NIfTI suffix). Labels from an optional ``labels.json``
    at ``root`` (``{"0": "background", ...}``), else the LiTS labels.

Cases are sorted naturally by id (``liver_2`` before ``liver_10``). Hidden files (``.*``,
including macOS ``._*`` resource forks) are ignored. An image without its label is an error
naming the image, unless ``require_labels=False`` (then ``Case.label`` is ``None``).

:func:`validate_case` reads one case and checks what the converter relies on, so a bad
case is refused before anything is written.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from keras_liver.data.volumes import Volume, is_nifti, read_volume, strip_nifti_suffix
from keras_liver.errors import DataError

LAYOUTS = ("lits", "msd", "flat")
LITS_LABELS = {0: "background", 1: "liver", 2: "tumour"}
MSD_JSON = "dataset.json"
FLAT_LABELS_JSON = "labels.json"
FLAT_LABEL_SUFFIXES = ("_seg", "_label")

_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_LITS_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")
#: Affines of an image and its label agree when every entry is within this (mm).
AFFINE_ATOL = 1e-3


@dataclass
class Case:
    """One image and its label map (absolute paths); ``label`` is ``None`` for unlabelled cases."""

    case_id: str
    image: str
    label: str | None


@dataclass
class Dataset:
    """The cases found under ``root`` in one ``layout``, with the declared label names."""

    root: str
    layout: str
    cases: list[Case]
    labels: dict[int, str] = field(default_factory=lambda: dict(LITS_LABELS))
    name: str = ""


# --------------------------------------------------------------------------- helpers

def natural_key(text: str):
    """Sort key that orders embedded numbers numerically (``a2`` < ``a10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text) if part]


def normalize_labels(labels, where="labels") -> dict[int, str]:
    """``{int: name}`` from ``{int|"int": name}`` or ``{name: int}`` (nnU-Net v2).

    Values must be integers in 0..255 (labels are stored as uint8).
    """
    if not isinstance(labels, dict) or not labels:
        raise DataError(where, f"expected a non-empty mapping of label value to name, received {labels!r}")
    out: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and not _is_int(key):
            number, name = int(value), str(key)          # {"liver": 1}
        elif _is_int(key):
            number, name = int(key), str(value)          # {"1": "liver"} / {1: "liver"}
        else:
            raise DataError(where, f"label entry {key!r}: {value!r} is neither 'value: name' "
                                   "nor 'name: value' with an integer value")
        if not 0 <= number <= 255:
            raise DataError(where, f"label value {number} ({name}) is outside 0..255")
        if number in out:
            raise DataError(where, f"label value {number} is declared twice")
        out[number] = name
    return dict(sorted(out.items()))


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value) is not None


def _visible_nifti(folder: str) -> list[str]:
    """NIfTI file names in ``folder`` (not recursive), hidden files left out, sorted."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder)
                  if not n.startswith(".") and is_nifti(n) and os.path.isfile(os.path.join(folder, n)))


def _by_stem(folder: str) -> dict[str, str]:
    """``{stem: path}`` of the NIfTI files in ``folder``; two files of one stem are an error."""
    out: dict[str, str] = {}
    for name in _visible_nifti(folder):
        stem = strip_nifti_suffix(name)
        path = os.path.join(folder, name)
        if stem in out:
            raise DataError(path, f"two files for one case: {os.path.basename(out[stem])} and {name}")
        out[stem] = path
    return out


def _missing_label(image: str, expected: str) -> DataError:
    return DataError(image, f"image has no label (expected {expected})")


def _sorted_cases(cases: list[Case]) -> list[Case]:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            raise DataError(case.image, f"case id {case.case_id!r} also used by {seen[case.case_id].image}")
        seen[case.case_id] = case
    return sorted(cases, key=lambda c: natural_key(c.case_id))


# --------------------------------------------------------------------------- LiTS

def _lits_files(root: str) -> tuple[dict[int, str], dict[int, str]]:
    volumes: dict[int, str] = {}
    segmentations: dict[int, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            for pattern, found in ((_LITS_VOLUME, volumes), (_LITS_SEGMENTATION, segmentations)):
                match = pattern.match(name)
                if match:
                    number = int(match.group(1))
                    path = os.path.join(folder, name)
                    if number in found:
                        raise DataError(path, f"LiTS case {number} found twice (also {found[number]})")
                    found[number] = path
    return volumes, segmentations


def _discover_lits(root: str, require_labels: bool) -> list[Case]:
    volumes, segmentations = _lits_files(root)
    for number, seg in segmentations.items():
        if number not in volumes:
            raise DataError(seg, f"segmentation has no volume-{number}.nii[.gz]")
    cases = []
    for number in sorted(volumes):
        label = segmentations.get(number)
        if label is None and require_labels:
            raise _missing_label(volumes[number], f"segmentation-{number}.nii[.gz] somewhere under {root}")
        cases.append(Case(f"lits-{number:03d}", volumes[number], label))
    return cases


# --------------------------------------------------------------------------- MSD

def _read_msd_json(root: str) -> dict:
    path = os.path.join(root, MSD_JSON)
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise DataError(path, "expected a JSON object")
    return meta


def _discover_msd(root: str, meta: dict, require_labels: bool) -> list[Case]:
    json_path = os.path.join(root, MSD_JSON)
    cases = []
    if "training" in meta:
        entries = meta["training"]
        if not isinstance(entries, list):
            raise DataError(json_path, "'training' must be a list of {\"image\", \"label\"} entries")
        for entry in entries:
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(json_path, f"training entry {entry!r} has no 'image'")
            image = os.path.normpath(os.path.join(root, entry["image"]))
            if not os.path.isfile(image):
                raise DataError(image, f"listed in {MSD_JSON} but not found")
            label = entry.get("label")
            label = os.path.normpath(os.path.join(root, label)) if label else None
            if label is None or not os.path.isfile(label):
                if require_labels:
                    raise _missing_label(image, label or f"a 'label' in its {MSD_JSON} entry")
                label = None
            stem = strip_nifti_suffix(os.path.basename(label or image))
            cases.append(Case(stem, image, label))
        return cases
    # nnU-Net style: no list, pair labelsTr/X with imagesTr/X or imagesTr/X_0000.
    images = _by_stem(os.path.join(root, "imagesTr"))
    labels = _by_stem(os.path.join(root, "labelsTr"))
    used = set()
    for stem, label in labels.items():
        key = stem if stem in images else f"{stem}_0000"
        if key not in images:
            raise DataError(label, f"label has no image imagesTr/{stem}.nii[.gz] or {stem}_0000.nii[.gz]")
        used.add(key)
        cases.append(Case(stem, images[key], label))
    for key, image in images.items():
        if key not in used:
            if require_labels:
                raise _missing_label(image, f"labelsTr/{re.sub(r'_0000$', '', key)}.nii[.gz]")
            cases.append(Case(re.sub(r"_0000$", "", key), image, None))
    return cases


# --------------------------------------------------------------------------- flat

def _flat_kind(root: str) -> str | None:
    """``"folders"`` (images/ + labels/), ``"suffix"`` (X + X_seg) or ``None``."""
    if os.path.isdir(os.path.join(root, "images")) and os.path.isdir(os.path.join(root, "labels")):
        return "folders"
    stems = {strip_nifti_suffix(n) for n in _visible_nifti(root)}
    if any(s.endswith(FLAT_LABEL_SUFFIXES) for s in stems):
        return "suffix"
    return None


def _discover_flat(root: str, require_labels: bool) -> list[Case]:
    kind = _flat_kind(root)
    cases = []
    if kind == "folders":
        images = _by_stem(os.path.join(root, "images"))
        labels = _by_stem(os.path.join(root, "labels"))
        for stem, label in labels.items():
            if stem not in images:
                raise DataError(label, f"label has no image images/{stem}.nii[.gz]")
        for stem, image in images.items():
            if stem not in labels and require_labels:
                raise _missing_label(image, f"labels/{stem}.nii[.gz]")
            cases.append(Case(stem, image, labels.get(stem)))
        return cases
    files = _by_stem(root)
    images = {s: p for s, p in files.items() if not s.endswith(FLAT_LABEL_SUFFIXES)}
    labels: dict[str, str] = {}
    for stem, path in files.items():
        for suffix in FLAT_LABEL_SUFFIXES:
            if stem.endswith(suffix):
                base = stem[: -len(suffix)]
                if base not in images:
                    raise DataError(path, f"label has no image {base}.nii[.gz]")
                if base in labels:
                    raise DataError(path, f"two labels for {base}: {os.path.basename(labels[base])} "
                                          f"and {os.path.basename(path)}")
                labels[base] = path
    for stem, image in images.items():
        if stem not in labels and require_labels:
            raise _missing_label(image, f"{stem}_seg.nii[.gz] or {stem}_label.nii[.gz]")
        cases.append(Case(stem, image, labels.get(stem)))
    return cases


def _flat_labels(root: str):
    path = os.path.join(root, FLAT_LABELS_JSON)
    if not os.path.isfile(path):
        return dict(LITS_LABELS)
    try:
        with open(path) as f:
            return normalize_labels(json.load(f), where=path)
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err}") from None


# --------------------------------------------------------------------------- discover

def detect_layout(root: str) -> str:
    """The layout of ``root`` (``"msd"``, ``"lits"`` or ``"flat"``, tried in that order)."""
    root = os.path.abspath(root)
    if os.path.isfile(os.path.join(root, MSD_JSON)):
        return "msd"
    volumes, _ = _lits_files(root)
    if volumes:
        return "lits"
    if _flat_kind(root):
        return "flat"
    raise DataError(root, "not a dataset folder: found no LiTS volume-N/segmentation-N pairs, "
                          f"no MSD {MSD_JSON}, no images/ + labels/ folders and no "
                          "X.nii.gz + X_seg.nii.gz (or X_label.nii.gz) pairs")


def discover(root: str, layout: str = "auto", labels=None, *, require_labels: bool = True) -> Dataset:
    """Find the cases of the dataset at ``root``.

    ``layout`` is ``"auto"`` (detect), ``"lits"``, ``"msd"`` or ``"flat"`` (see the module
    docstring). ``labels`` (``{value: name}``) overrides the layout's label names. Raises
    :class:`DataError` when ``root`` holds no dataset of that layout, an image has no label
    (naming the image), or two files claim one case.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(root, "dataset folder not found" if not os.path.exists(root) else "not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, received {layout!r}")
    name = os.path.basename(root)
    if layout == "lits":
        cases = _discover_lits(root, require_labels)
        declared = dict(LITS_LABELS)
        empty = "found no LiTS volume-N.nii[.gz] files"
    elif layout == "msd":
        if not os.path.isfile(os.path.join(root, MSD_JSON)):
            raise DataError(root, f"not an MSD dataset: no {MSD_JSON}")
        meta = _read_msd_json(root)
        cases = _discover_msd(root, meta, require_labels)
        declared = (normalize_labels(meta["labels"], where=os.path.join(root, MSD_JSON))
                    if "labels" in meta else dict(LITS_LABELS))
        name = str(meta.get("name") or name)
        empty = f"{MSD_JSON} lists no training cases and labelsTr/ holds none"
    else:
        if _flat_kind(root) is None:
            raise DataError(root, "not a flat dataset: no images/ + labels/ folders and no "
                                  "X.nii.gz + X_seg.nii.gz (or X_label.nii.gz) pairs")
        cases = _discover_flat(root, require_labels)
        declared = _flat_labels(root)
        empty = "found no images"
    if not cases:
        raise DataError(root, empty)
    if labels is not None:
        declared = normalize_labels(labels)
    return Dataset(root=root, layout=layout, cases=_sorted_cases(cases), labels=declared, name=name)


# --------------------------------------------------------------------------- validate

def _geometry(affine: np.ndarray) -> str:
    diag = ", ".join(f"{v:g}" for v in np.diag(affine)[:3])
    origin = ", ".join(f"{v:g}" for v in affine[:3, 3])
    return f"diagonal ({diag}), origin ({origin})"


def _show_values(values, limit: int = 8) -> str:
    values = [f"{v:g}" for v in values]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return "{" + ", ".join(values[:limit]) + more + "}"


def validate_case(case: Case, labels=None) -> tuple[Volume, Volume]:
    """Read a case and check it can be converted; returns ``(image, label)``.

    The image comes back as float32 (finite: NaN/inf voxels are refused), the label as uint8.
    Raises :class:`DataError` naming the offending file when a file is missing, truncated or
    corrupt, when the label's shape or affine (``np.allclose``, ``atol=AFFINE_ATOL``) differs
    from the image's, or when label voxels are not integers or not among the declared
    ``labels`` (default: the LiTS labels).
    """
    declared = normalize_labels(labels) if labels is not None else dict(LITS_LABELS)
    if case.label is None:
        raise _missing_label(case.image, "a label file")
    image = read_volume(case.image, np.float32)
    label = read_volume(case.label, np.float32)
    if label.shape != image.shape:
        raise DataError(case.label, f"label shape {label.shape} differs from the image's shape "
                                    f"{image.shape} ({case.image})")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_ATOL):
        raise DataError(case.label, f"label affine differs from the image's ({case.image}): "
                                    f"label {_geometry(label.affine)}; image {_geometry(image.affine)}")
    values = np.unique(label.data)
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise DataError(case.label, f"label voxels must be integers, found values {_show_values(fractional)}")
    unexpected = [v for v in values if int(v) not in declared]
    if unexpected:
        names = ", ".join(f"{k}: {v}" for k, v in declared.items())
        raise DataError(case.label, f"unexpected label values {_show_values(unexpected)}; the dataset "
                                    f"declares {{{names}}} (pass labels= to declare others)")
    label.data = label.data.astype(np.uint8)
    return image, label
