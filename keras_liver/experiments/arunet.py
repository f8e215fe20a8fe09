"""Attention Residual UNet (Abouabdallah), end to end: ``python -m keras_liver.experiments.arunet``.

With no argument: generates the synthetic phantom twice, in the Medical Segmentation Decathlon
layouts of Task03_Liver (labels 0 background, 1 liver, 2 tumour) and Task08_HepaticVessel
(0 background, 1 vessel, 2 tumour), converts both to TFRecords, keeps the paper's volumes
(liver < 300 slices, vessels < 80) and splits them by case with scikit-learn's
``train_test_split`` (seed 42), trains the reduced ``demo`` preset of ``experiments/arunet.json``
for the liver model (f = 8) and the vessel model (f = 16) at once, scores per-class Dice on the
held-out cases of each task, exports both SavedModels, writes ``linked.json`` (so
``keras-liver predict --model RUN_DIR`` runs the two linked models) and prints the scores
beside the paper's (§IV Results: liver 0.88, tumour 0.73; vessels 0.73, tumour 0.66).

``--data MSD_ROOT --preset paper`` runs the published recipe on the real tasks
(``MSD_ROOT/Task03_Liver`` and ``MSD_ROOT/Task08_HepaticVessel``, NIfTI as distributed or
converted; or name each with ``--liver-data`` and ``--vessel-data``); ``--loss
generalized_dice`` trains with the released code's loss instead of the paper's DiceCE.

Per-class Dice: the Dice of ``prediction == k`` against ``reference == k`` for each class k of
the task (the paper scores "each class independently of the other"), per case and averaged
(``*_dice`` mean), and pooled over the cases (``global``). A case without the class in either
mask scores 1 (nothing to find, nothing found), as LiTS scores lesion-free cases.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from keras_liver.experiments import common

PAPER = "arunet"
MODELS = ("liver", "vessel")
#: Losses the ``--loss`` flag chooses from (``experiments/arunet.json`` "losses"): the paper's
#: DiceCE, or the generalised Dice loss of the released code.
LOSSES = ("dice_ce", "generalized_dice")
#: Paper tables in ``experiments/arunet.json``: §IV Results and the §V Discussion figures.
TABLES = ("results", "discussion")


# --------------------------------------------------------------------------- configuration

def resolve_config(experiment: dict[str, Any], preset: str, *, loss: str | None = None,
                   epochs: int | None = None, batch_size: int | None = None,
                   learning_rate: float | None = None, jobs: int | None = None, seed: int = 0,
                   precision: str | None = None, jit: bool | None = None) -> dict[str, Any]:
    """The preset's config with both models' training configs resolved: the loss named by
    ``loss`` (default: the preset's, DiceCE) spelled out from the experiment's ``losses``,
    and the command line's overrides applied to both models."""
    presets = experiment["presets"]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    config = copy.deepcopy(presets[preset])
    config["preset"], config["seed"] = preset, int(seed)
    if jobs is not None:
        if int(jobs) < 1:
            raise ValueError(f"jobs must be >= 1, received {jobs}")
        config["jobs"] = int(jobs)
    for name in MODELS:
        m = config["models"][name]
        chosen = loss if loss is not None else m["training"]["loss"]
        if not isinstance(chosen, str) or chosen not in experiment["losses"]:
            raise ValueError(f"unknown loss {chosen!r}; choose one of {sorted(experiment['losses'])}")
        m["training"]["loss"] = copy.deepcopy(experiment["losses"][chosen])
        common.apply_overrides(m, epochs=epochs, batch_size=batch_size,
                               learning_rate=learning_rate, precision=precision, jit=jit)
    config["loss"] = loss if loss is not None else config["models"]["liver"]["training"]["loss"]["name"]
    return config


def model_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The training run config of model ``name`` (``"liver"`` or ``"vessel"``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    cfg = copy.deepcopy(config["models"][name])
    cfg["seed"], cfg["preset"] = config["seed"], config["preset"]
    return cfg


# --------------------------------------------------------------------------- data

def task_sources(data: str | None = None, *, liver: str | None = None,
                 vessel: str | None = None, config: dict[str, Any] | None = None
                 ) -> dict[str, str | None]:
    """The dataset of each model: ``--liver-data``/``--vessel-data`` as given, else the MSD
    task folders under ``data`` (``Task03_Liver``, ``Task08_HepaticVessel``; the names come
    from the preset's ``dataset.msd_task``), else ``None`` for both (the phantom)."""
    from keras_liver.errors import DataError

    folders = {m: (config or {}).get("models", {}).get(m, {}).get("dataset", {}).get("msd_task")
               for m in MODELS}
    folders = {m: f or default for (m, f), default in
               zip(folders.items(), ("Task03_Liver", "Task08_HepaticVessel"))}
    out = {"liver": liver, "vessel": vessel}
    if data is not None:
        for m in MODELS:
            if out[m] is None:
                path = os.path.join(data, folders[m])
                if not os.path.isdir(path):
                    raise DataError(data, f"has no MSD task folder {folders[m]}/ for the {m} "
                                          f"model; pass --{m}-data PATH to name it")
                out[m] = path
    given = [m for m in MODELS if out[m] is not None]
    if len(given) == 1:
        other = next(m for m in MODELS if m not in given)
        raise DataError(out[given[0]], f"the two linked models need both datasets; pass "
                                       f"--{other}-data too (or --data MSD_ROOT)")
    return out


def select_and_split(converted: str, dataset: dict[str, Any], out_dir: str) -> str:
    """The paper's selection and split of a converted task (``dataset``: ``max_slices``,
    ``split`` = ``{"val", "test", "seed"}``), written as a manifest of its own in ``out_dir``
    (the shards stay where they are); returns ``out_dir``."""
    from keras_liver.data import schema, splits
    from keras_liver.errors import DataError

    manifest = schema.load_manifest(converted)
    max_slices = dataset.get("max_slices")
    kept = splits.select_cases(manifest, max_slices=max_slices)
    if len(kept) < 3:
        raise DataError(converted, f"{len(kept)} of {len(manifest['cases'])} volumes have fewer "
                                   f"than {max_slices} slices; the split needs at least 3")
    spec = {"val": 0.2, "test": 0.0, "seed": 42, **dataset.get("split", {})}
    split = splits.holdout_split(kept, val=spec["val"], test=spec["test"], seed=spec["seed"])
    excluded = [c["id"] for c in manifest["cases"] if c["id"] not in set(kept)]
    return splits.write_split_manifest(
        manifest, out_dir, split, key="selection",
        provenance={"max_slices": max_slices, "excluded": excluded,
                    "method": "sklearn.model_selection.train_test_split", **spec})


def prepare(config: dict[str, Any], sources: dict[str, str | None], *, out: str, tf_data: str,
            progress: bool = True) -> dict[str, str]:
    """Convert (or generate and convert) each task, then select and split it: returns the
    dataset folder each model trains on (``out/data/<model>``)."""
    datasets = {}
    for name in MODELS:
        m = config["models"][name]
        converted = common.prepare_data(
            sources[name], m, tf_data=tf_data, workdir=out, seed=config["seed"],
            name=f"phantom-{PAPER}-{config['preset']}-{m['dataset']['msd_task']}",
            progress=progress)
        datasets[name] = select_and_split(converted, m["dataset"], os.path.join(out, "data", name))
    return datasets


# --------------------------------------------------------------------------- evaluation

def class_scores(pred, ref, classes: dict[str, str]) -> dict[str, float]:
    """Per-class Dice and voxel counts of two label maps: ``{name}_dice``, ``{name}_tp`` ...
    for each ``{label: name}`` of ``classes`` (the counts give the pooled Dice)."""
    from keras_liver.metrics import confusion_counts, dice

    row = {}
    for label, name in classes.items():
        p, r = pred == int(label), ref == int(label)
        row[f"{name}_dice"] = dice(p, r)
        row.update({f"{name}_{k}": v for k, v in confusion_counts(p, r)._asdict().items()})
    return row


def evaluate_model(predictor, dataset: str, classes: dict[str, str], *, split: str = "test",
                   progress: bool = True):
    """Per-case per-class Dice of a 3-class model on a split (one row per case)."""
    return common.evaluate(predictor, dataset, lambda p, r, _: class_scores(p, r, classes),
                           split=split, progress=progress)


def compare_with_paper(summaries: dict[str, Any], config: dict[str, Any],
                       experiment: dict[str, Any]):
    """One row per (model, class): ours per case (mean ± std) and pooled, beside §IV Results
    and the §V Discussion figures."""
    import pandas as pd

    rows = []
    for name in MODELS:
        for cls in config["models"][name]["classes"].values():
            s = summaries[name]
            rows.append({"model": name, "class": cls,
                         "ours": float(s.loc["mean", f"{cls}_dice"]),
                         "ours_std": float(s.loc["std", f"{cls}_dice"]),
                         "ours_global": float(s.loc["global", f"{cls}_dice"]),
                         **{f"paper_{t}": experiment["tables"][t]["rows"][name][cls]
                            for t in TABLES}})
    return pd.DataFrame(rows)


def comparison_markdown(frame) -> str:
    lines = ["| model | class | Dice per case (ours) | Dice global (ours) | paper §IV | paper §V |",
             "|---|---|---:|---:|---:|---:|"]
    for r in frame.itertuples():
        lines.append(f"| {r.model} | {r._2} | {r.ours:.3f} ± {r.ours_std:.3f} | "
                     f"{r.ours_global:.3f} | {r.paper_results:.2f} | {r.paper_discussion:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the experiment

@dataclass
class ExperimentResult:
    out: str
    datasets: dict[str, str]             # model → dataset folder (selected and split)
    run_dirs: dict[str, str]
    per_case: dict[str, Any]             # model → DataFrame, one row per held-out case
    summary: dict[str, Any]              # model → mean / std / global rows
    comparison: Any                      # compare_with_paper
    epochs: dict[str, int] = field(default_factory=dict)  # 0: a finished run was reused


def train_models(config: dict[str, Any], datasets: dict[str, str], out: str, *,
                 export: bool = False, verbose: int | str = "auto",
                 jobs: int | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """Train the liver and the vessel model (``jobs`` at once; a finished run of the same
    config is not retrained, nor re-exported), write ``linked.json``; returns ``({model: run
    dir}, {model: epochs run})``."""
    from keras_liver import export as export_lib
    from keras_liver import training
    from keras_liver.linked import write_linked

    run_dirs = {name: os.path.join(out, name) for name in MODELS}
    pending, names = [], []
    for name in MODELS:
        cfg = model_config(config, name)
        what = f"{name} model ({cfg['model']['name']}, f = {cfg['model']['base_filters']})"
        train = not training.is_finished(run_dirs[name], cfg, data=datasets[name])
        if not train:
            common._log(f"{what}: finished run found in {run_dirs[name]}; not retrained")
        needs_export = export and (train or not export_lib.is_exported(run_dirs[name]))
        if train or needs_export:
            pending.append(common.TrainingJob(what, cfg, datasets[name], run_dirs[name], train,
                                              needs_export))
            names.append(name)
    done = common.run_training_jobs(pending, jobs=int(jobs or config.get("jobs", 1)),
                                    verbose=verbose)
    epochs = {name: 0 for name in MODELS}
    epochs.update(zip(names, done))
    write_linked(out, run_dirs, inference=config.get("link"), model=PAPER)
    return run_dirs, epochs


def run(config: dict[str, Any], *, sources: dict[str, str | None], out: str, tf_data: str,
        experiment: dict[str, Any] | None = None, progress: bool = True,
        export: bool = True, datasets: dict[str, str] | None = None) -> ExperimentResult:
    """Prepare both tasks, train both models, score each on its task's held-out cases and
    compare with the paper; what the command line does, as a function (used by the
    notebook). ``datasets``: what :func:`prepare` returned for these sources, when the caller
    prepared them already."""
    from keras_liver.inference import Predictor
    from keras_liver.metrics import report

    experiment = experiment or common.load_experiment(PAPER)
    os.makedirs(out, exist_ok=True)
    if datasets is None:
        datasets = prepare(config, sources, out=out, tf_data=tf_data, progress=progress)
    run_dirs, epochs = train_models(config, datasets, out, export=export,
                                    verbose="auto" if progress else 0)
    per_case, summary = {}, {}
    for name in MODELS:
        m = config["models"][name]
        split = m["dataset"].get("evaluate", "test")
        common._log(f"scoring the {name} model on the {split} cases of its task")
        predictor = Predictor.from_run(run_dirs[name])
        per_case[name] = evaluate_model(predictor, datasets[name], m["classes"], split=split,
                                        progress=progress)
        report.write_results(per_case[name], run_dirs[name], name="metrics")
        summary[name] = report.summarize(per_case[name])
    comparison = compare_with_paper(summary, config, experiment)
    comparison.to_csv(os.path.join(out, "comparison.csv"), index=False)
    return ExperimentResult(out=out, datasets=datasets, run_dirs=run_dirs, per_case=per_case,
                            summary=summary, comparison=comparison, epochs=epochs)


def parser():
    p = common.base_parser(PAPER, __doc__.split("\n\n")[0] + " Trains, scores and exports "
                           "the liver and the vessel model on the phantom or on MSD Task03 "
                           "and Task08.")
    p.add_argument("--liver-data", default=None,
                   help="the liver task (MSD Task03_Liver layout, or converted); default: "
                        "DATA/Task03_Liver")
    p.add_argument("--vessel-data", default=None,
                   help="the vessel task (MSD Task08_HepaticVessel layout, or converted); "
                        "default: DATA/Task08_HepaticVessel")
    p.add_argument("--loss", default=None, choices=list(LOSSES),
                   help="the paper's DiceCE (the presets' default) or the released code's "
                        "generalised Dice")
    p.add_argument("--jobs", type=int, default=None,
                   help="models trained at once, one process each (default: the preset's)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel exports")
    p.set_defaults(out=os.path.join("runs", PAPER))
    return p


def main(argv=None) -> int:
    args, experiment, elapsed = common.start(PAPER, parser(), argv)

    config = resolve_config(experiment, args.preset, loss=args.loss, jobs=args.jobs,
                            **common.recipe_overrides(args))
    sources = task_sources(args.data, liver=args.liver_data, vessel=args.vessel_data,
                           config=config)
    r = run(config, sources=sources, out=args.out, tf_data=args.tf_data, experiment=experiment,
            progress=not args.no_progress, export=not args.no_export)

    cases = ", ".join(f"{len(r.per_case[m])} {m}" for m in MODELS)
    epochs = ", ".join(f"{m} {r.epochs[m]}" for m in MODELS)
    print()
    print(f"Attention Residual UNet experiment ({args.preset} preset, loss {config['loss']}, "
          f"held-out cases: {cases}; epochs: {epochs}; {elapsed():.0f} s)")
    print(comparison_markdown(r.comparison))
    print()
    print(f"paper: {experiment['tables']['results']['caption']}; §V quotes other figures "
          f"(ours: {'phantom' if args.data is None and args.liver_data is None else 'MSD'})")
    print(f"run directory : {os.path.abspath(r.out)}")
    for m in MODELS:
        print(f"{m + ' model':<14}: {os.path.abspath(r.run_dirs[m])} "
              f"(dataset {os.path.abspath(r.datasets[m])})")
    print(f"predict       : keras-liver predict --model {r.out} IN.nii.gz --out OUT.nii.gz "
          f"(0 background, 1 liver, 2 liver tumour, 3 vessel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
