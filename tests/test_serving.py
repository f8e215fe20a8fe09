"""TF Serving: models.config, the loopback server and the REST/gRPC clients (issue 7, item 3).

The real ``tensorflow_model_server`` cannot run here, so the clients are checked against
:class:`keras_liver.serving.testing.LoopbackServer`, which answers TF Serving's REST (and, with
tensorflow-serving-api, gRPC) contract from SavedModels written by ``keras_liver.export``.
References: the local Keras predictor (``keras_liver.inference.Predictor``), the SavedModel
called in-process, and, for the ``serve_hu`` contract, NumPy.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
import warnings

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO

tf = pytest.importorskip("tensorflow")

from keras_liver.errors import ModelInputError  # noqa: E402
from keras_liver.serving import config as cfg_lib  # noqa: E402
from keras_liver.serving.client import GrpcClient, RestClient, ServingError  # noqa: E402
from keras_liver.serving.testing import LoopbackServer, grpc_available  # noqa: E402

PREP = {"window": [-100.0, 200.0], "image_size": [32, 32]}
#: One worker runs the module (make test: --dist loadgroup), so the exports are built once.
#: The mark is xdist's; with the plugin off (``-p no:xdist``) it is unknown and does nothing.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.xdist_group("serving")
needs_grpc = pytest.mark.skipif(not grpc_available(),
                                reason="tensorflow-serving-api (the serving extra) not installed")


# --------------------------------------------------------------------------- models.config

def test_committed_models_config_is_the_project_config():
    with open(os.path.join(REPO, "serving", "models.config")) as f:
        text = f.read()
    assert text == cfg_lib.project_models_config()
    models = cfg_lib.parse_models_config(text)
    assert [m.name for m in models] == [m.name for m in cfg_lib.PROJECT_MODELS]
    for m in models:
        assert m.base_path == f"/models/{m.name}" and m.policy == "specific" and m.versions == (1,)
    for m in cfg_lib.PROJECT_MODELS:
        assert f"keras-liver export {m.run_dir} --out /models/{m.name} --version 1" in text


def test_project_models_are_the_experiments_run_directories():
    from keras_liver.experiments import arunet, ra_unet

    dirs = {m.name: m.run_dir for m in cfg_lib.PROJECT_MODELS}
    for stage, folder in ra_unet.STAGE_DIRS.items():
        name = {"localiser": "ra_unet_localiser", "liver": "ra_unet_liver",
                "tumour": "ra_unet_tumour"}[stage]
        assert dirs[name] == f"runs/{ra_unet.PAPER}/{folder}"
    for model in arunet.MODELS:
        assert dirs[f"arunet_{model}"] == f"runs/{arunet.PAPER}/{model}"
    experiments = {m.experiment for m in cfg_lib.PROJECT_MODELS}
    assert experiments == {os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "experiments"))}
    for m in cfg_lib.PROJECT_MODELS:
        if m.experiment not in ("ra_unet", "arunet"):
            assert m.run_dir == f"runs/{m.experiment}"


TEXT = """
# comment
model_config_list {
  config {
    name: 'a'  base_path: "/models/a"   # trailing comment
    model_platform: "tensorflow",
    model_version_policy: { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config: { name: "b" base_path: "/models/b" model_version_policy { latest { num_versions: 2 } } }
  config { name: "c" base_path: "/models/c" model_version_policy { all {} } }
  config { name: "d" base_path: "/models/d" }
}
"""


def test_config_reader_reads_the_text_format():
    a, b, c, d = cfg_lib.parse_models_config(TEXT)
    assert (a.name, a.base_path, a.policy, a.versions, a.labels) == (
        "a", "/models/a", "specific", (1, 3), {"stable": 1, "canary": 3})
    assert (b.policy, b.num_versions, c.policy, d.policy, d.num_versions) == ("latest", 2, "all",
                                                                              "latest", 1)
    assert a.select_versions([1, 2, 3, 4]) == [1, 3]
    assert b.select_versions([1, 2, 3, 4]) == [3, 4]
    assert c.select_versions([4, 1]) == [1, 4]
    # written and read back: the same entries
    again = cfg_lib.parse_models_config(cfg_lib.models_config_text([a, b, c, d], header="h\nh2"))
    assert [(m.name, m.base_path, m.policy, m.num_versions, m.versions, m.labels) for m in again] \
        == [(m.name, m.base_path, m.policy, m.num_versions, m.versions, m.labels) for m in (a, b, c, d)]


@needs_grpc
def test_config_reader_agrees_with_protobuf_text_format():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(REPO, "serving", "models.config")) as f:
        committed = f.read()
    for text in (TEXT, committed):
        proto = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        ours = cfg_lib.parse_models_config(text)
        assert len(proto.model_config_list.config) == len(ours)
        for p, m in zip(proto.model_config_list.config, ours):
            kind = p.model_version_policy.WhichOneof("policy_choice") or "latest"
            assert (p.name, p.base_path, p.model_platform or "tensorflow", kind) == (
                m.name, m.base_path, m.platform, m.policy)
            if kind == "specific":
                assert tuple(sorted(p.model_version_policy.specific.versions)) == m.versions
            if kind == "latest" and p.model_version_policy.HasField("latest"):
                assert p.model_version_policy.latest.num_versions == m.num_versions
            assert dict(p.version_labels) == m.labels


@pytest.mark.parametrize("text, problem", [
    ("model_config_list { config { name: 'a' base_path: '/m/a' colour: 1 } }",
     "line 1: unknown field 'colour' in config"),
    ("model_config_list {\n config { name: 'a' base_path: '/m/a' }\n", "expected '}'"),
    ("model_config_list { config { name: 'a' } }", "needs a name and a base_path"),
    ("model_config_list { config { name: 'a' base_path: '/a' }\n config { name: 'a' "
     "base_path: '/b' } }", "repeated: ['a']"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_version_policy "
     "{ specific { } } } }", "'specific' lists no versions"),
    ("model_config_list {\n\n config { name: a base_path: '/a' } }", "line 3: field 'name' must "
     "be a quoted string"),
])
def test_config_reader_errors_name_file_and_line(text, problem):
    with pytest.raises(cfg_lib.ModelConfigError) as err:
        cfg_lib.parse_models_config(text, where="my.config")
    assert str(err.value).startswith("my.config: line ") and problem in str(err.value)


# --------------------------------------------------------------------------- fixtures

def _tiny_model(builder, seed, **kwargs):
    import keras

    keras.utils.set_random_seed(seed)
    model = builder(input_shape=(32, 32, 1), **kwargs)
    # An untrained head answers ~0.5 everywhere; a steeper one spreads the probabilities so
    # thresholded labels are not decided by float rounding.
    head = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][-1]
    head.kernel.assign(head.kernel * 300.0)
    return model


def _contract_module(volumetric: bool):
    """A SavedModel with a ``serve_hu`` signature of the export contract and a NumPy-known
    answer: probabilities = sigmoid((HU - 100) / 25), label = probabilities > 0.5."""
    spec = tf.TensorSpec((None, None, None), tf.float32, name="image_hu")

    @tf.function(input_signature=[spec])
    def serve_hu(image_hu):
        p = tf.sigmoid((image_hu - 100.0) / 25.0)
        label = tf.cast(p > 0.5, tf.int32)
        return {"probabilities": p if volumetric else p[..., tf.newaxis], "label": label}

    module = tf.Module()
    module.serve_hu = serve_hu
    return module, serve_hu


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``BASE/NAME/VERSION`` SavedModels, a models.config over them, the Keras models."""
    from keras_liver.export import export_model
    from keras_liver.models import AttentionResUNet, RAVNet

    base = tmp_path_factory.mktemp("exports")
    models = {
        ("tiny2d", 1): _tiny_model(RAVNet, 0, base_filters=4, depth=2),
        ("tiny2d", 2): _tiny_model(RAVNet, 1, base_filters=4, depth=2),
        ("tiny_classes", 1): _tiny_model(AttentionResUNet, 2, base_filters=2, num_classes=3),
    }
    for (name, version), model in models.items():
        prep = dict(PREP, target="classes") if name == "tiny_classes" else PREP
        # version 2 only answers raw batches: no preprocessing, so no serve_hu to trace
        export_model(model, str(base / name / str(version)), threshold=0.5,
                     preprocessing=None if version == 2 else prep)
    for name, volumetric in (("hu2d", False), ("hu3d", True)):
        module, fn = _contract_module(volumetric)
        tf.saved_model.save(module, str(base / name / "1"), signatures={"serve_hu": fn})
    configs = [cfg_lib.ModelConfig("tiny2d", "/models/tiny2d", policy="all", labels={"stable": 1}),
               cfg_lib.ModelConfig("tiny_classes", "/models/tiny_classes"),
               cfg_lib.ModelConfig("hu2d", "/models/hu2d"),
               cfg_lib.ModelConfig("hu3d", "/models/hu3d"),
               cfg_lib.ModelConfig("absent", "/models/absent", policy="specific", versions=(1,))]
    config = base / "models.config"
    config.write_text(cfg_lib.models_config_text(configs))
    return {"base": str(base), "config": str(config), "models": models}


@pytest.fixture(scope="module")
def server(exports):
    with LoopbackServer(exports["config"], {"/models": exports["base"]},
                        grpc=grpc_available()) as srv:
        yield srv


def _volume(shape=(40, 36, 5), seed=0):
    """HU-like volume: soft tissue with a bright blob, air, noise (asymmetric in x and y)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    vol = -80.0 + 30.0 * rng.standard_normal(shape)
    vol[((x - 14) ** 2 + (y - 20) ** 2) < 64] = 180.0
    vol[x > 33] = -1000.0
    return vol.astype(np.float32)


def _predictor(model, prep=PREP, **kwargs):
    from keras_liver.inference import Predictor

    return Predictor.from_config(model, {"data": prep, "threshold": 0.5}, **kwargs)


def _close_labels(label, label_ref, probs_ref, threshold=0.5):
    """Labels agree wherever the reference probability is not within 1e-4 of the threshold."""
    decided = np.abs(probs_ref - threshold) > 1e-4
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(label[decided], label_ref[decided])


def _write_nifti(path, data):
    affine = np.array([[0.0, -0.7, 0.0, 12.0], [0.8, 0.0, 0.0, -3.0],
                       [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])
    img = nib.Nifti1Image(data.astype(np.int16), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"serving test"
    nib.save(img, str(path))
    return affine


# --------------------------------------------------------------------------- REST round trips

def test_rest_serving_default_round_trip_matches_local_predictor(server, exports, tmp_path):
    vol = _volume()
    model = exports["models"][("tiny2d", 1)]
    probs_ref, label_ref = _predictor(model, largest_component=False).predict(vol)

    client = RestClient(server.rest_url, model="tiny2d", version=1, signature="serving_default",
                        preprocessing=os.path.join(exports["base"], "tiny2d", "1"),
                        largest_component=False, batch_size=2)
    probs, label = client.predict_volume(vol)
    assert probs.shape == vol.shape and label.shape == vol.shape and label.dtype == np.uint8
    np.testing.assert_allclose(probs, probs_ref, atol=2e-5)
    _close_labels(label, label_ref, probs_ref)

    # the same batches through the SavedModel in this process: JSON carries float32 exactly
    from keras_liver.data import preprocessing as prep

    fn = tf.saved_model.load(os.path.join(exports["base"], "tiny2d", "1")).signatures["serving_default"]
    slices = prep.preprocess_volume(vol, PREP)
    local = np.concatenate([fn(image=tf.constant(slices[i:i + 2]))["probabilities"].numpy()
                            for i in range(0, len(slices), 2)])
    np.testing.assert_array_equal(probs, prep.restore_slices(local, vol.shape[:2])[..., 0])

    # predict_file: labels on the input grid with the input's affine and header, largest component
    src, out = tmp_path / "in.nii.gz", tmp_path / "pred" / "out.nii.gz"
    affine = _write_nifti(src, vol)
    lcc_client = RestClient(server.rest_url, model="tiny2d", version=1, signature="serving_default",
                            preprocessing=os.path.join(exports["base"], "tiny2d", "1"))
    assert lcc_client.predict_file(str(src), str(out)) == str(out)
    img = nib.load(str(out))
    assert img.shape == vol.shape and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert img.header.get_zooms() == pytest.approx((0.8, 0.7, 2.5))
    assert img.header["descrip"].tobytes().rstrip(b"\0") == b"serving test"
    from keras_liver.postprocess import largest_component

    _, label_file_ref = client.predict_volume(np.asarray(nib.load(str(src)).dataobj, np.float32))
    np.testing.assert_array_equal(np.asarray(img.dataobj),
                                  largest_component(label_file_ref).astype(np.uint8))
    assert [f for f in os.listdir(out.parent) if f.startswith(".partial")] == []


def test_rest_multiclass_and_tta(server, exports):
    vol = _volume(seed=1)
    model = exports["models"][("tiny_classes", 1)]
    prep = dict(PREP, target="classes")
    probs_ref, label_ref = _predictor(model, prep).predict(vol)
    client = RestClient(server.rest_url, model="tiny_classes", signature="serving_default",
                        preprocessing={"preprocessing": prep, "threshold": 0.5})
    probs, label = client.predict_volume(vol)
    assert probs.shape == (*vol.shape, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, probs_ref, atol=2e-5)
    decided = np.sort(probs_ref, axis=-1)
    decided = decided[..., -1] - decided[..., -2] > 1e-4
    np.testing.assert_array_equal(label[decided], label_ref[decided])

    # the run's flips (inference.tta of the export's json) unless tta= says otherwise
    tta_ref, _ = _predictor(model, prep, tta=("vflip", "hflip")).predict(vol)
    run = {"preprocessing": prep, "inference": {"tta": ["vflip", "hflip"]}}
    tta_probs, _ = RestClient(server.rest_url, model="tiny_classes", signature="serving_default",
                              preprocessing=run).predict_volume(vol)
    np.testing.assert_allclose(tta_probs, tta_ref, atol=2e-5)
    assert np.abs(tta_probs - probs).max() > 1e-3  # the flips changed something
    no_tta, _ = RestClient(server.rest_url, model="tiny_classes", signature="serving_default",
                           preprocessing=run, tta=()).predict_volume(vol)
    np.testing.assert_array_equal(no_tta, probs)


@pytest.mark.parametrize("name", ["hu2d", "hu3d"])
def test_rest_serve_hu_contract_assembles_the_volume(server, name):
    vol = _volume(shape=(21, 26, 7))
    vol[2:5, 2:5, 1:3] = 300.0  # a second, smaller bright component
    ref = vol > 100.0
    from keras_liver.postprocess import largest_component

    client = RestClient(server.rest_url, model=name, batch_size=3)  # 7 slices: 3 + 3 + 1
    probs, label = client.predict_volume(vol)
    np.testing.assert_allclose(probs, 1.0 / (1.0 + np.exp(-(vol - 100.0) / 25.0)), atol=1e-6)
    np.testing.assert_array_equal(label, largest_component(ref))
    _, all_parts = RestClient(server.rest_url, model=name,
                              largest_component=False).predict_volume(vol)
    np.testing.assert_array_equal(all_parts, ref)
    assert largest_component(ref).sum() < ref.sum()
    # the caller's threshold over the run's: p > 0.9 <=> HU > 100 + 25 ln 9
    _, strict = RestClient(server.rest_url, model=name, threshold=0.9,
                           largest_component=False).predict_volume(vol)
    np.testing.assert_array_equal(strict, vol > 100.0 + 25.0 * np.log(9.0))
    # a 3-D model with C > 1 channels answers (X, Y, Z, C) like a 2-D one: the run's json
    # (signatures.serve_hu.kind) or volumetric= says which it is
    run3d = {"preprocessing": {"kind": "liver_slabs", "window": [-100, 200]},
             "signatures": {"serve_hu": {"kind": "liver_slabs"}}}
    assert RestClient(server.rest_url, model="hu2d", preprocessing=run3d)._mode() == "hu_volume"
    assert RestClient(server.rest_url, model="hu2d", volumetric=True)._mode() == "hu_volume"
    assert RestClient(server.rest_url, model="hu2d")._mode() == "hu_slices"


@pytest.mark.parametrize("name", ["tiny2d", "tiny_classes"])
def test_rest_serve_hu_of_an_export_matches_local_predictor(server, exports, name):
    """keras_liver.export's serve_hu (2-D): raw HU slices in, the model's preprocessing in the
    graph, probabilities and labels on the input grid."""
    model = exports["models"][(name, 1)]
    prep = dict(PREP, target="classes") if name == "tiny_classes" else PREP
    vol = _volume(seed=2)
    probs_ref, label_ref = _predictor(model, prep, largest_component=False).predict(vol)
    client = RestClient(server.rest_url, model=name, version=1, largest_component=False,
                        batch_size=2)
    assert client._mode() == "hu_slices"
    probs, label = client.predict_volume(vol)
    assert probs.shape == probs_ref.shape and label.shape == vol.shape
    np.testing.assert_allclose(probs, probs_ref, atol=2e-5)
    if name == "tiny2d":
        _close_labels(label, label_ref, probs_ref)
    else:
        top2 = np.sort(probs_ref, axis=-1)
        decided = top2[..., -1] - top2[..., -2] > 1e-4
        np.testing.assert_array_equal(label[decided], label_ref[decided])


# --------------------------------------------------------------------------- REST API details

def test_rest_status_metadata_versions_and_labels(server, exports):
    c = RestClient(server.rest_url, model="tiny2d", signature="serving_default")
    assert c.status() == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("2", "1")]}
    assert RestClient(server.rest_url, model="tiny2d", version=1).status()[
        "model_version_status"][0]["version"] == "1"
    md = c.metadata()
    assert md["model_spec"] == {"name": "tiny2d", "signature_name": "", "version": "2"}
    sig = md["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    image = sig["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "32", "32", "1"]
    assert sig["outputs"]["label"]["dtype"] == "DT_INT32"
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"

    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    out = {v: RestClient(server.rest_url, model="tiny2d", version=v,
                         signature="serving_default").predict(x) for v in (1, 2)}
    latest = c.predict(x)
    stable = RestClient(server.rest_url, model="tiny2d", version_label="stable",
                        signature="serving_default").predict({"image": x})
    assert out[1]["label"].dtype == np.int32 and out[1]["probabilities"].dtype == np.float32
    assert out[1]["probabilities"].shape == (3, 32, 32, 1) and out[1]["label"].shape == (3, 32, 32)
    for v, model in ((1, exports["models"][("tiny2d", 1)]), (2, exports["models"][("tiny2d", 2)])):
        np.testing.assert_allclose(out[v]["probabilities"], model(x, training=False), atol=2e-5)
    assert np.abs(out[1]["probabilities"] - out[2]["probabilities"]).max() > 1e-2
    np.testing.assert_array_equal(latest["probabilities"], out[2]["probabilities"])
    np.testing.assert_array_equal(stable["probabilities"], out[1]["probabilities"])
    assert server.missing == [f"absent: version(s) [1] not found in "
                              f"{os.path.join(exports['base'], 'absent')}"]


def _post(url, body: bytes | dict):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_row_format_and_bad_payloads(server):
    url = f"{server.rest_url}/v1/models/tiny2d/versions/1:predict"
    x = np.random.default_rng(1).random((2, 32, 32, 1), dtype=np.float32)
    status, columnar = _post(url, {"signature_name": "serving_default", "inputs": {"image": x.tolist()}})
    assert status == 200 and set(columnar["outputs"]) == {"label", "probabilities"}
    for instances in ([{"image": s.tolist()} for s in x], x.tolist()):
        status, rows = _post(url, {"signature_name": "serving_default", "instances": instances})
        assert status == 200 and len(rows["predictions"]) == 2
        for i, row in enumerate(rows["predictions"]):
            assert row["label"] == columnar["outputs"]["label"][i]
            assert row["probabilities"] == columnar["outputs"]["probabilities"][i]
    # bare tensor in "inputs" for a one-input signature; default signature when not named
    status, bare = _post(url, {"inputs": x.tolist()})
    assert status == 200 and bare == columnar

    bad = [
        (b"{not json", 400, "JSON Parse error"),
        ({"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
        ({"inputs": {"image": x.tolist()}, "instances": x.tolist()}, 400, "Not both"),
        ({"inputs": {"image": [[1.0, 2.0], [3.0]]}}, 400, "rectangular"),
        ({"inputs": {"image": [[[["a"]]]]}}, 400, "key: image"),
        ({"inputs": {"image": np.zeros((1, 16, 16, 1)).tolist()}}, 400, ""),
        ({"inputs": {"picture": x.tolist()}}, 400, "input tensor alias not found in signature: "
                                                   "picture. Inputs expected to be in the set {image}"),
        ({"signature_name": "nope", "inputs": x.tolist()}, 400,
         'Serving signature name: "nope" not found in signature def'),
    ]
    for body, code, message in bad:
        status, answer = _post(url, body)
        assert status == code and set(answer) == {"error"} and message in answer["error"], (body, answer)
    assert _post(f"{server.rest_url}/v1/models/tiny2d:classify", {"examples": []})[0] == 501
    assert _post(f"{server.rest_url}/v1/models/absent:predict", {"inputs": [1.0]}) == (
        404, {"error": "Servable not found for request: Latest(absent)"})


def test_rest_errors_name_url_model_and_server_message(server, exports, tmp_path):
    x = np.zeros((1, 32, 32, 1), np.float32)
    with pytest.raises(ServingError) as err:
        RestClient(server.rest_url, model="nope").predict(x)
    msg = str(err.value)
    assert server.rest_url in msg and "model 'nope'" in msg and err.value.code == "HTTP 404"
    assert "Servable not found for request: Latest(nope)" in msg
    with pytest.raises(ServingError, match=r"Specific\(tiny2d, 7\)"):
        RestClient(server.rest_url, model="tiny2d", version=7).metadata()
    with pytest.raises(ServingError, match="Unrecognized servable version label: beta"):
        RestClient(server.rest_url, model="tiny2d", version_label="beta").status()
    with pytest.raises(ServingError, match=r"no signature 'serving_default'; it serves \['serve_hu'\]"):
        RestClient(server.rest_url, model="hu2d", signature="serving_default").predict_volume(_volume())
    with pytest.raises(ServingError) as err:  # a 400 from the server, through the client
        RestClient(server.rest_url, model="tiny2d", signature="serving_default").predict(
            np.zeros((1, 8, 8, 1), np.float32))
    assert err.value.code == "HTTP 400" and ":predict" in str(err.value)
    with pytest.raises(ValueError, match="pass preprocessing="):
        RestClient(server.rest_url, model="tiny2d",
                   signature="serving_default").predict_volume(_volume())
    with pytest.raises(ModelInputError, match="the model takes"):
        RestClient(server.rest_url, model="tiny2d", signature="serving_default",
                   preprocessing={"window": [-100, 200]}).predict_volume(_volume())

    # nothing listens: connection refused
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ServingError, match=rf"TF Serving at http://127.0.0.1:{port} \(model "
                                           r"'ra_vnet', signature 'serve_hu'\): cannot reach"):
        RestClient(f"http://127.0.0.1:{port}").status()
    # something accepts the connection but never answers: timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ServingError, match=r"no answer within 0.3 s"):
            RestClient(url, timeout=0.3).status()

    # a failed prediction writes nothing and leaves an existing output alone
    src = tmp_path / "in.nii.gz"
    _write_nifti(src, _volume())
    new, old = tmp_path / "new.nii.gz", tmp_path / "old.nii.gz"
    old.write_bytes(b"keep")
    for out in (new, old):
        with pytest.raises(ServingError):
            RestClient(server.rest_url, model="nope").predict_file(str(src), str(out))
    assert not new.exists() and old.read_bytes() == b"keep"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".partial")] == []

    with pytest.raises(ValueError, match="url must be"):
        RestClient("localhost:8501")
    with pytest.raises(ValueError, match="not both"):
        RestClient(server.rest_url, version=1, version_label="stable")


# --------------------------------------------------------------------------- gRPC

@needs_grpc
def test_grpc_client_matches_rest(server, exports):
    vol = _volume(seed=3)
    kw = dict(model="tiny2d", version=1, signature="serving_default",
              preprocessing=os.path.join(exports["base"], "tiny2d", "1"), batch_size=3)
    rest = RestClient(server.rest_url, **kw)
    with GrpcClient(server.grpc_target, **kw) as grpc_client:
        assert grpc_client.status() == rest.status()
        g_md, r_md = grpc_client.metadata(), rest.metadata()
        assert g_md["metadata"] == r_md["metadata"]
        assert g_md["model_spec"]["name"] == "tiny2d" and g_md["model_spec"]["version"] == "1"
        g_probs, g_label = grpc_client.predict_volume(vol)
    r_probs, r_label = rest.predict_volume(vol)
    np.testing.assert_array_equal(g_probs, r_probs)
    np.testing.assert_array_equal(g_label, r_label)

    with GrpcClient(server.grpc_target, model="hu3d") as hu:
        probs, label = hu.predict_volume(vol)
    np.testing.assert_allclose(probs, 1.0 / (1.0 + np.exp(-(vol - 100.0) / 25.0)), atol=1e-6)
    from keras_liver.postprocess import largest_component

    np.testing.assert_array_equal(label, largest_component(vol > 100.0))

    with pytest.raises(ServingError) as err:
        GrpcClient(server.grpc_target, model="nope").predict(np.zeros((1, 32, 32, 1), np.float32))
    assert err.value.code == "gRPC NOT_FOUND" and server.grpc_target in str(err.value)
    assert "Servable not found for request: Latest(nope)" in str(err.value)
    with pytest.raises(ServingError, match="gRPC INVALID_ARGUMENT"):
        GrpcClient(server.grpc_target, **kw).predict(np.zeros((2, 8, 8, 1), np.float32))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ServingError, match=r"gRPC (UNAVAILABLE|DEADLINE_EXCEEDED)"):
        GrpcClient(f"127.0.0.1:{port}", timeout=5).status()


def test_grpc_client_without_the_serving_extra_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(ImportError, match=r'pip install "keras-liver\[serving\]"'):
        GrpcClient("localhost:8500")


# --------------------------------------------------------------------------- helpers and CLI

def test_write_models_config_and_cli(server, exports, tmp_path, capsys):
    from keras_liver.serving.__main__ import main

    out = tmp_path / "models.config"
    assert main(["write-config", exports["base"], "--out", str(out)]) == 0
    models = {m.name: m for m in cfg_lib.read_models_config(str(out))}
    assert sorted(models) == ["hu2d", "hu3d", "tiny2d", "tiny_classes"]
    assert models["tiny2d"].versions == (1, 2) and models["tiny2d"].base_path == "/models/tiny2d"
    assert cfg_lib.scan_exports(exports["base"])["tiny2d"] == [1, 2]

    src, pred = tmp_path / "in.nii.gz", tmp_path / "pred.nii.gz"
    _write_nifti(src, _volume(shape=(12, 10, 4)))
    assert main(["predict", str(src), str(pred), "--url", server.rest_url, "--model", "hu2d"]) == 0
    assert nib.load(str(pred)).shape == (12, 10, 4)
    assert main(["predict", str(src), str(pred), "--url", server.rest_url, "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-liver serving: error: TF Serving at ") and "Latest(nope)" in err
    assert main(["write-config", str(tmp_path / "empty")]) == 2
