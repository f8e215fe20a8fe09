"""LiTS scores, classification scores and result tables, checked against hand-worked values."""
import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from keras_liver.metrics import (
    LITS_FAR,
    ConfusionCounts,
    accuracy,
    binary_scores,
    classification_scores,
    classification_scores_per_class,
    compare_with_paper,
    confusion_counts,
    confusion_counts_per_class,
    dice_global,
    dice_per_case,
    lits_liver_tumour,
    lits_scores,
    lits_scores_per_class,
    precision,
    recall,
    results_frame,
    specificity,
    summarize,
    surface,
    to_markdown,
    surface_distances,
    with_summary,
    write_results,
)


# ---------------------------------------------------------------- LiTS overlap and distances
def test_bars_on_anisotropic_grid():
    # Two 1-voxel-thick bars along z, overlapping on z = 3, 4, 5; spacing 2 mm along z.
    pred = np.zeros((5, 5, 10), bool)
    ref = np.zeros_like(pred)
    pred[2, 2, 0:6] = True
    ref[2, 2, 3:9] = True
    s = lits_scores(pred, ref, spacing=(1.0, 1.0, 2.0))
    assert s["dice"] == pytest.approx(2 * 3 / 12)
    assert s["jaccard"] == pytest.approx(3 / 9)
    assert s["voe"] == pytest.approx(6 / 9)
    assert s["rvd"] == 0.0
    # A bar is all surface. P→G: z=0,1,2 are 3,2,1 slices away (6, 4, 2 mm), the rest 0;
    # G→P symmetric. 12 surface voxels in all.
    assert s["assd"] == pytest.approx((12 + 12) / 12)
    assert s["rmsd"] == pytest.approx(math.sqrt(2 * (36 + 16 + 4) / 12))
    assert s["msd"] == pytest.approx(6.0)


def test_concentric_cubes_on_anisotropic_grid():
    # G: 7³ cube, P: the 5³ cube inside it, one voxel in from every face; spacing (1, 1, 2.5).
    ref = np.zeros((11, 11, 11), bool)
    pred = np.zeros_like(ref)
    ref[2:9, 2:9, 2:9] = True
    pred[3:8, 3:8, 3:8] = True
    # S(G): 343 − 125 = 218 voxels, S(P): 125 − 27 = 98.
    assert surface(ref).sum() == 218 and surface(pred).sum() == 98
    d_pred, d_ref = surface_distances(pred, ref, spacing=(1, 1, 2.5))
    # P→G: d(p) = min over axes of (steps to G's face) × spacing. 80 voxels lie on an x/y face
    # of P (1 mm); the 18 on a z face only: 16 at 2 mm (x or y one step from the middle),
    # 2 at 2.5 mm (x = y = 5).
    assert sorted(d_pred.tolist()) == pytest.approx([1.0] * 80 + [2.0] * 16 + [2.5] * 2)
    # G→P: sqrt(nx + ny + 6.25 nz), n_a = 1 when the voxel lies beyond P along axis a.
    expected_g = ([1.0] * 100 + [2.5] * 50 + [math.sqrt(2)] * 20 + [math.sqrt(7.25)] * 40
                  + [math.sqrt(8.25)] * 8)
    assert sorted(d_ref.tolist()) == pytest.approx(sorted(expected_g))
    s = lits_scores(pred, ref, spacing=(1, 1, 2.5))
    sum_p = 80 + 16 * 2 + 2 * 2.5
    sum_g = 100 + 50 * 2.5 + 20 * math.sqrt(2) + 40 * math.sqrt(7.25) + 8 * math.sqrt(8.25)
    assert s["assd"] == pytest.approx((sum_p + sum_g) / (98 + 218))
    assert s["rmsd"] == pytest.approx(math.sqrt((156.5 + 808.5) / 316))
    assert s["msd"] == pytest.approx(math.sqrt(8.25))
    assert s["dice"] == pytest.approx(250 / 468)
    assert s["jaccard"] == pytest.approx(125 / 343)
    assert s["rvd"] == pytest.approx((125 - 343) / 343)
    # Swapping the roles swaps the directed sets: same ASSD/MSD, RVD of the other sign.
    t = lits_scores(ref, pred, spacing=(1, 1, 2.5))
    assert t["assd"] == pytest.approx(s["assd"]) and t["msd"] == pytest.approx(s["msd"])
    assert t["rvd"] == pytest.approx((343 - 125) / 125)


def test_surface_uses_18_neighbourhood_and_array_border():
    # A voxel whose only background neighbour is a corner (diagonal) is not surface.
    mask = np.zeros((7, 7, 7), bool)
    mask[1:6, 1:6, 1:6] = True
    mask[1, 1, 1] = False
    surf = surface(mask)
    assert not surf[2, 2, 2]
    assert surf.sum() == 98 - 1
    # The array border counts as background.
    assert surface(np.ones((4, 4, 4), bool)).sum() == 64 - 8
    # 2-D: the in-plane section (full 3×3); a 4×4 square has 12 border pixels.
    square = np.zeros((6, 6), bool)
    square[1:5, 1:5] = True
    assert surface(square).sum() == 12


def test_identical_masks_score_perfect():
    mask = np.zeros((9, 9, 9), np.uint8)
    mask[2:7, 3:6, 1:8] = 1
    s = lits_scores(mask, mask * 5, spacing=(0.7, 0.7, 3.0))  # any nonzero is foreground
    assert s == {"dice": 1.0, "jaccard": 1.0, "voe": 0.0, "rvd": 0.0,
                 "assd": 0.0, "rmsd": 0.0, "msd": 0.0}


def test_empty_mask_conventions():
    some = np.zeros((5, 5, 5), bool)
    some[1:3, 1:3, 1:3] = True
    empty = np.zeros_like(some)
    far = {"dice": 0.0, "jaccard": 0.0, "voe": 1.0, "rvd": LITS_FAR,
           "assd": LITS_FAR, "rmsd": LITS_FAR, "msd": LITS_FAR}
    assert LITS_FAR == 9001.0
    assert lits_scores(empty, some) == far
    assert lits_scores(some, empty) == far  # empty reference: RVD 9001, not infinity
    assert lits_scores(empty, empty) == {"dice": 1.0, "jaccard": 1.0, "voe": 0.0, "rvd": 0.0,
                                         "assd": 0.0, "rmsd": 0.0, "msd": 0.0}


def test_two_dimensional_masks_with_spacing():
    ref = np.zeros((8, 8), bool)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5] = True     # 3×3 square: 8 surface pixels
    pred[2:5, 2:6] = True    # one column more along axis 1 (2 mm)
    s = lits_scores(pred, ref, spacing=(1.0, 2.0))
    assert s["dice"] == pytest.approx(18 / 21)
    assert s["rvd"] == pytest.approx(3 / 9)
    # S(G): the 8 pixels around the centre (3, 3). S(P): the 10 pixels but (3, 3), (3, 4).
    # S(P)→S(G): 7 pixels are on S(G); column 5's three are 2 mm (one step on axis 1) away.
    # S(G)→S(P): 7 pixels are on S(P); (3, 4) is 1 mm from (2, 4) and (4, 4).
    d_pred, d_ref = surface_distances(pred, ref, spacing=(1.0, 2.0))
    assert sorted(d_pred.tolist()) == pytest.approx([0.0] * 7 + [2.0] * 3)
    assert sorted(d_ref.tolist()) == pytest.approx([0.0] * 7 + [1.0])
    assert s["msd"] == pytest.approx(2.0)
    assert s["assd"] == pytest.approx(7.0 / 18)
    with pytest.raises(ValueError, match="one value per axis"):
        lits_scores(pred, ref, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="same shape"):
        lits_scores(pred, ref[:, :7])


def test_dice_per_case_and_global():
    a_p = np.zeros((4, 4), bool); a_p[0, :] = True            # 4 voxels
    a_g = np.zeros((4, 4), bool); a_g[0, 2:] = True; a_g[1, :2] = True  # 4 voxels, 2 shared
    b = np.zeros((5, 5), bool); b[:2, :] = True                # 10 voxels, identical
    assert dice_per_case([a_p, b], [a_g, b]) == pytest.approx((0.5 + 1.0) / 2)
    assert dice_global([a_p, b], [a_g, b]) == pytest.approx(2 * 12 / (8 + 20))
    empty = np.zeros((3, 3), bool)
    assert dice_global([empty], [empty]) == 1.0
    with pytest.raises(ValueError, match="one reference per prediction"):
        dice_global([a_p], [])


def test_per_class_and_lits_grouping():
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:5, 1:5, 1:5] = 1
    ref[2:4, 2:4, 2:4] = 2                      # tumour inside the liver
    pred = ref.copy()
    pred[pred == 2] = 1                         # tumour missed, called liver
    per_label = lits_scores_per_class(pred, ref)          # {1: liver, 2: tumour}, one label each
    assert per_label["liver"]["dice"] == pytest.approx(2 * 56 / (64 + 56))
    assert per_label["tumour"]["dice"] == 0.0 and per_label["tumour"]["assd"] == LITS_FAR
    lits = lits_liver_tumour(pred, ref)         # liver = label ≥ 1
    assert lits["liver"]["dice"] == 1.0 and lits["liver"]["msd"] == 0.0
    assert lits["tumour"]["dice"] == 0.0 and lits["tumour"]["rvd"] == LITS_FAR
    grouped = lits_scores_per_class(pred, ref, classes={(1, 2): "liver", 2: "tumour"})
    assert grouped == lits
    assert lits_scores_per_class(pred, ref, classes={"liver": (1, 2), "tumour": 2}) == lits


# ---------------------------------------------------------------- real anatomy (LiTS-117)
@pytest.fixture(scope="module")
def liver():
    from keras_liver.data.fixtures import load_lits117

    return load_lits117().label >= 1


def test_lits117_identity_erosion_and_dilation(liver):
    start = time.perf_counter()
    s = lits_scores(liver, liver, spacing=(0.8, 0.8, 2.5))
    assert s["dice"] == 1.0 and s["assd"] == 0.0 and s["msd"] == 0.0
    structure = ndimage.generate_binary_structure(3, 2)
    # Eroded copy E = L − S(L): Dice 2|E|/(|L|+|E|); every voxel of S(E) has an 18-neighbour
    # on S(L) (a face or edge neighbour) and none on itself: distance 1 or √2 exactly.
    eroded = ndimage.binary_erosion(liver, structure, border_value=0)
    n_l, n_e = int(liver.sum()), int(eroded.sum())
    assert n_e == n_l - int(surface(liver).sum())
    s = lits_scores(eroded, liver)
    assert s["dice"] == pytest.approx(2 * n_e / (n_l + n_e))
    d_e, _ = surface_distances(eroded, liver)
    assert np.all(np.isclose(d_e, 1.0) | np.isclose(d_e, math.sqrt(2)))
    # 1-voxel (6-neighbour) dilation D: a voxel of S(D) is either in L, then on S(L)
    # (distance 0), or outside L, face-adjacent to S(L) (distance 1).
    dilated = ndimage.binary_dilation(liver, ndimage.generate_binary_structure(3, 1))
    d_d, _ = surface_distances(dilated, liver)
    outside = surface(dilated) & ~liver
    assert np.count_nonzero(d_d == 1.0) == outside.sum()
    assert np.count_nonzero(d_d == 0.0) == d_d.size - outside.sum()
    assert time.perf_counter() - start < 20


def test_lits117_bounding_box_matches_whole_volume(liver):
    # Surface distances on the cropped box equal a brute-force whole-volume computation.
    moved = np.roll(liver, (3, -2, 1), axis=(0, 1, 2))
    spacing = (0.7, 0.9, 2.0)
    d_pred, d_ref = surface_distances(moved, liver, spacing)
    s_m, s_l = surface(moved), surface(liver)
    full_to_l = ndimage.distance_transform_edt(~s_l, sampling=spacing)[s_m]
    full_to_m = ndimage.distance_transform_edt(~s_m, sampling=spacing)[s_l]
    np.testing.assert_allclose(d_pred, full_to_l)
    np.testing.assert_allclose(d_ref, full_to_m)
    s = lits_scores(moved, liver, spacing)
    assert s["msd"] == pytest.approx(max(full_to_l.max(), full_to_m.max()))
    assert 0 < s["assd"] < s["rmsd"] < s["msd"]


# ---------------------------------------------------------------- classification
def test_confusion_counts_and_scores_by_hand():
    pred = np.array([1, 1, 0, 0, 1])
    ref = np.array([1, 0, 1, 0, 0])
    c = confusion_counts(pred, ref)
    assert c == ConfusionCounts(tp=1, fp=2, fn=1, tn=1)
    assert classification_scores(pred, ref) == pytest.approx(
        {"accuracy": 2 / 5, "precision": 1 / 3, "recall": 1 / 2, "specificity": 1 / 3})
    assert c + c == ConfusionCounts(2, 4, 2, 2)


def test_zero_division_conventions():
    empty, some = np.zeros(4, bool), np.array([1, 1, 0, 0], bool)
    missed = confusion_counts(empty, some)        # nothing predicted, reference non-empty
    assert precision(missed) == 0.0 and recall(missed) == 0.0
    both = confusion_counts(empty, empty)         # nothing anywhere: agreement
    assert precision(both) == 1.0 and recall(both) == 1.0 and specificity(both) == 1.0
    spurious = confusion_counts(some, empty)      # empty reference, something predicted
    assert recall(spurious) == 0.0 and precision(spurious) == 0.0
    full = np.ones(4, bool)
    assert specificity(confusion_counts(full, full)) == 1.0   # no background anywhere
    assert specificity(confusion_counts(some, full)) == 0.0   # background predicted only
    assert accuracy(ConfusionCounts(0, 0, 0, 0)) == 1.0
    assert math.isnan(precision(missed, zero_division=float("nan")))
    assert recall(both, zero_division=0.0) == 0.0
    with pytest.raises(ValueError, match="zero_division"):
        precision(both, zero_division="skip")


def test_per_class_counts_on_label_maps():
    ref = np.array([0, 1, 1, 2, 2, 0])
    pred = np.array([0, 1, 2, 2, 1, 1])
    counts = confusion_counts_per_class(pred, ref, {1: "liver", 2: "tumour"})
    assert counts["liver"] == ConfusionCounts(tp=1, fp=2, fn=1, tn=2)
    assert counts["tumour"] == ConfusionCounts(tp=1, fp=1, fn=1, tn=3)
    grouped = confusion_counts_per_class(pred, ref, {(1, 2): "liver"})
    assert grouped["liver"] == ConfusionCounts(tp=4, fp=1, fn=0, tn=1)
    scores = classification_scores_per_class(pred, ref, {"tumour": 2})
    assert scores["tumour"] == pytest.approx(
        {"accuracy": 4 / 6, "precision": 1 / 2, "recall": 1 / 2, "specificity": 3 / 4})


# ---------------------------------------------------------------- report
def _two_cases():
    return results_frame({
        "case-1": {"liver": {"dice": 0.8, "assd": 2.0, "tp": 4, "fp": 1, "fn": 1, "tn": 10}},
        "case-2": {"liver": {"dice": 0.4, "assd": 4.0, "tp": 1, "fp": 2, "fn": 1, "tn": 20}},
    })


def test_results_frame_and_summary():
    frame = _two_cases()
    assert list(frame.columns) == ["liver_dice", "liver_assd", "liver_tp", "liver_fp",
                                   "liver_fn", "liver_tn"]
    assert frame.index.name == "case"
    summary = summarize(frame)
    assert summary.loc["mean", "liver_dice"] == pytest.approx(0.6)
    assert summary.loc["std", "liver_dice"] == pytest.approx(0.2)       # population std
    assert summarize(frame, ddof=1).loc["std", "liver_dice"] == pytest.approx(0.2 * math.sqrt(2))
    assert summary.loc["mean", "liver_assd"] == pytest.approx(3.0)
    # global Dice from the summed counts: 2·5 / (2·5 + 3 + 2)
    assert summary.loc["global", "liver_dice"] == pytest.approx(10 / 15)
    assert summary.loc["global", "liver_tp"] == 5
    assert math.isnan(summary.loc["global", "liver_assd"])
    assert math.isnan(summary.loc["mean", "liver_tp"])
    full = with_summary(frame)
    assert list(full.index) == ["case-1", "case-2", "mean", "std", "global"]


def test_write_results_and_compare_with_paper(tmp_path):
    frame = _two_cases()
    paths = write_results(frame, str(tmp_path / "out"))
    back = pd.read_csv(paths["csv"], index_col="case")
    assert list(back.index) == ["case-1", "case-2", "mean", "std", "global"]
    assert back.loc["global", "liver_dice"] == pytest.approx(10 / 15)
    md = open(paths["markdown"]).read()
    assert "| case-2" in md and "liver_dice" in md and "0.6000" in md
    table = compare_with_paper(summarize(frame), {"liver_dice": 0.65, "liver_assd": 1.5})
    assert list(table.columns) == ["metric", "ours", "paper", "difference"]
    assert table["difference"].tolist() == pytest.approx([-0.05, 1.5])
    glob = compare_with_paper(summarize(frame), {"liver_dice": 0.6}, row="global")
    assert glob.loc[0, "ours"] == pytest.approx(10 / 15)
    assert compare_with_paper({"dice": 0.9}, {"dice": 0.95}).loc[0, "difference"] == \
        pytest.approx(-0.05)
    with pytest.raises(ValueError, match="tumour_dice"):
        compare_with_paper(summarize(frame), {"tumour_dice": 0.6})
    assert to_markdown(table).splitlines()[0].split("|")[1].strip() == "metric"  # no 0..n index


def test_rows_with_a_case_column(tmp_path):
    # pd.DataFrame(rows) with a "case" column, as the experiments build it from binary_scores
    pred_1, ref_1 = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])   # TP 1, FP 1, TN 2
    pred_2, ref_2 = np.array([0, 0, 0, 1]), np.array([0, 1, 0, 1])   # TP 1, FN 1, TN 2
    rows = [{"case": "c1", "dice": 2 / 3, **binary_scores(pred_1, ref_1)},
            {"case": "c2", "dice": 2 / 3, **binary_scores(pred_2, ref_2)}]
    assert rows[0]["precision"] == 0.5 and rows[0]["tp"] == 1 and rows[0]["tn"] == 2
    frame = pd.DataFrame(rows)
    summary = summarize(frame)
    assert summary.loc["global", "dice"] == pytest.approx(4 / 6)     # 2·2 / (2·2 + 1 + 1)
    assert summary.loc["global", "precision"] == pytest.approx(2 / 3)
    assert summary.loc["mean", "recall"] == pytest.approx(0.75)
    paths = write_results(frame, str(tmp_path), name="scores")
    assert paths["csv"].endswith("scores.csv")
    back = pd.read_csv(paths["csv"], index_col="case")
    assert list(back.index) == ["c1", "c2", "mean", "std", "global"]


# ---------------------------------------------------------------- Keras training metrics
# Two binary batches of one 2×2 sample. Batch 1: prediction > 0.5 = [1, 0, 1, 0] vs target
# [1, 1, 0, 0]: |P∩G| = 1, |P|+|G| = 4 (Dice 0.5). Batch 2: [1, 0, 0, 0] (0.5 is not > 0.5) vs
# [1, 0, 0, 0]: 1 and 2 (Dice 1). Global Dice 2·2/6 = 2/3, not the batch mean 0.75.
BIN_TRUE = [np.array([1, 1, 0, 0], np.float32).reshape(1, 2, 2, 1),
            np.array([1, 0, 0, 0], np.float32).reshape(1, 2, 2, 1)]
BIN_PRED = [np.array([0.9, 0.4, 0.6, 0.1], np.float32).reshape(1, 2, 2, 1),
            np.array([0.8, 0.5, 0.3, 0.1], np.float32).reshape(1, 2, 2, 1)]


def test_keras_dice_streams_over_batches():
    import keras

    from keras_liver.metrics import DiceCoefficient, JaccardIndex

    dice, jac = DiceCoefficient(), JaccardIndex()
    for y, p in zip(BIN_TRUE, BIN_PRED):
        dice.update_state(y, p)
        jac.update_state(y, p)
    assert float(dice.result()) == pytest.approx(2 / 3)
    assert float(jac.result()) == pytest.approx(2 / (6 - 2))
    dice.reset_state()
    assert float(dice.result()) == 1.0                     # nothing seen: both empty
    # per-sample weights: the second sample does not count
    y, p = np.concatenate(BIN_TRUE), np.concatenate(BIN_PRED)
    dice.update_state(y, p, sample_weight=np.array([1.0, 0.0]))
    assert float(dice.result()) == pytest.approx(0.5)
    # serialization
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        DiceCoefficient(num_classes=3, class_ids=[2], name="dice_tumour")))
    assert clone.get_config()["class_ids"] == [2] and clone.name == "dice_tumour"
    assert clone.num_classes == 3


def test_keras_dice_multiclass_by_hand():
    from keras_liver.metrics import DiceCoefficient, JaccardIndex

    def one_hot(labels):
        return np.eye(3, dtype=np.float32)[np.array(labels).reshape(1, 2, 2)]

    # batch 1: target [0,1,2,2], prediction [0,1,1,2]; batch 2: target [1,1,0,0], pred [1,0,0,2]
    batches = [(one_hot([0, 1, 2, 2]), one_hot([0, 1, 1, 2]) * 0.8 + 0.05),
               (np.array([1, 1, 0, 0]).reshape(1, 2, 2, 1), one_hot([1, 0, 0, 2]) * 0.8 + 0.05)]
    metrics = [DiceCoefficient(num_classes=3), DiceCoefficient(num_classes=3, class_ids=[2]),
               JaccardIndex(num_classes=3)]
    for y, p in batches:
        for m in metrics:
            m.update_state(y, p)
    # class 1: |P∩G| = 1 + 1, |P|+|G| = 3 + 3 → 2/3; class 2: 1 + 0, 3 + 1 → 1/2
    assert float(metrics[0].result()) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert float(metrics[1].result()) == pytest.approx(1 / 2)
    assert float(metrics[2].result()) == pytest.approx((2 / 4 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="class_ids"):
        DiceCoefficient(num_classes=3, class_ids=[3])


def test_training_metrics_in_model_evaluate():
    import keras

    from keras_liver.metrics import training_metrics

    inputs = keras.Input((2, 2, 1))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))   # y_pred = x
    model.compile(loss="mse", metrics=training_metrics("binary"))
    logs = model.evaluate(np.concatenate(BIN_PRED), np.concatenate(BIN_TRUE), batch_size=1,
                          verbose=0, return_dict=True)
    assert logs["dice"] == pytest.approx(2 / 3)
    assert logs["jaccard"] == pytest.approx(0.5)
    assert logs["precision"] == pytest.approx(2 / 3)      # Keras' own: TP 2, FP 1
    assert logs["recall"] == pytest.approx(2 / 3)         # TP 2, FN 1
    names = [m.name for m in training_metrics("multiclass", 3, class_names={2: "tumour"})]
    assert names == ["dice", "jaccard", "accuracy", "dice_tumour"]
    with pytest.raises(ValueError, match="num_classes"):
        training_metrics("multiclass")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_multiclass_training_metrics_share_one_count_and_equal_separate_metrics(jit_compile):
    import keras

    from keras_liver.metrics import DiceCoefficient, JaccardIndex, training_metrics

    rng = np.random.default_rng(0)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (4, 5, 5))]
    p = rng.random((4, 5, 5, 3)).astype(np.float32)
    inputs = keras.Input((5, 5, 3))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))   # y_pred = x
    shared = training_metrics("multiclass", 3, class_names={1: "a", 2: "b"})
    # one pass over the batch: only the first metric keeps counts
    assert [len(m.variables) for m in shared] == [2, 0, 0, 0, 0]
    model.compile(loss="mse", metrics=shared, jit_compile=jit_compile)
    # two epochs' worth: the counts are reset between evaluations, once
    model.evaluate(p[:2], y[:2], batch_size=1, verbose=0)
    got = model.evaluate(p, y, batch_size=1, verbose=0, return_dict=True)
    separate = [DiceCoefficient(num_classes=3, name="dice"),
                JaccardIndex(num_classes=3, name="jaccard"),
                keras.metrics.CategoricalAccuracy(name="accuracy"),
                DiceCoefficient(num_classes=3, class_ids=[1], name="dice_a"),
                DiceCoefficient(num_classes=3, class_ids=[2], name="dice_b")]
    model.compile(loss="mse", metrics=separate)
    want = model.evaluate(p, y, batch_size=1, verbose=0, return_dict=True)
    unshared = training_metrics("multiclass", 3, class_names={1: "a", 2: "b"},
                                share_counts=False)
    assert [len(m.variables) for m in unshared] == [2, 2, 2, 2, 2]
    model.compile(loss="mse", metrics=unshared)
    assert model.evaluate(p, y, batch_size=1, verbose=0, return_dict=True) == pytest.approx(want)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name
    assert 0.0 < want["dice_a"] < 1.0 and want["dice_a"] != want["dice_b"]

    # a deserialised view counts for itself, with the same result
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(shared[4]))
    assert len(clone.variables) == 2
    clone.update_state(y, p)
    assert float(clone.result()) == pytest.approx(want["dice_b"], rel=1e-6)
    accuracy = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(shared[2]))
    accuracy.update_state(y, p)
    assert float(accuracy.result()) == pytest.approx(want["accuracy"], rel=1e-6)
    with pytest.raises(ValueError, match="counts_of"):
        DiceCoefficient(num_classes=4, counts_of=shared[0])
