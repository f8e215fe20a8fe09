"""The tiny BADA experiment end to end (session fixture ``bada_run``): the MRI Couinaud
phantom, training with the paper's recipe, per-segment scores beside Tables 3-4, the export,
``keras-liver predict`` and the attention maps of the trained model."""
import contextlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import assert_label_volume_on_input_grid
from keras_liver import export
from keras_liver.cli import main as cli_main
from keras_liver.data import schema
from keras_liver.experiments import bada, common
from keras_liver.metrics.segments import SEGMENT_NAMES


def test_ablation_choice_and_paper_rows():
    experiment = common.load_experiment("bada")
    config = bada.resolve_config(experiment, "tiny", ablation="bada_spatial_only")
    assert config["model"]["name"] == "bada_spatial_only"
    assert config["model"]["input_shape"] == [32, 32, 1]
    assert bada.resolve_config(experiment, "tiny")["model"]["name"] == "bada"
    with pytest.raises(ValueError, match="unknown ablation"):
        bada.resolve_config(experiment, "tiny", ablation="danet")
    rows = bada.paper_rows(experiment, "bada")
    assert [(t, label) for t, label, _ in rows] == [
        ("table3", "Our method"), ("table4", "Our method"),
        ("table1", "Our method (with dual attention)"), ("table2", "Proposed(with 4 Upsample)")]
    table3 = rows[0][2]
    assert table3["I_dice"] == pytest.approx(0.8049) and table3["mean_dice"] == pytest.approx(0.8901)
    assert rows[1][2] == pytest.approx({"mean_sensitivity": 0.8771, "mean_ppv": 0.9067})
    assert bada.paper_rows(experiment, "bada_fcn_1up")[0][:2] == ("table2",
                                                                  "Proposed(with 1 Upsample)")


def test_run_scores_every_segment_beside_the_paper(bada_run):
    run_dir, stdout, _ = bada_run
    config = json.load(open(os.path.join(run_dir, "config.json")))
    manifest = schema.load_manifest(config["dataset"])
    assert manifest["labels"] == {"0": "background", **{str(i): n for i, n in
                                                        enumerate(SEGMENT_NAMES, start=1)}}
    metrics = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    cases = metrics[~metrics["case"].isin(["mean", "std", "global"])]
    assert sorted(cases["case"]) == sorted(manifest["split"]["test"])
    for name in SEGMENT_NAMES:
        assert cases[f"{name}_dice"].between(0, 1).all()
    np.testing.assert_allclose(cases["mean_dice"],
                               cases[[f"{n}_dice" for n in SEGMENT_NAMES]].mean(axis=1))
    history = pd.read_csv(os.path.join(run_dir, "history.csv"))
    assert {"val_dice", "val_dice_I", "val_dice_VIII", "learning_rate"} <= set(history.columns)
    comparison = pd.read_csv(os.path.join(run_dir, "comparison.csv"))
    assert set(comparison["table"]) == {"table1", "table2", "table3", "table4"}
    assert len(comparison[comparison["table"] == "table3"]) == 10   # 9 segments and the mean
    assert "mean segment Dice" in stdout and "| table3 | VIII_dice |" in stdout
    assert export.is_exported(run_dir)
    # the recipe's optimizer: PyTorch-style coupled L2 Adam, saved with the model
    assert config["training"]["optimizer"]["l2"] == 4e-5


def test_predict_writes_segment_labels_on_the_input_grid(bada_run, tmp_path):
    from keras_liver.data.phantom import write_dataset

    run_dir, _, _ = bada_run
    (image, _), = write_dataset(str(tmp_path / "mri"), cases=1, layout="msd", modality="mri",
                                task="couinaud", seed=9, shape=(64, 64, 12), progress=False)
    out = str(tmp_path / "pred.nii.gz")
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        code = cli_main(["predict", "--model", run_dir, image, "--out", out, "--no-progress"])
    assert code == 0, err.getvalue()[-2000:]
    assert_label_volume_on_input_grid(image, out, range(10))


def test_attention_maps_of_the_trained_model(bada_run):
    import keras

    from keras_liver.models.bada import attention_maps

    model = keras.models.load_model(os.path.join(bada_run[0], "model.keras"), compile=False)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    maps = attention_maps(model, x)
    assert sorted(maps) == [1, 2, 3, 4]
    for level, m in maps.items():
        side = 32 // 2 ** (level - 1)
        assert np.asarray(m["spatial"]).shape == (2, side, side, 1)
        assert np.asarray(m["semantic"]).shape[0] == 2
        for v in (m["spatial"], m["semantic"]):
            assert 0.0 <= float(np.min(v)) and float(np.max(v)) <= 1.0


def test_metrics_csv_holds_the_pooled_segment_means(bada_run):
    metrics = pd.read_csv(os.path.join(bada_run[0], "metrics.csv")).set_index("case")
    names = [f"{n}_dice" for n in SEGMENT_NAMES]
    assert metrics.loc["global", "mean_dice"] == pytest.approx(metrics.loc["global", names].mean())
