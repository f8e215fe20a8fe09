"""The ``serve_hu`` SavedModel signature: raw HU in, the run's own preprocessing, test-time
flips and sliding windows in the graph, answered in a fresh interpreter that cannot import
keras_liver (as TF Serving loads no Python), equal to the Python predictors' probabilities
within float32 round-off (``atol=1e-5``).

Runs are untrained small models (a known output is all the comparison needs), one of each
kind: a 2-D window-only run, a 2-D multi-class run, a 2-D CLAHE + TTA run (MSA-UNet-like), and
3-D runs of both RA-UNet-II kinds (liver slabs with Gaussian blending and flips, tumour
patches with mean blending).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import WITHOUT_PROJECT
from keras_liver import export, inference
from test_inference import conv_model, make_run

ATOL = 1e-5

#: name -> (model, data config, run-config extras, input volume shape (x, y, z))
RUNS = {
    "window": (lambda: conv_model((32, 32, 1), seed=1),
               {"kind": "slices", "image_size": [32, 32], "window": [-100, 200]},
               {"threshold": 0.5}, (40, 36, 7)),
    "classes": (lambda: conv_model((32, 32, 1), 3, "softmax", seed=2),
                {"kind": "slices", "target": "classes", "num_classes": 3,
                 "image_size": [32, 32], "normalize": "zscore"},
                {}, (28, 44, 5)),
    "clahe_tta": (lambda: conv_model((32, 32, 1), seed=3),
                  {"kind": "slices", "image_size": [32, 32], "window": [-200, 250],
                   "clahe": {"clip_limit": 2.0, "tile_grid": [4, 4]}},
                  {"inference": {"tta": ["hflip", "vflip"]},
                   "postprocess": {"largest_component": False}}, (48, 40, 4)),
    "liver_slabs": (lambda: conv_model((16, 16, 8, 1), seed=4),
                    {"kind": "liver_slabs", "in_plane": [16, 16], "depth": 8, "stride": 5},
                    {"inference": {"blend": "gaussian", "overlap": 0.5,
                                   "tta": ["hflip", "zflip"], "batch_size": 3}},
                    (30, 25, 13)),
    "tumour_patches": (lambda: conv_model((16, 16, 8, 1), seed=5),
                       {"kind": "tumour_patches", "patch_size": [16, 16, 8]},
                       {"threshold": 0.45}, (40, 22, 6)),
}

#: Loads each SavedModel with keras_liver made unimportable and answers serve_hu (and
#: serving_default) for saved inputs; prints each signature's input and output names.
LOADER = WITHOUT_PROJECT + r"""
report = {}
for job in json.load(open(sys.argv[1])):
    loaded = tf.saved_model.load(job["model_dir"])
    sigs = loaded.signatures
    info = {"signatures": sorted(sigs.keys())}
    out = {}
    if "serve_hu" in sigs:
        fn = sigs["serve_hu"]
        info["serve_hu"] = {"inputs": sorted(fn.structured_input_signature[1]),
                            "outputs": sorted(fn.structured_outputs)}
        res = fn(image_hu=tf.constant(np.load(job["image_hu"])))
        out.update({"hu_" + k: v.numpy() for k, v in res.items()})
    res = sigs["serving_default"](image=tf.constant(np.load(job["image"])))
    out.update({"default_" + k: v.numpy() for k, v in res.items()})
    np.savez(job["out"], **out)
    report[job["name"]] = info
print(json.dumps(report))
"""


def _hu_input(name, volume):
    """What a client sends: 2-D runs the slices ``(N, H, W)``, 3-D runs the volume."""
    return np.ascontiguousarray(np.transpose(volume, (2, 0, 1)) if RUNS[name][1]["kind"] ==
                                "slices" else volume)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every run exported by ``export_run``, its Python prediction, and the answers of one
    fresh interpreter without the project."""
    import warnings

    root = tmp_path_factory.mktemp("serve_hu")
    rng = np.random.default_rng(0)
    jobs, cases = [], {}
    for name, (build, data, extra, shape) in RUNS.items():
        model = build()
        run_dir = make_run(root, name, model, data, **extra)
        volume = rng.normal(40, 250, shape).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model_dir = export.export_run(run_dir)
        predictor = inference.load(run_dir)
        probs = predictor.probabilities(volume)
        window = tuple(model.inputs[0].shape[1:])
        x = rng.random((2, *window), dtype=np.float32)
        paths = {k: str(root / f"{name}_{k}.npy") for k in ("image_hu", "image")}
        np.save(paths["image_hu"], _hu_input(name, volume))
        np.save(paths["image"], x)
        jobs.append({"name": name, "model_dir": model_dir, "out": str(root / f"{name}.npz"),
                     **paths})
        with open(os.path.join(model_dir, export.PREPROCESSING_ASSET)) as f:
            asset = json.load(f)
        cases[name] = {"volume": volume, "probs": probs, "predictor": predictor,
                       "keras": model.predict(x, verbose=0), "asset": asset,
                       "warnings": [str(w.message) for w in caught]}
    job_file = root / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", LOADER, str(job_file)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for job in jobs:
        cases[job["name"]].update(report=report[job["name"]], out=dict(np.load(job["out"])))
    return cases


def _check_against_python(case, name):
    out, probs = case["out"], case["probs"]
    assert case["report"]["serve_hu"] == {"inputs": ["image_hu"],
                                          "outputs": ["label", "probabilities"]}
    got = out["hu_probabilities"]
    assert got.dtype == np.float32 and out["hu_label"].dtype == np.int32
    if RUNS[name][1]["kind"] == "slices":   # (N, H, W, C) -> (x, y, z[, C]) as the predictor
        got = np.transpose(got, (1, 2, 0, 3))
        got = got[..., 0] if got.shape[-1] == 1 else got
        label = np.transpose(out["hu_label"], (1, 2, 0))
    else:
        label = out["hu_label"]
    assert got.shape == probs.shape and label.shape == case["volume"].shape
    np.testing.assert_allclose(got, probs, atol=ATOL)
    threshold = case["asset"]["threshold"]
    expected = np.argmax(got, -1) if got.ndim == 4 else got > threshold
    np.testing.assert_array_equal(label, expected)
    # serving_default is still there and still the bare network
    np.testing.assert_allclose(out["default_probabilities"], case["keras"], atol=ATOL)
    assert case["report"]["signatures"] == ["serve_hu", "serving_default"]


@pytest.mark.parametrize("name", ["window", "classes", "liver_slabs", "tumour_patches"])
def test_serve_hu_equals_the_python_predictor_without_the_project(served, name):
    _check_against_python(served[name], name)


def test_serve_hu_with_clahe_and_tta(served):
    """MSA-UNet-like: window, CLAHE in TF ops (keras_liver.data.preprocessing.clahe), resize,
    and the mean over the identity and both flips, all inside the graph."""
    case = served["clahe_tta"]
    contract = case["asset"]["signatures"]["serve_hu"]
    assert contract["available"] and contract["tta"] == ["hflip", "vflip"]
    assert not case["warnings"]
    _check_against_python(case, "clahe_tta")


def test_a_preprocessing_step_running_python_leaves_serve_hu_out(tmp_path, monkeypatch):
    """A graph op that calls back into Python (tf.numpy_function) cannot be served: the
    export warns, says why in its asset file and keeps serving_default only."""
    import tensorflow as tf

    from keras_liver.data import preprocessing as prep

    monkeypatch.setattr(prep, "normalize", lambda x, method: tf.ensure_shape(
        tf.numpy_function(lambda a: a, [x], tf.float32, stateful=False), x.shape))
    run_dir = make_run(tmp_path, "run", conv_model((8, 8, 1)), {"kind": "slices"})
    with pytest.warns(UserWarning, match="serve_hu left out"):
        model_dir = export.export_run(run_dir)
    with open(os.path.join(model_dir, export.PREPROCESSING_ASSET)) as f:
        contract = json.load(f)["signatures"]["serve_hu"]
    assert not contract["available"] and "tf.numpy_function" in contract["reason"]
    assert sorted(tf.saved_model.load(model_dir).signatures) == ["serving_default"]


def test_the_exported_contract_describes_both_signatures(served):
    two_d = served["window"]["asset"]
    assert two_d["signatures"]["serve_hu"]["input"].startswith("image_hu float32 (N, H, W)")
    assert two_d["signatures"]["serve_hu"]["outputs"] == {
        "probabilities": "float32 (N, H, W, 1)", "label": "int32 (N, H, W)"}
    assert two_d["postprocess"] == {"largest_component": True, "applied_in_graph": False}
    assert served["classes"]["asset"]["signatures"]["serve_hu"]["outputs"]["probabilities"] == \
        "float32 (N, H, W, 3)"
    liver = served["liver_slabs"]["asset"]["signatures"]["serve_hu"]
    assert {k: liver[k] for k in ("window", "steps", "blend", "batch_size", "tta")} == {
        "window": [16, 16, 8], "steps": [8, 8, 4], "blend": "gaussian", "batch_size": 3,
        "tta": ["hflip", "zflip"]}
    tumour = served["tumour_patches"]["asset"]
    assert tumour["postprocess"]["largest_component"] is False and tumour["threshold"] == 0.45
    assert tumour["signatures"]["serve_hu"]["outputs"] == {"probabilities": "float32 (X, Y, Z)",
                                                           "label": "int32 (X, Y, Z)"}
