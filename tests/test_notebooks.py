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


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") in kind]


def _text(cell):
    return "".join(o.get("text", "") if o["output_type"] == "stream"
                   else o.get("data", {}).get("text/plain", "")
                   for o in _outputs(cell, ("stream", "execute_result", "display_data")))


@pytest.mark.slow
def test_ra_vnet_notebook_runs_at_the_tiny_preset(tiny_dataset, tmp_path):
    nb = nbformat.read(os.path.join(REPO, "notebooks", "ra_vnet.ipynb"), as_version=4)
    out = tmp_path / "runs"
    nb = _with_parameters(nb, DATA=tiny_dataset, PRESET="tiny", VARIANTS=["unet", "ra_vnet"],
                          LOSSES=["dice", "bce"], EPOCHS=1, OUT=str(out),
                          TF_DATA=str(tmp_path / "tf_data"), SEED=0)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any failure

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
