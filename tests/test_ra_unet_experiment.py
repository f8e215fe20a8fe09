"""The RA-UNet experiment: the published recipe as data, presets whose windows fit their
models, command-line overrides and the comparison with the paper's tables."""
import os

import numpy as np
import pandas as pd
import pytest

from keras_liver.experiments import common, ra_unet


# --------------------------------------------------------------------------- recipe as data

def test_paper_preset_is_the_published_recipe():
    config = ra_unet.resolve_config(common.load_experiment("ra_unet"), "paper")
    stages = config["stages"]
    assert stages["localiser"]["model"] == {"name": "ra_unet_2d", "input_shape": [256, 256, 1],
                                            "base_filters": 4}
    assert stages["liver"]["model"] == {"name": "ra_unet_3d", "input_shape": [224, 224, 32, 1],
                                        "base_filters": 8}
    assert stages["tumour"]["model"]["input_shape"] == [128, 128, 32, 1]
    for stage, epochs, batch, patience in [("localiser", 100, 90, 20), ("liver", 50, 2, 15),
                                           ("tumour", 60, 6, 15)]:
        t = stages[stage]["training"]
        assert t["loss"] == {"name": "dice", "smooth": 1.0, "dice_over": "batch"}, stage
        assert t["optimizer"]["name"] == "adam" and t["optimizer"]["learning_rate"] == 1e-3
        assert t["epochs"] == epochs and stages[stage]["data"]["batch_size"] == batch
        assert t["callbacks"] == {"reduce_lr": {"monitor": "val_loss", "factor": 0.1,
                                                "patience": patience}}, stage
        assert "batch_norm_momentum" not in t  # Keras' default, as the authors' code
    assert stages["localiser"]["data"]["slice_filter"]["keep_empty_fraction"] == pytest.approx(1 / 3)
    assert stages["localiser"]["data"]["window"] == [-100, 200]
    assert stages["liver"]["data"] == {
        "kind": "liver_slabs", "window": [-100, 200], "margin": 10, "in_plane": [224, 224],
        "depth": 32, "stride": 20, "samples_per_volume": 39, "batch_size": 2,
        "shuffle_buffer": 256}
    assert stages["tumour"]["data"]["patch_size"] == [128, 128, 32]
    assert stages["tumour"]["data"]["samples_per_volume"] == 150
    assert config["folds"] == {"liver": 5, "tumour": 5, "seed": 0}
    assert config["jobs"] == 1   # one training at a time on the published hardware (one GPU)
    assert config["cascade"]["margin"] == 10 and config["cascade"]["threshold"] == 0.5


def test_every_preset_cuts_the_windows_its_models_take():
    """Each stage's model takes exactly the windows its data config cuts."""
    from keras_liver.data import volumetric

    experiment = common.load_experiment("ra_unet")
    for preset in ("paper", "demo", "tiny"):
        config = ra_unet.resolve_config(experiment, preset)
        for stage in ("liver", "tumour"):
            cfg = ra_unet.stage_config(config, stage)
            shape = volumetric.sample_shape(cfg["data"])
            assert tuple(cfg["model"]["input_shape"][:3]) == shape, (preset, stage)
        loc = ra_unet.stage_config(config, "localiser")
        assert loc["model"]["input_shape"][:2] == loc["data"]["image_size"], preset


def test_overrides_reach_every_stage():
    config = ra_unet.resolve_config(common.load_experiment("ra_unet"), "demo", epochs=3,
                                    learning_rate=5e-4, folds=3, jobs=3, seed=4)
    for stage in config["stages"].values():
        assert stage["training"]["epochs"] == 3
        assert stage["training"]["optimizer"]["learning_rate"] == 5e-4
    assert config["folds"]["liver"] == config["folds"]["tumour"] == 3 and config["seed"] == 4
    assert config["jobs"] == 3
    dirs = ra_unet.stage_run_dirs(config, "out", "liver")
    assert dirs == [os.path.join("out", "stage2_liver", f"fold{i}") for i in range(3)]
    assert ra_unet.stage_run_dirs(config, "out", "localiser") == [os.path.join("out", "stage1_localiser")]
    with pytest.raises(ValueError, match="unknown preset"):
        ra_unet.resolve_config(common.load_experiment("ra_unet"), "huge")


def test_comparison_reads_dice_global_from_the_pooled_row():
    summary = pd.DataFrame({"liver_dice": [0.9, 0.01, 0.95], "liver_jaccard": [0.8, 0, 0.85],
                            "liver_voe": [0.2, 0, 0.15], "liver_rvd": [0.01, 0, np.nan],
                            "liver_assd": [1.5, 0, np.nan], "liver_msd": [20.0, 0, np.nan],
                            "tumour_dice": [0.5, 0, 0.7], "tumour_jaccard": [0.4, 0, 0.5],
                            "tumour_voe": [0.6, 0, 0.5], "tumour_rvd": [-0.1, 0, np.nan],
                            "tumour_assd": [2.0, 0, np.nan], "tumour_msd": [9.0, 0, np.nan]},
                           index=["mean", "std", "global"])
    table = ra_unet.compare_with_paper(summary, common.load_experiment("ra_unet"))
    rows = {(r.target, r.metric): r for r in table.itertuples()}
    assert rows[("liver", "dice_per_case")].ours == 0.9
    assert rows[("liver", "dice_global")].ours == 0.95
    assert rows[("liver", "dice_per_case")].paper == 0.961            # Table VI, RA-UNet row
    assert rows[("tumour", "dice_global")].paper == 0.795
    assert rows[("tumour", "msd")].difference == pytest.approx(9.0 - 6.775)
    assert len(table) == 14
    # 3DIRCADb (Table VII): no Dice global column; the tumour half prints only DC
    table = ra_unet.compare_with_paper(summary, common.load_experiment("ra_unet"), "3dircadb")
    assert list(table["metric"][table["target"] == "tumour"]) == ["dice_per_case"]
    assert table.set_index(["target", "metric"]).loc[("liver", "dice_per_case"), "paper"] == 0.977
    assert len(table) == 7
    with pytest.raises(ValueError, match="no paper table"):
        ra_unet.compare_with_paper(summary, common.load_experiment("ra_unet"), "brats")


def test_help_documents_every_option():
    text = ra_unet.parser().format_help()
    for option in ("--data", "--preset", "--out", "--tf-data", "--epochs", "--batch-size",
                   "--learning-rate", "--precision", "--seed", "--folds", "--jobs",
                   "--paper-table", "--no-export", "--no-progress"):
        assert option in text, option
