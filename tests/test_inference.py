"""Whole-volume prediction (keras_liver.inference, keras_liver.sliding_window, keras-liver
predict): window geometry and blending worked by hand, flip TTA, the 2-D and 3-D predictors,
and every model type on a phantom volume and the LiTS-117 crop through the command line.

Runs are built from untrained tiny models (the ``tiny`` presets' model configs, or a few
hand-made layers where the test needs a known output), saved as ``training.train`` writes
them: ``model.keras``, ``config.json`` and ``preprocessing.json``.
"""
import json
import os

import keras
import nibabel as nib
import numpy as np
import pytest

from conftest import assert_label_volume_on_input_grid
from keras_liver import inference, sliding_window, training
from keras_liver.cascade import RAUNetCascade, write_cascade
from keras_liver.cli import main
from keras_liver.data import preprocessing as prep
from keras_liver.data import volumetric
from keras_liver.data.volumes import read_volume, write_volume
from keras_liver.errors import DataError, ModelInputError
from keras_liver.experiments import common
from keras_liver.linked import LinkedLiverVessel, write_linked

#: A non-trivial, non-axis-aligned geometry for the written inputs.
AFFINE = np.array([[0.0, -0.7, 0.0, 10.0], [-0.9, 0.0, 0.0, 20.0], [0.0, 0.0, 2.5, -30.0],
                   [0.0, 0.0, 0.0, 1.0]])


def make_run(root, name, model, data, **config):
    """A run directory as :func:`keras_liver.training.train` leaves it, for ``model``."""
    run_dir = os.path.join(str(root), name)
    os.makedirs(run_dir, exist_ok=True)
    model.save(os.path.join(run_dir, training.BEST_MODEL))
    module = volumetric if volumetric.is_volumetric(data) else prep
    data = module.resolve_config(data)
    training.write_json(os.path.join(run_dir, training.CONFIG_FILE),
                        {"model": {"name": model.name}, "data": data, "training": {}, "seed": 0,
                         **config})
    training.write_json(os.path.join(run_dir, training.PREPROCESSING_FILE), data)
    return run_dir


def conv_model(shape, channels=1, activation="sigmoid", seed=0, name="conv"):
    """Two small convolutions (a model with a spatially varying, non-symmetric output)."""
    keras.utils.set_random_seed(seed)
    conv = keras.layers.Conv2D if len(shape) == 3 else keras.layers.Conv3D
    inputs = keras.Input(shape)
    x = conv(3, 3, padding="same", activation="tanh", name=f"{name}_conv1")(inputs)
    outputs = conv(channels, 3, padding="same", activation=activation, name=f"{name}_head")(x)
    return keras.Model(inputs, outputs, name=name)


def rescaling(shape, scale=1.0, offset=0.0, name="rescale"):
    """``scale * input + offset``: flip equivariant, output known by hand."""
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Rescaling(scale, offset)(inputs), name=name)


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- window geometry

def test_window_starts_end_on_the_last_window_and_match_the_training_tiling():
    assert sliding_window.window_starts(45, 32, 20) == [0, 13]
    assert sliding_window.window_starts(100, 32, 20) == [0, 20, 40, 60, 68]
    assert sliding_window.window_starts(64, 32, 16) == [0, 16, 32]
    assert sliding_window.window_starts(12, 32, 20) == [0]           # padded by the caller
    for n, w, s in [(45, 32, 20), (100, 32, 20), (33, 32, 1), (200, 17, 9), (32, 32, 20)]:
        assert sliding_window.window_starts(n, w, s) == list(volumetric.slab_starts(n, w, s))
    # overlap -> step: at least that overlap
    assert sliding_window.step_for_overlap(32, 0.5) == 16
    assert sliding_window.step_for_overlap(32, 0.375) == 20        # RA-UNet's stride 20 of 32
    assert sliding_window.step_for_overlap(32, 0.0) == 32
    assert sliding_window.step_for_overlap(3, 0.9) == 1
    with pytest.raises(ValueError, match="overlap"):
        sliding_window.step_for_overlap(32, 1.0)
    starts = sliding_window.grid_starts((40, 20, 8), (16, 20, 8), (8, 10, 4))
    assert starts == [(x, 0, 0) for x in (0, 8, 16, 24)]


def test_an_image_smaller_than_the_window_is_padded_and_cropped_back():
    image = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    seen = []

    def model(batch):
        seen.append(batch.shape)
        return batch * 2.0 + 1.0

    out = sliding_window.sliding_window_inference(model, image, (8, 4, 4), overlap=0.5,
                                                  pad_value=-7.0, batch_size=3)
    assert out.shape == (5, 6, 3, 1)
    np.testing.assert_allclose(out[..., 0], image * 2 + 1)
    # x and z padded to 8 and 4, y tiled by starts 0 and 2: two windows in one full batch
    assert seen == [(3, 8, 4, 4, 1)]


def test_gaussian_importance_map_is_nnunets():
    g = sliding_window.importance_map((4, 1, 6), "gaussian")
    assert g.shape == (4, 1, 6) and g.dtype == np.float32
    assert g[2, 0, 3] == 1.0 and g.min() > 0
    # sigma = 4/8 and 6/8; a sampled, normalised Gaussian divided by its centre value
    x = np.exp(-((np.arange(4) - 2) ** 2) / (2 * 0.5 ** 2))
    z = np.exp(-((np.arange(6) - 3) ** 2) / (2 * 0.75 ** 2))
    np.testing.assert_allclose(g[:, 0, :], np.outer(x, z), rtol=1e-5)
    g = sliding_window.importance_map((21,), "gaussian")
    assert g.min() > 0 and int(np.argmax(g)) == 10
    np.testing.assert_array_equal(sliding_window.importance_map((3, 4), "mean"), 1)
    with pytest.raises(ValueError, match="blend"):
        sliding_window.importance_map((3, 4), "median")


def test_mean_and_gaussian_blending_worked_by_hand():
    """Windows of 4 along x over 6 voxels, step 2: starts 0 and 2. The first window predicts
    1 everywhere, the second 3. Mean: 1, 1, 2, 2, 3, 3. Gaussian (sigma 0.5, centre voxel 2 of
    the window): weights w = (e^-8, e^-2, 1, e^-2) per window position, so voxel 2 (position 2
    of window one, 0 of window two) is (1 * 1 + 3 * e^-8) / (1 + e^-8), voxel 3 is
    (1 * e^-2 + 3 * e^-2) / (2 e^-2) = 2, voxels 4 and 5 lie in window two only."""
    image = np.zeros((6, 1, 1), np.float32)
    calls = []

    def model(batch):
        calls.append(batch.shape[0])
        out = np.zeros(batch.shape, np.float32)
        out[0], out[1] = 1.0, 3.0
        return out

    mean = sliding_window.sliding_window_inference(model, image, (4, 1, 1), steps=(2, 1, 1),
                                                   batch_size=2)[:, 0, 0, 0]
    np.testing.assert_allclose(mean, [1, 1, 2, 2, 3, 3])
    gauss = sliding_window.sliding_window_inference(model, image, (4, 1, 1), steps=(2, 1, 1),
                                                    blend="gaussian", batch_size=2)[:, 0, 0, 0]
    e2, e8 = np.exp(-2.0), np.exp(-8.0)
    expected = [1, 1, (1 + 3 * e8) / (1 + e8), (e2 + 3 * e2) / (2 * e2), 3, 3]
    np.testing.assert_allclose(gauss, expected, rtol=1e-6)
    assert calls == [2, 2]


def test_windows_go_in_full_batches_with_the_padding_dropped():
    image = np.random.default_rng(0).random((10, 1, 1)).astype(np.float32) + 0.5
    batches = []

    def model(batch):
        batches.append(batch.copy())
        return batch

    out = sliding_window.blend_windows(model, image, [(s, 0, 0) for s in range(7)], (4, 1, 1),
                                       batch_size=4)
    assert [b.shape for b in batches] == [(4, 4, 1, 1, 1)] * 2
    assert batches[1][:3].all() and not batches[1][3].any()      # 7 windows: one padded slot
    np.testing.assert_allclose(out[..., 0], image, atol=1e-7)
    with pytest.raises(ValueError, match="outside the image"):
        sliding_window.blend_windows(model, image, [(8, 0, 0)], (4, 1, 1))


# --------------------------------------------------------------------------- flip TTA

@pytest.mark.parametrize("rank", [2, 3])
def test_tta_is_invisible_for_a_flip_equivariant_model_and_visible_otherwise(rank):
    rng = np.random.default_rng(1)
    if rank == 2:
        pre = {"kind": "slices", "image_size": [16, 16], "window": [-100, 200]}
        volume = rng.normal(50, 120, (16, 16, 5)).astype(np.float32)
        make = lambda model, tta: inference.Predictor(model, pre, tta=tta, batch_size=2)
        flips, shape = ("vflip", "hflip"), (16, 16, 1)
    else:
        pre = {"kind": "tumour_patches", "patch_size": [8, 8, 8]}
        volume = rng.normal(50, 120, (20, 14, 11)).astype(np.float32)
        make = lambda model, tta: inference.VolumePredictor(model, pre, tta=tta, batch_size=3)
        flips, shape = ("vflip", "hflip", "zflip"), (8, 8, 8, 1)
    symmetric = rescaling(shape, 0.5, 0.1)
    np.testing.assert_allclose(make(symmetric, flips).probabilities(volume),
                               make(symmetric, ()).probabilities(volume), atol=1e-6)
    asymmetric = conv_model(shape)
    plain = make(asymmetric, ()).probabilities(volume)
    assert np.abs(make(asymmetric, flips).probabilities(volume) - plain).max() > 1e-3


def test_3d_tta_by_hand():
    """One window the size of the image: TTA over z is the mean of the model's output and
    of its output on the z-reversed input, reversed back."""
    model = conv_model((8, 8, 8, 1), seed=3)
    pre = {"kind": "tumour_patches", "patch_size": [8, 8, 8]}
    hu = np.random.default_rng(2).normal(0, 100, (8, 8, 8)).astype(np.float32)
    x = volumetric.normalize_volume(hu)[None, ..., None]
    plain = model.predict_on_batch(x)
    flipped = model.predict_on_batch(x[:, :, :, ::-1])[:, :, :, ::-1]
    got = inference.VolumePredictor(model, pre, tta=("zflip",)).probabilities(hu)
    np.testing.assert_allclose(got, ((plain + flipped) / 2)[0, ..., 0], atol=1e-6)
    with pytest.raises(ValueError, match="distinct flips"):
        inference.VolumePredictor(model, pre, tta=("zflip", "zflip"))
    with pytest.raises(ValueError, match="distinct flips"):
        inference.Predictor(model, {"kind": "slices"}, tta=("zflip",))


# --------------------------------------------------------------------------- the predictors

def test_2d_batches_give_the_whole_volume_answer_and_labels_match_probabilities():
    model = conv_model((32, 32, 1), channels=3, activation="softmax")
    pre = {"kind": "slices", "target": "classes", "image_size": [32, 32],
           "normalize": "minmax"}
    volume = np.random.default_rng(4).normal(0, 1, (40, 36, 9)).astype(np.float32)
    whole = inference.Predictor(model, pre, batch_size=16).probabilities(volume)
    by_hand = prep.restore_slices(model.predict(prep.preprocess_volume(volume, pre), verbose=0),
                                  volume.shape[:2])
    np.testing.assert_allclose(whole, by_hand, atol=1e-5)
    small = inference.Predictor(model, pre, batch_size=2, progress=True)
    probs, label = small.predict(volume)
    np.testing.assert_allclose(probs, whole, atol=1e-5)
    np.testing.assert_array_equal(label, np.argmax(probs, -1))
    np.testing.assert_array_equal(small.label(volume), label)
    with pytest.raises(ModelInputError, match="3-D volume"):
        small.predict(np.zeros((4, 4), np.float32))


def test_label_alone_keeps_the_largest_component_of_binary_heads_only():
    """``label`` called first (no ``predict`` traced before it) post-processes by the head:
    a one-channel head keeps its largest component, a multi-class head keeps every voxel."""
    volume = np.zeros((24, 24, 6), np.float32)
    volume[2:6, 2:6, 1:3] = 1.0          # small blob
    volume[12:22, 12:22, 1:5] = 1.0      # large blob
    pre = {"kind": "slices", "image_size": [24, 24]}
    binary = rescaling((24, 24, 1))                        # probability = the image
    label = inference.Predictor(binary, pre).label(volume)
    large = np.zeros(volume.shape, np.uint8)
    large[12:22, 12:22, 1:5] = 1
    np.testing.assert_array_equal(label, large)
    inp = keras.Input((24, 24, 1))
    two = keras.Model(inp, keras.layers.Concatenate()([1.0 - inp, inp]))  # class 1 = the image
    np.testing.assert_array_equal(inference.Predictor(two, pre).label(volume),
                                  (volume > 0).astype(np.uint8))


class _OnBatch:
    """A model that only has ``predict_on_batch`` (as the cascade's Ensemble)."""

    def __init__(self, model):
        self.model = model

    def predict_on_batch(self, x):
        return self.model.predict_on_batch(x)


def test_2d_predictor_paths_agree_and_match_the_step_by_step_answer():
    """The fused TF graph (a keras.Model), the two-graph path (a model with only
    predict_on_batch) and both preprocessing implementations give the answer of
    preprocess -> predict_slices -> restore_slices -> threshold -> largest component."""
    model = conv_model((16, 16, 1), seed=7)
    pre = {"kind": "slices", "image_size": [16, 16], "window": [-200, 250],
           "clahe": {"clip_limit": 2.0, "tile_grid": [2, 2]}}
    volume = np.random.default_rng(8).normal(20, 150, (20, 18, 7)).astype(np.float32)
    tta = ("vflip", "hflip")
    x = prep.preprocess_volume(volume, pre)
    ref = prep.restore_slices(inference.predict_slices(model, x, tta=tta, batch_size=3),
                              volume.shape[:2])[..., 0]
    answers = [inference.Predictor(m, pre, tta=tta, batch_size=3, preprocess_impl=impl)
               .predict(volume) for m in (model, _OnBatch(model)) for impl in ("opencv", "tf")]
    for probs, label in answers:
        np.testing.assert_allclose(probs, ref, atol=1e-6)  # flips summed in TF: round-off
        np.testing.assert_array_equal(label, answers[0][1])
    from keras_liver.postprocess import largest_component
    np.testing.assert_array_equal(answers[0][1], largest_component(answers[0][0] > 0.5))
    assert answers[0][1].dtype == np.uint8 and 0 < answers[0][1].sum() < volume.size
    with pytest.raises(ValueError, match="preprocess_impl"):
        inference.Predictor(model, pre, preprocess_impl="cv2")


def test_largest_component_in_the_bounding_box_equals_the_whole_volume_answer():
    from scipy import ndimage

    from keras_liver.postprocess import largest_component

    def whole_volume(m):  # label the whole array, count with bincount (the first largest)
        labels, count = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, m.ndim))
        if count <= 1:
            return m
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return labels == int(np.argmax(sizes))

    rng = np.random.default_rng(9)
    mask = np.zeros((30, 26, 20), bool)
    mask[5:20, 4:15, 3:17] = rng.random((15, 11, 14)) < 0.45  # many components
    mask[25:28, 20:25, 0:2] = True
    for m in (mask, mask[:, :, :1], mask[:, :, 8], np.zeros_like(mask), np.ones((4, 5, 6), bool)):
        np.testing.assert_array_equal(largest_component(m), whole_volume(m))


def test_bounding_box_from_projections_equals_the_voxel_coordinates_box():
    from keras_liver.postprocess import bounding_box

    def by_coordinates(m, margin):  # min/max of every foreground voxel's coordinates
        coords = np.nonzero(m)
        if not coords[0].size:
            return None
        return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                     for c, n in zip(coords, m.shape))

    rng = np.random.default_rng(3)
    mask = np.zeros((12, 9, 7), bool)
    mask[3:8, 0:4, 2] = rng.random((5, 4)) < 0.6
    mask[10, 6, 6] = True
    for m in (mask, mask[:, :, 2], mask[:, :, 5], np.zeros_like(mask), np.ones((2, 3, 4), bool)):
        for margin in (0, 1, 3):
            assert bounding_box(m, margin=margin) == by_coordinates(m, margin)
    assert bounding_box(mask, margin=1) == (slice(2, 12), slice(0, 8), slice(1, 7))

def test_tf_in_plane_resize_matches_the_training_resize():
    rng = np.random.default_rng(10)
    hu = rng.normal(40, 300, (30, 22, 6)).astype(np.float32)
    for size in ((16, 16), (45, 31), (30, 22)):
        # float32 interpolation weights (TF) against SciPy's float64: ~1e-5 of the range
        np.testing.assert_allclose(inference.resize_in_plane(hu, size),
                                   volumetric.resize_in_plane(hu, size, order=1), atol=1e-2)
        ref = np.clip(volumetric.resize_in_plane(volumetric.normalize_volume(hu, (-100, 200)),
                                                 size, order=1), 0, 1)
        got = inference._normalized_in_plane(hu, (-100, 200), size)
        np.testing.assert_allclose(got, ref, atol=1e-5)  # serve_hu's tolerance
        assert got.shape == (*size, 6) and got.dtype == np.float32 and got.max() > 0.5
    np.testing.assert_array_equal(inference._normalized_in_plane(
        np.full((8, 8, 3), 900.0, np.float32), (-100, 200), (4, 4)), 0.0)


def test_3d_liver_slabs_resize_there_and_back_and_tile_z():
    """A scaled-identity 3-D model: each slab's output is 0.8 x its input, so the blended
    probability is 0.8 x the normalised volume resized to the run's in-plane size and back."""
    pre = {"kind": "liver_slabs", "in_plane": [16, 16], "depth": 8, "stride": 5}
    hu = np.random.default_rng(5).normal(50, 150, (30, 22, 19)).astype(np.float32)
    model = rescaling((16, 16, 8, 1), 0.8)
    calls = []
    predictor = inference.VolumePredictor(model, pre, batch_size=2)
    real = model.predict_on_batch
    model.predict_on_batch = lambda x: calls.append(len(x)) or real(x)
    probs, label = predictor.predict(hu)
    there = np.clip(volumetric.resize_in_plane(volumetric.normalize_volume(hu), (16, 16),
                                               order=1), 0, 1)
    expected = np.clip(volumetric.resize_in_plane(0.8 * there, hu.shape[:2], order=1), 0, 1)
    assert probs.shape == hu.shape and label.dtype == np.uint8
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert calls == [2, 2]                       # z starts 0, 5, 10, 11: two full batches
    from keras_liver.postprocess import largest_component
    np.testing.assert_array_equal(label, largest_component(expected > 0.5))
    with pytest.raises(ValueError, match="cuts windows"):
        inference.VolumePredictor(rescaling((8, 8, 8, 1)), pre)


def test_3d_tumour_patches_keep_every_component_by_default():
    pre = {"kind": "tumour_patches", "patch_size": [8, 8, 8]}
    hu = np.full((24, 20, 10), -1000.0, np.float32)
    hu[2:6, 2:6, 2:6] = 200.0
    hu[15:20, 12:18, 4:8] = 200.0                 # two bright blobs
    predictor = inference.VolumePredictor(rescaling((8, 8, 8, 1)), pre)
    assert predictor.steps == (4, 4, 4) and predictor.largest_component is False
    probs, label = predictor.predict(hu)
    np.testing.assert_allclose(probs, volumetric.normalize_volume(hu), atol=1e-6)
    np.testing.assert_array_equal(label, hu > 0)
    _, label = inference.VolumePredictor(rescaling((8, 8, 8, 1)), pre,
                                         largest_component=True).predict(hu)
    assert label.sum() == 5 * 6 * 4


# --------------------------------------------------------------------------- every model type

def _tiny_model_config(experiment, *keys):
    preset = common.load_experiment(experiment)["presets"]["tiny"]
    for key in keys:
        preset = preset[key]
    return preset


def _tiny_run(root, experiment, *keys, name=None, **config):
    preset = _tiny_model_config(experiment, *keys)
    model = training.build_model(preset["model"])
    return make_run(root, name or experiment, model, preset["data"],
                    threshold=preset.get("threshold", 0.5),
                    **{k: preset[k] for k in ("postprocess", "inference") if k in preset},
                    **config)


@pytest.fixture(scope="module")
def lits117_path(tmp_path_factory):
    from keras_liver.data.fixtures import FixtureNotInstalled, load_lits117

    try:
        crop = load_lits117()
    except FixtureNotInstalled as err:
        pytest.skip(str(err))
    return write_volume(str(tmp_path_factory.mktemp("lits117") / "lits117.nii.gz"),
                        crop.image, np.diag([-0.8, -0.8, 1.5, 1.0]))


def _cascade_run(root):
    """A cascade of stand-in stage runs (a 2-D localiser, two 3-D stages): the tiny
    RA-UNet stages themselves are trained and predicted in tests/test_ra_unet_run.py."""
    loc = make_run(root, "stage1", rescaling((32, 32, 1)),
                   {"kind": "slices", "image_size": [32, 32], "window": [-100, 200]})
    liver = make_run(root, "stage2", conv_model((32, 32, 16, 1), seed=1),
                     {"kind": "liver_slabs", "in_plane": [32, 32], "depth": 16, "stride": 10})
    tumour = make_run(root, "stage3", conv_model((32, 32, 32, 1), seed=2),
                      {"kind": "tumour_patches", "patch_size": [32, 32, 32]})
    run_dir = os.path.join(str(root), "cascade")
    os.makedirs(run_dir)
    write_cascade(run_dir, {"localiser": [loc], "liver": [liver], "tumour": [tumour]},
                  inference={"batch_size": 4})
    return run_dir


def _linked_run(root):
    """Linked stand-in models (three-class softmax heads on min-max slices); the tiny
    Attention Residual UNets themselves are trained and linked in tests/test_arunet_run.py."""
    data = {"kind": "slices", "target": "classes", "num_classes": 3, "image_size": [32, 32],
            "normalize": "minmax"}
    liver = make_run(root, "liver", conv_model((32, 32, 1), 3, "softmax", seed=5), data)
    vessel = make_run(root, "vessel", conv_model((32, 32, 1), 3, "softmax", seed=6), data)
    run_dir = os.path.join(str(root), "linked")
    os.makedirs(run_dir)
    write_linked(run_dir, {"liver": liver, "vessel": vessel})
    return run_dir


#: Model type -> (run builder, expected predictor class, possible labels). RA-UNet-I (the
#: 2-D slice path of every 2-D model here) is trained and predicted as the cascade's localiser
#: in tests/test_ra_unet_run.py; RA-UNet-II's tiny liver stage is the 3-D run here.
MODEL_TYPES = {
    "ra_vnet": (lambda r: _tiny_run(r, "ra_vnet"), inference.Predictor, {0, 1}),
    "ra_unet_3d_liver": (lambda r: _tiny_run(r, "ra_unet", "stages", "liver", name="liver"),
                         inference.VolumePredictor, {0, 1}),
    "msa_unet": (lambda r: _tiny_run(r, "msa_unet"), inference.Predictor, {0, 1}),
    "bada": (lambda r: _tiny_run(r, "bada"), inference.Predictor, set(range(10))),
    "attention_res_unet": (lambda r: _tiny_run(r, "arunet", "models", "liver"),
                           inference.Predictor, {0, 1, 2}),
    "linked": (_linked_run, LinkedLiverVessel, {0, 1, 2, 3}),
    "cascade": (_cascade_run, RAUNetCascade, {0, 1, 2}),
}


@pytest.mark.parametrize("kind", sorted(MODEL_TYPES))
def test_every_model_type_predicts_on_the_input_grid(kind, phantom_lits, lits117_path, tmp_path,
                                                     capsys, monkeypatch):
    """``keras-liver predict`` on a phantom volume and the LiTS-117 crop in one call: each
    output is a uint8 label volume on its input's grid, with its affine and header."""
    build, cls, labels = MODEL_TYPES[kind]
    run_dir = build(tmp_path / "runs")
    loaded, real = [], inference.load
    monkeypatch.setattr(inference, "load", lambda *a, **k: loaded.append(real(*a, **k))
                        or loaded[-1])
    phantom = str(tmp_path / "phantom.nii.gz")
    ref = read_volume(os.path.join(phantom_lits, "volume-1.nii.gz"))
    write_volume(phantom, ref.data, AFFINE, header=ref.header)
    out_dir = tmp_path / "preds"
    code, stdout, err = cli(["predict", "--model", run_dir, phantom, lits117_path,
                             "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, err
    for src, name in ((phantom, "phantom_pred.nii.gz"), (lits117_path, "lits117_pred.nii.gz")):
        out = str(out_dir / name)
        assert out in stdout
        assert_label_volume_on_input_grid(src, out, labels)
        a, b = nib.load(src).header, nib.load(out).header
        for key in ("qform_code", "sform_code", "xyzt_units", "pixdim", "dim"):
            np.testing.assert_array_equal(a[key], b[key])
    assert len(loaded) == 1 and isinstance(loaded[0], cls)


# --------------------------------------------------------------------------- files and folders

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("small_run"), "run", conv_model((32, 32, 1)),
                    {"kind": "slices", "image_size": [32, 32], "window": [-100, 200]})


def _write_inputs(folder, count, shape=(40, 36, 6)):
    rng = np.random.default_rng(7)
    os.makedirs(folder, exist_ok=True)
    return [write_volume(os.path.join(folder, f"case{i}.nii.gz"),
                         rng.normal(0, 200, shape).astype(np.float32), AFFINE)
            for i in range(count)]


def test_a_folder_of_inputs_in_one_call(small_run, tmp_path, capsys):
    inputs = _write_inputs(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not a volume")
    out = tmp_path / "out"
    code, stdout, err = cli(["predict", "--model", small_run, str(tmp_path / "in"),
                             "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == [f"case{i}_pred.nii.gz" for i in range(3)]
    predictor = inference.load(small_run)
    for src in inputs:
        name = os.path.basename(src).replace(".nii.gz", "_pred.nii.gz")
        expected = predictor.label(read_volume(src).data)
        np.testing.assert_array_equal(np.asarray(nib.load(out / name).dataobj), expected)
    # the Python API: the same files
    outs = inference.predict_files(small_run, [str(tmp_path / "in")], str(tmp_path / "api"))
    assert [os.path.basename(p) for p in outs] == sorted(os.listdir(out))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder holds no"):
        inference.expand_inputs([str(tmp_path / "empty")])
    (tmp_path / "other").mkdir()
    os.symlink(inputs[0], tmp_path / "other" / "case0.nii.gz")
    with pytest.raises(DataError, match="same output"):
        inference.predict_files(small_run, [inputs[0], str(tmp_path / "other")],
                                str(tmp_path / "api"))


def test_truncated_input_is_one_clear_error_and_writes_nothing(small_run, tmp_path, capsys):
    good = _write_inputs(tmp_path / "in", 2)
    data = open(good[1], "rb").read()
    open(good[1], "wb").write(data[:-3])        # only the gzip trailer lost: voxels intact
    out = tmp_path / "out"
    code, _, err = cli(["predict", "--model", small_run, *good, "--out", str(out),
                        "--no-progress"], capsys)
    assert code == 2
    assert err.startswith(f"keras-liver: error: {good[1]}: ") and "truncated or corrupt" in err
    assert err.count("\n") == 1
    # the first input's output stays; the bad one left no file, partial or final
    assert os.listdir(out) == ["case0_pred.nii.gz"]
    single = tmp_path / "single.nii.gz"
    code, _, err = cli(["predict", "--model", small_run, good[1], "--out", str(single),
                        "--no-progress"], capsys)
    assert code == 2 and not single.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".partial")]


def test_options_that_do_not_apply_are_refused(small_run, tmp_path, capsys):
    src = _write_inputs(tmp_path / "in", 1)[0]
    code, _, err = cli(["predict", "--model", small_run, src, "--out", str(tmp_path / "o.nii.gz"),
                        "--blend", "gaussian", "--no-progress"], capsys)
    assert code == 2 and "blend does not apply to a 2-D run" in err
    code, _, err = cli(["predict", "--model", small_run, src, "--out", str(tmp_path / "o.txt"),
                        "--no-progress"], capsys)
    assert code == 2 and "o.txt" in err and ".nii.gz" in err
    code, _, err = cli(["predict", "--model", small_run, str(tmp_path / "missing.nii.gz"),
                        "--out", str(tmp_path / "o.nii.gz"), "--no-progress"], capsys)
    assert code == 2 and "missing.nii.gz: file not found" in err
    with pytest.raises(SystemExit):
        main(["predict", "--model", small_run, src, "--out", "o.nii.gz", "--overlap", "1.5"])
    assert "fraction in [0, 1)" in capsys.readouterr().err


def test_3d_run_options_from_the_command_line_and_the_run_config(tmp_path, capsys):
    pre = {"kind": "tumour_patches", "patch_size": [8, 8, 8]}
    run_dir = make_run(tmp_path, "run3d", conv_model((8, 8, 8, 1), seed=4), pre,
                       inference={"blend": "gaussian", "overlap": 0.25})
    predictor = inference.load(run_dir)
    assert (predictor.blend, predictor.steps, predictor.tta) == ("gaussian", (6, 6, 6), ())
    predictor = inference.load(run_dir, blend="mean", overlap=0.5, tta="flips", batch_size=5,
                               largest_component=True)
    assert (predictor.blend, predictor.steps, predictor.batch_size) == ("mean", (4, 4, 4), 5)
    assert predictor.tta == ("vflip", "hflip", "zflip") and predictor.largest_component
    src = _write_inputs(tmp_path / "in", 1, shape=(20, 12, 9))[0]
    out = str(tmp_path / "pred.nii.gz")
    code, _, err = cli(["predict", "--model", run_dir, src, "--out", out, "--blend", "mean",
                        "--overlap", "0.5", "--tta", "flips", "--batch-size", "5",
                        "--no-largest-component", "--no-progress"], capsys)
    assert code == 0, err
    expected = inference.load(run_dir, blend="mean", overlap=0.5, tta="flips",
                              largest_component=False).label(read_volume(src).data)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), expected)
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["inference"]["blend"] == "gaussian"
