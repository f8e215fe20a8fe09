"""Dataset discovery (LiTS, MSD, flat) and per-case validation (SPEC §6)."""
import gzip
import json
import os

import numpy as np
import pytest

from keras_liver.data.datasets import (LITS_LABELS, Case, detect_layout, discover, natural_key,
                                       normalize_labels, validate_case)
from keras_liver.data.volumes import write_volume
from keras_liver.errors import DataError

SHAPE = (16, 16, 6)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def make_arrays(seed=0, shape=SHAPE, max_label=2):
    """A float32 HU image and a uint8 label whose foreground spans a few slices only."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40.0, 300.0, size=shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[4:12, 3:10, 1:4] = 1
    if max_label >= 2:
        label[6:8, 5:7, 2] = 2
    return image, label


def write_pair(image_path, label_path, seed=0, shape=SHAPE, affine=AFFINE, label_affine=None,
               label=None, image=None):
    img, lab = make_arrays(seed, shape)
    image = img if image is None else image
    label = lab if label is None else label
    write_volume(str(image_path), image, affine)
    if label_path is not None:
        write_volume(str(label_path), label, affine if label_affine is None else label_affine)
    return str(image_path), (str(label_path) if label_path is not None else None)


def make_lits(root, numbers=(0, 1, 2, 10), batches=True):
    """LiTS layout; with ``batches`` the cases are spread over two 'Training Batch' folders."""
    for i, n in enumerate(numbers):
        folder = os.path.join(root, f"Training Batch {1 + i % 2}") if batches else str(root)
        os.makedirs(folder, exist_ok=True)
        ext = ".nii" if i % 2 else ".nii.gz"
        write_pair(os.path.join(folder, f"volume-{n}{ext}"),
                   os.path.join(folder, f"segmentation-{n}{ext}"), seed=n)
    return str(root)


def make_msd(root, n=3, labels=None):
    os.makedirs(os.path.join(root, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(root, "labelsTr"), exist_ok=True)
    training = []
    for i in range(n):
        write_pair(os.path.join(root, "imagesTr", f"liver_{i * 5}.nii.gz"),
                   os.path.join(root, "labelsTr", f"liver_{i * 5}.nii.gz"), seed=i)
        training.append({"image": f"./imagesTr/liver_{i * 5}.nii.gz",
                         "label": f"./labelsTr/liver_{i * 5}.nii.gz"})
    meta = {"name": "Liver", "labels": labels or {"0": "background", "1": "liver", "2": "cancer"},
            "numTraining": n, "training": training, "test": []}
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump(meta, f)
    return str(root)


def make_flat(root, names=("a", "b", "c"), convention="folders"):
    for i, name in enumerate(names):
        if convention == "folders":
            write_pair(os.path.join(root, "images", f"{name}.nii.gz"),
                       os.path.join(root, "labels", f"{name}.nii.gz"), seed=i)
        else:
            write_pair(os.path.join(root, f"{name}.nii.gz"), os.path.join(root, f"{name}_seg.nii.gz"),
                       seed=i)
    return str(root)


# --------------------------------------------------------------------------- discover

def test_lits_discovered_in_batches_sorted_numerically(tmp_path):
    root = make_lits(tmp_path / "LiTS")
    (tmp_path / "LiTS" / "Training Batch 1" / "._volume-0.nii.gz").write_bytes(b"junk")
    ds = discover(root)
    assert ds.layout == "lits" and ds.labels == LITS_LABELS and ds.name == "LiTS"
    assert [c.case_id for c in ds.cases] == ["lits-000", "lits-001", "lits-002", "lits-010"]
    case = ds.cases[3]
    assert os.path.isabs(case.image) and case.image.endswith("volume-10.nii")
    assert case.label.endswith("segmentation-10.nii")
    assert detect_layout(root) == "lits"


def test_lits_volume_without_segmentation_names_the_volume(tmp_path):
    root = make_lits(tmp_path / "LiTS", batches=False)
    write_pair(tmp_path / "LiTS" / "volume-7.nii.gz", None)
    with pytest.raises(DataError, match=r"volume-7\.nii\.gz: image has no label"):
        discover(root)
    ds = discover(root, require_labels=False)
    assert [(c.case_id, c.label) for c in ds.cases][3] == ("lits-007", None)


def test_msd_discovered_with_labels_from_dataset_json(tmp_path):
    root = make_msd(tmp_path / "Task03_Liver", n=3)
    ds = discover(root)
    assert ds.layout == "msd" and ds.name == "Liver"
    assert ds.labels == {0: "background", 1: "liver", 2: "cancer"}
    assert [c.case_id for c in ds.cases] == ["liver_0", "liver_5", "liver_10"]  # natural order
    assert ds.cases[1].image == os.path.join(root, "imagesTr", "liver_5.nii.gz")


def test_msd_missing_label_names_the_image(tmp_path):
    root = make_msd(tmp_path / "Task03_Liver", n=2)
    os.remove(os.path.join(root, "labelsTr", "liver_5.nii.gz"))
    with pytest.raises(DataError, match=r"imagesTr/liver_5\.nii\.gz: image has no label"):
        discover(root)


def test_nnunet_style_msd_without_training_list(tmp_path):
    root = tmp_path / "Dataset003"
    write_pair(root / "imagesTr" / "liver_1_0000.nii.gz", root / "labelsTr" / "liver_1.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumor": 2}}))
    ds = discover(str(root), layout="msd")
    assert [c.case_id for c in ds.cases] == ["liver_1"]
    assert ds.labels == {0: "background", 1: "liver", 2: "tumor"}


@pytest.mark.parametrize("convention", ["folders", "suffix"])
def test_flat_layouts(tmp_path, convention):
    root = make_flat(tmp_path / "flat", convention=convention)
    ds = discover(root)
    assert ds.layout == "flat" and ds.labels == LITS_LABELS
    assert [c.case_id for c in ds.cases] == ["a", "b", "c"]
    assert all(c.label and os.path.exists(c.label) for c in ds.cases)


def test_flat_labels_json_and_missing_label(tmp_path):
    root = make_flat(tmp_path / "flat", convention="suffix")
    (tmp_path / "flat" / "labels.json").write_text(json.dumps({"0": "bg", "1": "liver", "2": "t", "3": "x"}))
    assert discover(root).labels == {0: "bg", 1: "liver", 2: "t", 3: "x"}
    write_pair(tmp_path / "flat" / "d.nii.gz", None)
    with pytest.raises(DataError, match=r"d\.nii\.gz: image has no label"):
        discover(root)


def test_unknown_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no LiTS volume-N/segmentation-N pairs.*no MSD dataset.json"
                                        ".*no images/ \\+ labels/"):
        discover(str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        discover(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not an MSD dataset"):
        discover(str(tmp_path), layout="msd")


def test_label_override_and_normalization():
    assert normalize_labels({"1": "liver", 0: "background"}) == {0: "background", 1: "liver"}
    with pytest.raises(DataError, match="outside 0..255"):
        normalize_labels({300: "x"})
    assert sorted(["a10", "a2", "b1"], key=natural_key) == ["a2", "a10", "b1"]


# --------------------------------------------------------------------------- validate

def test_validate_case_returns_float_image_and_uint8_label(tmp_path):
    image_path, label_path = write_pair(tmp_path / "x.nii.gz", tmp_path / "x_seg.nii.gz")
    image, label = validate_case(Case("x", image_path, label_path), LITS_LABELS)
    ref_image, ref_label = make_arrays(0)
    assert image.data.dtype == np.float32 and label.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data, ref_image)
    np.testing.assert_array_equal(label.data, ref_label)
    assert image.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_shape_mismatch_names_label_and_both_shapes(tmp_path):
    img, _ = make_arrays()
    image_path, label_path = write_pair(tmp_path / "x.nii.gz", tmp_path / "x_seg.nii.gz",
                                        label=np.zeros((16, 16, 5), np.uint8), image=img)
    with pytest.raises(DataError, match=r"x_seg\.nii\.gz: label shape \(16, 16, 5\) differs from the "
                                        r"image's shape \(16, 16, 6\)"):
        validate_case(Case("x", image_path, label_path), LITS_LABELS)


def test_affine_mismatch(tmp_path):
    moved = AFFINE.copy()
    moved[:3, 3] = [0.0, 0.0, 5.0]
    image_path, label_path = write_pair(tmp_path / "x.nii.gz", tmp_path / "x_seg.nii.gz",
                                        label_affine=moved)
    with pytest.raises(DataError, match=r"x_seg\.nii\.gz: label affine differs.*origin \(0, 0, 5\)"):
        validate_case(Case("x", image_path, label_path), LITS_LABELS)
    tiny = AFFINE.copy()
    tiny[0, 3] += 1e-4  # within tolerance
    image_path, label_path = write_pair(tmp_path / "y.nii.gz", tmp_path / "y_seg.nii.gz", label_affine=tiny)
    validate_case(Case("y", image_path, label_path), LITS_LABELS)


def test_unexpected_and_fractional_label_values(tmp_path):
    _, label = make_arrays()
    label[0, 0, 0] = 3
    image_path, label_path = write_pair(tmp_path / "x.nii.gz", tmp_path / "x_seg.nii.gz", label=label)
    with pytest.raises(DataError, match=r"x_seg\.nii\.gz: unexpected label values \{3\}"):
        validate_case(Case("x", image_path, label_path), LITS_LABELS)
    validate_case(Case("x", image_path, label_path), {0: "bg", 1: "a", 2: "b", 3: "c"})
    frac = label.astype(np.float32)
    frac[1, 1, 1] = 1.5
    image_path, label_path = write_pair(tmp_path / "y.nii.gz", tmp_path / "y_seg.nii.gz", label=frac)
    with pytest.raises(DataError, match=r"y_seg\.nii\.gz: label voxels must be integers.*1\.5"):
        validate_case(Case("y", image_path, label_path), {0: "bg", 1: "a", 2: "b", 3: "c"})


def test_nan_image_and_truncated_file(tmp_path):
    image, _ = make_arrays()
    image[3, 3, 3] = np.nan
    image_path, label_path = write_pair(tmp_path / "x.nii.gz", tmp_path / "x_seg.nii.gz", image=image)
    with pytest.raises(DataError, match=r"x\.nii\.gz: 1 voxel\(s\) are NaN"):
        validate_case(Case("x", image_path, label_path), LITS_LABELS)
    image_path, label_path = write_pair(tmp_path / "y.nii.gz", tmp_path / "y_seg.nii.gz")
    truncate(image_path)
    with pytest.raises(DataError, match=r"y\.nii\.gz: cannot read NIfTI"):
        validate_case(Case("y", image_path, label_path), LITS_LABELS)


def truncate(path, keep=0.6):
    data = open(path, "rb").read()
    assert gzip.decompress(data)  # a valid file before cutting
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
