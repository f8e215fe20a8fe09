"""evaluate_folders on tiny NIfTI files: pairing, geometry checks, hand-worked scores."""
import math

import numpy as np
import pandas as pd
import pytest

from keras_liver.data.volumes import write_volume
from keras_liver.errors import DataError
from keras_liver.evaluate import evaluate_folders, pair_files
from keras_liver.metrics import LITS_FAR, lits_scores, summarize

SPACING = (0.8, 0.8, 2.5)
AFFINE = np.diag([*SPACING, 1.0])


def _labels(liver_z=(1, 4), tumour=False):
    vol = np.zeros((8, 8, 6), np.uint8)
    vol[2:6, 2:6, liver_z[0]:liver_z[1]] = 1
    if tumour:
        vol[3:5, 3:5, 2] = 2
    return vol


@pytest.fixture
def lits_folders(tmp_path):
    """Case 1: tumour missed (called liver). Case 2: no tumour; liver one slice too high."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_volume(str(ref / "segmentation-1.nii"), _labels(tumour=True), AFFINE)
    write_volume(str(ref / "segmentation-2.nii.gz"), _labels(), AFFINE)
    write_volume(str(ref / "volume-1.nii"), np.zeros((8, 8, 6), np.float32), AFFINE)  # ignored
    write_volume(str(pred / "test-segmentation-1.nii.gz"), _labels(), AFFINE)
    write_volume(str(pred / "segmentation-2.nii"), _labels(liver_z=(1, 5)), AFFINE)
    return pred, ref


def test_lits_folders_scored_by_hand(lits_folders, tmp_path):
    pred, ref = lits_folders
    out = tmp_path / "out"
    frame = evaluate_folders(pred, ref, out_dir=out, progress=False)
    assert list(frame.index) == ["segmentation-1", "segmentation-2"]
    c1, c2 = frame.loc["segmentation-1"], frame.loc["segmentation-2"]
    # case 1: liver (label ≥ 1) identical; tumour (4 voxels) missed entirely
    assert c1["liver_dice"] == 1.0 and c1["liver_assd"] == 0.0
    assert c1["tumour_dice"] == 0.0 and c1["tumour_assd"] == LITS_FAR
    assert c1["tumour_recall"] == 0.0 and c1["tumour_fn"] == 4
    # case 2: reference box 4×4×3 (48), prediction 4×4×4 (64) one slice higher; no tumour
    assert c2["liver_dice"] == pytest.approx(2 * 48 / 112)
    assert c2["liver_rvd"] == pytest.approx(16 / 48)
    # S(P) 56 voxels: its top layer (16) is 2.5 mm (one slice, header spacing) above S(G),
    # the other 40 lie on S(G). S(G) 44 voxels: the 4 inner voxels of its top layer are
    # 0.8 mm (one in-plane step) from P's sides, the other 40 lie on S(P).
    assert c2["liver_msd"] == pytest.approx(2.5)
    assert c2["liver_assd"] == pytest.approx((16 * 2.5 + 4 * 0.8) / (56 + 44))
    assert c2["liver_rmsd"] == pytest.approx(math.sqrt((16 * 6.25 + 4 * 0.64) / 100))
    assert c2["tumour_dice"] == 1.0 and c2["tumour_msd"] == 0.0   # both empty
    assert c2["liver_precision"] == pytest.approx(48 / 64) and c2["liver_recall"] == 1.0
    assert c2["liver_specificity"] == pytest.approx((384 - 64) / (384 - 48))
    assert c2["liver_accuracy"] == pytest.approx((384 - 16) / 384)
    # files: per case then mean / std / global
    table = pd.read_csv(out / "metrics.csv", index_col="case")
    assert list(table.index) == ["segmentation-1", "segmentation-2", "mean", "std", "global"]
    assert table.loc["mean", "tumour_dice"] == pytest.approx(0.5)
    # global liver Dice: TP 48 + 48, FP 0 + 16, FN 0
    assert table.loc["global", "liver_dice"] == pytest.approx(192 / 208)
    assert table.loc["global", "tumour_dice"] == 0.0
    assert summarize(frame).loc["global", "liver_dice"] == pytest.approx(192 / 208)
    assert "segmentation-2" in (out / "metrics.md").read_text()


def test_identical_names_and_custom_classes(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    vol = _labels()
    write_volume(str(ref / "case_a.nii.gz"), vol, AFFINE)
    write_volume(str(pred / "case_a.nii"), vol.astype(np.float32), AFFINE)  # float labels are fine
    write_volume(str(ref / "case_b.nii.gz"), np.zeros_like(vol), AFFINE)    # empty both
    write_volume(str(pred / "case_b.nii.gz"), np.zeros_like(vol), AFFINE)
    write_volume(str(pred / "extra.nii.gz"), vol, AFFINE)                    # no reference
    with pytest.warns(UserWarning, match="extra.nii.gz"):
        frame = evaluate_folders(pred, ref, classes={1: "liver"}, progress=False)
    assert list(frame.columns[:7]) == [f"liver_{k}" for k in
                                       ("dice", "jaccard", "voe", "rvd", "assd", "rmsd", "msd")]
    assert frame.loc["case_a", "liver_dice"] == 1.0
    assert frame.loc["case_b"].to_dict()["liver_dice"] == 1.0
    assert frame.loc["case_b", "liver_voe"] == 0.0 and frame.loc["case_b", "liver_rvd"] == 0.0


def test_spacing_comes_from_the_header(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    write_volume(str(ref / "c.nii"), _labels(), affine)
    write_volume(str(pred / "c.nii"), _labels(liver_z=(1, 5)), affine)
    frame = evaluate_folders(pred, ref, classes={1: "liver"}, progress=False)
    direct = lits_scores(_labels(liver_z=(1, 5)), _labels(), spacing=(1.0, 1.0, 4.0))
    assert frame.loc["c", "liver_msd"] == pytest.approx(4.0) == direct["msd"]
    assert frame.loc["c", "liver_assd"] == pytest.approx(direct["assd"])
    with pytest.raises(ValueError, match="spacing_from"):
        evaluate_folders(pred, ref, spacing_from="header")


def test_missing_prediction_is_listed(lits_folders):
    pred, ref = lits_folders
    (pred / "segmentation-2.nii").unlink()
    write_volume(str(ref / "segmentation-7.nii"), _labels(), AFFINE)
    with pytest.raises(DataError, match=r"no prediction for 2 reference\(s\): "
                                        r"segmentation-2.nii.gz, segmentation-7.nii"):
        pair_files(str(pred), str(ref))


def test_shape_mismatch_names_the_prediction(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_volume(str(ref / "c.nii"), _labels(), AFFINE)
    write_volume(str(pred / "c.nii"), _labels()[:, :, :5], AFFINE)
    with pytest.raises(DataError) as err:
        evaluate_folders(pred, ref, progress=False)
    assert err.value.path.endswith("pred/c.nii")
    assert "shape (8, 8, 5) differs from the reference c.nii shape (8, 8, 6)" in str(err.value)


def test_affine_mismatch_names_the_prediction(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_volume(str(ref / "c.nii"), _labels(), AFFINE)
    shifted = AFFINE.copy()
    shifted[2, 3] = 5.0                                  # origin moved 5 mm along z
    write_volume(str(pred / "c.nii"), _labels(), shifted)
    with pytest.raises(DataError, match=r"pred/c.nii: affine differs .*largest difference 5"):
        evaluate_folders(pred, ref, progress=False)
    # a difference below atol 1e-4 is accepted
    nearly = AFFINE.copy()
    nearly[0, 3] = 5e-5
    write_volume(str(pred / "c.nii"), _labels(), nearly)
    assert evaluate_folders(pred, ref, progress=False).loc["c", "liver_dice"] == 1.0


def test_unexpected_labels(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_volume(str(ref / "c.nii"), _labels(tumour=True), AFFINE)
    bad = _labels()
    bad[0, 0, 0], bad[0, 0, 1] = 3, 7
    write_volume(str(pred / "c.nii"), bad, AFFINE)
    with pytest.raises(DataError, match=r"pred/c.nii: unexpected label values \[3, 7\]; "
                                        r"expected labels in \[0, 1, 2\]"):
        evaluate_folders(pred, ref, progress=False)
    # label 2 in the reference of a binary task is unexpected too
    write_volume(str(pred / "c.nii"), _labels(), AFFINE)
    with pytest.raises(DataError, match=r"ref/c.nii: unexpected label values \[2\]"):
        evaluate_folders(pred, ref, classes={1: "liver"}, progress=False)
    fractional = _labels().astype(np.float32) * 0.5
    write_volume(str(pred / "c.nii"), fractional, AFFINE)
    with pytest.raises(DataError, match="must be integers"):
        evaluate_folders(pred, ref, progress=False)


def test_empty_or_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no NIfTI files"):
        evaluate_folders(tmp_path / "empty", tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match="reference folder not found"):
        evaluate_folders(tmp_path / "empty", tmp_path / "nope", progress=False)
