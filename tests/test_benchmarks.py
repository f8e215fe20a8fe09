"""Smoke test of the benchmarks (``benchmarks/``): each one's ``--quick`` path runs in-process
at tiny sizes and returns rows with the printed table's columns, holding finite, positive
figures. No speed is asserted (the figures depend on the machine and its load)."""
import json
import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import _common, input_pipeline, predict, train_step  # noqa: E402


def _positive(row, columns):
    for c in columns:
        value = row[c]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (c, value)
        assert math.isfinite(value) and value > 0, (c, value)


def test_train_step_quick(tmp_path, capsys):
    out = train_step.main(["--quick", "--models", "ra_vnet:unet", "--repeats", "2",
                           "--json", str(tmp_path / "t.json")])
    (row,) = out["rows"]
    assert set(train_step.COLUMNS) <= set(row)
    _positive(row, ["batch", "params", "GFLOP/step", "steps/s", "slices/s", "GFLOP/s",
                    "peak GFLOP/s", "MFU", "CPU s/step", "MFU (CPU)"])
    assert row["traces"] == 1                       # no retracing across the timed steps
    # the profiler's total is the sum of its per-op breakdown, and the convolution part agrees
    # with the analytic count from the layer shapes (3x forward, first layer's input gradient
    # kept in the graph: ratio in [1, 1.05])
    assert row["flops"]["total"] == row["flops"]["breakdown_total"]
    assert 1.0 <= row["conv check"] <= 1.05
    assert row["MFU"] == pytest.approx(row["GFLOP/s"] / row["peak GFLOP/s"])
    text = capsys.readouterr().out
    assert "| model | preset | input |" in text and "ra_vnet:unet" in text
    assert (tmp_path / "t.json").exists()
    if row["MFU"] < row["target"]:                  # below target -> op-level profile
        ops = row["profile"]["ops"]
        assert ops and all(o["ms/step"] > 0 for o in ops)
        assert any(o["op"].startswith(("Conv", "FusedConv")) for o in ops)


def test_train_step_rejects_unknown_model():
    with pytest.raises(ValueError, match="unknown"):
        train_step.main(["--quick", "--models", "no_such_model"])


def test_input_pipeline_quick(tmp_path):
    train = tmp_path / "train_step.json"  # a train-step row to set the pipeline against
    train.write_text(json.dumps({"rows": [
        {"model": "m", "preset": "tiny", "rank": 2, "input": "32x32x1", "batch": 4,
         "slices/s": 8.0, "CPU s/step": 0.5},
        {"model": "v", "preset": "tiny", "rank": 3, "slices/s": 1.0}]}))
    out = input_pipeline.main(["--quick", "--cases", "1", "--depth", "8", "--size", "64",
                               "--repeats", "1", "--data-dir", str(tmp_path),
                               "--train-json", str(train)])
    (head,) = out["headroom"]                       # the 2-D row only
    assert head["model slices/s"] == 8.0 and head["model slices per CPU s"] == 8.0
    _positive(head, ["headroom", "CPU headroom", "tf.data slices per CPU s"])
    (row,) = out["rows"]
    assert set(input_pipeline.COLUMNS) <= set(row)
    assert row["slices"] == 8                       # both sides saw every slice of the split
    _positive(row, ["tf.data slices/s", "bare loop slices/s", "ratio", "CPU ratio"])
    stages = {s["stage"] for s in out["stages"]["tiny"]}
    assert {"parse", "window + CLAHE (OpenCV)", "window + CLAHE (TF ops)", "resize + target",
            "augment", "augment: flips", "augment: crop + resize",
            "augment: translate"} == stages


def test_bare_loop_matches_pipeline_preprocessing(tmp_path):
    """The bare loop's per-slice preprocessing is the library's NumPy/OpenCV reference."""
    import numpy as np

    from keras_liver.data import preprocessing as prep

    cfg = dict(input_pipeline.pipeline_config("tiny"), augment=None)
    rng = np.random.default_rng(0)
    image = rng.uniform(-300, 400, (48, 40)).astype(np.float32)
    label = (rng.uniform(size=(48, 40)) > 0.7).astype(np.uint8)
    x, y = input_pipeline.BareLoop(cfg).target(*input_pipeline.BareLoop(cfg).preprocess(image, label))
    np.testing.assert_allclose(x, prep.preprocess_image_np(image, cfg), atol=1e-6)
    np.testing.assert_array_equal(y, prep.target_from_label_np(label, cfg))


def test_predict_quick(capsys):
    out = predict.main(["--quick", "--models", "ra_vnet", "--depth", "8", "--repeats", "1"])
    (row,) = out["rows"]
    assert set(predict.COLUMNS) <= set(row)
    _positive(row, ["forward s", "predict s", "ratio", "forward CPU s", "predict CPU s"])
    (part,) = out["breakdown"]
    _positive(part, ["preprocess s", "predict_on_batch s", "sum s"])
    assert "Whole-volume prediction" in capsys.readouterr().out


def test_markdown_table_and_timing():
    text = _common.markdown_table([{"a": 1.23456, "b": "x"}, {"a": float("nan")}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x |", "| n/a |  |"]
    calls = []
    t = _common.time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(t.times) == 3 and len(t.cpu_times) == 3
    assert _common.conv_flops(1, (4, 4), 2, 3, 3) == 2 * 9 * 2 * 3 * 16


def test_train_metrics_quick(tmp_path):
    from benchmarks import train_metrics

    out = train_metrics.main(["--quick", "--repeats", "1", "--json", str(tmp_path / "m.json")])
    rows = {r["metrics"]: r for r in out["rows"]}
    assert list(rows) == ["none", "shared counts", "separate"]
    assert rows["none"]["count"] == 0 and rows["shared counts"]["count"] == rows["separate"]["count"] == 12
    for r in rows.values():
        _positive(r, ["ms/step", "CPU ms/step", "ratio", "CPU ratio"])
    assert rows["none"]["ratio"] == 1.0
    assert json.loads((tmp_path / "m.json").read_text())["rows"][1]["metrics"] == "shared counts"
    with pytest.raises(ValueError, match="unknown model"):
        train_metrics.main(["--quick", "--model", "no_such_model"])
