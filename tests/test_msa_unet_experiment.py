"""The MSA-UNet experiment: the published recipe as data, the Table 2 ablations by name, flip
test-time augmentation checked against the three flipped predictions worked by hand, and the
mean ± std comparison with the paper."""
import keras
import numpy as np
import pandas as pd
import pytest

from keras_liver.data import preprocessing as prep
from keras_liver.experiments import common, msa_unet
from keras_liver.inference import Predictor, check_tta, predict_slices


@pytest.fixture(scope="module")
def experiment():
    return common.load_experiment("msa_unet")


# --------------------------------------------------------------------------- recipe as data

def test_paper_preset_is_the_published_recipe(experiment):
    config = msa_unet.resolve_config(experiment, "paper")
    assert config["model"] == {"name": "msa_unet", "input_shape": [512, 512, 1],
                               "base_filters": 64, "depth": 4, "dropblock_size": 7,
                               "dropblock_rate": 0.1}
    t = config["training"]
    assert t["loss"]["name"] == "bce_dice"
    assert (t["loss"]["bce_weight"], t["loss"]["dice_weight"]) == (0.5, 1.0)
    assert t["optimizer"] == {"name": "adam", "learning_rate": 0.001}
    assert t["epochs"] == 300 and config["data"]["batch_size"] == 6
    assert t["monitor"] == "val_loss"   # best weights on the validation loss
    assert t["callbacks"] == {"reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 8},
                              "early_stopping": {"monitor": "val_loss", "patience": 20}}
    assert "batch_norm_momentum" not in t
    d = config["data"]
    assert d["window"] == [-200, 250] and d["image_size"] == [512, 512]
    assert d["clahe"] == {"clip_limit": 2.0, "tile_grid": [8, 8]}
    assert d["augment"] == {"hflip": True, "vflip": True, "crop": 0.1, "translate": 0.1}
    assert config["split"] == [0.8, 0.1, 0.1]
    assert config["threshold"] == 0.5
    assert config["inference"] == {"tta": ["hflip", "vflip"]}
    assert config["postprocess"] == {"largest_component": False}  # the paper does none


def test_every_preset_keeps_the_papers_preprocessing_loss_and_tta(experiment):
    paper = msa_unet.resolve_config(experiment, "paper")
    for preset in ("demo", "tiny"):
        config = msa_unet.resolve_config(experiment, preset)
        for key in ("window", "clahe", "augment"):
            assert config["data"][key] == paper["data"][key], (preset, key)
        assert config["training"]["loss"] == paper["training"]["loss"], preset
        assert config["inference"] == paper["inference"], preset
        assert config["model"]["input_shape"][:2] == config["data"]["image_size"], preset


@pytest.mark.parametrize("ablation", msa_unet.ABLATION_KEYS)
def test_every_table2_network_builds_at_the_tiny_preset(experiment, ablation):
    from keras_liver import training

    config = msa_unet.resolve_config(experiment, "tiny", ablation=ablation)
    assert config["model"]["name"] == msa_unet.ablation_models()[ablation]
    assert msa_unet.ablation_of(config["model"]["name"]) == ablation
    assert config["model"]["name"] in experiment["variants"]
    model = training.build_model(config["model"])
    assert model.name == config["model"]["name"]
    assert model.output_shape == (None, 32, 32, 1)


def test_ablation_names_and_tta_switch(experiment):
    assert msa_unet.ablation_models() == {
        "unet": "msa_unet_baseline", "unet_msrb": "msa_unet_with_msrb",
        "unet_aaspp": "msa_unet_with_aaspp", "unet_rasm": "msa_unet_with_rasm",
        "msa_unet": "msa_unet"}
    with pytest.raises(ValueError, match="unknown ablation 'unet\\+\\+'"):
        msa_unet.resolve_config(experiment, "tiny", ablation="unet++")
    off = msa_unet.resolve_config(experiment, "tiny", tta=False)
    assert off["inference"]["tta"] == []
    # the base U-Net has no DropBlock: options its builder lacks are dropped
    unet = msa_unet.resolve_config(experiment, "tiny", ablation="unet")["model"]
    assert "dropblock_rate" not in unet and unet["depth"] == 2


def test_tables_are_transcribed(experiment):
    t1, t2 = experiment["tables"]["table1"], experiment["tables"]["table2"]
    assert t1["columns"] == t2["columns"] == ["dice", "jaccard", "precision", "recall"]
    assert t2["rows"]["msa_unet"] == t1["rows"]["msa_unet"] == [
        [0.98, 0.0038], [0.9608, 0.0074], [0.9717, 0.0085], [0.9885, 0.007]]
    assert t2["rows"]["unet"] == t1["rows"]["unet"]
    assert t2["rows"]["unet_rasm"][0] == [0.9713, 0.0107]
    assert list(t2["rows"]) == list(msa_unet.ABLATION_KEYS)


def test_compare_mean_std_by_hand():
    per_case = pd.DataFrame({"case": ["a", "b"], "dice": [0.9, 0.7], "jaccard": [0.8, 0.6],
                             "precision": [1.0, 0.5], "recall": [0.5, 0.5]})
    from keras_liver.metrics import report

    summary = report.summarize(per_case)
    paper = [[0.98, 0.01], [0.96, 0.02], [0.97, 0.03], [0.99, 0.04]]
    frame = msa_unet.compare_mean_std(summary, paper)
    assert list(frame["metric"]) == ["dice", "jaccard", "precision", "recall"]
    np.testing.assert_allclose(frame["ours"], [0.8, 0.7, 0.75, 0.5])
    np.testing.assert_allclose(frame["ours_std"], [0.1, 0.1, 0.25, 0.0])   # population std
    np.testing.assert_allclose(frame["difference"], [-0.18, -0.26, -0.22, -0.49])
    text = msa_unet.mean_std_markdown(frame)
    assert "| dice | 80.00 ± 10.00 | 98.00 ± 1.00 | -18.00 |" in text


def test_help_documents_every_option():
    text = msa_unet.parser().format_help()
    for option in ("--data", "--preset", "--out", "--ablation", "--no-tta", "--no-export",
                   "--epochs", "--seed"):
        assert option in text, option


# --------------------------------------------------------------------------- TTA

def _asymmetric_model(shape=(16, 16, 1)):
    """A conv net whose output changes under flips (random 3×3 kernels, no symmetry)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(1, 5, padding="same", activation="sigmoid", name="c2")(x)
    return keras.Model(inputs, x)


def test_tta_is_the_mean_of_the_three_flipped_predictions_by_hand():
    model = _asymmetric_model()
    rng = np.random.default_rng(1)
    volume = rng.uniform(-300, 300, size=(20, 24, 5)).astype(np.float32)
    pre = {"kind": "slices", "target": "liver", "image_size": [16, 16], "window": [-200, 250],
           "clahe": {"clip_limit": 2.0, "tile_grid": [4, 4]}}
    plain = Predictor(model, pre, largest_component=False)
    tta = Predictor(model, pre, largest_component=False, tta=("hflip", "vflip"))

    slices = prep.preprocess_volume(volume, pre)                       # (z, 16, 16, 1)
    identity = model.predict(slices, verbose=0)
    rows = model.predict(slices[:, ::-1], verbose=0)[:, ::-1]          # vertical flip and back
    cols = model.predict(slices[:, :, ::-1], verbose=0)[:, :, ::-1]    # horizontal flip and back
    by_hand = prep.restore_slices((identity + rows + cols) / 3, volume.shape[:2])[..., 0]

    np.testing.assert_allclose(tta.probabilities(volume), by_hand, rtol=1e-5, atol=1e-6)
    # the flips matter for this model: without TTA the answer is another one
    assert np.abs(plain.probabilities(volume) - by_hand).max() > 1e-3
    _, label = tta.predict(volume)
    np.testing.assert_array_equal(label, (by_hand > 0.5).astype(np.uint8))


def test_tta_setting_comes_from_the_run_config_and_is_validated():
    model = _asymmetric_model()
    config = {"data": {"image_size": [16, 16]}, "inference": {"tta": ["hflip", "vflip"]}}
    assert Predictor.from_config(model, config).tta == ("hflip", "vflip")
    assert Predictor.from_config(model, config, tta=()).tta == ()
    assert Predictor.from_config(model, {"data": {}}).tta == ()
    with pytest.raises(ValueError, match="distinct flips"):
        check_tta(["rotate90"])
    with pytest.raises(ValueError, match="distinct flips"):
        check_tta(["hflip", "hflip"])
    x = np.random.default_rng(0).random((3, 16, 16, 1), dtype=np.float32)
    one = predict_slices(model, x, tta=["hflip"])
    expected = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)[:, :, ::-1]) / 2
    np.testing.assert_allclose(one, expected, rtol=1e-5, atol=1e-6)
