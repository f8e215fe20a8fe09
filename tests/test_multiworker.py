"""Training beyond one machine: TF_CONFIG parsing, and ``training.train`` on two worker
processes under ``MultiWorkerMirroredStrategy`` on localhost (keras_liver.distribute)."""
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO, KillAtEpoch
from keras_liver import distribute, training

#: Two workers, one replica each: the tiny U-Net at 32x32, global batch 4 (2 per worker),
#: 3 steps per epoch, 2 epochs, the runner's own callbacks.
TINY_CONFIG = {
    "model": {"name": "unet", "input_shape": [32, 32, 1], "base_filters": 4, "depth": 2},
    "data": {"kind": "slices", "target": "liver", "image_size": [32, 32],
             "window": [-100, 200], "clahe": None, "normalize": None,
             "slice_filter": {"keep_empty_fraction": 0.2}, "batch_size": 4,
             "shuffle_buffer": 64, "cache": True},
    "training": {"loss": {"name": "dice", "smooth": 1.0, "dice_over": "batch"},
                 "optimizer": {"name": "adam", "learning_rate": 1e-2},
                 "batch_norm_momentum": 0.9, "epochs": 2, "monitor": "val_dice",
                 "strategy": "auto", "callbacks": {}},
}

#: One worker: make the strategy ("auto" must pick MultiWorkerMirroredStrategy from
#: TF_CONFIG), train, and write what the test compares: the weights at the start and end of
#: training, the returned (best) model's weights, the history and the strategy.
WORKER = r"""
import json, sys
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras
from keras_liver import distribute, training

config, data, out, result_npz, result_json = json.loads(sys.argv[1]), *sys.argv[2:6]
strategy = training.make_strategy("auto")

class Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.initial = [w.copy() for w in self.model.get_weights()]
    def on_train_end(self, logs=None):
        self.final = [w.copy() for w in self.model.get_weights()]

record = Record()
result = training.train(config, data=data, out_dir=out, steps_per_epoch=3, verbose=0,
                        callbacks=[record])
arrays = {}
for key, weights in (("initial", record.initial), ("final", record.final),
                     ("best", result.model.get_weights())):
    arrays.update({f"{key}_{i}": w for i, w in enumerate(weights)})
np.savez(result_npz, **arrays)
with open(result_json, "w") as f:
    json.dump({"strategy": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
               "same_strategy": training.make_strategy() is strategy,
               "replicas": strategy.num_replicas_in_sync, "chief": distribute.is_chief(strategy),
               "worker_dir": distribute.worker_dir(out, strategy), "run_dir": result.run_dir,
               "history": result.history, "epochs_run": result.epochs_run}, f)
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _weights(npz, key):
    return [npz[k] for k in sorted((k for k in npz.files if k.startswith(key + "_")),
                                   key=lambda k: int(k.rsplit("_", 1)[1]))]


def test_two_workers_train_in_lockstep(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")  # one directory both workers see, as on a shared filesystem
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(TINY_CONFIG), tiny_dataset, out,
             str(tmp_path / f"w{index}.npz"), str(tmp_path / f"w{index}.json")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            # a collective waits forever for a dead peer: a hang must fail, not block the suite
            outputs.append(proc.communicate(timeout=420))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for index, (proc, (_, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"worker {index}:\n{err[-4000:]}"

    info = [json.load(open(tmp_path / f"w{i}.json")) for i in range(2)]
    npz = [np.load(tmp_path / f"w{i}.npz") for i in range(2)]
    assert [i["strategy"] for i in info] == [True, True]
    assert all(i["same_strategy"] for i in info), "one strategy per process"
    assert [i["replicas"] for i in info] == [2, 2]
    assert [i["chief"] for i in info] == [True, False]
    assert info[0]["worker_dir"] == out
    assert info[1]["worker_dir"] == os.path.join(out, "workertemp_1")
    assert all(i["run_dir"] == out and i["epochs_run"] == 2 for i in info)

    # Same start (the chief's initial values are broadcast), same end, weights moved.
    for key in ("initial", "final", "best"):
        a, b = _weights(npz[0], key), _weights(npz[1], key)
        assert len(a) == len(b) > 0
        for wa, wb in zip(a, b):
            np.testing.assert_array_equal(wa, wb, err_msg=key)
    moved = [not np.allclose(i, f) for i, f in zip(_weights(npz[0], "initial"),
                                                     _weights(npz[0], "final"))]
    assert sum(moved) > len(moved) // 2, "training changed the weights"

    # Epoch logs are all-reduced over both workers: identical histories (the callbacks of
    # both take the same decisions), finite, with the validation metrics.
    assert info[0]["history"] == info[1]["history"]
    history = info[0]["history"]
    assert {"loss", "dice", "val_loss", "val_dice", "learning_rate"} <= set(history)
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in history.values())

    # The chief wrote the run directory; the other worker's temporary directory is gone.
    for name in (training.CONFIG_FILE, training.PREPROCESSING_FILE, training.BEST_MODEL,
                 training.LAST_MODEL, training.HISTORY_FILE, "logs"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "backup")), "backup is removed after a finished run"
    assert sorted(os.listdir(out)) == sorted([training.CONFIG_FILE, training.PREPROCESSING_FILE,
                                              training.BEST_MODEL, training.LAST_MODEL,
                                              training.HISTORY_FILE, "logs"])
    with open(os.path.join(out, training.HISTORY_FILE)) as f:
        rows = f.read().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch")
    last = keras.models.load_model(os.path.join(out, training.LAST_MODEL), compile=False)
    for saved, final in zip(last.get_weights(), _weights(npz[0], "final")):
        np.testing.assert_array_equal(saved, final)
    config, _ = training.read_run_config(out)
    assert config["training"]["strategy"] == "auto" and config["data"]["batch_size"] == 4


# --------------------------------------------------------------------------- the loop itself

def _tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy",
                  metrics=["accuracy", keras.metrics.MeanAbsoluteError()])
    return model


def _arrays(n, seed):
    x = np.random.RandomState(seed).rand(n, 8, 8, 1).astype("float32")
    return x, (x > 0.5).astype("float32")


@pytest.mark.parametrize("steps_per_epoch", [None, 3])
def test_loop_matches_keras_fit_under_one_replica(steps_per_epoch):
    # Under the default strategy the custom loop must be Keras' fit: same weights, same
    # history (train metrics, and validation metrics over a partial last batch).
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices(_arrays(22, 0)).batch(4, drop_remainder=True)
    if steps_per_epoch:
        train = train.repeat()
    val = tf.data.Dataset.from_tensor_slices(_arrays(10, 1)).batch(4)
    reference, model = _tiny_model(), _tiny_model()
    model.set_weights(reference.get_weights())
    expected = reference.fit(train, validation_data=val, epochs=3, steps_per_epoch=steps_per_epoch,
                             verbose=0, shuffle=False)
    got = distribute.fit(model, train, strategy=tf.distribute.get_strategy(), validation_data=val,
                         epochs=3, steps_per_epoch=steps_per_epoch, verbose=0)
    assert got.epoch == expected.epoch == [0, 1, 2]
    assert set(got.history) == set(expected.history) >= {"loss", "val_loss", "val_accuracy"}
    for key, values in expected.history.items():
        np.testing.assert_allclose(got.history[key], values, rtol=1e-6, err_msg=key)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_loop_resumes_from_backup_and_restore(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    train = tf.data.Dataset.from_tensor_slices(_arrays(16, 0)).batch(4, drop_remainder=True)
    backup = str(tmp_path / "backup")
    model = _tiny_model()
    with pytest.raises(KeyboardInterrupt):
        distribute.fit(model, train, strategy=strategy, epochs=3, verbose=0,
                       callbacks=[KillAtEpoch(2), keras.callbacks.BackupAndRestore(backup)])
    after_two = model.get_weights()
    resumed = _tiny_model()  # fresh weights: the backup must bring back epoch 2's
    begins = []
    history = distribute.fit(
        resumed, train, strategy=strategy, epochs=3, verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(
                       on_epoch_begin=lambda epoch, logs: begins.append(
                           [w.copy() for w in resumed.get_weights()])),
                   keras.callbacks.BackupAndRestore(backup)])
    assert history.epoch == [2], "only the third epoch runs"
    for a, b in zip(begins[0], after_two):
        np.testing.assert_array_equal(a, b)
    assert not os.path.exists(backup)


# --------------------------------------------------------------------------- TF_CONFIG

def _tf_config(cluster, task):
    return json.dumps({"cluster": cluster, "task": task})


def test_tf_config_parses_chief_and_workers():
    two = {"worker": ["a:1", "b:2"]}
    first = distribute.parse_tf_config(_tf_config(two, {"type": "worker", "index": 0}))
    second = distribute.parse_tf_config(_tf_config(two, {"type": "worker", "index": 1}))
    assert (first.num_workers, first.is_chief, first.worker_id) == (2, True, 0)
    assert (second.is_chief, second.worker_id) == (False, 1)
    # With a chief job, worker 0 is not the chief and comes after it.
    chief = {"chief": ["c:1"], "worker": ["a:1", "b:2"]}
    w0 = distribute.parse_tf_config(_tf_config(chief, {"type": "worker", "index": 0}))
    c = distribute.parse_tf_config(_tf_config(chief, {"type": "chief", "index": 0}))
    assert (w0.num_workers, w0.is_chief, w0.worker_id) == (3, False, 1)
    assert (c.is_chief, c.worker_id) == (True, 0)
    assert distribute.read_tf_config({}) is None
    assert distribute.read_tf_config({"TF_CONFIG": "  "}) is None
    assert not distribute.cluster_wants_multi_worker({})
    assert not distribute.cluster_wants_multi_worker(
        {"TF_CONFIG": _tf_config({"worker": ["a:1"]}, {"type": "worker", "index": 0})})
    assert distribute.cluster_wants_multi_worker(
        {"TF_CONFIG": _tf_config(two, {"type": "worker", "index": 1})})


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "needs a non-empty 'cluster'"),
    (_tf_config({"ps": ["a:1"]}, {"type": "ps", "index": 0}), r"jobs \['ps'\] are not used"),
    (_tf_config({"worker": "a:1"}, {"type": "worker", "index": 0}), "non-empty list"),
    (_tf_config({"worker": ["a"]}, {"type": "worker", "index": 0}), "must be 'host:port'"),
    (_tf_config({"worker": ["a:1", "a:1"]}, {"type": "worker", "index": 0}), "given twice"),
    (_tf_config({"chief": ["a:1", "b:1"]}, {"type": "chief", "index": 0}), "at most one chief"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "needs a 'task'"),
    (_tf_config({"worker": ["a:1"]}, {"type": "chief", "index": 0}), "task.type must be one of"),
    (_tf_config({"worker": ["a:1"]}, {"type": "worker", "index": "0"}), "must be an integer"),
    (_tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 2}),
     r"task.index 2 is out of range for job 'worker' with 2 address\(es\) \(valid: 0..1\)"),
])
def test_bad_tf_config_gets_one_clear_error(text, message):
    with pytest.raises(ValueError, match=r"^TF_CONFIG: .*" + message):
        distribute.parse_tf_config(text)


def test_multi_worker_strategy_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="'multi_worker' needs the TF_CONFIG"):
        training.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", _tf_config({"worker": ["a:1"]}, {"type": "worker", "index": 3}))
    with pytest.raises(ValueError, match="task.index 3 is out of range"):
        training.make_strategy("auto")


def test_chief_and_worker_dir_without_a_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = training.make_strategy("default")
    assert distribute.is_chief() and distribute.is_chief(strategy)
    assert not distribute.is_multi_worker(strategy)
    assert distribute.worker_dir(str(tmp_path), strategy) == str(tmp_path)
    monkeypatch.setenv("TF_CONFIG", _tf_config({"worker": ["a:1", "b:2"]},
                                               {"type": "worker", "index": 1}))
    assert not distribute.is_chief()  # read from TF_CONFIG when no strategy is given


class _Replicas:
    def __init__(self, n):
        self.num_replicas_in_sync = n


def test_global_batch_must_divide_over_the_replicas():
    assert distribute.replica_batch_size(8, _Replicas(4)) == 2
    assert distribute.replica_batch_size(4, _Replicas(1)) == 4
    with pytest.raises(ValueError, match=r"data.batch_size 6 is the global batch and must be a "
                                         r"multiple of the 4 replicas.*choose e.g. 4 or 8"):
        distribute.replica_batch_size(6, _Replicas(4))
    with pytest.raises(ValueError, match="multiple of the 2 replicas"):
        distribute.replica_batch_size(1, _Replicas(2))
    with pytest.raises(ValueError, match="drop_remainder false"):
        distribute.check_data_config({"batch_size": 4, "drop_remainder": False}, _Replicas(2),
                                     steps_per_epoch=None)
    assert distribute.check_data_config({"batch_size": 4, "drop_remainder": False},
                                        _Replicas(2), steps_per_epoch=3) == 2


# --------------------------------------------------------------------------- experiments

_CLUSTER = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                       "task": {"type": "worker", "index": 1}})


def test_experiments_refuse_a_cluster_and_point_to_keras_liver_train(monkeypatch):
    from keras_liver.experiments import common, ra_vnet

    monkeypatch.setenv("TF_CONFIG", _CLUSTER)
    with pytest.raises(SystemExit, match="keras-liver train --experiment ra_vnet"):
        ra_vnet.main(["--preset", "tiny"])
    monkeypatch.delenv("TF_CONFIG")
    common.refuse_cluster("ra_vnet")    # no cluster: nothing to refuse


def test_training_jobs_run_one_at_a_time_in_a_cluster_and_only_the_chief_exports(
        monkeypatch, tmp_path):
    from keras_liver import export as export_lib
    from keras_liver.experiments import common

    calls, exports = [], []
    monkeypatch.setattr(training, "train", lambda cfg, **kw: calls.append(
        (os.getpid(), kw["out_dir"])) or training.TrainResult(
            run_dir=kw["out_dir"], model=None, history={}, epochs_run=1))
    monkeypatch.setattr(export_lib, "export_run", lambda run_dir, **kw: exports.append(run_dir))
    monkeypatch.setenv("TF_CONFIG", _CLUSTER)            # worker 1: not the chief
    jobs = [common.TrainingJob(f"run {i}", {}, "data", str(tmp_path / str(i)), export=True)
            for i in range(2)]
    assert common.run_training_jobs(jobs, jobs=2) == [1, 1]
    # in this process (a process pool would give every job its own cluster member)
    assert [pid for pid, _ in calls] == [os.getpid()] * 2
    assert exports == []                                 # worker 1 does not export
    monkeypatch.setenv("TF_CONFIG", _CLUSTER.replace('"index": 1', '"index": 0'))
    calls.clear()
    common.run_training_jobs(jobs, jobs=2)
    assert exports == [j.run_dir for j in jobs]          # the chief does
