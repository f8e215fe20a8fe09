"""RA-UNet cascade inference (keras_liver.cascade), its 3-D data configs and the
cross-validation folds, checked with models whose output is known: identity and scaled-identity
networks make every window's prediction computable by hand, so tiling, averaging, padding,
resizing back, masking and the ensemble are tested exactly, without training."""
import json
import os

import keras
import nibabel as nib
import numpy as np
import pytest

from keras_liver import cascade as cascade_lib
from keras_liver import training
from keras_liver.data import pipeline, schema, splits, volumetric
from keras_liver.data.volumes import write_volume
from keras_liver.errors import ModelInputError
from keras_liver.experiments import common
from keras_liver.inference import Predictor

LIVER_CFG = volumetric.resolve_config(kind="liver_slabs", in_plane=[32, 32], depth=32, stride=20)
TUMOUR_CFG = volumetric.resolve_config(kind="tumour_patches", patch_size=[32, 32, 32])
LOCALISER_PREP = {"kind": "slices", "target": "liver", "image_size": [32, 32],
                  "window": [-100, 200]}


def scaled_identity(shape, scale=1.0, name=None):
    """A model whose output is ``scale * input`` (a Rescaling layer, nothing to train)."""
    inputs = keras.Input(shape=shape)
    return keras.Model(inputs, keras.layers.Rescaling(scale)(inputs), name=name)


def make_cascade(liver_scale=1.0, tumour_models=None, **kwargs):
    localiser = Predictor(model=scaled_identity((32, 32, 1)), preprocessing=LOCALISER_PREP)
    liver = cascade_lib.Ensemble([scaled_identity((32, 32, 32, 1), liver_scale)])
    tumour = cascade_lib.Ensemble(tumour_models or [scaled_identity((32, 32, 32, 1))])
    return cascade_lib.RAUNetCascade(localiser, liver, LIVER_CFG, tumour, TUMOUR_CFG, **kwargs)


def blob_volume(shape=(70, 60, 45)):
    """HU volume: air (-1000) around a bright (150 HU) box with a dark (-50 HU) core."""
    hu = np.full(shape, -1000.0, np.float32)
    hu[15:55, 12:50, 8:40] = 150.0
    hu[30:40, 25:35, 20:28] = -50.0
    return hu


# --------------------------------------------------------------------------- the stages

def test_liver_stage_averages_overlapping_slabs_and_restores_the_box():
    """With an identity network, averaged overlapping slabs give back each voxel's own value,
    so the stage's output is exactly the crop resized to the model's size and back."""
    cascade = make_cascade()
    rng = np.random.default_rng(0)
    normalised = rng.random((50, 40, 45)).astype(np.float32)   # 45 slices: slabs at 0, 13
    box = (slice(5, 45), slice(3, 37), slice(2, 45))
    probs = cascade.liver_probability(normalised, box)
    crop = normalised[box]
    there = np.clip(volumetric.resize_in_plane(crop, (32, 32), order=1), 0, 1)
    expected = np.clip(volumetric.resize_in_plane(there, crop.shape[:2], order=1), 0, 1)
    assert probs.shape == crop.shape
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_liver_stage_pads_a_box_thinner_than_a_slab():
    cascade = make_cascade(liver_scale=0.5)
    normalised = np.full((40, 40, 12), 0.8, np.float32)   # 12 slices < 32
    probs = cascade.liver_probability(normalised, (slice(0, 40), slice(0, 40), slice(0, 12)))
    assert probs.shape == (40, 40, 12)
    np.testing.assert_allclose(probs, 0.4, atol=1e-6)


def test_tumour_stage_covers_the_liver_and_skips_patches_without_liver():
    cascade = make_cascade()
    rng = np.random.default_rng(1)
    normalised = rng.random((80, 70, 40)).astype(np.float32)
    liver = np.zeros(normalised.shape, bool)
    liver[10:30, 10:30, 5:20] = True
    box = (slice(0, 80), slice(0, 70), slice(0, 40))
    calls = []
    original = cascade.tumour.predict_on_batch
    cascade.tumour.predict_on_batch = lambda x: calls.append(len(x)) or original(x)
    probs = cascade.tumour_probability(normalised, liver, box)
    assert probs.shape == normalised.shape
    # identity network: every liver voxel gets its own value back (mean of equal values)
    np.testing.assert_allclose(probs[liver], normalised[liver], atol=1e-6)
    # stride 16 over (80, 70, 40): 4 x 4 x 2 = 32 patches, of which only those touching the
    # liver corner are run (starts 0 or 16 in x and y; any z start touches z 5..19): 8 patches
    # in full batches of 2 (the cascade's batch_size), so the network is never retraced
    assert calls == [2, 2, 2, 2]


def test_ensemble_averages_its_members():
    x = np.random.default_rng(2).random((3, 32, 32, 32, 1)).astype(np.float32)
    ensemble = cascade_lib.Ensemble([scaled_identity((32, 32, 32, 1), 0.2),
                                     scaled_identity((32, 32, 32, 1), 0.6)])
    np.testing.assert_allclose(ensemble.predict(x), 0.4 * x, atol=1e-6)
    np.testing.assert_allclose(ensemble.predict_on_batch(x), 0.4 * x, atol=1e-6)
    with pytest.raises(ValueError, match="different input shapes"):
        cascade_lib.Ensemble([scaled_identity((32, 32, 32, 1)), scaled_identity((64, 64, 32, 1))])


def test_the_whole_cascade_on_a_synthetic_volume():
    """Identity networks at every stage, worked by hand. Localiser: windowed HU, so the bright
    box (150 HU -> 0.83) passes 0.5 and its dark core (-50 HU -> 0.17) does not; box = the
    bright box + 10 voxels. Liver: the volume normalised by its own range (-100 .. 150 HU), so
    bright = 1, core = 0.2: the liver is the bright shell. Tumour: the same values, so every
    liver voxel is 'tumour' (2); a tumour model scaled by 0.4 never passes 0.5 (no 2)."""
    hu = blob_volume()
    bright = hu > 100
    out = make_cascade().run(hu)
    assert out.label.shape == hu.shape and out.label.dtype == np.uint8
    expected_box = [(5, 65), (2, 60), (0, 45)]        # (15..54, 12..49, 8..39) +- 10, clipped
    for got, (start, stop) in zip(out.boxes["localiser"], expected_box):
        assert abs(got.start - start) <= 1 and abs(got.stop - stop) <= 1, out.boxes
    assert (out.label[bright] == 2).mean() > 0.95
    assert not out.label[32:38, 27:33, 21:27].any()   # inside the dark core
    assert not out.label[hu < -500].any()             # air
    out = make_cascade(tumour_models=[scaled_identity((32, 32, 32, 1), 0.4)]).run(hu)
    assert set(np.unique(out.label)) == {0, 1}
    assert (out.label[bright] == 1).mean() > 0.95
    np.testing.assert_array_equal(out.label == 1, out.liver_probability > 0.5)


def test_nothing_localised_gives_an_empty_label():
    hu = np.full((40, 40, 20), -1000.0, np.float32)
    out = make_cascade().run(hu)
    assert out.boxes["localiser"] is None and not out.label.any()


def test_predict_file_keeps_the_grid_and_rejects_other_ranks(tmp_path):
    hu = blob_volume((64, 48, 36))
    affine = np.array([[0, -0.7, 0, 10], [-0.9, 0, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1.0]])
    src = write_volume(str(tmp_path / "in.nii.gz"), hu, affine)
    out = make_cascade().predict_file(src, str(tmp_path / "out.nii.gz"))
    img = nib.load(out)
    assert img.shape == hu.shape
    np.testing.assert_allclose(img.affine, affine)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2}
    with pytest.raises(ModelInputError, match="3-D volume"):
        make_cascade().run(np.zeros((32, 32), np.float32))


def test_cascade_checks_models_against_configs():
    localiser = Predictor(model=scaled_identity((32, 32, 1)), preprocessing=LOCALISER_PREP)
    with pytest.raises(ValueError, match="liver model takes"):
        cascade_lib.RAUNetCascade(localiser, scaled_identity((64, 64, 32, 1)), LIVER_CFG)
    with pytest.raises(ValueError, match="liver_slabs"):
        cascade_lib.RAUNetCascade(localiser, scaled_identity((32, 32, 32, 1)), TUMOUR_CFG)


def test_cascade_json_round_trip(tmp_path):
    run = str(tmp_path)
    path = cascade_lib.write_cascade(run, {"localiser": [os.path.join(run, "a")],
                                           "liver": [os.path.join(run, "b", "fold0"),
                                                     os.path.join(run, "b", "fold1")]},
                                     inference={"tumour_stride": [8, 8, 8]})
    spec = json.load(open(path))
    assert spec["stages"] == {"localiser": ["a"], "liver": ["b/fold0", "b/fold1"]}
    assert spec["inference"]["tumour_stride"] == [8, 8, 8] and spec["inference"]["margin"] == 10
    assert cascade_lib.is_cascade_run(run) and not cascade_lib.is_cascade_run(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="liver"):
        cascade_lib.write_cascade(run, {"localiser": ["x"]})
    with pytest.raises(FileNotFoundError, match="cascade.json"):
        cascade_lib.read_cascade(str(tmp_path / "a"))


# --------------------------------------------------------------------------- 3-D data configs

def test_volumetric_config_resolves_and_checks():
    cfg = volumetric.resolve_config({"kind": "tumour_patches", "patch_size": [64, 64, 32]})
    assert cfg["window"] == [-100.0, 200.0] and cfg["margin"] == 10
    assert volumetric.sample_shape(cfg) == (64, 64, 32)
    assert volumetric.sample_shape({"kind": "liver_slabs"}) == (224, 224, 32)
    assert volumetric.resolve_config(cfg) == cfg                     # idempotent
    assert volumetric.is_volumetric(cfg) and not volumetric.is_volumetric({"kind": "slices"})
    for bad, message in [({"kind": "slabs"}, "kind"), ({"stride": 0}, "positive"),
                         ({"window": [200, -100]}, "lo < hi"), ({"size": 3}, "unknown keys"),
                         ({"tumour_fraction": 1.5}, r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            volumetric.resolve_config(bad)


def test_runner_builds_3d_datasets_from_a_3d_config(tiny_dataset):
    module = training._data_module({"kind": "liver_slabs"})
    assert module is volumetric and training._data_module({"kind": "slices"}) is pipeline
    cfg = volumetric.resolve_config(kind="liver_slabs", in_plane=[32, 32], samples_per_volume=3,
                                    batch_size=2)
    ds = volumetric.build_datasets(tiny_dataset, cfg, splits=("train",))["train"]
    images, targets = next(iter(ds))
    assert images.shape == (2, 32, 32, 32, 1) and targets.shape == images.shape


# --------------------------------------------------------------------------- folds

def test_kfold_partitions_cases_deterministically():
    ids = [f"case-{i:03d}" for i in range(23)]
    groups = splits.kfold(ids, 5, seed=7)
    assert sorted(c for g in groups for c in g) == ids
    assert sorted(len(g) for g in groups) == [4, 4, 5, 5, 5]
    assert groups == splits.kfold(ids, 5, seed=7) != splits.kfold(ids, 5, seed=8)
    for g in groups:
        assert g == [c for c in ids if c in g]       # input order kept
    with pytest.raises(ValueError, match="at least 5 cases"):
        splits.kfold(ids[:4], 5)
    with pytest.raises(ValueError, match="k >= 2"):
        splits.kfold(ids, 1)


def test_fold_manifests_pool_train_and_val_and_keep_test(tiny_dataset, tmp_path):
    manifest = schema.load_manifest(tiny_dataset)
    pool = manifest["split"]["train"] + manifest["split"]["val"]
    vals = []
    for fold in range(2):
        root = splits.write_fold_manifest(tiny_dataset, str(tmp_path / f"fold{fold}"), fold=fold, k=2)
        fm = schema.load_manifest(root)
        assert fm["split"]["test"] == manifest["split"]["test"]
        assert sorted(fm["split"]["train"] + fm["split"]["val"]) == sorted(pool)
        assert not set(fm["split"]["train"]) & set(fm["split"]["val"])
        assert fm["fold"] == {"index": fold, "k": 2, "seed": 0, "source": manifest["root"]}
        # every reader finds the original shards through the fold manifest
        assert all(os.path.exists(p) for p in pipeline.split_shards(root, "val", kind="volumes"))
        assert [c for c, *_ in common.iter_volumes(root, "test")] == manifest["split"]["test"]
        vals += fm["split"]["val"]
    assert sorted(vals) == sorted(pool)   # each pooled case validates exactly once
