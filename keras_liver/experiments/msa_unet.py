"""MSA-UNet (Wang et al.), end to end: ``python -m keras_liver.experiments.msa_unet``.

With no argument: generates the synthetic phantom, converts it to TFRecords, trains the
reduced ``demo`` preset of ``experiments/msa_unet.json`` (HU window [−200, 250] then CLAHE,
flips + crop + translation, 0.5·BCE + 1.0·Dice, ReduceLROnPlateau and EarlyStopping on the
validation loss, best validation model kept), evaluates the held-out test cases with the
paper's test-time augmentation (identity, horizontal and vertical flips averaged, threshold
0.5), exports the SavedModel and prints DSC, IoU, precision and recall per case (mean ± std)
beside the paper's Table 2 row (Table 1 for MSA-UNet).

``--ablation NAME`` trains one of the Table 2 networks (``unet``, ``unet_msrb``,
``unet_aaspp``, ``unet_rasm``, ``msa_unet``); ``--data PATH --preset paper`` runs the
published recipe on a real dataset.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from keras_liver.experiments import common

PAPER = "msa_unet"
#: Table 2 rows, in the paper's order (keys of ``keras_liver.models.msa_unet.ABLATIONS``).
ABLATION_KEYS = ("unet", "unet_msrb", "unet_aaspp", "unet_rasm", "msa_unet")
#: The per-case columns of Tables 1-2: DSC, IoU, precision, recall.
METRICS = ("dice", "jaccard", "precision", "recall")
#: Every Table 2 network has its row there (MSA-UNet's row is the same in Table 1).
TABLE = "table2"


def ablation_models() -> dict[str, str]:
    """Table 2 key → registered model name (``"unet_msrb"`` → ``"msa_unet_with_msrb"``)."""
    from keras_liver.models import MODELS
    from keras_liver.models.msa_unet import ABLATIONS

    names = {builder: name for name, builder in MODELS.items()}
    return {key: names[ABLATIONS[key]] for key in ABLATION_KEYS}


def ablation_of(model_name: str) -> str:
    """The Table 2 key of a registered model name (inverse of :func:`ablation_models`)."""
    inverse = {name: key for key, name in ablation_models().items()}
    if model_name not in inverse:
        raise ValueError(f"{model_name!r} is not one of the Table 2 networks {sorted(inverse)}")
    return inverse[model_name]


def resolve_config(experiment: dict[str, Any], preset: str, *, ablation: str | None = None,
                   tta: bool | None = None, **overrides) -> dict[str, Any]:
    """The preset's run config, for the Table 2 network ``ablation`` (default: the preset's,
    MSA-UNet) and with test-time augmentation on or off (default: the preset's, on)."""
    variant = None
    if ablation is not None:
        if ablation not in ABLATION_KEYS:
            raise ValueError(f"unknown ablation {ablation!r}; choose one of {list(ABLATION_KEYS)}")
        variant = ablation_models()[ablation]
    config = common.resolve_config(experiment, preset, variant=variant, **overrides)
    if tta is not None:
        from keras_liver.inference import TTA_FLIPS

        config.setdefault("inference", {})["tta"] = list(TTA_FLIPS) if tta else []
    return config


def compare_mean_std(summary, paper_row, metrics=METRICS):
    """Ours (mean ± std over the test cases) beside a paper row of ``[mean, std]`` pairs:
    columns ``metric``, ``ours``, ``ours_std``, ``paper``, ``paper_std``, ``difference``
    (ours − paper, of the means)."""
    import pandas as pd

    rows = []
    for metric, (mean, std) in zip(metrics, paper_row):
        ours = float(summary.loc["mean", metric])
        rows.append({"metric": metric, "ours": ours, "ours_std": float(summary.loc["std", metric]),
                     "paper": float(mean), "paper_std": float(std),
                     "difference": ours - float(mean)})
    return pd.DataFrame(rows, columns=["metric", "ours", "ours_std", "paper", "paper_std",
                                       "difference"])


def mean_std_markdown(frame, percent: bool = True) -> str:
    """A comparison frame (:func:`compare_mean_std`) as Markdown, ``mean ± std`` cells, in
    percent as the paper prints them."""
    k = 100.0 if percent else 1.0
    unit = " [%]" if percent else ""
    lines = [f"| metric | ours{unit} | paper{unit} | difference |", "|---|---:|---:|---:|"]
    for r in frame.itertuples():
        lines.append(f"| {r.metric} | {k * r.ours:.2f} ± {k * r.ours_std:.2f} | "
                     f"{k * r.paper:.2f} ± {k * r.paper_std:.2f} | {k * r.difference:+.2f} |")
    return "\n".join(lines)


@dataclass
class ExperimentResult:
    out: str
    dataset: str
    ablation: str
    model: Any                   # the best validation model (keras.Model)
    per_case: Any                # DataFrame, one row per test case
    summary: Any                 # mean / std / global rows
    comparison: Any              # compare_mean_std against the paper's Table 2 row
    epochs: int                  # epochs trained now (0: a finished run was reused)
    saved_model: str | None = None


def run(config: dict[str, Any], *, data: str | None, out: str, tf_data: str,
        experiment: dict[str, Any] | None = None, progress: bool = True,
        export: bool = True) -> ExperimentResult:
    """Train ``config`` (one Table 2 network), evaluate the held-out test cases with the
    config's TTA, compare with the paper and export; what the command line does, as a function
    (used by the notebook's ablation table). A finished run of the same config and data in
    ``out`` is evaluated as it is, not retrained (``epochs`` 0), nor re-exported."""
    from keras_liver import inference
    from keras_liver.metrics import report

    experiment = experiment or common.load_experiment(PAPER)
    ablation = ablation_of(config["model"]["name"])
    os.makedirs(out, exist_ok=True)
    dataset = common.prepare_data(data, config, tf_data=tf_data, workdir=out,
                                  seed=config["seed"],
                                  name=f"phantom-{PAPER}-{config['preset']}", progress=progress)
    model, epochs = common.train_or_reuse(config, dataset, out, progress=progress)

    predictor = inference.Predictor.from_config(model, config)
    tta = " with test-time flips " + "+".join(predictor.tta) if predictor.tta else ""
    common._log(f"evaluating held-out test cases on their original grids{tta}")
    per_case = common.evaluate_binary(predictor, dataset, split="test", progress=progress)
    report.write_results(per_case, out, name="metrics")
    summary = report.summarize(per_case)
    comparison = compare_mean_std(summary, experiment["tables"][TABLE]["rows"][ablation])
    comparison.to_csv(os.path.join(out, "comparison.csv"), index=False)
    saved = common.export_unless_current(out, model) if export else None
    return ExperimentResult(out=out, dataset=dataset, ablation=ablation, model=model,
                            per_case=per_case, summary=summary, comparison=comparison,
                            epochs=epochs, saved_model=saved)


def parser():
    p = common.base_parser(PAPER, __doc__.split("\n\n")[0] + " Trains, evaluates (with flip "
                           "TTA) and exports MSA-UNet or a Table 2 ablation on the phantom or "
                           "a real dataset.")
    p.add_argument("--ablation", default=None, choices=list(ABLATION_KEYS),
                   help="Table 2 network to train (default: the preset's, MSA-UNet)")
    p.add_argument("--no-tta", action="store_true",
                   help="evaluate without the paper's test-time flips")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    return p


def main(argv=None) -> int:
    args, experiment, elapsed = common.start(PAPER, parser(), argv)

    config = resolve_config(experiment, args.preset, ablation=args.ablation,
                            tta=False if args.no_tta else None, **common.recipe_overrides(args))
    r = run(config, data=args.data, out=args.out, tf_data=args.tf_data, experiment=experiment,
            progress=not args.no_progress, export=not args.no_export)

    table = experiment["tables"][TABLE]
    tta = "+".join(["identity", *config.get("inference", {}).get("tta", [])])
    print()
    print(f"MSA-UNet experiment ({args.preset} preset, {table['labels'][r.ablation]} = "
          f"{config['model']['name']}, {len(r.per_case)} held-out cases, {r.epochs} epochs, "
          f"TTA {tta}, {elapsed():.0f} s)")
    print(mean_std_markdown(r.comparison))
    print()
    print(f"paper: {table['caption']} (ours: {'phantom' if args.data is None else args.data})")
    print(f"run directory : {os.path.abspath(r.out)}")
    print(f"dataset       : {os.path.abspath(r.dataset)}")
    print(f"metrics       : {os.path.join(os.path.abspath(r.out), 'metrics.csv')}")
    if r.saved_model:
        print(f"saved model   : {r.saved_model}")
    print(f"predict       : keras-liver predict --model {r.out} IN.nii.gz --out OUT.nii.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
