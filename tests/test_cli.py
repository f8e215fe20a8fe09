"""The keras-liver command line: each stage, and one clear error for bad input."""
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import run_python

from keras_liver.cli import main
from keras_liver.data import schema
from keras_liver.data.fixtures import load_lits117
from keras_liver.data.volumes import read_volume, write_volume


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_phantom_msd_then_convert(tmp_path, capsys):
    src, out = str(tmp_path / "msd"), str(tmp_path / "tf")
    code, stdout, _ = run(["phantom", "--cases", "3", "--out", src, "--layout", "msd",
                           "--shape", "48", "48", "12", "--no-progress"], capsys)
    assert code == 0 and "3 phantom cases" in stdout
    assert os.path.exists(os.path.join(src, "dataset.json"))
    code, stdout, _ = run(["convert", src, "--out", out, "--split", "0.34,0.33,0.33",
                           "--no-progress"], capsys)
    assert code == 0
    manifest = schema.load_manifest(out)
    assert manifest["layout"] == "msd" and len(manifest["cases"]) == 3
    assert all(len(manifest["split"][s]) == 1 for s in ("train", "val", "test"))


def test_convert_bad_dataset_names_the_file_and_keeps_the_previous_conversion(
        phantom_lits, tiny_dataset, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(phantom_lits, bad)
    seg = read_volume(str(bad / "segmentation-2.nii.gz"), dtype=np.uint8)
    data = seg.data.copy()
    data[0, 0, 0] = 7
    write_volume(str(bad / "segmentation-2.nii.gz"), data, seg.affine, header=seg.header)
    out = tmp_path / "tf"
    shutil.copytree(tiny_dataset, out)
    before = (out / schema.MANIFEST).read_bytes()
    code, _, err = run(["convert", str(bad), "--out", str(out), "--overwrite", "--no-progress"], capsys)
    assert code == 2
    assert "segmentation-2.nii.gz" in err and "7" in err and err.count("\n") == 1
    assert (out / schema.MANIFEST).read_bytes() == before


def test_predict_writes_on_the_input_grid(tiny_run, phantom_lits, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    src = os.path.join(phantom_lits, "volume-1.nii.gz")
    out = str(tmp_path / "pred.nii.gz")
    code, stdout, _ = run(["predict", "--model", run_dir, src, "--out", out, "--no-progress"], capsys)
    assert code == 0 and out in stdout
    ref, pred = nib.load(src), nib.load(out)
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine)
    assert pred.header.get_zooms() == ref.header.get_zooms()
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_predict_runs_in_a_fresh_interpreter(tiny_run, phantom_lits, tmp_path):
    """``keras-liver predict`` as a user runs it, in a new process that has imported nothing
    else: the RA V-Net run holds this project's layers (ChannelAttention, StackSequence), which
    Keras rebuilds only once ``keras_liver.layers`` has registered them. The in-process tests
    above always had it imported already; this one failed before ``training.load_model``."""
    run_dir, _, _ = tiny_run
    src = os.path.join(phantom_lits, "volume-1.nii.gz")
    out = str(tmp_path / "pred.nii.gz")
    proc = run_python("import sys; from keras_liver.cli import main; "
                      f"sys.exit(main(['predict', '--model', {run_dir!r}, {src!r}, '--out', "
                      f"{out!r}, '--no-progress']))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert nib.load(out).shape == nib.load(src).shape


def test_predict_tta_flag_overrides_the_runs_setting(tiny_run, phantom_lits, tmp_path, capsys,
                                                    monkeypatch):
    """--tta flips averages the identity and both flips, --tta none and the run's default
    (RA V-Net: none) only the identity: the flips of the predictor that writes the file."""
    from keras_liver import inference

    run_dir, _, _ = tiny_run
    src = os.path.join(phantom_lits, "volume-1.nii.gz")
    seen, real = [], inference.Predictor.predict_file

    def spy(self, in_path, out_path):
        seen.append(tuple(self.tta))
        return real(self, in_path, out_path)

    monkeypatch.setattr(inference.Predictor, "predict_file", spy)
    for flag, expected in ((["--tta", "flips"], ("vflip", "hflip")), (["--tta", "none"], ()),
                           ([], ())):
        out = str(tmp_path / f"pred{len(seen)}.nii.gz")
        code, _, err = run(["predict", "--model", run_dir, src, "--out", out, "--no-progress",
                            *flag], capsys)
        assert code == 0, err
        assert seen[-1] == expected
        assert nib.load(out).shape == nib.load(src).shape


def test_predict_a_folder_of_inputs(tiny_run, phantom_lits, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    inputs = [os.path.join(phantom_lits, f"volume-{i}.nii.gz") for i in (0, 1)]
    out = tmp_path / "preds"
    out.mkdir()
    code, _, _ = run(["predict", "--model", run_dir, *inputs, "--out", str(out), "--no-progress"], capsys)
    assert code == 0
    assert sorted(os.listdir(out)) == ["volume-0_pred.nii.gz", "volume-1_pred.nii.gz"]


def test_predict_on_the_real_lits117_crop(tiny_run, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    crop = load_lits117()
    affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    src = write_volume(str(tmp_path / "lits117.nii.gz"), crop.image, affine)
    out = str(tmp_path / "lits117_pred.nii.gz")
    code, _, _ = run(["predict", "--model", run_dir, src, "--out", out, "--no-progress"], capsys)
    assert code == 0
    pred = nib.load(out)
    assert pred.shape == crop.image.shape
    np.testing.assert_allclose(pred.affine, affine)


def test_predict_truncated_input_fails_cleanly_and_keeps_existing_output(tiny_run, phantom_lits,
                                                                          tmp_path, capsys):
    run_dir, _, _ = tiny_run
    good = open(os.path.join(phantom_lits, "volume-0.nii.gz"), "rb").read()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"previous result")
    code, _, err = run(["predict", "--model", run_dir, str(truncated), "--out", str(out),
                        "--no-progress"], capsys)
    assert code == 2
    assert str(truncated) in err and "truncated or corrupt" in err
    assert out.read_bytes() == b"previous result"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".partial")]


def test_evaluate_and_export(tiny_run, phantom_lits, tmp_path, capsys):
    run_dir, _, _ = tiny_run
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    for d in (preds, refs):
        d.mkdir()
    ref_path = os.path.join(phantom_lits, "segmentation-1.nii.gz")
    os.symlink(ref_path, refs / "segmentation-1.nii.gz")
    assert main(["predict", "--model", run_dir, os.path.join(phantom_lits, "volume-1.nii.gz"),
                 "--out", str(preds / "segmentation-1.nii.gz"), "--no-progress"]) == 0
    code, stdout, _ = run(["evaluate", str(preds), str(refs), "--out", str(tmp_path / "eval"),
                           "--no-progress"], capsys)
    assert code == 0 and "liver_dice" in stdout
    assert os.path.exists(tmp_path / "eval" / "metrics.csv")

    code, stdout, _ = run(["export", run_dir, "--out", str(tmp_path / "serving"), "--version", "3"], capsys)
    assert code == 0
    assert os.path.exists(tmp_path / "serving" / "3" / "saved_model.pb")


def test_missing_run_directory_is_one_clear_error(tmp_path, capsys):
    code, _, err = run(["export", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "no trained model" in err


@pytest.mark.parametrize("bad", ["0.5,0.5", "0.5,0.6,0.2", "a,b,c"])
def test_split_must_be_three_fractions(bad, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path), "--out", str(tmp_path / "o"), "--split", bad])
    assert "three fractions" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_phantom_workers_must_be_a_positive_integer(bad, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["phantom", "--cases", "2", "--out", str(tmp_path / "p"), "--workers", bad])
    assert "expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()   # refused before anything is written


def test_train_takes_precision_and_jit_into_the_run_config(tiny_dataset, tmp_path, capsys,
                                                           monkeypatch):
    from keras_liver import training

    seen = {}
    monkeypatch.setattr(training, "train", lambda config, **kw: seen.update(config=config) or
                        training.TrainResult(run_dir=kw["out_dir"], model=None, history={},
                                             epochs_run=0))
    assert main(["train", "--experiment", "ra_vnet", "--preset", "tiny", "--data", tiny_dataset,
                 "--out", str(tmp_path / "run"), "--precision", "mixed_bfloat16", "--jit",
                 "--learning-rate", "0.005"]) == 0
    t = seen["config"]["training"]
    assert (t["precision"], t["jit_compile"], t["optimizer"]["learning_rate"]) == (
        "mixed_bfloat16", True, 0.005)


def test_serving_subcommand_is_the_serving_modules_cli(tmp_path, capsys):
    out = tmp_path / "models.config"
    assert main(["serving", "project-config", "--out", str(out)]) == 0
    from keras_liver.serving.config import project_models_config

    assert out.read_text() == project_models_config()
