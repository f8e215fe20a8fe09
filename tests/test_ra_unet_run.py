"""The tiny RA-UNet experiment end to end (session fixture ``ra_unet_run``) and
keras-liver predict with its cascade."""
import contextlib
import glob
import io
import json
import os

import nibabel as nib
import numpy as np
import pandas as pd

from conftest import assert_label_volume_on_input_grid
from keras_liver import export, training
from keras_liver.cli import main as cli_main
from keras_liver.data import schema
from keras_liver.data.fixtures import load_lits117
from keras_liver.data.volumes import write_volume
from keras_liver.experiments import common, ra_unet


def cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    return code, out.getvalue(), err.getvalue()


def test_run_directory_holds_every_stage(ra_unet_run):
    run_dir, stdout, stderr = ra_unet_run
    spec = json.load(open(os.path.join(run_dir, "cascade.json")))
    assert spec["stages"] == {"localiser": ["stage1_localiser"], "liver": ["stage2_liver"],
                              "tumour": ["stage3_tumour"]}
    for stage in spec["stages"].values():
        d = os.path.join(run_dir, stage[0])
        for name in ("config.json", "preprocessing.json", "model.keras", "history.csv"):
            assert os.path.exists(os.path.join(d, name)), (d, name)
    kinds = {stage: json.load(open(os.path.join(run_dir, dirs[0], "preprocessing.json")))["kind"]
             for stage, dirs in spec["stages"].items()}
    assert kinds == {"localiser": "slices", "liver": "liver_slabs", "tumour": "tumour_patches"}

    config = json.load(open(os.path.join(run_dir, "stage2_liver", "config.json")))
    manifest = schema.load_manifest(config["dataset"])
    metrics = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    cases = metrics[metrics["case"].isin(manifest["split"]["test"])]
    assert sorted(cases["case"]) == sorted(manifest["split"]["test"])
    for column in ("liver_dice", "liver_assd", "tumour_dice", "tumour_msd", "liver_tp"):
        assert column in metrics.columns, column
    assert cases["liver_dice"].between(0, 1).all()
    assert {"mean", "std", "global"} <= set(metrics["case"])
    comparison = pd.read_csv(os.path.join(run_dir, "comparison.csv"))
    assert list(comparison.columns) == ["target", "metric", "ours", "paper", "difference"]

    assert "liver  Dice per case" in stdout and "tumour Dice per case" in stdout
    assert "| liver | dice_global |" in stdout and "0.9630" in stdout   # Table VI beside ours
    # one SavedModel per stage, written by the job that trained it
    for stage, dirs in spec["stages"].items():
        saved = os.path.join(run_dir, dirs[0], "saved_model")
        assert f"saved model   : {saved} ({stage})" in stdout
        assert export.is_exported(os.path.join(run_dir, dirs[0]))
    # the tiny preset trains its three stages at once, in their own processes
    assert "3 runs to do, 3 at a time" in stderr
    assert "finished training and exporting the tumour stage" in stderr


def test_3d_stage_saved_model_serves_without_the_project(ra_unet_run, tmp_path):
    """The liver stage's export (a 3-D RA-UNet-II, exported by its training job from the model
    in memory) answers in a process that cannot import keras_liver, with the probabilities of
    the model.keras the run saved."""
    import keras

    from conftest import load_without_project

    stage = os.path.join(ra_unet_run[0], "stage2_liver")
    saved = export.default_export_dir(stage)
    model = keras.models.load_model(os.path.join(stage, "model.keras"), compile=False)
    x = np.random.default_rng(0).random((2, *model.inputs[0].shape[1:]), dtype=np.float32)
    signature, out = load_without_project(saved, x, tmp_path)
    assert signature == {"inputs": ["image"], "outputs": ["label", "probabilities"]}
    np.testing.assert_allclose(out["probabilities"], model.predict(x, verbose=0), atol=1e-5)
    assert out["label"].shape == (2, 32, 32, 32)


def test_finished_stages_are_not_trained_again(ra_unet_run):
    run_dir, _, _ = ra_unet_run
    config = ra_unet.resolve_config(common.load_experiment("ra_unet"), "tiny")
    data = json.load(open(os.path.join(run_dir, "stage1_localiser", "config.json")))["dataset"]
    exported = {p: os.stat(p).st_mtime_ns
                for p in glob.glob(os.path.join(run_dir, "stage*", "saved_model", "saved_model.pb"))}
    assert len(exported) == 3
    dirs, epochs = ra_unet.train_stages(config, data, run_dir, verbose=0, export=True)
    assert epochs == {"localiser": [0], "liver": [0], "tumour": [0]}
    # nothing re-exported either: every SavedModel is newer than its model.keras
    assert {p: os.stat(p).st_mtime_ns for p in exported} == exported
    assert dirs["tumour"] == [os.path.join(run_dir, "stage3_tumour")]
    # another recipe is another run: not 'finished'
    cfg = ra_unet.stage_config(config, "liver")
    assert training.is_finished(os.path.join(run_dir, "stage2_liver"), cfg, data=data)
    cfg["training"]["epochs"] = 2
    assert not training.is_finished(os.path.join(run_dir, "stage2_liver"), cfg, data=data)


def test_predict_with_the_cascade_on_a_phantom_volume_and_the_real_lits117_crop(
        ra_unet_run, phantom_lits, tmp_path):
    """One ``keras-liver predict`` call, two inputs (the cascade loads once): each output is
    a 0/1/2 uint8 volume on its input's grid, with its affine and zooms."""
    run_dir, _, _ = ra_unet_run
    phantom = os.path.join(phantom_lits, "volume-2.nii.gz")
    crop = load_lits117()
    lits_affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    lits = write_volume(str(tmp_path / "lits117.nii.gz"), crop.image, lits_affine)
    out_dir = str(tmp_path / "pred") + os.sep
    code, stdout, err = cli(["predict", "--model", run_dir, phantom, lits, "--out", out_dir,
                             "--no-progress"])
    assert code == 0, err[-2000:]
    for src, name in ((phantom, "volume-2_pred.nii.gz"), (lits, "lits117_pred.nii.gz")):
        out = os.path.join(out_dir, name)
        assert out in stdout
        assert_label_volume_on_input_grid(src, out, {0, 1, 2})
    assert nib.load(lits).shape == crop.image.shape


def test_model_name_ra_unet_is_the_experiments_default_run(ra_unet_run, phantom_lits, tmp_path,
                                                          monkeypatch):
    """``--model ra_unet`` finds ``runs/ra_unet`` (where the experiment writes), and says how
    to make one when there is none."""
    from keras_liver.cascade import RAUNetCascade
    from keras_liver.cli import load_predictor, resolve_model

    monkeypatch.chdir(tmp_path)
    src = os.path.join(phantom_lits, "volume-2.nii.gz")
    code, _, err = cli(["predict", "--model", "ra_unet", src, "--out", "x.nii.gz"])
    assert code == 2 and "runs/ra_unet" in err and "experiments.ra_unet" in err
    assert not os.path.exists("x.nii.gz")
    os.makedirs("runs")
    os.symlink(ra_unet_run[0], os.path.join("runs", "ra_unet"))
    assert resolve_model("ra_unet") == os.path.join("runs", "ra_unet")
    assert isinstance(load_predictor("ra_unet"), RAUNetCascade)
