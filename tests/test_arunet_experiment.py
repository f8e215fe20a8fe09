"""Attention Residual UNet, everything but the trained run: the recipe as data, the MSD
selection and split, per-class scoring, and the two linked models on hand-made predictors."""
import json
import os

import numpy as np
import pytest

from keras_liver.data import schema, splits
from keras_liver.data.convert import convert
from keras_liver.data.phantom import write_dataset
from keras_liver.errors import DataError
from keras_liver.experiments import arunet, common
from keras_liver.linked import LinkedLiverVessel, read_linked, write_linked


@pytest.fixture(scope="module")
def experiment():
    return common.load_experiment("arunet")


# --------------------------------------------------------------------------- recipe as data

def test_paper_preset_is_the_published_recipe(experiment):
    config = arunet.resolve_config(experiment, "paper")
    for name, base, max_slices in (("liver", 8, 300), ("vessel", 16, 80)):
        m = config["models"][name]
        assert m["model"] == {"name": "attention_res_unet", "input_shape": [512, 512, 1],
                              "base_filters": base, "num_classes": 3}
        data = m["data"]
        assert (data["target"], data["num_classes"], data["image_size"]) == ("classes", 3, [512, 512])
        assert data["window"] is None and data["clahe"] is None and data["normalize"] == "minmax"
        assert data["batch_size"] == 32 and data["augment"] is None
        t = m["training"]
        assert t["optimizer"] == {"name": "adam", "learning_rate": 1e-4}
        assert t["monitor"] == "val_loss"          # best-validation-loss checkpoint
        assert t["callbacks"]["reduce_lr"] == {"monitor": "val_loss", "factor": 0.5, "patience": 3}
        assert t["callbacks"]["early_stopping"] == {"monitor": "val_loss", "patience": 5}
        assert t["loss"]["name"] == "dice_ce"      # the paper's loss by default
        assert m["dataset"]["max_slices"] == max_slices
        assert m["dataset"]["split"] == {"val": 0.2, "test": 0.0, "seed": 42}
        assert m["dataset"]["evaluate"] == "val"   # the paper reports its validation cases
    assert config["models"]["liver"]["classes"] == {"1": "liver", "2": "tumour"}
    assert config["models"]["vessel"]["classes"] == {"1": "vessel", "2": "tumour"}
    assert experiment["tables"]["results"]["rows"] == {"liver": {"liver": 0.88, "tumour": 0.73},
                                                       "vessel": {"vessel": 0.73, "tumour": 0.66}}


def test_loss_flag_and_overrides_reach_both_models(experiment):
    config = arunet.resolve_config(experiment, "demo", loss="generalized_dice", epochs=2,
                                   batch_size=3, learning_rate=0.01, jobs=1, seed=5)
    assert config["loss"] == "generalized_dice" and config["jobs"] == 1
    for name in arunet.MODELS:
        cfg = arunet.model_config(config, name)
        assert cfg["training"]["loss"] == {"name": "generalized_dice", "epsilon": 1e-5,
                                           "dice_over": "sample"}
        assert cfg["training"]["epochs"] == 2 and cfg["data"]["batch_size"] == 3
        assert cfg["training"]["optimizer"]["learning_rate"] == 0.01 and cfg["seed"] == 5
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        arunet.resolve_config(experiment, "demo", loss="focal")
    with pytest.raises(ValueError, match="unknown preset"):
        arunet.resolve_config(experiment, "huge")


def test_every_loss_spec_builds(experiment):
    from keras_liver.training import build_loss

    for spec in experiment["losses"].values():
        assert build_loss(spec).name


# --------------------------------------------------------------------------- selection, split

def test_holdout_split_reproduces_the_papers_case_counts():
    # scikit-learn holds out ceil(n * 0.2): 54 liver volumes -> 43/11, 216 vessel -> 172/44 (§IV)
    for n, (train, val) in ((54, (43, 11)), (216, (172, 44))):
        ids = [f"case_{i}" for i in range(n)]
        split = splits.holdout_split(ids, val=0.2, seed=42)
        assert (len(split["train"]), len(split["val"]), split["test"]) == (train, val, [])
        assert sorted(split["train"] + split["val"]) == sorted(ids)
        assert split["val"] == sorted(split["val"], key=ids.index)   # listed in input order
        assert split == splits.holdout_split(ids, val=0.2, seed=42)
        assert split != splits.holdout_split(ids, val=0.2, seed=0)
    three = splits.holdout_split([f"c{i}" for i in range(20)], val=0.2, test=0.2, seed=42)
    assert [len(three[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    with pytest.raises(ValueError, match="cannot give train, val"):
        splits.holdout_split(["a"], val=0.2)
    with pytest.raises(ValueError, match="unique"):
        splits.holdout_split(["a", "a", "b"], val=0.2)


def _manifest(tmp_path, depths):
    cases = [{"id": f"c{i}", "shape": [8, 8, d], "slices": f"slices/c{i}.tfrecord.gz"}
             for i, d in enumerate(depths)]
    return {"root": str(tmp_path / "src"), "cases": cases, "counts": {"total": {}},
            "split": {"train": [c["id"] for c in cases], "val": [], "test": []}}


def test_select_cases_keeps_volumes_under_the_slice_limit(tmp_path):
    manifest = _manifest(tmp_path, [79, 80, 81, 12])
    assert splits.select_cases(manifest, max_slices=80) == ["c0", "c3"]   # strictly fewer
    assert splits.select_cases(manifest) == ["c0", "c1", "c2", "c3"]


def test_split_manifest_keeps_only_its_cases_with_absolute_shards(tmp_path):
    manifest = _manifest(tmp_path, [10, 10, 10, 10])
    out = splits.write_split_manifest(manifest, str(tmp_path / "sel"),
                                      {"train": ["c0", "c2"], "val": ["c3"], "test": []},
                                      key="selection", provenance={"max_slices": 80})
    written = json.load(open(os.path.join(out, schema.MANIFEST)))
    assert [c["id"] for c in written["cases"]] == ["c0", "c2", "c3"]
    assert written["cases"][0]["slices"] == str(tmp_path / "src" / "slices" / "c0.tfrecord.gz")
    assert written["selection"] == {"max_slices": 80, "source": str(tmp_path / "src")}
    assert "counts" not in written and "root" not in written
    with pytest.raises(ValueError, match="does not have"):
        splits.write_split_manifest(manifest, str(tmp_path / "bad"), {"train": ["zz"]},
                                    key="selection", provenance={})


def test_select_and_split_a_converted_vessel_task(tmp_path):
    src = tmp_path / "Task08_HepaticVessel"
    write_dataset(str(src), cases=4, layout="msd", task="hepatic_vessel", seed=2,
                  shape=(48, 48, 12), progress=False)
    converted = str(tmp_path / "tf_data")
    convert(str(src), converted, progress=False)
    out = arunet.select_and_split(converted, {"max_slices": 80,
                                              "split": {"val": 0.25, "test": 0.25, "seed": 42}},
                                  str(tmp_path / "sel"))
    manifest = schema.load_manifest(out)
    assert manifest["labels"] == {"0": "background", "1": "Vessel", "2": "Tumour"}
    assert {s: len(v) for s, v in manifest["split"].items()} == {"train": 2, "val": 1, "test": 1}
    assert manifest["selection"]["excluded"] == []
    with pytest.raises(DataError, match="fewer than 12 slices"):
        arunet.select_and_split(converted, {"max_slices": 12}, str(tmp_path / "none"))


def test_task_sources(tmp_path):
    assert arunet.task_sources(None) == {"liver": None, "vessel": None}
    (tmp_path / "Task03_Liver").mkdir()
    with pytest.raises(DataError, match="Task08_HepaticVessel"):
        arunet.task_sources(str(tmp_path))
    (tmp_path / "Task08_HepaticVessel").mkdir()
    assert arunet.task_sources(str(tmp_path)) == {
        "liver": str(tmp_path / "Task03_Liver"), "vessel": str(tmp_path / "Task08_HepaticVessel")}
    with pytest.raises(DataError, match="--vessel-data"):
        arunet.task_sources(liver=str(tmp_path / "Task03_Liver"))


# --------------------------------------------------------------------------- scoring

def test_class_scores_by_hand():
    ref = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    pred = np.array([1, 1, 1, 0, 2, 0, 0, 0])
    row = arunet.class_scores(pred, ref, {"1": "liver", "2": "tumour"})
    # liver: |P| = 3, |G| = 3, |P∩G| = 2 -> 4/6; tumour: |P| = 1, |G| = 2, |P∩G| = 1 -> 2/3
    assert row["liver_dice"] == pytest.approx(4 / 6)
    assert row["tumour_dice"] == pytest.approx(2 / 3)
    assert (row["liver_tp"], row["liver_fp"], row["liver_fn"], row["liver_tn"]) == (2, 1, 1, 4)
    # a class in neither map scores 1, in only one 0
    none = arunet.class_scores(np.zeros(4, int), np.zeros(4, int), {"2": "tumour"})
    assert none["tumour_dice"] == 1.0
    missed = arunet.class_scores(np.zeros(4, int), np.array([0, 2, 0, 0]), {"2": "tumour"})
    assert missed["tumour_dice"] == 0.0


# --------------------------------------------------------------------------- linked models

class FixedPredictor:
    """Stands in for a 2-D run: returns one-hot probabilities of a fixed label volume and
    records the volumes it was given."""

    def __init__(self, labels, classes=3):
        self.labels, self.classes, self.calls = labels, classes, []

    def probabilities(self, volume):
        self.calls.append(volume.shape)
        assert volume.shape == self.labels.shape
        return np.eye(self.classes, dtype=np.float32)[self.labels]


def _scene():
    """A 12x12x10 volume: the liver (label 1) in slices 3-6 with a tumour (2), a stray liver
    blob in slice 9; the vessel model sees vessels (1) inside and outside the liver and a
    tumour (2) of its own."""
    liver = np.zeros((12, 12, 10), np.uint8)
    liver[2:8, 2:8, 3:7] = 1
    liver[3:5, 3:5, 4] = 2
    liver[10, 10, 9] = 1                      # a second, smaller component
    vessel = np.zeros_like(liver)
    vessel[5, 2:11, 3:7] = 1                  # crosses the liver border at x = 8
    vessel[3, 3, 4] = 1                       # on the liver model's tumour
    vessel[6:8, 6:8, 5] = 2                   # the vessel model's tumour, inside the liver
    return liver, vessel


def test_linked_models_label_vessels_inside_the_liver():
    liver, vessel = _scene()
    vessel_model = FixedPredictor(vessel[:, :, 3:7])
    linked = LinkedLiverVessel(FixedPredictor(liver), vessel_model)
    result = linked.run(np.zeros(liver.shape, np.float32))
    label = result.label
    # largest component only: the stray blob in slice 9 is dropped
    assert label[10, 10, 9] == 0
    # the vessel model ran once, on the liver's slices only
    assert vessel_model.calls == [(12, 12, 4)] and result.slices == (3, 7)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    # vessels inside the liver -> 3; outside (x >= 8) dropped; not on the liver's tumour
    assert (label[5, 2:8, 3:7] == 3).all() and (label[5, 8:, :] == 0).all()
    assert label[3, 3, 4] == 2
    # tumour = the liver model's: the vessel model's tumour stays liver
    assert (label[6:8, 6:8, 5] == 1).all()
    expected = np.where(liver == 2, 2, 0)
    expected[10, 10, 9] = 0
    assert ((label == 2) == (expected == 2)).all()


def test_linked_models_tumour_union_and_margin():
    liver, vessel = _scene()
    linked = LinkedLiverVessel(FixedPredictor(liver), FixedPredictor(vessel[:, :, 2:8]),
                               tumour="union", margin=1)
    result = linked.run(np.zeros(liver.shape, np.float32))
    assert result.slices == (2, 8)
    assert (result.label[6:8, 6:8, 5] == 2).all()          # the vessel model's tumour added
    with pytest.raises(ValueError, match="tumour must be one of"):
        LinkedLiverVessel(None, None, tumour="vessel")


def test_no_liver_means_no_vessel_model_call():
    empty = np.zeros((6, 6, 4), np.uint8)
    vessel_model = FixedPredictor(empty)
    result = LinkedLiverVessel(FixedPredictor(empty), vessel_model).run(np.zeros((6, 6, 4)))
    assert vessel_model.calls == [] and result.slices is None and not result.label.any()


def test_linked_json_round_trip(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_linked(str(run), {"liver": str(run / "liver"), "vessel": str(run / "vessel")},
                 inference={"margin": 2})
    spec = read_linked(str(run))
    assert spec["models"] == {"liver": "liver", "vessel": "vessel"} and spec["model"] == "arunet"
    assert spec["inference"] == {"largest_component": True, "margin": 2, "tumour": "liver"}
    with pytest.raises(ValueError, match="missing"):
        write_linked(str(run), {"liver": str(run / "liver")})
    with pytest.raises(FileNotFoundError, match="not a linked run directory"):
        read_linked(str(tmp_path))
