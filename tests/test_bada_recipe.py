"""BADA's recipe as data (experiments/bada.json) and its segment scores (Tables 1-4)."""
import numpy as np
import pandas as pd
import pytest

from keras_liver import training
from keras_liver.data import preprocessing
from keras_liver.experiments import common
from keras_liver.metrics import report, segments
from keras_liver.metrics.classification import confusion_counts_per_class
from keras_liver.metrics.lits import dice as lits_dice

SEGMENTS = ("I", "II", "III", "IVa", "IVb", "V", "VI", "VII", "VIII")
CLASS_NAMES = {str(i): name for i, name in enumerate(SEGMENTS, start=1)}


@pytest.fixture(scope="module")
def experiment():
    return common.load_experiment("bada")


# --------------------------------------------------------------------------- the recipe

def test_top_level_keys(experiment):
    assert list(experiment) == ["paper", "task", "presets", "variants", "tables"]
    assert list(experiment["presets"]) == ["paper", "demo", "tiny"]
    assert experiment["paper"]["file"] == "shared/papers/bada_liver_segments.txt"


def test_paper_preset_is_the_published_recipe(experiment):
    paper = common.resolve_config(experiment, "paper")
    assert paper["model"] == {"name": "bada", "input_shape": [512, 512, 1], "base_filters": 32,
                              "num_classes": 10}
    data = paper["data"]
    assert data["kind"] == "slices" and data["target"] == "classes"
    assert data["num_classes"] == 10 and data["image_size"] == [512, 512]
    assert data["window"] is None and data["normalize"] == "minmax"
    assert data["clahe"] is None and data["augment"] is None
    assert data["batch_size"] == 64
    t = paper["training"]
    assert t["loss"]["name"] == "dice_ce"
    assert t["loss"]["lambda_dice"] == 1.0 and t["loss"]["lambda_ce"] == 1.0
    assert t["optimizer"]["name"] == "adam"
    assert t["optimizer"]["learning_rate"] == 1e-3 and t["optimizer"]["l2"] == 4e-5
    assert t["epochs"] == 150
    assert t["monitor"] == "val_dice" and training.resolve_monitor(t) == ("val_dice", "max")
    assert t["callbacks"] == {"reduce_lr": {"monitor": "val_dice", "factor": 0.1,
                                            "patience": 10, "min_lr": 1e-5}}
    assert t["class_names"] == CLASS_NAMES
    assert paper["split"] == [0.75, 0.10, 0.15]
    assert "phantom" not in paper
    # the callbacks the runner makes of it
    (reduce_lr,) = training._paper_callbacks(t["callbacks"], t["monitor"])
    assert (reduce_lr.monitor, reduce_lr.mode, reduce_lr.factor, reduce_lr.patience,
            reduce_lr.min_lr) == ("val_dice", "max", pytest.approx(0.1), 10, 1e-5)


def test_phantom_presets(experiment):
    demo, tiny = experiment["presets"]["demo"], experiment["presets"]["tiny"]
    common_block = {"seed": 0, "layout": "msd", "task": "couinaud", "modality": "mri",
                    "folder": "phantom/couinaud"}
    assert demo["phantom"] == {"cases": 400, **common_block, "shape": [128, 128, 24]}
    assert tiny["phantom"] == {"cases": 5, **common_block, "shape": [96, 96, 20]}
    # the description carries the measured demo figures (time and mean segment Dice)
    assert "Measured 20" in demo["description"] and "mean segment Dice" in demo["description"]
    assert demo["model"]["input_shape"] == [96, 96, 1] and demo["data"]["image_size"] == [96, 96]
    assert demo["data"]["batch_size"] == 4 and demo["training"]["epochs"] == 5
    assert demo["training"]["jit_compile"] is True   # see the description: XLA and batch 4
    assert tiny["model"]["input_shape"] == [32, 32, 1] and tiny["model"]["base_filters"] == 2
    assert tiny["data"]["image_size"] == [32, 32] and tiny["training"]["epochs"] == 1
    for preset in (demo, tiny):
        # the paper's loss, optimizer, preprocessing and classes
        paper = experiment["presets"]["paper"]
        assert preset["training"]["loss"] == paper["training"]["loss"]
        assert preset["training"]["optimizer"] == paper["training"]["optimizer"]
        assert preset["training"]["class_names"] == CLASS_NAMES
        for key in ("kind", "target", "num_classes", "window", "normalize", "augment"):
            assert preset["data"][key] == paper["data"][key], key


def test_every_variant_is_a_registered_model(experiment):
    from keras_liver.models import MODELS, bada

    variants = experiment["variants"]
    assert set(variants) == set(bada.VARIANTS)
    assert all(name in MODELS for name in variants)
    for table in experiment["tables"].values():
        for row, key in table["variants"].items():
            assert key is None or key in variants, (row, key)
            assert (key is None) == (row in bada.NOT_BUILT), row
    # the tables' rows and TABLE_ROWS name the same networks
    tables = experiment["tables"]
    assert {r: k for r, k in tables["table1"]["variants"].items()} == bada.TABLE_ROWS["Table 1"]
    assert tables["table2"]["variants"] == bada.TABLE_ROWS["Table 2"]
    for name in ("table3", "table4"):
        built = {r: k for r, k in tables[name]["variants"].items() if k is not None}
        assert built == bada.TABLE_ROWS["Tables 3-4"]


@pytest.mark.parametrize("preset", ["paper", "demo", "tiny"])
def test_preset_model_builds_at_a_reduced_size(experiment, preset):
    from keras_liver.models import get_model

    cfg = dict(experiment["presets"][preset]["model"])
    name = cfg.pop("name")
    cfg.update(input_shape=(32, 32, 1), base_filters=2)
    model = get_model(name, **cfg)
    assert model.output_shape == (None, 32, 32, 10)


def test_every_variant_builds_at_a_reduced_size(experiment):
    from keras_liver.models import get_model

    for variant in experiment["variants"]:
        cfg = common.resolve_config(experiment, "tiny", variant=variant)["model"]
        name = cfg.pop("name")
        cfg["input_shape"] = tuple(cfg["input_shape"])
        assert get_model(name, **cfg).output_shape == (None, 32, 32, 10), variant


@pytest.mark.parametrize("preset", ["paper", "demo", "tiny"])
def test_preset_data_loss_and_optimizer_resolve(experiment, preset):
    from keras_liver.losses import DiceCELoss
    from keras_liver.optimizers import CoupledWeightDecayAdam

    config = experiment["presets"][preset]
    data = preprocessing.resolve_config(config["data"])
    assert data["target"] == "classes" and data["num_classes"] == 10
    assert data["num_classes"] == config["model"]["num_classes"]
    assert data["image_size"] == config["model"]["input_shape"][:2]
    loss = training.build_loss(config["training"]["loss"])
    assert isinstance(loss, DiceCELoss)
    assert (loss.lambda_dice, loss.lambda_ce, loss.smooth, loss.dice_over,
            loss.include_background) == (1.0, 1.0, 1.0, "batch", True)
    opt = training.build_optimizer(config["training"]["optimizer"])
    assert type(opt) is CoupledWeightDecayAdam and opt.l2 == 4e-5 and opt.epsilon == 1e-8
    assert opt.weight_decay is None
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(1e-3)
    names = [m.name for m in training.build_metrics(data, config["training"]["class_names"])]
    assert names[:3] == ["dice", "jaccard", "accuracy"]
    assert names[3:] == [f"dice_{s}" for s in SEGMENTS]


def test_table_shapes(experiment):
    tables = experiment["tables"]
    assert list(tables) == ["table1", "table2", "table3", "table4"]
    for key, table in tables.items():
        assert table["caption"].startswith(f"Table {key[-1]}.")
        n = len(table["columns"])
        assert len(table["metrics"]) == n, key
        assert set(table["variants"]) == set(table["rows"]), key
        for row, values in table["rows"].items():
            assert len(values) == n, (key, row)
            for column, value in zip(table["columns"], values):
                if column == "Backbone":
                    assert value in ("U-Net", "ResNet")
                else:
                    assert isinstance(value, float) and 0 < value < 100, (key, row, column)
    assert len(tables["table1"]["rows"]) == 5 and len(tables["table2"]["rows"]) == 4
    assert list(tables["table3"]["rows"]) == list(tables["table4"]["rows"])
    assert len(tables["table3"]["rows"]) == 9 and len(tables["table3"]["columns"]) == 10
    assert tables["table3"]["metrics"] == [f"{s}_dice" for s in SEGMENTS] + ["mean_dice"]


def test_tables_agree_where_the_paper_repeats_itself(experiment):
    t = experiment["tables"]
    ours = (89.01, 87.71, 90.67)  # abstract, §4.4.1, §4.4.2, §4.5
    assert tuple(t["table1"]["rows"]["Our method (with dual attention)"]) == ours
    assert tuple(t["table2"]["rows"]["Proposed(with 4 Upsample)"]) == ours
    assert t["table3"]["rows"]["Our method"][-1] == ours[0]
    assert tuple(t["table4"]["rows"]["Our method"][1:]) == ours[1:]
    # Table 3's Mean is the mean of the nine segments on every row but "Our method" (noted)
    for row, values in t["table3"]["rows"].items():
        mean9 = float(np.mean(values[:9]))
        if row == "Our method":
            assert round(mean9, 2) == 88.35
        else:
            assert abs(mean9 - values[9]) < 0.011, row


# --------------------------------------------------------------------------- segment scores

REF = np.array([[1, 1, 2, 2],
                [3, 3, 0, 0],
                [0, 0, 0, 9]])
PRED = np.array([[1, 2, 2, 2],
                 [3, 0, 0, 4],
                 [0, 0, 0, 9]])


def test_segment_names_match_the_model_and_the_phantom():
    from keras_liver.data.phantom import COUINAUD_NAMES
    from keras_liver.models.bada import CLASS_NAMES as MODEL_CLASSES

    assert segments.SEGMENT_NAMES == SEGMENTS == tuple(MODEL_CLASSES[1:])
    assert segments.SEGMENT_CLASSES == COUINAUD_NAMES


def test_hand_worked_case():
    row = segments.segment_scores(PRED, REF)
    # I: ref 2 voxels, pred 1 inside it
    assert (row["I_tp"], row["I_fp"], row["I_fn"], row["I_tn"]) == (1, 0, 1, 10)
    assert row["I_dice"] == pytest.approx(2 / 3)
    assert row["I_recall"] == 0.5 and row["I_precision"] == 1.0
    # II: ref 2, pred 3 (one taken from I)
    assert (row["II_tp"], row["II_fp"], row["II_fn"], row["II_tn"]) == (2, 1, 0, 9)
    assert row["II_dice"] == pytest.approx(0.8)
    assert row["II_recall"] == 1.0 and row["II_precision"] == pytest.approx(2 / 3)
    # III: like I
    assert row["III_dice"] == pytest.approx(2 / 3) and row["III_recall"] == 0.5
    # IVa: only predicted → Dice 0, PPV 0, sensitivity 0 (no reference, but a false positive)
    assert (row["IVa_tp"], row["IVa_fp"], row["IVa_fn"]) == (0, 1, 0)
    assert (row["IVa_dice"], row["IVa_recall"], row["IVa_precision"]) == (0.0, 0.0, 0.0)
    # IVb..VII: absent from both → 1, 1, 1; all voxels true negatives
    for s in ("IVb", "V", "VI", "VII"):
        assert (row[f"{s}_dice"], row[f"{s}_recall"], row[f"{s}_precision"]) == (1.0, 1.0, 1.0)
        assert row[f"{s}_tn"] == 12
    # VIII: one voxel, found
    assert (row["VIII_dice"], row["VIII_recall"], row["VIII_precision"]) == (1.0, 1.0, 1.0)
    # means over the 9 segments, absent ones included
    assert row["mean_dice"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0 + 5) / 9)
    assert row["mean_sensitivity"] == pytest.approx(7 / 9)
    assert row["mean_ppv"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 5) / 9)
    # column convention of keras_liver.metrics.report
    assert list(row)[:7] == ["I_dice", "I_recall", "I_precision", "I_tp", "I_fp", "I_fn", "I_tn"]
    assert list(row)[-3:] == ["mean_dice", "mean_sensitivity", "mean_ppv"]
    assert len(row) == 9 * 7 + 3


def test_absent_segments_left_out_of_the_means():
    row = segments.segment_scores(PRED, REF, both_absent="nan")
    for s in ("IVb", "V", "VI", "VII"):
        assert np.isnan(row[f"{s}_dice"]) and np.isnan(row[f"{s}_recall"])
        assert row[f"{s}_tn"] == 12  # counts are kept
    # over I, II, III, IVa, VIII
    assert row["mean_dice"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0 + 1) / 5)
    assert row["mean_sensitivity"] == pytest.approx((0.5 + 1 + 0.5 + 0 + 1) / 5)
    assert row["mean_ppv"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 1) / 5)
    empty = segments.segment_scores(np.zeros((2, 2), int), np.zeros((2, 2), int),
                                    both_absent="nan")
    assert all(np.isnan(empty[k]) for k in segments.MEAN_KEYS)
    assert segments.segment_scores(np.zeros((2, 2), int), np.zeros((2, 2), int))["mean_dice"] == 1.0
    with pytest.raises(ValueError, match="both_absent"):
        segments.segment_scores(PRED, REF, both_absent="skip")


def test_pooled_global_row():
    second = np.full((2, 2), 4)  # IVa everywhere, found
    frame = report.results_frame({"a": segments.segment_scores(PRED, REF),
                                  "b": segments.segment_scores(second, second)})
    table = segments.with_segment_summary(frame)
    assert list(table.index) == ["a", "b", "mean", "std", "global"]
    g = table.loc["global"]
    # IVa pooled: TP 4, FP 1, FN 0 (case a's false positive)
    assert (g["IVa_tp"], g["IVa_fp"], g["IVa_fn"], g["IVa_tn"]) == (4, 1, 0, 11)
    assert g["IVa_dice"] == pytest.approx(8 / 9)
    assert g["IVa_recall"] == 1.0 and g["IVa_precision"] == pytest.approx(4 / 5)
    assert g["I_dice"] == pytest.approx(2 / 3) and g["I_tn"] == 14
    assert g["mean_dice"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 8 / 9 + 5) / 9)
    assert g["mean_sensitivity"] == pytest.approx((0.5 + 1 + 0.5 + 1 + 5) / 9)
    assert g["mean_ppv"] == pytest.approx((1 + 2 / 3 + 1 + 4 / 5 + 5) / 9)
    # case b: everything agrees → 1; the mean row averages the cases
    assert table.loc["b", "mean_dice"] == 1.0
    mean_a = (2 / 3 + 0.8 + 2 / 3 + 0 + 5) / 9
    assert table.loc["mean", "mean_dice"] == pytest.approx((mean_a + 1) / 2)
    assert table.loc["std", "mean_dice"] == pytest.approx(abs(1 - mean_a) / 2)
    # with absent segments scored 1, the mean of a case's mean = mean of the segment means
    seg_means = [table.loc["mean", f"{s}_dice"] for s in SEGMENTS]
    assert table.loc["mean", "mean_dice"] == pytest.approx(np.mean(seg_means))
    assert np.isnan(table.loc["mean", "I_tp"])  # counts are not averaged
    # with_segment_summary also takes a plain frame with a "case" column
    again = segments.with_segment_summary(frame.reset_index())
    pd.testing.assert_frame_equal(again, table, check_names=False)


def test_class_declarations():
    from keras_liver.models.bada import CLASS_NAMES as MODEL_CLASSES

    default = segments.segment_scores(PRED, REF)
    assert segments.segment_scores(PRED, REF, MODEL_CLASSES) == default
    assert segments.segment_scores(PRED, REF, CLASS_NAMES) == default  # JSON keys
    assert segments.segment_scores(PRED, REF, {n: i for i, n in enumerate(SEGMENTS, 1)}) == default
    two = segments.segment_scores(PRED, REF, {1: "I", 9: "VIII"})
    assert two["mean_dice"] == pytest.approx((2 / 3 + 1) / 2) and "II_dice" not in two
    grouped = segments.segment_scores(PRED, REF, {(4, 5): "IV", 2: "II"})
    assert (grouped["IV_tp"], grouped["IV_fp"], grouped["IV_fn"]) == (0, 1, 0)
    with pytest.raises(ValueError):
        segments.segment_classes({0: "background"})
    with pytest.raises(ValueError):
        segments.segment_classes(["background"])


def test_counts_agree_with_the_class_by_class_scores():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 10, size=(6, 7, 5))
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 10, size=ref.shape))
    counts = segments.segment_counts(pred, ref)
    assert counts == confusion_counts_per_class(pred, ref, segments.SEGMENT_CLASSES)
    row = segments.segment_scores(pred.astype(np.uint8), ref.astype(np.float32))
    for label, name in segments.SEGMENT_CLASSES.items():
        assert row[f"{name}_dice"] == pytest.approx(lits_dice(pred == label, ref == label))
    m = segments.confusion_matrix(pred, ref)
    assert m.shape == (10, 10) and m.sum() == ref.size
    assert np.trace(m) == np.count_nonzero(pred == ref)


def test_invalid_label_maps():
    with pytest.raises(ValueError, match="shapes differ"):
        segments.segment_scores(PRED[:2], REF)
    with pytest.raises(ValueError, match="negative"):
        segments.segment_scores(-PRED, REF)
    with pytest.raises(ValueError, match="integer label map"):
        segments.segment_scores(PRED + 0.5, REF)
    with pytest.raises(ValueError, match="num_classes"):
        segments.confusion_matrix(PRED, REF, num_classes=5)
    # a label outside 0..9 is only a false positive of nothing declared
    row = segments.segment_scores(np.where(PRED == 4, 12, PRED), REF)
    assert row["IVa_fp"] == 0 and row["IVa_dice"] == 1.0
