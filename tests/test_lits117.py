"""Loading, conversion and windowing on real anatomy: the LiTS-117 crop (SPEC §8).

The metrics' tests on the same crop live in ``test_metrics.py``.
"""
import cv2
import numpy as np
import pytest

from keras_liver.data import datasets, schema
from keras_liver.data import preprocessing as P
from keras_liver.data.convert import convert
from keras_liver.data.fixtures import load_lits117
from keras_liver.data.volumes import read_volume, write_volume

#: The crop stores no geometry; tests that need millimetres give it this one.
AFFINE = np.diag([0.78, 0.78, 1.5, 1.0])


@pytest.fixture(scope="module")
def lits117():
    return load_lits117()


@pytest.fixture(scope="module")
def liver_slice(lits117):
    z = int(np.argmax((lits117.label > 0).sum(axis=(0, 1))))
    return lits117.image[..., z], lits117.label[..., z]


def test_lits117_is_contrast_ct_with_liver_and_tumour(lits117):
    image, label = lits117.image, lits117.label
    assert image.shape == label.shape == (128, 128, 128)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2}
    assert image.min() < -900                                  # air around the body
    liver, tumour = np.median(image[label == 1]), np.median(image[label == 2])
    assert 80 < liver < 160                                    # enhanced parenchyma (HU)
    assert tumour < liver - 20                                 # the lesions are hypodense


def test_lits117_round_trips_through_nifti_and_converts_exactly(lits117, tmp_path):
    src = tmp_path / "flat"
    write_volume(str(src / "images" / "lits117.nii.gz"), lits117.image, AFFINE)
    write_volume(str(src / "labels" / "lits117.nii.gz"), lits117.label, AFFINE, dtype=np.uint8)
    back = read_volume(str(src / "images" / "lits117.nii.gz"))
    np.testing.assert_array_equal(back.data, lits117.image)
    np.testing.assert_allclose(back.affine, AFFINE)
    assert back.spacing == pytest.approx((0.78, 0.78, 1.5))

    found = datasets.discover(str(src))
    assert found.layout == "flat" and [c.case_id for c in found.cases] == ["lits117"]
    image, label = datasets.validate_case(found.cases[0])
    np.testing.assert_array_equal(label.data, lits117.label)

    manifest = convert(str(src), str(tmp_path / "tf"), seed=0, split=(1.0, 0.0, 0.0),
                       progress=False)
    case = manifest["cases"][0]
    assert case["label_values"] == [0, 1, 2] and case["spacing"] == pytest.approx([0.78, 0.78, 1.5])
    import tensorflow as tf
    path = tmp_path / "tf" / case["volume"]
    (record,) = list(tf.data.TFRecordDataset(str(path), compression_type=schema.COMPRESSION))
    decoded = schema.decode_example(record.numpy())
    np.testing.assert_array_equal(decoded["image"], lits117.image)
    np.testing.assert_array_equal(decoded["label"], lits117.label)


def test_liver_window_on_real_anatomy(liver_slice):
    hu, label = liver_slice
    x = P.preprocess_image(hu, {"window": [-100, 200]}).numpy()[..., 0]
    np.testing.assert_allclose(x, np.clip((hu + 100) / 300, 0, 1), atol=1e-6)
    air, bone = hu < -500, hu > 300
    assert air.any() and bone.any()
    assert (x[air] == 0).all() and (x[bone] == 1).all()
    liver = x[label == 1]
    # the window keeps the parenchyma's contrast: almost no liver voxel is clipped ...
    assert np.mean((liver > 0) & (liver < 1)) > 0.99
    # ... and lesions stay darker than the liver around them (about 50 HU = 0.17 here)
    assert np.median(liver) - np.median(x[label == 2]) > 0.1


def test_clahe_on_real_anatomy_matches_opencv(liver_slice):
    hu, _ = liver_slice
    x01 = P.window_np(hu, -100, 200)
    u8 = P.to_uint8_np(x01)
    got = P.preprocess_image(hu, {"window": [-100, 200],
                                  "clahe": {"clip_limit": 2.0, "tile_grid": [8, 8]}}).numpy()[..., 0]
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8).astype(np.float32) / 255
    np.testing.assert_array_equal(got, ref)
    assert np.abs(got - x01).max() > 0.05  # CLAHE changed the real slice
