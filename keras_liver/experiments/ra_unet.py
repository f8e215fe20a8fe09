"""RA-UNet (Jin et al.), end to end: ``python -m keras_liver.experiments.ra_unet``.

With no argument: generates the synthetic phantom, converts it to TFRecords, trains the three
stages of the reduced ``demo`` preset of ``experiments/ra_unet.json`` — RA-UNet-I (2-D liver
localisation), RA-UNet-II liver (3-D slabs of the liver box) and RA-UNet-II tumour (3-D patches
inside the liver box) — runs the cascade of Fig. 2 (:mod:`keras_liver.cascade`) on the
held-out test volumes, scores liver and tumour with the LiTS metrics (DC, DG, Jaccard, VOE,
RVD, ASSD, MSD), prints them beside Table VI of the paper (``--paper-table 3dircadb``:
Table VII), and exports one SavedModel per stage (and fold).

``--data PATH --preset paper`` runs the published recipe (SPEC §1) on a real dataset, with the
3-D stages trained by 5-fold cross-validation over the train and val cases and the fold models
averaged in the cascade. A stage whose run directory already holds a finished run of the same
configuration is not trained again, so an interrupted experiment resumes where it stopped (an
interrupted stage itself resumes from its last epoch).

Run directory::

    cascade.json                  stage run directories + inference settings (keras-liver predict)
    stage1_localiser/             training run of RA-UNet-I (config, weights, history, saved_model/)
    stage2_liver[/fold<i>]/       RA-UNet-II liver, one run per fold
    stage3_tumour[/fold<i>]/      RA-UNet-II tumour, one run per fold
    folds/fold<i>/manifest.json   the cross-validation folds (when folds > 1)
    metrics.csv, metrics.md       per test case, liver_* and tumour_* scores, mean/std/global rows
    comparison.csv, comparison.md ours beside the paper (Table VI, LiTS)
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from keras_liver.experiments import common

PAPER = "ra_unet"
STAGES = ("localiser", "liver", "tumour")
STAGE_DIRS = {"localiser": "stage1_localiser", "liver": "stage2_liver",
              "tumour": "stage3_tumour"}
#: Cross-validated stages (SPEC §1: "3-D liver ... 5-fold; tumour ... 5-fold"; §IV-A: "5-fold
#: training was not employed at this stage" for RA-UNet-I).
FOLD_STAGES = ("liver", "tumour")
#: The classes scored on the 0/1/2 cascade output (LiTS: the liver includes its tumours).
CLASSES = {"liver": (1, 2), "tumour": (2,)}
#: Paper column → (summary row, our metric) for Table VI; DG is the pooled Dice.
PAPER_COLUMNS = {"dice_per_case": ("mean", "dice"), "dice_global": ("global", "dice"),
                 "jaccard": ("mean", "jaccard"), "voe": ("mean", "voe"),
                 "rvd": ("mean", "rvd"), "assd": ("mean", "assd"), "msd": ("mean", "msd")}


# --------------------------------------------------------------------------- configuration

def resolve_config(experiment: dict[str, Any], preset: str, *, epochs: int | None = None,
                   batch_size: int | None = None, learning_rate: float | None = None,
                   folds: int | None = None, jobs: int | None = None, seed: int = 0,
                   precision: str | None = None, jit: bool | None = None) -> dict[str, Any]:
    """The preset with command-line overrides applied to every stage (``epochs``,
    ``batch_size``, ``learning_rate``, ``precision``, ``jit``), ``folds`` to both 3-D stages and
    ``jobs`` (parallel stage trainings, see :func:`train_stages`)."""
    presets = experiment["presets"]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    config = copy.deepcopy(presets[preset])
    config["preset"] = preset
    config["seed"] = int(seed)
    for stage in config["stages"].values():
        common.apply_overrides(stage, epochs=epochs, batch_size=batch_size,
                               learning_rate=learning_rate, precision=precision, jit=jit)
    if folds is not None:
        if int(folds) < 1:
            raise ValueError(f"folds must be >= 1, received {folds}")
        config["folds"].update({s: int(folds) for s in FOLD_STAGES})
    if jobs is not None:
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, received {jobs}")
        config["jobs"] = int(jobs)
    return config


def stage_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The training-runner config of one stage (``model``, ``data``, ``training``, ...)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    out = copy.deepcopy(config["stages"][stage])
    out.update(preset=config.get("preset"), seed=config["seed"], split=config.get("split"),
               stage=stage, paper=PAPER)
    out.setdefault("postprocess", {"largest_component": True})
    return out


def stage_run_dirs(config: dict[str, Any], out: str, stage: str) -> list[str]:
    """Run directories of a stage: one, or one per fold."""
    k = int(config.get("folds", {}).get(stage, 1)) if stage in FOLD_STAGES else 1
    base = os.path.join(out, STAGE_DIRS[stage])
    return [base] if k <= 1 else [os.path.join(base, f"fold{i}") for i in range(k)]


# --------------------------------------------------------------------------- training

@dataclass
class ExperimentResult:
    out: str
    dataset: str
    stages: dict[str, list[str]]
    per_case: Any = None                 # pandas DataFrame, one row per test case
    summary: Any = None                  # mean / std / global rows
    comparison: Any = None               # ours beside the paper
    saved_models: dict[str, list[str]] = field(default_factory=dict)
    epochs: dict[str, list[int]] = field(default_factory=dict)
    cascade: Any = None                  # the RAUNetCascade that scored the test set


def train_stages(config: dict[str, Any], data: str, out: str, *, verbose: int | str = "auto",
                 stages=STAGES, jobs: int | None = None, export: bool = False
                 ) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """Train the stages (and folds) of ``config`` on the converted dataset ``data``; with
    ``export``, also write each run's SavedModel (``RUN/saved_model``) in the same job.

    The stages are independent during training (each learns from the reference labels: the
    3-D stages crop the reference liver box, not the localiser's), and so are the folds, so
    ``jobs`` > 1 (default: the config's ``jobs``, else 1) trains that many at once, each in
    its own process (:func:`common.run_training_jobs`). On a CPU this pays because a 641-layer
    network with small tensors keeps about one core busy (measured: 106 % CPU on 2 cores).
    A finished run of the same configuration is not retrained, and not re-exported when its
    SavedModel is newer than its best model.

    Returns ``({stage: run dirs}, {stage: epochs run (0 = finished earlier, not retrained)})``.
    """
    from keras_liver import export as export_lib
    from keras_liver import training
    from keras_liver.data import splits

    jobs = int(config.get("jobs", 1) if jobs is None else jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, received {jobs}")
    run_dirs, epochs, pending = {}, {}, []
    for stage in stages:
        cfg = stage_config(config, stage)
        dirs = stage_run_dirs(config, out, stage)
        run_dirs[stage], epochs[stage] = dirs, [0] * len(dirs)
        k = len(dirs)
        for i, run_dir in enumerate(dirs):
            fold_data = data
            if k > 1:
                fold_data = splits.write_fold_manifest(
                    data, os.path.join(out, "folds", f"fold{i}"), fold=i, k=k,
                    seed=int(config.get("folds", {}).get("seed", 0)))
            what = f"{stage} stage ({cfg['model']['name']}" + (f", fold {i + 1}/{k})" if k > 1
                                                                 else ")")
            train = not training.is_finished(run_dir, cfg, data=fold_data)
            if not train:
                common._log(f"{what}: finished run found in {run_dir}; not retrained")
            needs_export = export and (train or not export_lib.is_exported(run_dir))
            if train or needs_export:
                pending.append((stage, i, what, cfg, fold_data, run_dir, train, needs_export))

    done = common.run_training_jobs(
        [common.TrainingJob(what, cfg, fold_data, run_dir, train, needs_export)
         for _, _, what, cfg, fold_data, run_dir, train, needs_export in pending],
        jobs=jobs, verbose=verbose)
    for (stage, i, *_), n in zip(pending, done):
        epochs[stage][i] = n
    return run_dirs, epochs


# --------------------------------------------------------------------------- evaluation

def evaluate(cascade, data: str, *, split: str = "test", progress: bool = True):
    """Per-case LiTS and classification scores of the cascade's 0/1/2 output on a split
    (``liver_*`` = label ≥ 1 against reference ≥ 1, ``tumour_*`` = label 2)."""
    from tqdm import tqdm

    from keras_liver.evaluate import score_case
    from keras_liver.metrics import report

    rows = []
    cases = list(common.iter_volumes(data, split))
    for case_id, image, label, spacing in tqdm(cases, desc=f"cascade {split}", file=sys.stderr,
                                               disable=not progress):
        predicted = cascade.run(image).label
        rows.append((case_id, score_case(predicted, label, CLASSES, spacing)))
    return report.results_frame(rows)


def compare_with_paper(summary, experiment: dict[str, Any], dataset: str = "lits"):
    """Ours beside the paper's RA-UNet row for ``dataset`` (``"lits"``: Table VI, whose
    RA-UNet row is Tables IV–V's LiTS column; ``"3dircadb"``: Table VII; the tables are named
    in ``experiment["comparison"]``): columns ``target``, ``metric``, ``ours``, ``paper``,
    ``difference``. Paper cells printed as "-" are left out."""
    import pandas as pd

    if dataset not in experiment["comparison"]:
        raise ValueError(f"no paper table for dataset {dataset!r}; choose one of "
                         f"{sorted(experiment['comparison'])}")
    rows = []
    for target, table_key in experiment["comparison"][dataset].items():
        table = experiment["tables"][table_key]
        paper = dict(zip(table["columns"], table["rows"][table["ours_row"]]))
        for column, value in paper.items():
            if value is None or column not in PAPER_COLUMNS:
                continue
            row, metric = PAPER_COLUMNS[column]
            ours = float(summary.loc[row, f"{target}_{metric}"])
            rows.append({"target": target, "metric": column, "ours": ours,
                         "paper": float(value), "difference": ours - float(value)})
    return pd.DataFrame(rows, columns=["target", "metric", "ours", "paper", "difference"])


def run(config: dict[str, Any], *, data: str | None, out: str, tf_data: str,
        experiment: dict[str, Any] | None = None, progress: bool = True,
        export: bool = True, paper_table: str = "lits") -> ExperimentResult:
    """Everything the command line does, as a function (used by the notebook)."""
    from keras_liver import cascade as cascade_lib
    from keras_liver.metrics import report

    experiment = experiment or common.load_experiment(PAPER)
    os.makedirs(out, exist_ok=True)
    dataset = common.prepare_data(data, config, tf_data=tf_data, workdir=out,
                                  seed=config["seed"],
                                  name=f"phantom-{PAPER}-{config['preset']}", progress=progress)
    run_dirs, epochs = train_stages(config, dataset, out, verbose="auto" if progress else 0,
                                    export=export)
    cascade_lib.write_cascade(out, run_dirs, inference=config.get("cascade"), model=PAPER)

    common._log("running the cascade on the held-out test volumes")
    model = cascade_lib.RAUNetCascade.from_run(out, progress=False)
    per_case = evaluate(model, dataset, split="test", progress=progress)
    report.write_results(per_case, out, name="metrics")
    summary = report.summarize(per_case)
    comparison = compare_with_paper(summary, experiment, paper_table)
    comparison.to_csv(os.path.join(out, "comparison.csv"), index=False)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(report.to_markdown(comparison) + "\n")
    saved = {}
    if export:
        from keras_liver.export import default_export_dir

        saved = {stage: [default_export_dir(d) for d in dirs] for stage, dirs in run_dirs.items()}
    return ExperimentResult(out=out, dataset=dataset, stages=run_dirs, per_case=per_case,
                            summary=summary, comparison=comparison, saved_models=saved,
                            epochs=epochs, cascade=model)


# --------------------------------------------------------------------------- command line

def parser():
    p = common.base_parser(PAPER, __doc__.split("\n\n")[0] + " Trains the three stages, runs "
                           "the cascade on held-out volumes and exports one SavedModel per stage.")
    p.add_argument("--folds", type=int, default=None,
                   help="cross-validation folds of the 3-D stages (default: the preset's; "
                        "paper 5, demo 1)")
    p.add_argument("--paper-table", default="lits", choices=["lits", "3dircadb"],
                   help="which of the paper's results to print beside ours: LiTS (Tables IV-VI) "
                        "or 3DIRCADb (Tables IV, V, VII)")
    p.add_argument("--no-export", action="store_true",
                   help="skip the SavedModel export (keras-liver export RUN/STAGE does it later)")
    p.add_argument("--jobs", type=int, default=None,
                   help="stage/fold trainings run at once, one process each (default: the "
                        "preset's; paper 1, demo 2 for 2 CPU cores)")
    return p


def main(argv=None) -> int:
    args, experiment, elapsed = common.start(PAPER, parser(), argv)
    from keras_liver.metrics import report

    config = resolve_config(experiment, args.preset, folds=args.folds, jobs=args.jobs,
                            **common.recipe_overrides(args))
    result = run(config, data=args.data, out=args.out, tf_data=args.tf_data,
                 experiment=experiment, progress=not args.no_progress,
                 paper_table=args.paper_table, export=not args.no_export)

    s = result.summary
    print()
    print(f"RA-UNet cascade ({args.preset} preset, {len(result.per_case)} held-out cases, "
          f"folds {config['folds']['liver']}/{config['folds']['tumour']}, {elapsed():.0f} s)")
    print(f"liver  Dice per case {s.loc['mean', 'liver_dice']:.4f}, "
          f"global {s.loc['global', 'liver_dice']:.4f}")
    print(f"tumour Dice per case {s.loc['mean', 'tumour_dice']:.4f}, "
          f"global {s.loc['global', 'tumour_dice']:.4f}")
    print()
    print(report.to_markdown(result.comparison))
    print()
    tables = experiment["comparison"][args.paper_table].values()
    captions = "; ".join(dict.fromkeys(experiment["tables"][t]["caption"] for t in tables))
    print(f"paper: {captions} (ours: {'phantom' if args.data is None else args.data})")
    print(f"run directory : {os.path.abspath(result.out)}")
    print(f"dataset       : {os.path.abspath(result.dataset)}")
    print(f"cascade       : {os.path.join(os.path.abspath(result.out), 'cascade.json')}")
    print(f"metrics       : {os.path.join(os.path.abspath(result.out), 'metrics.csv')}")
    for stage, paths in result.saved_models.items():
        for path in paths:
            print(f"saved model   : {path} ({stage})")
    print(f"predict       : keras-liver predict --model {result.out} IN.nii.gz --out OUT.nii.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
