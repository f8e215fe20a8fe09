"""One training runner for every paper.

``train(config, data=..., out_dir=...)`` builds the model and optimizer inside a
``tf.distribute`` strategy (``MirroredStrategy`` over all visible GPUs, else the CPU), compiles
the paper's loss and metrics, and fits with the paper's callbacks plus ``BackupAndRestore``
(a killed run resumes at the epoch and learning rate where it stopped), a best-model
checkpoint, a CSV log and TensorBoard. The resolved configuration and the preprocessing
parameters are written beside the weights before the first step, so export and inference read
exactly what training used (nnU-Net's "one plans file" habit).

A run directory holds::

    config.json          resolved experiment config (model, data, training, seed)
    preprocessing.json   the data config the model expects at inference time
    model.keras          best model (by the monitored validation metric)
    last.keras           model at the end of training
    history.csv          one row per epoch (appended across resumed runs)
    backup/              BackupAndRestore state (deleted when training completes)
    logs/                TensorBoard
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_liver import fileio
from keras_liver.optimizers import CoupledWeightDecayAdam

CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
BEST_MODEL = "model.keras"
LAST_MODEL = "last.keras"
HISTORY_FILE = "history.csv"


# --------------------------------------------------------------------------- callbacks

class StopAtLoss(keras.callbacks.Callback):
    """Stop when the monitored loss falls below ``threshold`` (RA V-Net §3.1: "loss 5e-4 as
    the function exit")."""

    def __init__(self, threshold: float, monitor: str = "loss"):
        super().__init__()
        self.threshold = float(threshold)
        self.monitor = monitor
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.threshold:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class _LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's learning rate to the epoch logs (so history.csv records it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def _mode_for(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def _paper_callbacks(spec: dict[str, Any], monitor: str) -> list[keras.callbacks.Callback]:
    """Callbacks of the published recipe, from the ``training.callbacks`` config block.

    Each callback watches its own ``monitor`` when given (e.g. MSA-UNet reduces the learning
    rate on ``val_loss``), else the run's monitored metric; the mode follows the metric name.
    """
    callbacks = []
    if spec.get("reduce_lr"):
        r = dict(spec["reduce_lr"])
        m = r.pop("monitor", monitor)
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=m, mode=r.pop("mode", _mode_for(m)), factor=r.pop("factor", 0.1),
            patience=r.pop("patience", 10), min_lr=r.pop("min_lr", 0.0), verbose=1, **r))
    if spec.get("early_stopping"):
        e = dict(spec["early_stopping"])
        m = e.pop("monitor", monitor)
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=m, mode=e.pop("mode", _mode_for(m)), patience=e.pop("patience", 20),
            verbose=1, **e))
    if spec.get("stop_at_loss") is not None:
        callbacks.append(StopAtLoss(spec["stop_at_loss"]))
    return callbacks


# --------------------------------------------------------------------------- strategy, seeds

def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy for ``kind``:

    - ``"mirrored"``: ``MirroredStrategy`` over all visible GPUs, else over all logical CPU
      devices (the test suite configures two to exercise the distributed path without a GPU);
    - ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the cluster ``TF_CONFIG`` names
      (:func:`keras_liver.distribute.multi_worker_strategy`; docs/distributed.md);
    - ``"auto"`` (default): ``"multi_worker"`` when ``TF_CONFIG`` names a cluster of more than
      one task; otherwise ``"mirrored"``, except that a machine with no GPU and a single CPU
      device trains under the default strategy — there is nothing to mirror, and a one-device
      ``MirroredStrategy`` on CPU doubled the RA V-Net demo's step time (1.4 s against 0.7 s,
      measured on 2 cores with TF 2.21);
    - ``"default"``: the default (no-op) strategy.
    """
    from keras_liver import distribute

    if kind == "default":
        return tf.distribute.get_strategy()
    if kind not in ("mirrored", "auto", "multi_worker"):
        raise ValueError("strategy must be 'auto', 'mirrored' or 'default', or 'multi_worker' "
                         f"for a TF_CONFIG cluster; received {kind!r}")
    if kind == "multi_worker" or (kind == "auto" and distribute.cluster_wants_multi_worker()):
        return distribute.multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto" and len(cpus) == 1:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy([d.name for d in cpus])


def set_seeds(seed: int) -> None:
    keras.utils.set_random_seed(int(seed))


# --------------------------------------------------------------------------- building blocks

def build_model(model_config: dict[str, Any]) -> keras.Model:
    from keras_liver.models import get_model

    cfg = dict(model_config)
    name = cfg.pop("name")
    if "input_shape" in cfg:
        cfg["input_shape"] = tuple(cfg["input_shape"])
    return get_model(name, **cfg)


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-statistics momentum of every ``BatchNormalization`` layer of ``model``.

    Keras' default 0.99 leaves the moving mean and variance far from the batch statistics for
    the first few hundred steps (0.99**300 ≈ 5 % of the initial values remain), so validation
    in inference mode lags training badly in a short run; PyTorch's default corresponds to 0.9.
    No paper of this library states a value. Returns the number of layers changed.
    """
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"batch_norm_momentum must be in [0, 1); received {momentum}")
    changed = 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            changed += 1
        stack.extend(getattr(layer, "layers", []))  # nested models
    return changed


def build_optimizer(spec: dict[str, Any]) -> keras.optimizers.Optimizer:
    """An optimizer from a recipe's ``training.optimizer`` block: ``name`` (``adam``, ``adamw``,
    ``sgd``, ``rmsprop``, ``coupled_adam``; default ``adam``) and the class's keyword arguments.

    ``l2`` is a coupled L2 penalty as PyTorch's ``torch.optim.Adam(weight_decay=l2)`` applies
    it (:class:`keras_liver.optimizers.CoupledWeightDecayAdam`; BADA §4.3, SPEC §4):
    ``{"name": "adam", "learning_rate": 1e-3, "l2": 4e-5}`` builds that optimizer, and so does
    ``"name": "coupled_adam"`` (its ``l2`` defaults to 4e-5); ``"l2": 0`` with ``adam`` is plain
    Adam. ``weight_decay`` stays Keras' decoupled (AdamW-style) decay; combined with a non-zero
    ``l2`` it raises ``ValueError``, as does ``l2`` with an optimizer other than Adam.
    """
    cfg = dict(spec)
    name = str(cfg.pop("name", "adam")).lower()
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
               "coupled_adam": CoupledWeightDecayAdam}
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(classes)}")
    if "l2" in cfg and name not in ("adam", "coupled_adam"):
        raise ValueError(f"optimizer {name!r} has no coupled 'l2' penalty; it is implemented "
                         "for Adam only (name 'adam' or 'coupled_adam')")
    if name == "adam" and "l2" in cfg:
        l2 = cfg.pop("l2")
        if l2 is not None and float(l2) != 0.0:
            return CoupledWeightDecayAdam(l2=l2, **cfg)
    return classes[name](**cfg)


SCHEDULES = ("cosine",)


def build_schedule(spec: dict[str, Any], *, learning_rate: float, steps_per_epoch: int,
                   epochs: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """A per-step learning-rate schedule from a recipe's ``training.lr_schedule`` block.

    ``{"name": "cosine", "min_lr": 1e-5, "warmup_epochs": 0}``: optional linear warm-up
    from ``min_lr`` to the optimizer's ``learning_rate`` over ``warmup_epochs``, then a
    half-cosine from ``learning_rate`` down to ``min_lr`` at the last step of ``epochs``
    (Loshchilov & Hutter's SGDR without restarts; ``keras.optimizers.schedules.CosineDecay``).
    The step counter is the optimizer's, so a resumed run continues the curve where it stopped.
    """
    cfg = dict(spec)
    name = str(cfg.pop("name", "cosine")).lower()
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}; choose one of {list(SCHEDULES)}")
    min_lr = float(cfg.pop("min_lr", 0.0))
    warmup_epochs = float(cfg.pop("warmup_epochs", 0))
    if cfg:
        raise ValueError(f"lr_schedule {name!r} has unknown keys {sorted(cfg)}; expected "
                         f"name, min_lr, warmup_epochs")
    learning_rate, steps_per_epoch, epochs = float(learning_rate), int(steps_per_epoch), int(epochs)
    if not 0.0 <= min_lr <= learning_rate:
        raise ValueError(f"lr_schedule min_lr must be in [0, learning_rate = {learning_rate}], "
                         f"received {min_lr}")
    if not 0.0 <= warmup_epochs < epochs or steps_per_epoch < 1:
        raise ValueError(f"lr_schedule: warmup_epochs must be in [0, epochs = {epochs}) and "
                         f"there must be at least one step an epoch; received warmup_epochs "
                         f"{warmup_epochs}, {steps_per_epoch} steps an epoch")
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            min_lr, decay_steps=max(1, total - warmup - 1), alpha=min_lr / learning_rate,
            warmup_target=learning_rate, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, total - 1), alpha=min_lr / learning_rate)


def _scheduled_optimizer_spec(training: dict[str, Any], *, data_module, data: str,
                              data_config: dict[str, Any], seed: int,
                              steps_per_epoch: int | None) -> tuple[dict[str, Any], int | None]:
    """``(optimizer spec, steps_per_epoch)``: ``training.optimizer`` with its
    ``learning_rate`` replaced by the ``lr_schedule``'s per-step schedule, and the steps per
    epoch that schedule was laid out for: ``steps_per_epoch`` when given, else counted from the
    training split exactly as the pipeline will yield it
    (:func:`keras_liver.data.pipeline.count_examples`). Without a schedule, both unchanged.

    A schedule run is then fitted with that ``steps_per_epoch`` over the repeated training
    split, not by exhausting it: the schedule reads the optimizer's step counter, and when an
    epoch ends by exhausting a dataset of unknown length, Keras 3.15 on TensorFlow 2.21 (no
    XLA) counts one step more than it ran (measured: 22 after 2 epochs of 10 batches;
    20 with ``jit_compile`` or a known length)."""
    spec = dict(training.get("optimizer", {"name": "adam"}))
    schedule = training.get("lr_schedule")
    if not schedule:
        return spec, steps_per_epoch
    if (training.get("callbacks") or {}).get("reduce_lr"):
        raise ValueError("training.lr_schedule and callbacks.reduce_lr both set the learning "
                         "rate; keep one")
    if steps_per_epoch is None:
        if not hasattr(data_module, "count_examples"):
            raise ValueError(f"training.lr_schedule needs the steps per epoch, which "
                             f"{data_module.__name__} cannot count ahead; pass steps_per_epoch")
        n = data_module.count_examples(data, "train", data_config, seed=seed)
        batch = int(data_config["batch_size"])
        drop = data_module.resolve_config(data_config).get("drop_remainder", True)
        steps_per_epoch = n // batch if drop else steps_for(n, batch)
    spec["learning_rate"] = build_schedule(
        schedule, learning_rate=spec.get("learning_rate", 1e-3),
        steps_per_epoch=steps_per_epoch, epochs=int(training["epochs"]))
    return spec, steps_per_epoch


def build_loss(spec: dict[str, Any] | str):
    from keras_liver.losses import get_loss

    if isinstance(spec, str):
        return get_loss(spec)
    cfg = dict(spec)
    return get_loss(cfg.pop("name"), **cfg)


def build_metrics(data_config: dict[str, Any], class_names: dict | None = None, *,
                  share_counts: bool = True):
    """Training metrics for a data config: binary ones for a one-channel target, else the
    multi-class mean foreground Dice/Jaccard over ``num_classes`` plus one Dice per entry of
    ``class_names`` (``{"1": "liver", "2": "tumour"}`` → ``dice_liver``, ``dice_tumour``).
    ``share_counts``: see :func:`keras_liver.metrics.keras_metrics.training_metrics`."""
    from keras_liver.metrics.keras_metrics import training_metrics

    task = _task(data_config)
    if task == "binary":
        return training_metrics(task, share_counts=share_counts)
    return training_metrics(task, num_classes=int(data_config["num_classes"]),
                            class_names={int(k): v for k, v in (class_names or {}).items()},
                            share_counts=share_counts)


def _data_module(data_config: dict[str, Any]):
    """The module that resolves a data config and builds its datasets: the 3-D sampler of
    :mod:`keras_liver.data.volumetric` for its kinds (RA-UNet-II slabs and patches), else the
    slice pipeline :mod:`keras_liver.data.pipeline`. Both have ``resolve_config`` and
    ``build_datasets`` with the same arguments."""
    from keras_liver.data import pipeline, volumetric

    return volumetric if volumetric.is_volumetric(data_config) else pipeline


def _task(data_config: dict[str, Any]) -> str:
    return "multiclass" if data_config.get("target") == "classes" else "binary"


def resolve_monitor(training: dict[str, Any]) -> tuple[str, str]:
    monitor = training.get("monitor", "val_dice")
    return monitor, training.get("monitor_mode") or _mode_for(monitor)


# --------------------------------------------------------------------------- runner

@dataclass
class TrainResult:
    run_dir: str
    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def load_model(path: str) -> keras.Model:
    """A saved ``.keras`` model, uncompiled, for inference. Keras rebuilds a custom layer
    (DropBlock, the attention gates, ...) from its registered name only once the module that
    registers it has run, so this imports :mod:`keras_liver.layers` first: without it a fresh
    interpreter (``keras-liver predict``, :meth:`keras_liver.inference.Predictor.from_run`)
    could not load a run whose network has one."""
    from keras_liver import layers  # noqa: F401  (registers the custom layers)

    return keras.models.load_model(path, compile=False)


def read_run_config(run_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(config, preprocessing)`` written by :func:`train` in ``run_dir``."""
    missing = "not a training run directory (train writes it there first)"
    return (fileio.read_json(os.path.join(run_dir, CONFIG_FILE), missing=missing),
            fileio.read_json(os.path.join(run_dir, PREPROCESSING_FILE), missing=missing))


def _resolve_run_config(config: dict[str, Any], data: str, seed: int | None) -> dict[str, Any]:
    """The config as :func:`train` writes it to ``config.json``: seed set, data config
    resolved, dataset path absolute."""
    config = copy.deepcopy(config)
    config["seed"] = int(config.get("seed", 0) if seed is None else seed)
    config["data"] = _data_module(config["data"]).resolve_config(config["data"])
    config["dataset"] = os.path.abspath(data)
    return config


def _changed_keys(run_dir: str, config: dict[str, Any], keys) -> list[str]:
    """Keys of ``config`` whose values differ from the run's ``config.json``."""
    previous = fileio.read_json(os.path.join(run_dir, CONFIG_FILE))

    def canonical(obj):
        return json.dumps(json.loads(json.dumps(obj, default=_json_default)), sort_keys=True)

    return [k for k in keys if canonical(previous.get(k)) != canonical(config.get(k))]


def _check_resume_compatible(run_dir: str, config: dict[str, Any]) -> None:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path) or not os.path.isdir(os.path.join(run_dir, "backup")):
        return
    changed = _changed_keys(run_dir, config, ("model", "data", "training"))
    if changed:
        raise ValueError(
            f"{run_dir}: holds an unfinished run with a different {', '.join(changed)} config; "
            "resume it with the same config or choose another --out")


def is_finished(run_dir: str, config: dict[str, Any], *, data: str,
                seed: int | None = None) -> bool:
    """Whether ``run_dir`` holds a completed :func:`train` run of this ``config`` on ``data``
    (best and last model written, no pending backup, same model, data, training, seed and
    dataset), so a multi-stage experiment can skip it."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if (not os.path.exists(path) or os.path.isdir(os.path.join(run_dir, "backup"))
            or not all(os.path.exists(os.path.join(run_dir, f)) for f in (BEST_MODEL, LAST_MODEL))):
        return False
    return not _changed_keys(run_dir, _resolve_run_config(config, data, seed),
                             ("model", "data", "training", "seed", "dataset"))


def train(config: dict[str, Any], *, data: str, out_dir: str, seed: int | None = None,
          strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto",
          steps_per_epoch: int | None = None,
          callbacks: list[keras.callbacks.Callback] | None = None) -> TrainResult:
    """Train ``config`` (keys ``model``, ``data``, ``training``) on the converted dataset ``data``.

    ``config["training"]`` holds ``loss`` (a loss spec for :func:`keras_liver.losses.get_loss`),
    ``optimizer`` (``{"name": "adam", "learning_rate": 1e-4}``), optional ``lr_schedule``
    (a per-step schedule, :func:`build_schedule`), ``epochs``, ``monitor``
    (default ``val_dice``), ``callbacks`` (``reduce_lr``, ``early_stopping``, ``stop_at_loss``),
    optional ``precision`` (a Keras dtype policy, e.g. ``mixed_float16``), ``jit_compile``,
    ``class_names`` (multi-class targets: one Dice metric per named class) and
    ``batch_norm_momentum`` (see :func:`set_batch_norm_momentum`; default: Keras' 0.99).
    ``config["data"]`` is the pipeline config (:mod:`keras_liver.data.pipeline`), its
    ``batch_size`` the global batch. Re-running with the same ``out_dir`` resumes an
    interrupted run from its last completed epoch. ``callbacks`` are added before the
    runner's own.

    Under a multi-worker strategy (``training.strategy`` ``"multi_worker"``, or ``"auto"`` with
    a ``TF_CONFIG`` cluster; docs/distributed.md) every worker calls ``train`` alike: the chief
    writes ``out_dir``, every other worker writes the same files to ``out_dir/workertemp_<i>``,
    deleted at the end, and the epochs run in :func:`keras_liver.distribute.fit` (Keras 3's
    ``fit`` does not run under that strategy).
    """
    from keras_liver import distribute

    config = _resolve_run_config(config, data, seed)
    seed = config["seed"]
    data_module = _data_module(config["data"])
    data_config = config["data"]
    training = config["training"]
    # The strategy first: a multi-worker one decides where this process writes, and
    # TensorFlow wants its collective ops configured before other work.
    strategy = strategy or make_strategy(training.get("strategy", "auto"))
    multi_worker = distribute.is_multi_worker(strategy)
    if multi_worker:
        distribute.check_data_config(data_config, strategy, steps_per_epoch)
    # The chief (and a single process) writes out_dir; another worker writes the same files
    # to its own temporary directory, deleted when training completes (distribute.worker_dir).
    write_dir = distribute.worker_dir(out_dir, strategy)
    os.makedirs(write_dir, exist_ok=True)
    _check_resume_compatible(write_dir, config)
    history_path = os.path.join(write_dir, HISTORY_FILE)
    if not os.path.isdir(os.path.join(write_dir, "backup")) and os.path.exists(history_path):
        os.remove(history_path)  # a fresh run, not a resumed one: start a new log
    write_json(os.path.join(write_dir, CONFIG_FILE), config)
    write_json(os.path.join(write_dir, PREPROCESSING_FILE), data_config)

    set_seeds(seed)
    precision = check_precision(config)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        optimizer_spec, steps_per_epoch = _scheduled_optimizer_spec(
            training, data_module=data_module, data=data, data_config=data_config, seed=seed,
            steps_per_epoch=steps_per_epoch)
        datasets = data_module.build_datasets(data, data_config, seed=seed,
                                              splits=("train", "val"),
                                              repeat_train=steps_per_epoch is not None)
        with strategy.scope():
            model = build_model(config["model"])
            if training.get("batch_norm_momentum") is not None:
                set_batch_norm_momentum(model, training["batch_norm_momentum"])
            model.compile(
                optimizer=build_optimizer(optimizer_spec),
                loss=build_loss(training["loss"]),
                metrics=build_metrics(data_config, training.get("class_names")),
                jit_compile=bool(training.get("jit_compile", False)),
            )
            # Create the optimizer's slot variables now: left to the first step, they are
            # created inside the traced train function, which TensorFlow then traces a second
            # time. Measured on RA-UNet-I (641 layers, 2 CPU cores): the first epoch's
            # overhead fell from 131 s to 74 s.
            model.optimizer.build(model.trainable_variables)
        monitor, mode = resolve_monitor(training)
        callbacks = [
            *(callbacks or []),
            _LearningRateLogger(),
            keras.callbacks.ModelCheckpoint(os.path.join(write_dir, BEST_MODEL), monitor=monitor,
                                            mode=mode, save_best_only=True, verbose=0),
            keras.callbacks.CSVLogger(history_path, append=True),
            keras.callbacks.TensorBoard(os.path.join(write_dir, "logs"), write_graph=False,
                                        profile_batch=0),
            *_paper_callbacks(training.get("callbacks", {}), monitor),
            # Last, so the backup taken at the end of an epoch holds the learning rate that
            # ReduceLROnPlateau set during that epoch's end. Per worker under a multi-worker
            # strategy (Keras 3's BackupAndRestore has no multi-worker logic).
            keras.callbacks.BackupAndRestore(os.path.join(write_dir, "backup"),
                                             delete_checkpoint=True),
        ]
        with warnings.catch_warnings():
            # The slice pipeline's length is only known after one pass (slices are filtered by
            # content); Keras warns at the end of that first epoch although nothing is wrong.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            if multi_worker:
                # Keras 3's fit does not run under a multi-worker strategy: the same steps
                # and callbacks in a custom loop (keras_liver.distribute.fit).
                history = distribute.fit(
                    model, datasets["train"], strategy=strategy,
                    validation_data=datasets["val"], epochs=int(training["epochs"]),
                    steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)
            else:
                # shuffle=False: the pipeline shuffles (seeded); fit cannot shuffle a tf.data input
                history = model.fit(
                    datasets["train"], validation_data=datasets["val"],
                    epochs=int(training["epochs"]), steps_per_epoch=steps_per_epoch,
                    callbacks=callbacks, verbose=verbose, shuffle=False)
        # Every worker saves (saving reads distributed variables); only the chief's files stay.
        model.save(os.path.join(write_dir, LAST_MODEL))
        best_path = os.path.join(write_dir, BEST_MODEL)
        if not os.path.exists(best_path):  # no validation epoch improved (e.g. NaN metric)
            model.save(best_path)
        best = load_model(best_path)
        if multi_worker:
            distribute.barrier(strategy)  # every worker has saved before any of them leaves
        if write_dir != out_dir:
            shutil.rmtree(write_dir, ignore_errors=True)
        return TrainResult(run_dir=out_dir, model=best, history=history.history,
                           epochs_run=len(history.epoch))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def check_precision(config: dict[str, Any]) -> str:
    """The run's dtype policy (``training.precision``, default float32), refused up front
    where TensorFlow cannot run it: on a machine without a GPU, 3-D networks under
    ``mixed_float16`` need XLA (``jit_compile``), since TensorFlow registers no float16 CPU
    kernel for ``MaxPool3D`` (XLA's CPU backend has one; ``mixed_bfloat16`` runs either way)."""
    training = config.get("training", {})
    precision = training.get("precision", "float32")
    rank = len(config.get("model", {}).get("input_shape", ())) - 1
    if (precision == "mixed_float16" and rank == 3 and not training.get("jit_compile")
            and not tf.config.list_physical_devices("GPU")):
        raise ValueError(f"{config['model'].get('name', 'the model')}: mixed_float16 on the CPU "
                         f"needs --jit for a 3-D network (TensorFlow has no float16 CPU kernel "
                         f"for MaxPool3D); add --jit or use --precision mixed_bfloat16")
    return precision


def steps_for(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))
