"""The paper notebooks execute end to end (at the tiny preset, on the session's phantom)."""
import json
import os
import re

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def _with_parameters(nb, **params):
    """Replace the cell tagged "parameters" (papermill's convention) with ``params``."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    defaults = cells[0].source
    for name in params:
        assert re.search(rf"^{name} = ", defaults, re.M), f"{name} is not a notebook parameter"
    cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    return nb


def _execute(name, tmp_path, *, timeout=900, **params):
    """Run ``notebooks/<name>.ipynb`` with ``params`` in its parameters cell, the kernel in
    ``tmp_path``; the executed notebook is also written there (``<name>.ipynb``), to read after a
    failure. Raises ``CellExecutionError`` naming the cell on any failure."""
    nb = _with_parameters(nbformat.read(os.path.join(REPO, "notebooks", f"{name}.ipynb"),
                                        as_version=4), **params)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, str(tmp_path / f"{name}.ipynb"))
    return nb


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") in kind]


def _text(cell):
    """A cell's text outputs, one after the other (each starts on a new line)."""
    return "\n".join(o.get("text", "") if o["output_type"] == "stream"
                     else o.get("data", {}).get("text/plain", "")
                     for o in _outputs(cell, ("stream", "execute_result", "display_data")))


@pytest.mark.slow
def test_ra_vnet_notebook_runs_at_the_tiny_preset(tiny_dataset, tmp_path):
    out = tmp_path / "runs"
    nb = _execute("ra_vnet", tmp_path, DATA=tiny_dataset, PRESET="tiny",
                  VARIANTS=["unet", "ra_vnet"], LOSSES=["dice", "bce"], EPOCHS=1, OUT=str(out),
                  TF_DATA=str(tmp_path / "tf_data"), SEED=0)

    # Table 1 (RA V-Net + BCE) and Tables 2-4 (one run per variant) each trained and scored
    for key in ("unet", "ra_vnet", "ra_vnet+bce"):
        assert (out / key / "metrics.csv").exists(), key
        assert (out / key / "history.csv").exists(), key
    bce = json.loads((out / "ra_vnet+bce" / "config.json").read_text())
    assert bce["training"]["loss"]["name"] == "bce"

    code = [c for c in nb.cells if c.cell_type == "code"]
    figures = [c for c in code if _outputs(c, ("display_data",))
               and any("image/png" in o.get("data", {}) for o in _outputs(c, ("display_data",)))]
    assert len(figures) >= 3, "expected the slice view, the training curves and the overlays"
    text = "\n".join(_text(c) for c in code)
    assert re.search(r"ra_vnet: mean Dice \d\.\d{4} over 1 test cases", text), text[-2000:]
    assert "115,582,002" in text  # the published RA V-Net, counted by the notebook
    diff = float(re.search(r"max \|SavedModel − Keras\| probability: (\S+)", text).group(1))
    assert diff < 1e-4


@pytest.mark.slow
def test_ra_unet_notebook_runs_at_the_tiny_preset(ra_unet_run, tmp_path):
    """The notebook on the session's finished tiny RA-UNet run: it must reuse the three stages
    (nothing retrained, nothing re-exported), reproduce the command line's scores, and draw the
    curves and the Fig. 7-10 pictures."""
    import glob

    run_dir, cli_stdout, _ = ra_unet_run
    with open(os.path.join(run_dir, "stage1_localiser", "config.json")) as f:
        dataset = json.load(f)["dataset"]
    artefacts = [p for pattern in ("history.csv", "model.keras", "saved_model.pb")
                 for p in glob.glob(os.path.join(run_dir, "**", pattern), recursive=True)]
    assert len(artefacts) == 9, artefacts  # three stages, one fold each
    before = {p: os.stat(p).st_mtime_ns for p in artefacts}

    nb = _execute("ra_unet", tmp_path, timeout=600, PRESET="tiny", DATA=dataset, OUT=run_dir,
                  TF_DATA=str(tmp_path / "tf_data"), FOLDS=None, EPOCHS=None, SEED=0,
                  EXPORT=False)

    # no stage retrained, no SavedModel re-exported
    assert {p: os.stat(p).st_mtime_ns for p in artefacts} == before
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(_text(c) for c in code)
    assert text.count("finished run found, not retrained") == 3, text[-2000:]

    # the published networks, counted by the notebook
    assert "RAUNet2D: 747,321 parameters, 641 layers" in text
    assert "RAUNet3D: 4,439,697 parameters, 641 layers" in text
    assert "RAUNetBrain: 12,813,377 parameters, 641 layers" in text

    # the cascade re-evaluated on the one test case gives the command line's scores
    for target, cli_label in (("liver", "liver "), ("tumour", "tumour")):
        ours = re.search(rf"{target}: mean Dice (\d\.\d{{4}}) over 1 test cases", text)
        assert ours, text[-2000:]
        cli = re.search(rf"{cli_label} Dice per case (\d\.\d{{4}})", cli_stdout)
        assert cli and ours.group(1) == cli.group(1), (ours.group(0), cli_stdout)

    figures = [c for c in code if any("image/png" in o.get("data", {})
                                      for o in _outputs(c, ("display_data",)))]
    assert len(figures) >= 3, "expected the training curves and the Fig. 7-10 pictures"
    diff = float(re.search(r"max \|SavedModel − Keras\| probability: (\S+)", text).group(1))
    assert diff < 1e-4


@pytest.mark.slow
def test_msa_unet_notebook_runs_the_ablation_table_at_the_tiny_preset(tiny_dataset, phantom_lits,
                                                                      tmp_path, capsys):
    """The notebook trains Table 2 rows at the tiny preset (the baseline and MSA-UNet here: every
    row's network trains in tests/test_msa_unet.py, and five rows cost the suite two minutes)
    and prints them beside the paper;
    then the command line reuses its MSA-UNet run (nothing retrained) and keras-liver predict
    applies the run's flip TTA on a phantom volume."""
    import nibabel as nib

    from keras_liver.cli import main as cli_main
    from keras_liver.experiments import msa_unet

    out = tmp_path / "runs"
    nb = _execute("msa_unet", tmp_path, PRESET="tiny", DATA=tiny_dataset, OUT=str(out),
                  TF_DATA=str(tmp_path / "tf_data"), ABLATIONS=["unet", "msa_unet"],
                  EPOCHS=None, SEED=0, EXPORT=True)

    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(_text(c) for c in code)
    assert text.count("trained for 1 epochs") == 2, text[-3000:]
    for label in ("UNet", "MSA-UNet"):
        assert re.search(rf"^{re.escape(label)}: mean DSC \d\.\d{{4}} over 1 test cases", text,
                         re.M), label
    assert "306,531,649" in text and "31,054,145" in text   # published sizes, counted
    assert "98.00 ± 0.38" in text                            # the paper's MSA-UNet DSC
    for low, high in re.findall(r"_msam_mask_sigmoid: values in \[(\S+), (\S+)\]", text):
        assert 0.0 <= float(low) <= float(high) <= 1.0
    figures = [c for c in code if any("image/png" in o.get("data", {})
                                      for o in _outputs(c, ("display_data",)))]
    assert len(figures) >= 3, "expected the loss curves, Fig. 7 and the MSAM maps"
    diff = float(re.search(r"max \|SavedModel − Keras\| probability: (\S+)", text).group(1))
    assert diff < 1e-4

    # The command line on the notebook's MSA-UNet run: evaluated, not retrained
    run_dir = out / "msa_unet"
    stamp = (run_dir / "model.keras").stat().st_mtime_ns
    assert msa_unet.main(["--preset", "tiny", "--data", tiny_dataset, "--out", str(run_dir),
                          "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert (run_dir / "model.keras").stat().st_mtime_ns == stamp
    assert "finished run found" in printed.err
    assert "| dice |" in printed.out and "98.00 ± 0.38" in printed.out
    assert "TTA identity+hflip+vflip" in printed.out

    # keras-liver predict reads the run's TTA: the label volume on the input grid
    src = os.path.join(phantom_lits, "volume-1.nii.gz")
    pred = str(tmp_path / "pred.nii.gz")
    assert cli_main(["predict", "--model", str(run_dir), src, "--out", pred,
                     "--no-progress"]) == 0
    ref, got = nib.load(src), nib.load(pred)
    assert got.shape == ref.shape
    assert (got.affine == ref.affine).all()


@pytest.mark.slow
def test_arunet_notebook_runs_at_the_tiny_preset(arunet_run, tmp_path):
    """The notebook on the session's finished tiny Attention Residual UNet run: both models
    reused (nothing retrained, nothing re-exported), the command line's per-class Dice printed
    again, the published parameter counts, the figures and the SavedModel check."""
    import glob

    import pandas as pd

    run_dir, _, _ = arunet_run
    tf_data = os.path.join(os.path.dirname(run_dir), "tf_data")
    artefacts = [p for pattern in ("model.keras", "history.csv", "saved_model.pb")
                 for p in glob.glob(os.path.join(run_dir, "**", pattern), recursive=True)]
    assert len(artefacts) == 6, artefacts  # two models: best model, history, SavedModel each
    before = {p: os.stat(p).st_mtime_ns for p in artefacts}
    # the command line's scores, read before the notebook re-evaluates (and rewrites) them
    metrics = {m: pd.read_csv(os.path.join(run_dir, m, "metrics.csv")).set_index("case")
               for m in ("liver", "vessel")}

    nb = _execute("arunet", tmp_path, DATA=None, PRESET="tiny", LOSS=None, OUT=run_dir,
                  TF_DATA=tf_data, SEED=0)

    # neither model retrained, neither SavedModel re-exported
    assert {p: os.stat(p).st_mtime_ns for p in artefacts} == before
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(_text(c) for c in code)
    assert text.count("finished run found, not retrained") == 2, text[-2000:]

    # the published networks, counted by the notebook, with their gate levels
    assert "liver model (f = 8): 515,812 trainable parameters" in text
    assert "vessel model (f = 16): 2,055,356 trainable parameters" in text
    assert text.count("attention gates on decoder levels 2, 3, 4") == 2

    # the per-class Dice of each model on its held-out cases: the command line's metrics.csv
    for model, classes in (("liver", ("liver", "tumour")), ("vessel", ("vessel", "tumour"))):
        frame = metrics[model]
        n = len(frame.drop(index=["mean", "std", "global"]))
        for cls in classes:
            expected = f"{model} model: {cls} Dice {frame.loc['mean', f'{cls}_dice']:.4f} per case " \
                       f"over {n} test cases"
            assert expected in text, (expected, text[-3000:])

    # the linked prediction names all four labels
    for label in ("label 0 background", "label 1 liver", "label 2 liver tumour",
                  "label 3 vessel"):
        assert label + ":" in text, label

    figures = [c for c in code if any("image/png" in o.get("data", {})
                                      for o in _outputs(c, ("display_data",)))]
    assert len(figures) >= 4, "expected the data, the curves, Figs. 7-8 and the linked output"
    diff = float(re.search(r"max \|SavedModel − Keras\| probability: (\S+)", text).group(1))
    assert diff < 1e-4


@pytest.mark.slow
def test_bada_notebook_runs_at_the_tiny_preset(bada_run, tmp_path):
    """The notebook on the session's finished tiny BADA run: the model reused (not retrained,
    not re-exported), the command line's mean segment Dice printed again, the published
    parameter count, the figures, the four levels' dual attention maps and the SavedModel
    check."""
    import pandas as pd

    run_dir, _, _ = bada_run
    tf_data = os.path.join(os.path.dirname(run_dir), "tf_data")
    artefacts = [os.path.join(run_dir, p)
                 for p in ("model.keras", "history.csv",
                           os.path.join("saved_model", "saved_model.pb"))]
    before = {p: os.stat(p).st_mtime_ns for p in artefacts}
    # the command line's scores, read before the notebook re-evaluates (and rewrites) them
    metrics = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    metrics["case"] = metrics["case"].astype(str)
    metrics = metrics.set_index("case")
    with open(os.path.join(run_dir, "config.json")) as f:
        model_cfg = json.load(f)["model"]

    nb = _execute("bada", tmp_path, DATA=None, PRESET="tiny", ABLATION=None, OUT=run_dir,
                  TF_DATA=tf_data, SEED=0)

    # not retrained, not re-exported
    assert {p: os.stat(p).st_mtime_ns for p in artefacts} == before
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(_text(c) for c in code)
    assert "finished run found, not retrained" in text, text[-2000:]

    # the published network, counted by the notebook
    assert "BADA (F = 32): 8,575,854 parameters" in text
    assert "8,575,854" in text

    # the mean segment Dice on the held-out cases: the command line's metrics.csv
    n = len(metrics.drop(index=["mean", "std", "global"]))
    expected = (f"bada: mean segment Dice {metrics.loc['mean', 'mean_dice']:.4f} per case "
                f"over {n} test cases")
    assert expected in text, (expected, text[-3000:])

    # the dual attention maps of the four decoder levels, in [0, 1], at the levels' sizes
    side, width = model_cfg["input_shape"][0], model_cfg["base_filters"]
    levels = re.findall(r"^level (\d): spatial map (\d+)x(\d+) in \[(\S+), (\S+)\], "
                        r"semantic (\d+) weights in \[(\S+), (\S+)\]$", text, re.M)
    assert sorted(int(m[0]) for m in levels) == [1, 2, 3, 4], text[-3000:]
    for k, h, w, s_lo, s_hi, c, c_lo, c_hi in levels:
        k = int(k)
        assert int(h) == int(w) == side // 2 ** (k - 1)
        assert int(c) == width * 2 ** (k - 1)
        assert 0.0 <= float(s_lo) <= float(s_hi) <= 1.0
        assert 0.0 <= float(c_lo) <= float(c_hi) <= 1.0

    figures = [c for c in code if any("image/png" in o.get("data", {})
                                      for o in _outputs(c, ("display_data",)))]
    assert len(figures) >= 4, "expected the data, the curves, the prediction and the attention maps"
    diff = float(re.search(r"max \|SavedModel − Keras\| probability: (\S+)", text).group(1))
    assert diff < 1e-4
