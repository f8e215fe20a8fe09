"""What every paper's experiment module shares: config loading, data preparation, the
train → evaluate → export sequence, and the results table beside the paper's numbers.

Each paper's published recipe and result tables live as data in the top-level
``experiments/<paper>.json``; ``keras_liver.experiments.<paper>`` reads it, applies command-line
overrides and calls :func:`run`.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_liver import fileio

ENV_EXPERIMENTS = "KERAS_LIVER_EXPERIMENTS"
DEFAULT_TF_DATA = "tf_data"


# --------------------------------------------------------------------------- config files

def experiments_dir() -> str:
    """Folder of the experiment JSON files: ``$KERAS_LIVER_EXPERIMENTS``, the repository's
    ``experiments/`` (source or editable install), or ``<prefix>/share/keras-liver/experiments``."""
    candidates = [os.environ.get(ENV_EXPERIMENTS),
                  os.path.join(os.path.dirname(__file__), "..", "..", "experiments"),
                  os.path.join(sys.prefix, "share", "keras-liver", "experiments")]
    for c in candidates:
        if c and os.path.isdir(c):
            return os.path.abspath(c)
    raise FileNotFoundError("cannot find the experiments/ folder; set $KERAS_LIVER_EXPERIMENTS")


def load_experiment(paper: str) -> dict[str, Any]:
    return fileio.read_json(os.path.join(experiments_dir(), f"{paper}.json"),
                            missing=f"no experiment file for {paper!r}")


def resolve_config(experiment: dict[str, Any], preset: str, *, variant: str | None = None,
                   epochs: int | None = None, batch_size: int | None = None,
                   learning_rate: float | None = None, seed: int = 0,
                   precision: str | None = None, jit: bool | None = None) -> dict[str, Any]:
    presets = experiment["presets"]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    config = copy.deepcopy(presets[preset])
    config["preset"] = preset
    config["seed"] = seed
    if variant is not None:
        variants = experiment.get("variants", {})
        if variant not in variants:
            raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(variants)}")
        config["model"] = _model_for_variant(config["model"], variant)
    return apply_overrides(config, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, precision=precision, jit=jit)


#: Keras dtype policies a run may train under (``training.precision``). Under the mixed
#: ones the layers compute in float16/bfloat16 with float32 variables, while every model's
#: output head and every loss computes in float32 (see ``keras_liver.blocks`` and
#: ``keras_liver.losses``); ``mixed_float16`` adds Keras' dynamic loss scaling.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def apply_overrides(config: dict[str, Any], *, epochs: int | None = None,
                    batch_size: int | None = None, learning_rate: float | None = None,
                    precision: str | None = None, jit: bool | None = None) -> dict[str, Any]:
    """Apply the command line's recipe overrides (``None`` = keep) to one training config
    (keys ``data`` and ``training``), in place; returns it. ``jit`` sets
    ``training.jit_compile`` (XLA compilation of the train, test and predict steps)."""
    if epochs is not None:
        config["training"]["epochs"] = epochs
    if batch_size is not None:
        config["data"]["batch_size"] = batch_size
    if learning_rate is not None:
        config["training"]["optimizer"]["learning_rate"] = learning_rate
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, received {precision!r}")
        config["training"]["precision"] = precision
    if jit is not None:
        config["training"]["jit_compile"] = bool(jit)
    return config


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe overrides of a :func:`base_parser` command line, as keyword arguments of
    the experiments' ``resolve_config`` (``None``: keep the preset's)."""
    return {"epochs": args.epochs, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "precision": args.precision,
            "jit": True if args.jit else None, "seed": args.seed}


def _model_for_variant(model: dict[str, Any], variant: str) -> dict[str, Any]:
    """The preset's model config for another network: same sizes, and without the options
    the variant's builder does not have (a U-Net has no ``channel_attention``)."""
    import inspect

    from keras_liver.models import MODELS

    if variant not in MODELS:
        raise ValueError(f"variant {variant!r} is not a registered model; see "
                         f"keras_liver.models.MODELS")
    accepted = inspect.signature(MODELS[variant]).parameters
    out = {k: v for k, v in model.items() if k in accepted and k != "name"}
    return {"name": variant, **out}


# --------------------------------------------------------------------------- data

def prepare_data(data: str | None, config: dict[str, Any], *, tf_data: str, workdir: str,
                 seed: int, name: str, progress: bool = True) -> str:
    """Return a converted dataset folder (with ``manifest.json``) for ``data``.

    ``data`` may be a converted dataset (used as is), a NIfTI dataset (LiTS, MSD or flat
    layout; converted into ``tf_data/<folder name>``), or ``None``: the phantom of the preset
    (``config["phantom"]``: ``cases``, ``seed``, optional ``shape``, ``layout``, MSD
    ``task`` and ``modality`` of :func:`keras_liver.data.phantom.write_dataset`, ``folder`` under ``workdir``,
    default ``phantom``) is generated and converted into ``tf_data/<name>``. Conversion is
    resumable and skips cases already converted, so re-running costs nothing.
    """
    from keras_liver.data import phantom
    from keras_liver.data.convert import convert
    from keras_liver.data.schema import MANIFEST

    split = tuple(config.get("split", (0.64, 0.16, 0.2)))
    if data is not None:
        if os.path.exists(os.path.join(data, MANIFEST)):
            return data
        out = os.path.join(tf_data, os.path.basename(os.path.normpath(data)))
        convert(data, out, seed=seed, split=split, progress=progress)
        return out
    spec = config.get("phantom", {"cases": 20, "seed": 0})
    src = os.path.join(workdir, spec.get("folder", "phantom"))
    _log(f"generating {spec['cases']} phantom cases in {src}")
    phantom.write_dataset(src, cases=int(spec["cases"]), layout=spec.get("layout", "lits"),
                          task=spec.get("task", "liver"), modality=spec.get("modality", "ct"),
                          seed=int(spec.get("seed", 0)),
                          shape=tuple(spec["shape"]) if spec.get("shape") else None,
                          progress=progress)
    out = os.path.join(tf_data, name)
    _log(f"converting to TFRecords in {out}")
    convert(src, out, seed=seed, split=split, overwrite=True, progress=progress)
    return out


# --------------------------------------------------------------------------- training jobs

@dataclass
class TrainingJob:
    """One training run to do: ``what`` (for the log), its config, dataset and run directory;
    ``train`` and ``export`` say which of the two it needs."""

    what: str
    config: dict[str, Any]
    data: str
    run_dir: str
    train: bool = True
    export: bool = False

    def doing(self) -> str:
        return " and ".join(w for w, on in (("training", self.train), ("exporting", self.export))
                            if on)


def _training_job(cfg: dict[str, Any], data: str, run_dir: str, verbose, train: bool = True,
                  export: bool = False) -> int:
    """One run in its own process (see :func:`run_training_jobs`): train it, export it, or
    both; returns the epochs run. Exporting in the job that trained the model uses the model
    in memory (no reload) and runs beside the other jobs instead of after them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Several trainings may share one GPU: let each take memory as it needs it.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    from keras_liver import export as export_lib
    from keras_liver import training

    from keras_liver import distribute

    epochs, model = 0, None
    if train:
        result = training.train(cfg, data=data, out_dir=run_dir, verbose=verbose)
        epochs, model = result.epochs_run, result.model
    if export and distribute.is_chief():   # under a TF_CONFIG cluster the chief exports
        export_lib.export_run(run_dir, model=model)
    return epochs


def run_training_jobs(pending: list[TrainingJob], *, jobs: int = 1,
                      verbose: int | str = "auto") -> list[int]:
    """Do the ``pending`` runs, ``jobs`` at a time; returns the epochs each ran.

    With ``jobs`` > 1 each run gets its own process (a fresh TensorFlow, ``spawn``): on a CPU
    this pays when one training keeps about one core busy (a deep network of small tensors,
    or two small models on two cores); several jobs on one GPU share its memory
    (``TF_FORCE_GPU_ALLOW_GROWTH``). Parallel jobs print no Keras progress bars. A failed run
    cancels the others and raises ``RuntimeError`` naming it.
    """
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, received {jobs}")
    from keras_liver import distribute

    if jobs > 1 and distribute.cluster_wants_multi_worker():
        # Every process of a TF_CONFIG cluster joins it on the same port: one run at a time,
        # each trained by the whole cluster (docs/distributed.md).
        _log(f"TF_CONFIG names a cluster: the {len(pending)} runs train one after the other")
        jobs = 1
    if jobs == 1 or len(pending) <= 1:
        done = []
        for job in pending:
            _log(f"{job.doing()} the {job.what} in {job.run_dir}")
            done.append(_training_job(job.config, job.data, job.run_dir, verbose, job.train,
                                      job.export))
        return done

    from keras_liver import processes

    workers = min(int(jobs), len(pending))
    _log(f"{len(pending)} runs to do, {workers} at a time (one process each)")
    for job in pending:
        _log(f"queued {job.doing()} the {job.what} in {job.run_dir}")

    def finished(i, epochs):
        _log(f"finished {pending[i].doing()} the {pending[i].what} ({epochs} epochs)")

    # a fresh TensorFlow per process (spawn); a failed run cancels the others
    return processes.run_spawned(
        _training_job, [(j.config, j.data, j.run_dir, 0, j.train, j.export) for j in pending],
        workers=workers, on_done=finished,
        describe=lambda i: f"{pending[i].doing()} the {pending[i].what} in {pending[i].run_dir}")


def train_or_reuse(config: dict[str, Any], dataset: str, out: str, *,
                   progress: bool = True):
    """``(best model, epochs trained now)`` of one run: a finished run of the same network,
    recipe and data in ``out`` is loaded, not retrained (epochs 0); otherwise
    :func:`keras_liver.training.train` trains (or resumes) it."""
    from keras_liver import training

    name = config["model"]["name"]
    if training.is_finished(out, config, data=dataset, seed=config["seed"]):
        _log(f"{name}: finished run found in {out}; not retrained")
        return training.load_model(os.path.join(out, training.BEST_MODEL)), 0
    _log(f"training {name} ({config['preset']} preset) in {out}")
    result = training.train(config, data=dataset, out_dir=out, seed=config["seed"],
                            verbose="auto" if progress else 0)
    return result.model, result.epochs_run


def export_unless_current(out: str, model) -> str:
    """``out``'s SavedModel (``RUN/saved_model``), written from ``model`` unless one newer
    than the run's best model is there already; returns its path."""
    from keras_liver import export as export_lib

    if export_lib.is_exported(out):
        return export_lib.default_export_dir(out)
    return export_lib.export_run(out, model=model)


# --------------------------------------------------------------------------- evaluation

def iter_volumes(manifest_root: str, split: str = "test"):
    """Yield ``(case_id, image (x,y,z) HU, label (x,y,z) uint8, spacing)`` of a split from the
    per-volume TFRecord shards (so evaluation needs only the converted dataset)."""
    import tensorflow as tf

    from keras_liver.data import schema

    manifest = schema.load_manifest(manifest_root)
    cases = {c["id"]: c for c in manifest["cases"]}
    for case_id in manifest["split"][split]:
        path = os.path.join(manifest["root"], cases[case_id]["volume"])
        for record in tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION):
            ex = schema.decode_example(record.numpy())
            yield case_id, ex["image"], ex["label"], tuple(ex["spacing"])


def evaluate(predictor, manifest_root: str, score, *, split: str = "test",
             progress: bool = True):
    """One row per case of a split: ``{"case": id, **score(prediction, label, spacing)}``,
    where ``prediction`` is ``predictor.predict(image)[1]`` on the case's original grid.
    Returns a DataFrame."""
    import pandas as pd
    from tqdm import tqdm

    rows = []
    cases = list(iter_volumes(manifest_root, split))
    for case_id, image, label, spacing in tqdm(cases, desc=f"evaluate {split}", disable=not progress,
                                               file=sys.stderr):
        _, pred = predictor.predict(image)
        rows.append({"case": case_id, **score(pred, label, spacing)})
    return pd.DataFrame(rows)


def evaluate_binary(predictor, manifest_root: str, *, split: str = "test", foreground=(1, 2),
                    progress: bool = True):
    """Per-case LiTS scores and classification metrics of a binary model on a split.

    ``foreground`` lists the label values of the target (liver = liver + tumour in LiTS).
    Returns a DataFrame with one row per case.
    """
    from keras_liver.metrics import classification, lits_scores

    def score(pred, label, spacing):
        ref = np.isin(label, foreground)
        return {**lits_scores(pred, ref, spacing=spacing), **classification.binary_scores(pred, ref)}

    return evaluate(predictor, manifest_root, score, split=split, progress=progress)


def paper_row(experiment: dict[str, Any], table: str, row: str) -> dict[str, float]:
    t = experiment["tables"][table]
    return dict(zip(t["columns"], t["rows"][row]))


_START = time.perf_counter()


def _log(msg: str) -> None:
    """One progress line on stderr, with the minutes:seconds since the process started."""
    minutes, seconds = divmod(int(time.perf_counter() - _START), 60)
    print(f"[keras-liver {minutes:02d}:{seconds:02d}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- command line

def base_parser(paper: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m keras_liver.experiments.{paper}", description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None,
                   help="dataset: a NIfTI folder (LiTS, MSD or flat layout) or a converted "
                        "TFRecord folder with manifest.json; default: the synthetic phantom")
    p.add_argument("--preset", default="demo",
                   help="recipe from experiments/%s.json: 'demo' (reduced, phantom), 'paper' "
                        "(published), 'tiny' (smoke test)" % paper)
    p.add_argument("--out", default=os.path.join("runs", paper),
                   help="run directory: config, weights, history.csv, metrics.csv, saved_model/")
    p.add_argument("--tf-data", default=DEFAULT_TF_DATA,
                   help="where converted TFRecord datasets are written")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the global batch size")
    p.add_argument("--learning-rate", type=float, default=None, help="override the learning rate")
    add_compute_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed for split, shuffling and initialisation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def add_compute_options(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--jit``, shared by the experiments and ``keras-liver train``."""
    p.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="Keras dtype policy (default: the preset's, float32); the output "
                        "heads and the losses stay float32")
    p.add_argument("--jit", action="store_true",
                   help="compile the train, test and predict steps with XLA (jit_compile)")


def refuse_cluster(paper: str) -> None:
    """Stop an end-to-end experiment started under a multi-worker ``TF_CONFIG``: every worker
    would generate, convert, evaluate and export into the same folders. On a cluster the
    stages run as ``keras-liver convert`` (once), ``keras-liver train --experiment PAPER`` (on
    every worker) and ``keras-liver evaluate``/``export`` (once); see docs/distributed.md."""
    from keras_liver import distribute

    if distribute.cluster_wants_multi_worker():
        raise SystemExit(
            f"python -m keras_liver.experiments.{paper}: TF_CONFIG names a cluster of several "
            f"workers; run `keras-liver convert DATA --out tf_data/NAME` once, then `keras-liver "
            f"train --experiment {paper} --data tf_data/NAME --out RUN` on every worker "
            f"(docs/distributed.md)")


def start(paper: str, parser: argparse.ArgumentParser, argv=None):
    """What every experiment's ``main`` does first: parse ``argv``, refuse a multi-worker
    cluster (:func:`refuse_cluster`), quiet TensorFlow's C++ log, start the clock and load
    ``experiments/PAPER.json``. Returns ``(args, experiment, elapsed)``, ``elapsed()`` the
    seconds since."""
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before refuse_cluster imports TF
    refuse_cluster(paper)
    t0 = time.perf_counter()
    return args, load_experiment(paper), lambda: time.perf_counter() - t0
