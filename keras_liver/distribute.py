"""Training on several machines: ``MultiWorkerMirroredStrategy`` through ``TF_CONFIG``.

Every worker runs the same program with its own ``TF_CONFIG`` environment variable (the
format of the TensorFlow multi-worker tutorial, ``tensorflow.org/tutorials/distribute/
multi_worker_with_keras``)::

    {"cluster": {"worker": ["node0:12345", "node1:12345"]},
     "task": {"type": "worker", "index": 0}}

:func:`read_tf_config` parses and validates it (one clear error per problem: missing
``cluster``, a job with no address, a bad or out-of-range ``task.index``, ...). The chief is the
``chief`` task when the cluster has one, else worker 0 (:func:`is_chief`).

What :func:`keras_liver.training.train` does with it (``training.strategy`` ``"multi_worker"``,
or ``"auto"`` with a ``TF_CONFIG`` naming more than one task):

- **Strategy** (:func:`multi_worker_strategy`): one ``MultiWorkerMirroredStrategy`` per process
  (TensorFlow configures its collective ops once per program), all-reduce by NCCL when the
  worker has GPUs, else by RING over gRPC. Variables are created on every worker with the
  chief's initial values (the strategy broadcasts them), gradients are summed over all replicas
  of all workers at every step, so the weights stay identical.
- **Batch**: ``data.batch_size`` is the *global* batch. Every worker builds the same seeded
  pipeline; ``strategy.experimental_distribute_dataset`` splits each global batch into
  ``num_replicas_in_sync`` per-replica batches of ``batch_size / num_replicas_in_sync``
  (:func:`replica_batch_size` refuses a batch that does not divide).
- **Sharding: by DATA** (:data:`AUTO_SHARD_POLICY`). Each worker reads every record and keeps
  its own share of the batches. Sharding by FILE would hand each worker whole TFRecord
  shards, but the datasets here hold one shard per case: a split may have fewer shards than
  there are workers, and cases differ in their number of (filtered) slices, so workers would
  run different numbers of steps — and a collective all-reduce waits forever for a worker
  that has run out. DATA sharding costs every worker the full read and preprocessing, and in
  exchange gives every worker the same number of steps and exactly the single-process
  global batches.
- **BatchNormalization statistics**: Keras 3 keeps a moving mean and variance per replica
  (no cross-replica aggregation); :func:`fit` averages them over all workers at every epoch
  end (:func:`non_trainable_averager`), so validation, checkpoints and the final model are
  the same on every worker.
- **Files** (:func:`worker_dir`): the chief writes the run directory; every other worker writes
  the same files into ``<out>/workertemp_<index>`` (the directory the ``tf.keras`` callbacks
  used for non-chief workers), which :func:`keras_liver.training.train` deletes when training
  completes. Every worker runs every callback — a callback that saves the model reads
  distributed variables, and all workers take the same decisions because they see the same
  epoch logs (see :func:`fit`).
- **Fault tolerance**: ``keras.callbacks.BackupAndRestore`` in Keras 3 has no multi-worker
  logic: each worker backs up into its own directory (the chief ``<out>/backup``, the others
  ``<out>/workertemp_<i>/backup``); a restarted cluster resumes when every worker restores the
  same epoch, which :func:`fit` checks with an all-gather before the first step.

Why a custom loop (:func:`fit`) rather than ``model.fit``: Keras 3.15's ``fit`` does not run
under a multi-worker ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, open). Tried
here with TF 2.21 on two localhost workers: ``fit`` first fails in
``Trainer._maybe_symbolic_build``, whose ``strategy.reduce("MEAN", batch)`` of the first
distributed batch raises "Attempt to convert a value (PerReplica ...) to a Tensor"; with that
step bypassed, the first train step fails in ``reduce_per_replica``, which reduces the scalar
metric results with ``strategy.reduce("MEAN", v, axis=0)`` ("Invalid reduction dimension 0
for input with 0 dimensions"). :func:`fit` drives the model's own ``train_step`` and
``test_step`` (the same loss, optimizer, metrics and loss scaling as ``fit``) with
``strategy.run``, and the same callbacks through ``keras.callbacks.CallbackList``.
Differences from ``fit``: ``jit_compile`` is not applied (the step runs as a plain
``tf.function``), ``steps_per_execution`` is 1, and the per-batch logs the progress bar shows
are the chief's local running values; epoch logs are global (see :func:`fit`).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import keras
import tensorflow as tf

TF_CONFIG_VAR = "TF_CONFIG"

#: Job names of a ``MultiWorkerMirroredStrategy`` cluster (a parameter-server or evaluator job
#: belongs to other strategies).
JOBS = ("chief", "worker")

#: tf.data auto-sharding across workers: by DATA (see the module docstring).
AUTO_SHARD_POLICY = tf.data.experimental.AutoShardPolicy.DATA

#: Prefix of a non-chief worker's directory inside the run directory.
WORKER_TEMP_PREFIX = "workertemp_"


# --------------------------------------------------------------------------- TF_CONFIG

@dataclass(frozen=True)
class ClusterConfig:
    """A validated ``TF_CONFIG``: the ``cluster`` (job → addresses) and this process's task."""

    cluster: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        """Tasks that train (the chief and the workers)."""
        return sum(len(self.cluster.get(job, ())) for job in JOBS)

    @property
    def is_chief(self) -> bool:
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def worker_id(self) -> int:
        """Position of this task among all training tasks (the chief first)."""
        n_chief = len(self.cluster.get("chief", ()))
        return self.task_index if self.task_type == "chief" else n_chief + self.task_index


def parse_tf_config(text: str, source: str = TF_CONFIG_VAR) -> ClusterConfig:
    """Parse and validate a ``TF_CONFIG`` JSON string; ``source`` names it in errors."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e.msg} at position {e.pos}); received "
                         f"{text[:200]!r}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: must be a JSON object with 'cluster' and 'task'; "
                         f"received {type(spec).__name__}")
    cluster = spec.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{source}: needs a non-empty 'cluster' object mapping job names to "
                         f"address lists, e.g. {{\"worker\": [\"host0:12345\", \"host1:12345\"]}}; "
                         f"received cluster={cluster!r}")
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise ValueError(f"{source}: cluster jobs {unknown} are not used by "
                         f"MultiWorkerMirroredStrategy; allowed jobs: {list(JOBS)}")
    seen: dict[str, str] = {}
    clean: dict[str, list[str]] = {}
    for job, addresses in cluster.items():
        if isinstance(addresses, str) or not isinstance(addresses, list) or not addresses:
            raise ValueError(f"{source}: cluster[{job!r}] must be a non-empty list of "
                             f"'host:port' strings; received {addresses!r}")
        for i, address in enumerate(addresses):
            host, sep, port = address.rpartition(":") if isinstance(address, str) else ("",) * 3
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{source}: cluster[{job!r}][{i}] must be 'host:port'; "
                                 f"received {address!r}")
            if address in seen:
                raise ValueError(f"{source}: address {address!r} is given twice "
                                 f"({seen[address]} and {job}[{i}])")
            seen[address] = f"{job}[{i}]"
        clean[job] = list(addresses)
    if len(clean.get("chief", ())) > 1:
        raise ValueError(f"{source}: a cluster has at most one chief; received "
                         f"{len(clean['chief'])} chief addresses")
    task = spec.get("task")
    if not isinstance(task, dict):
        raise ValueError(f"{source}: needs a 'task' object such as "
                         f"{{\"type\": \"worker\", \"index\": 0}}; received task={task!r}")
    task_type = task.get("type")
    if task_type not in clean:
        raise ValueError(f"{source}: task.type must be one of the cluster's jobs "
                         f"{sorted(clean)}; received {task_type!r}")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"{source}: task.index must be an integer; received {index!r}")
    if not 0 <= index < len(clean[task_type]):
        raise ValueError(f"{source}: task.index {index} is out of range for job {task_type!r} "
                         f"with {len(clean[task_type])} address(es) (valid: 0.."
                         f"{len(clean[task_type]) - 1})")
    return ClusterConfig(cluster=clean, task_type=task_type, task_index=index)


def read_tf_config(environ: Mapping[str, str] | None = None) -> ClusterConfig | None:
    """The validated ``TF_CONFIG`` of ``environ`` (default ``os.environ``); ``None`` when it is
    unset or empty."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG_VAR, "")
    if not text.strip():
        return None
    return parse_tf_config(text)


def cluster_wants_multi_worker(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``TF_CONFIG`` names a cluster of more than one training task (what
    ``strategy: "auto"`` takes as a request for :func:`multi_worker_strategy`)."""
    config = read_tf_config(environ)
    return config is not None and config.num_workers > 1


# --------------------------------------------------------------------------- strategy

_STRATEGY: tuple[str, tf.distribute.MultiWorkerMirroredStrategy] | None = None


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The process's ``MultiWorkerMirroredStrategy`` for ``TF_CONFIG`` (created on the first
    call, returned again afterwards: TensorFlow enables collective ops once per program, so a
    multi-stage experiment trains every stage under the same strategy).

    Collectives: NCCL when the worker sees a GPU, else RING. Raises ``ValueError`` when
    ``TF_CONFIG`` is unset or invalid, or changed since the strategy was created.
    """
    global _STRATEGY
    config = read_tf_config()
    if config is None:
        raise ValueError(f"strategy 'multi_worker' needs the {TF_CONFIG_VAR} environment "
                         "variable naming the cluster and this task, e.g. "
                         '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                         '"task": {"type": "worker", "index": 0}} (docs/distributed.md); '
                         "it is unset")
    text = os.environ[TF_CONFIG_VAR]
    if _STRATEGY is not None:
        if json.loads(_STRATEGY[0]) != json.loads(text):
            raise ValueError(f"{TF_CONFIG_VAR} changed after this process created its "
                             "MultiWorkerMirroredStrategy; a process belongs to one cluster")
        return _STRATEGY[1]
    impl = (tf.distribute.experimental.CommunicationImplementation.NCCL
            if tf.config.list_physical_devices("GPU")
            else tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=impl))
    _STRATEGY = (text, strategy)
    return strategy


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether ``strategy`` is a ``MultiWorkerMirroredStrategy`` over more than one task."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, ())) for job in JOBS) > 1


def _cluster(strategy: tf.distribute.Strategy | None) -> ClusterConfig | None:
    """The cluster and task of a multi-worker ``strategy``, else of ``TF_CONFIG`` (``None``
    outside any cluster)."""
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        return ClusterConfig(cluster={job: list(spec[job]) for job in JOBS if job in spec},
                             task_type=resolver.task_type, task_index=int(resolver.task_id))
    return read_tf_config()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run directory: the ``chief`` task, else worker 0, of
    ``strategy``'s cluster (or ``TF_CONFIG``'s when no multi-worker strategy is given); a
    process outside any cluster is its own chief."""
    cluster = _cluster(strategy)
    return cluster is None or cluster.is_chief


def worker_dir(out_dir: str, strategy: tf.distribute.Strategy | None) -> str:
    """Where this process writes its run files: ``out_dir`` for the chief (and any
    single-process run), ``<out_dir>/workertemp_<i>`` for the other workers of a multi-worker
    ``strategy`` (``i`` counts the training tasks, the chief first: worker ``k`` of a cluster
    with a ``chief`` job is ``k + 1``)."""
    if not is_multi_worker(strategy) or is_chief(strategy):
        return out_dir
    return os.path.join(out_dir, f"{WORKER_TEMP_PREFIX}{_cluster(strategy).worker_id}")


def replica_batch_size(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """Per-replica batch of ``global_batch`` (``data.batch_size``) under ``strategy``;
    ``ValueError`` when it does not divide by ``num_replicas_in_sync`` (a split of unequal
    per-replica batches would weight the replicas' examples unequally in the summed
    gradient)."""
    replicas = int(strategy.num_replicas_in_sync)
    global_batch = int(global_batch)
    if global_batch < replicas or global_batch % replicas:
        raise ValueError(
            f"data.batch_size {global_batch} is the global batch and must be a multiple of the "
            f"{replicas} replicas in sync (workers x devices per worker); choose e.g. "
            f"{max(replicas, (global_batch // replicas) * replicas)} or "
            f"{(global_batch // replicas + 1) * replicas}")
    return global_batch // replicas


def check_data_config(data_config: Mapping[str, Any], strategy: tf.distribute.Strategy,
                      steps_per_epoch: int | None) -> int:
    """Validate a data config for multi-worker training; returns the per-replica batch.

    The train split must come in full global batches (``drop_remainder`` true, the slice
    pipeline's default; the 3-D sampler always drops), unless ``steps_per_epoch`` repeats it:
    a partial last batch leaves some replica an empty batch, whose mean loss is NaN and would
    be summed into every worker's gradient.
    """
    per_replica = replica_batch_size(data_config["batch_size"], strategy)
    if steps_per_epoch is None and data_config.get("drop_remainder") is False:
        raise ValueError("data.drop_remainder false is not supported under a multi-worker "
                         "strategy without steps_per_epoch: the last partial global batch "
                         "would give some replica an empty batch (NaN loss)")
    return per_replica


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """``dataset`` (global batches) split over ``strategy``'s replicas, sharded across workers
    by DATA (:data:`AUTO_SHARD_POLICY`)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = AUTO_SHARD_POLICY
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


# --------------------------------------------------------------------------- training loop

def _build_compiled_state(model: keras.Model, strategy, element_spec) -> None:
    """Create the compiled loss and metric variables before the first step, in replica
    context on a one-example zero batch, then reset them (``fit`` does the same with a
    symbolic batch; variables created inside the traced step would make TensorFlow trace it
    twice)."""
    x_spec, y_spec = element_spec[0], element_spec[1]

    def zeros(spec):
        return tf.zeros([1, *spec.shape[1:]], spec.dtype)

    def build():
        x, y = zeros(x_spec), zeros(y_spec)
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        model.compute_metrics(x, y, y_pred, sample_weight=None)

    strategy.run(build)
    model.reset_metrics()


def _epoch_logs(model: keras.Model) -> dict[str, float]:
    """The model's metric results, read in cross-replica context: every metric variable is a
    sum-aggregated on-read variable, so the read all-reduces it over every replica of every
    worker — all workers get the same global values (and take the same callback decisions)."""
    return {k: float(keras.ops.convert_to_numpy(v)) for k, v in model.get_metrics_result().items()}


def non_trainable_averager(model: keras.Model, strategy: tf.distribute.Strategy):
    """A function that averages every floating-point non-trainable variable of ``model`` over
    all replicas of all workers, in place (one traced ``tf.function``; call it on every worker).

    Keras 3 creates ``BatchNormalization``'s moving mean and variance with aggregation
    "none", so under ``MultiWorkerMirroredStrategy`` each worker's copy follows its own
    batches and the workers' models drift apart (seen in the two-worker test before this
    existed). The moving-average update is linear (``m <- mu m + (1 - mu) b``), so averaging the
    copies, which started equal, gives exactly the statistics a mean-aggregated variable
    updated every step with the replicas' mean batch statistics would hold (what ``tf.keras``'s
    mirrored BN statistics did). This is not synchronised batch normalisation: each replica
    still normalises with its own batch's statistics.
    """
    variables = [v for v in model.non_trainable_variables
                 if keras.backend.is_float_dtype(v.dtype)]

    @tf.function
    def average():
        local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
        for v, local_value in zip(variables, local):
            v.assign(strategy.reduce("MEAN", local_value, axis=None))

    return average if variables else (lambda: None)


def _agree_on_initial_epoch(strategy, initial_epoch: int) -> None:
    local = tf.constant([initial_epoch], tf.int64)
    epochs = strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0).numpy().tolist()
    if len(set(epochs)) > 1:
        raise RuntimeError(
            f"workers restored different epochs from their BackupAndRestore directories "
            f"({epochs}, one per replica); every worker must resume from the same backup: "
            "restore or delete the backups of all workers together")


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Return once every replica of every worker has reached this call (an all-reduce of one
    number), so no worker leaves training while another still saves or loads."""
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def fit(model: keras.Model, train_data: tf.data.Dataset, *, strategy: tf.distribute.Strategy,
        epochs: int, validation_data: tf.data.Dataset | None = None,
        steps_per_epoch: int | None = None, callbacks=None,
        verbose: int | str = "auto") -> keras.callbacks.History:
    """``model.fit`` for a multi-worker ``strategy`` (see the module docstring for why).

    ``model`` is built and compiled under ``strategy.scope()``; ``train_data`` and
    ``validation_data`` are datasets of global ``(x, y)`` batches, the same on every worker.
    Each step runs ``model.train_step`` on every replica (Keras' own step: forward, the
    compiled loss scaled for distribution, gradients summed over all replicas, the optimizer
    update, the compiled metrics); validation runs ``model.test_step`` (a replica that gets an
    empty share of the last partial batch skips it). Epoch logs are the metrics all-reduced
    over all workers, so callbacks such as ``EarlyStopping`` and ``ReduceLROnPlateau`` decide
    the same on every worker. Callbacks get the hooks ``fit`` calls (train, epoch, batch, test);
    ``BackupAndRestore`` resumes at its saved epoch. With ``steps_per_epoch`` the train
    iterator persists across epochs (``train_data`` should repeat), otherwise each epoch is
    one pass. Only the chief shows progress (``verbose``). Returns the ``History``.
    """
    if getattr(model, "jit_compile", False):
        warnings.warn("jit_compile is not applied under a multi-worker strategy: the "
                      "multi-worker loop runs the train step as a plain tf.function")
    chief = is_chief(strategy)
    if verbose == "auto":
        verbose = 1
    verbose = verbose if chief else 0
    callbacks = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch)
    train_dist = distribute_dataset(strategy, train_data)
    val_dist = None if validation_data is None else distribute_dataset(strategy, validation_data)

    with strategy.scope():
        _build_compiled_state(model, strategy, train_data.element_spec)

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return strategy.experimental_local_results(logs)[0]

    def replica_test_step(batch):
        n = tf.shape(tf.nest.flatten(batch[0])[0])[0]

        def run():
            model.test_step(batch)
            return tf.constant(True)

        return tf.cond(n > 0, run, lambda: tf.constant(False))

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        strategy.run(replica_test_step, args=(batch,))

    average_non_trainable = non_trainable_averager(model, strategy)
    model.stop_training = False
    callbacks.on_train_begin()
    # BackupAndRestore.on_train_begin records a restored epoch in `model._initial_epoch`,
    # which Keras' own fit reads the same way.
    initial_epoch = int(getattr(model, "_initial_epoch", None) or 0)
    _agree_on_initial_epoch(strategy, initial_epoch)
    iterator = iter(train_dist) if steps_per_epoch is not None else None

    def epoch_batches():
        if iterator is None:
            # one pass; in multi-worker mode the distributed iterator asks every worker
            # whether it has data, so all of them stop at the same step
            yield from train_dist
        else:
            for _ in range(int(steps_per_epoch)):
                yield next(iterator)

    training_logs = None
    for epoch in range(initial_epoch, int(epochs)):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step, batch in enumerate(epoch_batches()):
            callbacks.on_train_batch_begin(step)
            logs = train_step(batch)
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        # Before validation and the checkpoints: every worker then evaluates and saves the
        # same model.
        average_non_trainable()
        epoch_logs = _epoch_logs(model)
        if val_dist is not None:
            model.reset_metrics()
            callbacks.on_test_begin()
            for i, batch in enumerate(val_dist):
                callbacks.on_test_batch_begin(i)
                test_step(batch)
                callbacks.on_test_batch_end(i)
            val_logs = _epoch_logs(model)
            callbacks.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        training_logs = epoch_logs
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=training_logs)
    return model.history


__all__ = ["AUTO_SHARD_POLICY", "ClusterConfig", "TF_CONFIG_VAR", "check_data_config",
           "barrier", "cluster_wants_multi_worker", "distribute_dataset", "fit", "is_chief",
           "is_multi_worker", "multi_worker_strategy", "non_trainable_averager",
           "parse_tf_config", "read_tf_config", "replica_batch_size", "worker_dir"]
