"""The tiny Attention Residual UNet experiment end to end (session fixture ``arunet_run``) and
``keras-liver predict`` with its two linked models."""
import contextlib
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
from keras_liver.experiments import arunet, common
from keras_liver.linked import LinkedLiverVessel


def cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(argv)
    return code, out.getvalue(), err.getvalue()


def test_run_directory_holds_both_models_scores_and_exports(arunet_run):
    run_dir, stdout, _ = arunet_run
    spec = json.load(open(os.path.join(run_dir, "linked.json")))
    assert spec["models"] == {"liver": "liver", "vessel": "vessel"}
    for name, base, classes in (("liver", 8, ("liver", "tumour")),
                                ("vessel", 16, ("vessel", "tumour"))):
        d = os.path.join(run_dir, name)
        config = json.load(open(os.path.join(d, "config.json")))
        assert config["model"]["base_filters"] == base
        manifest = schema.load_manifest(config["dataset"])
        assert manifest["selection"]["max_slices"] == (300 if name == "liver" else 80)
        assert config["dataset"] == os.path.join(run_dir, "data", name)
        # per-class Dice on the held-out test cases, with the pooled row
        metrics = pd.read_csv(os.path.join(d, "metrics.csv"))
        cases = metrics[~metrics["case"].isin(["mean", "std", "global"])]
        assert sorted(cases["case"]) == sorted(manifest["split"]["test"])
        for cls in classes:
            assert cases[f"{cls}_dice"].between(0, 1).all()
        # the multi-class runner logs one Dice per named class
        history = pd.read_csv(os.path.join(d, "history.csv"))
        assert {f"val_dice_{c}" for c in classes} <= set(history.columns)
        assert export.is_exported(d)
    comparison = pd.read_csv(os.path.join(run_dir, "comparison.csv"))
    assert list(comparison[["model", "class"]].itertuples(index=False, name=None)) == [
        ("liver", "liver"), ("liver", "tumour"), ("vessel", "vessel"), ("vessel", "tumour")]
    assert list(comparison["paper_results"]) == [0.88, 0.73, 0.73, 0.66]
    assert "| liver | liver |" in stdout and "| vessel | vessel |" in stdout
    assert "predict       : keras-liver predict --model" in stdout


def test_finished_models_are_not_trained_again(arunet_run):
    run_dir, _, _ = arunet_run
    config = arunet.resolve_config(common.load_experiment("arunet"), "tiny")
    datasets = {m: os.path.join(run_dir, "data", m) for m in arunet.MODELS}
    exported = {m: os.stat(os.path.join(run_dir, m, "saved_model", "saved_model.pb")).st_mtime_ns
                for m in arunet.MODELS}
    _, epochs = arunet.train_models(config, datasets, run_dir, export=True, verbose=0)
    assert epochs == {"liver": 0, "vessel": 0}
    assert {m: os.stat(os.path.join(run_dir, m, "saved_model", "saved_model.pb")).st_mtime_ns
            for m in arunet.MODELS} == exported
    # the other loss is another recipe: not finished
    other = arunet.resolve_config(common.load_experiment("arunet"), "tiny", loss="generalized_dice")
    assert not training.is_finished(os.path.join(run_dir, "liver"),
                                    arunet.model_config(other, "liver"), data=datasets["liver"])
    # keras-liver train --experiment arunet on the run's datasets finds both finished too
    code, stdout, err = cli(["train", "--experiment", "arunet", "--preset", "tiny",
                             "--data", os.path.join(run_dir, "data"), "--out", run_dir])
    assert code == 0, err[-2000:]
    assert "not retrained" in err and "linked" not in err


def test_linked_predict_on_a_phantom_volume_and_the_real_lits117_crop(arunet_run, phantom_lits,
                                                                      tmp_path):
    """One ``keras-liver predict --model RUN`` call, two inputs: each output is a uint8
    volume of labels 0-3 on its input's grid, with its affine and zooms."""
    run_dir, _, _ = arunet_run
    phantom = os.path.join(phantom_lits, "volume-1.nii.gz")
    crop = load_lits117()
    lits = write_volume(str(tmp_path / "lits117.nii.gz"), crop.image,
                        np.diag([-0.8, -0.8, 1.5, 1.0]))
    out_dir = str(tmp_path / "pred") + os.sep
    code, stdout, err = cli(["predict", "--model", run_dir, phantom, lits, "--out", out_dir,
                             "--no-progress"])
    assert code == 0, err[-2000:]
    for src, name in ((phantom, "volume-1_pred.nii.gz"), (lits, "lits117_pred.nii.gz")):
        out = os.path.join(out_dir, name)
        assert out in stdout
        assert_label_volume_on_input_grid(src, out, {0, 1, 2, 3})
    # the CLI's output is the Python API's
    linked = LinkedLiverVessel.from_run(run_dir)
    result = linked.run(np.asarray(nib.load(phantom).dataobj, dtype=np.float32))
    np.testing.assert_array_equal(
        result.label, np.asarray(nib.load(os.path.join(out_dir, "volume-1_pred.nii.gz")).dataobj))
    vessels = result.label == 3
    assert not (vessels & (result.liver == 0)).any()


def test_linked_predict_refuses_bad_input_and_keeps_existing_output(arunet_run, phantom_lits,
                                                                   tmp_path):
    run_dir, _, _ = arunet_run
    good = open(os.path.join(phantom_lits, "volume-0.nii.gz"), "rb").read()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"previous result")
    code, _, err = cli(["predict", "--model", run_dir, str(truncated), "--out", str(out),
                        "--no-progress"])
    assert code == 2 and str(truncated) in err and "truncated or corrupt" in err
    assert out.read_bytes() == b"previous result"
    code, _, err = cli(["predict", "--model", run_dir, os.path.join(phantom_lits, "volume-0.nii.gz"),
                        "--out", str(out), "--tta", "flips"])
    assert code == 2 and "linked liver and vessel models" in err


def test_saved_model_of_the_vessel_model_serves_without_the_project(arunet_run, tmp_path):
    import keras

    from conftest import load_without_project

    d = os.path.join(arunet_run[0], "vessel")
    model = keras.models.load_model(os.path.join(d, "model.keras"), compile=False)
    x = np.random.default_rng(0).random((2, *model.inputs[0].shape[1:]), dtype=np.float32)
    signature, out = load_without_project(export.default_export_dir(d), x, tmp_path)
    assert signature == {"inputs": ["image"], "outputs": ["label", "probabilities"]}
    np.testing.assert_allclose(out["probabilities"], model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(out["label"], np.argmax(out["probabilities"], axis=-1))
