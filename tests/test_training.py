"""The training runner: distributed fit, resume after a kill, the recipe's callbacks."""
import csv
import json
import os

import keras
import numpy as np
import pytest

from conftest import KillAtEpoch, run_python
from keras_liver import training
from keras_liver.experiments import common


def tiny_config(epochs=1, **training_overrides):
    config = common.resolve_config(common.load_experiment("ra_vnet"), "tiny", epochs=epochs)
    config["training"].update(training_overrides)
    return config


def read_history(run_dir):
    with open(os.path.join(run_dir, training.HISTORY_FILE)) as f:
        return list(csv.DictReader(f))


def test_mirrored_strategy_over_two_logical_cpus(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")
    code = f"""
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_liver import training
from keras_liver.experiments import common
config = common.resolve_config(common.load_experiment("ra_vnet"), "tiny", epochs=2)
strategy = training.make_strategy()
result = training.train(config, data={tiny_dataset!r}, out_dir={out!r}, strategy=strategy, verbose=0)
print("RESULT", json.dumps({{"replicas": strategy.num_replicas_in_sync,
                            "devices": list(strategy.extended.worker_devices),
                            "loss": result.history["loss"], "epochs": result.epochs_run}}))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    assert len(result["devices"]) == 2 and all("CPU" in d for d in result["devices"])
    assert result["epochs"] == 2 and all(np.isfinite(result["loss"]))
    for name in (training.CONFIG_FILE, training.PREPROCESSING_FILE, training.BEST_MODEL,
                 training.LAST_MODEL, training.HISTORY_FILE):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "backup")), "backup is removed after a finished run"
    config, preprocessing = training.read_run_config(out)
    assert preprocessing == config["data"]
    assert preprocessing["window"] == [-100, 200] and config["seed"] == 0


def test_strategy_choice_on_a_single_cpu_device():
    proc = run_python("""
import tensorflow as tf
from keras_liver import training
if tf.config.list_logical_devices("GPU") or len(tf.config.list_logical_devices("CPU")) != 1:
    raise SystemExit(3)
auto, mirrored = training.make_strategy("auto"), training.make_strategy("mirrored")
print(type(auto).__name__, type(mirrored).__name__, mirrored.num_replicas_in_sync)
""")
    if proc.returncode == 3:
        pytest.skip("this machine has a GPU or several CPU devices")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # nothing to mirror on one CPU device: "auto" trains under the default strategy
    assert proc.stdout.split()[-3:] == ["_DefaultDistributionStrategy", "MirroredStrategy", "1"]
    with pytest.raises(ValueError, match="'auto', 'mirrored' or 'default'"):
        training.make_strategy("tpu")


class _SetLearningRate(keras.callbacks.Callback):
    """Halves the learning rate at every epoch end (stands in for ReduceLROnPlateau)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(1e-3 * 0.5 ** (epoch + 1))


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begins = []

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.begins.append((epoch, lr))


def test_killed_run_resumes_at_same_epoch_and_learning_rate(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")
    config = tiny_config(epochs=3, strategy="default")
    with pytest.raises(KeyboardInterrupt):
        training.train(config, data=tiny_dataset, out_dir=out, verbose=0,
                       callbacks=[_SetLearningRate(), KillAtEpoch(2)])
    assert os.path.isdir(os.path.join(out, "backup"))
    assert [int(r["epoch"]) for r in read_history(out)] == [0, 1]

    record = _Record()
    result = training.train(config, data=tiny_dataset, out_dir=out, verbose=0,
                            callbacks=[record, _SetLearningRate()])
    # Only the third epoch ran, with the learning rate the killed run had set.
    assert record.begins == [(2, pytest.approx(1e-3 * 0.25))]
    assert result.epochs_run == 1
    assert [int(r["epoch"]) for r in read_history(out)] == [0, 1, 2]
    assert not os.path.exists(os.path.join(out, "backup"))


def test_resume_refuses_a_different_config(tiny_dataset, tmp_path):
    # An unfinished run (config.json + backup/) is resumed only with the same config.
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    config = tiny_config(epochs=2, strategy="default")
    from keras_liver.data.preprocessing import resolve_config
    saved = dict(config, data=resolve_config(config["data"]))
    training.write_json(str(out / training.CONFIG_FILE), saved)
    changed = tiny_config(epochs=2, strategy="default")
    changed["model"]["base_filters"] = 8
    with pytest.raises(ValueError, match="different model config"):
        training.train(changed, data=tiny_dataset, out_dir=str(out), verbose=0)
    assert json.loads((out / training.CONFIG_FILE).read_text())["model"]["base_filters"] == 4, \
        "the unfinished run's config is kept"


class _FakeModel:
    stop_training = False


def test_stop_at_loss_stops_below_threshold_only():
    cb = training.StopAtLoss(5e-4)
    cb.set_model(_FakeModel())
    cb.on_epoch_end(0, {"loss": 1e-3})
    assert not cb.model.stop_training
    cb.on_epoch_end(1, {"loss": 4e-4})
    assert cb.model.stop_training and cb.stopped_epoch == 1


def test_paper_callbacks_follow_their_own_monitor():
    cbs = training._paper_callbacks(
        {"reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 8},
         "early_stopping": {"patience": 20}, "stop_at_loss": 5e-4}, "val_dice")
    reduce, early, stop = cbs
    assert (reduce.monitor, reduce.mode, reduce.factor, reduce.patience) == ("val_loss", "min", 0.5, 8)
    assert (early.monitor, early.patience) == ("val_dice", 20)
    assert early.mode == "max", "val_dice is maximised"
    assert stop.threshold == 5e-4


def test_batch_norm_momentum_sets_how_fast_moving_statistics_follow_the_batch():
    x = np.arange(2 * 4 * 4 * 2, dtype="float32").reshape(2, 4, 4, 2)
    batch_mean = x.mean(axis=(0, 1, 2))

    def one_step(momentum):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4, 4, 2))
        inner = keras.Sequential([keras.layers.BatchNormalization()])  # a nested model too
        model = keras.Model(inputs, inner(keras.layers.BatchNormalization()(inputs)))
        if momentum is not None:
            assert training.set_batch_norm_momentum(model, momentum) == 2
        model.compile(optimizer="sgd", loss="mse")
        model.train_on_batch(x, np.zeros_like(x))
        return keras.ops.convert_to_numpy(model.layers[1].moving_mean)

    np.testing.assert_allclose(one_step(None), 0.01 * batch_mean, rtol=1e-5)   # Keras' 0.99
    np.testing.assert_allclose(one_step(0.9), 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(one_step(0.0), batch_mean, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_norm_momentum"):
        training.set_batch_norm_momentum(keras.Sequential([keras.layers.Dense(1)]), 1.0)


def test_cosine_schedule_runs_from_the_learning_rate_to_min_lr_over_every_step():
    s = training.build_schedule({"name": "cosine", "min_lr": 1e-5}, learning_rate=1e-3,
                                steps_per_epoch=10, epochs=5)
    lr = [float(keras.ops.convert_to_numpy(s(i))) for i in range(50)]
    assert lr[0] == pytest.approx(1e-3)
    # half-way down the cosine at the middle step (49 steps of decay: step 24.5)
    assert (lr[24] + lr[25]) / 2 == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-4)
    assert lr[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(lr, lr[1:])), "falls at every step"

    w = training.build_schedule({"name": "cosine", "min_lr": 1e-5, "warmup_epochs": 1},
                                learning_rate=1e-3, steps_per_epoch=10, epochs=5)
    lr = [float(keras.ops.convert_to_numpy(w(i))) for i in range(50)]
    assert lr[0] == pytest.approx(1e-5) and lr[10] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lr[:10], lr[1:11])), "rises over the warm-up epoch"
    assert lr[-1] == pytest.approx(1e-5)


@pytest.mark.parametrize("spec, message", [
    ({"name": "step"}, "unknown lr_schedule"),
    ({"name": "cosine", "alpha": 0.1}, "unknown keys"),
    ({"name": "cosine", "min_lr": 1e-2}, "min_lr"),
    ({"name": "cosine", "warmup_epochs": 5}, "warmup_epochs"),
])
def test_cosine_schedule_refuses_what_it_cannot_run(spec, message):
    with pytest.raises(ValueError, match=message):
        training.build_schedule(spec, learning_rate=1e-3, steps_per_epoch=10, epochs=5)


class _RecordStepLearningRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_lr_schedule_counts_the_training_steps_exactly(tiny_dataset, tmp_path):
    # The schedule's length comes from counting the filtered training slices before the run:
    # miscounted, the last step would not land on min_lr (too few steps counted: it would be
    # reached early and held; too many: never reached).
    config = tiny_config(epochs=2, strategy="default", callbacks={},
                         lr_schedule={"name": "cosine", "min_lr": 1e-5})
    record = _RecordStepLearningRate()
    result = training.train(config, data=tiny_dataset, out_dir=str(tmp_path / "run"),
                            verbose=0, callbacks=[record])
    lr0 = config["training"]["optimizer"]["learning_rate"]
    assert len(record.rates) >= 4 and record.rates[0] == pytest.approx(lr0)
    assert record.rates[-1] == pytest.approx(1e-5)
    assert record.rates[-2] > 1e-5 * 1.001
    assert result.history["learning_rate"][0] < lr0, "history.csv records the epoch's rate"

    with pytest.raises(ValueError, match="keep one"):
        training.train(tiny_config(lr_schedule={"name": "cosine"},
                                   callbacks={"reduce_lr": {"patience": 2}}),
                       data=tiny_dataset, out_dir=str(tmp_path / "both"), verbose=0)


def test_lr_schedule_on_the_3d_sampler_needs_the_steps_per_epoch():
    from keras_liver.data import volumetric

    spec = {"lr_schedule": {"name": "cosine", "min_lr": 1e-5}, "epochs": 2,
            "optimizer": {"name": "adam", "learning_rate": 1e-3}}
    with pytest.raises(ValueError, match="cannot count ahead"):
        training._scheduled_optimizer_spec(spec, data_module=volumetric, data="unused",
                                           data_config={}, seed=0, steps_per_epoch=None)
    opt, steps = training._scheduled_optimizer_spec(spec, data_module=volumetric, data="unused",
                                                    data_config={}, seed=0, steps_per_epoch=5)
    assert steps == 5
    schedule = opt["learning_rate"]
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(9)) == pytest.approx(1e-5)
    assert spec["optimizer"]["learning_rate"] == 1e-3, "the recipe is not modified"


@pytest.mark.parametrize("paper", ["msa_unet", "ra_vnet"])
def test_load_model_rebuilds_the_projects_layers_in_a_fresh_interpreter(paper, tmp_path):
    """A saved run's network with this project's layers (MSA-UNet's DropBlock; RA V-Net's
    ChannelAttention and StackSequence) loads with ``training.load_model`` in a process that
    imported nothing but ``keras_liver.training``, and gives the same outputs. Plain
    ``keras.models.load_model`` there fails: the layers are unregistered until
    ``keras_liver.layers`` runs (so ``keras-liver predict`` could not load an MSA-UNet run)."""
    config = common.resolve_config(common.load_experiment(paper), "tiny")["model"]
    model = training.build_model(config)
    custom = {type(l).__name__ for l in model._flatten_layers()
              if type(l).__module__ == "keras_liver.layers"}
    assert custom, f"{paper}'s tiny network has none of this project's layers"
    path = str(tmp_path / training.BEST_MODEL)
    model.save(path)
    x = np.random.default_rng(0).random((2, *config["input_shape"]), np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    code = (f"import numpy as np\nfrom keras_liver import training\n"
            f"m = training.load_model({path!r})\n"
            f"y = m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)\n"
            f"np.testing.assert_allclose(y, np.load({str(tmp_path / 'y.npy')!r}), atol=1e-5)\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
