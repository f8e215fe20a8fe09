"""BADA (boundary-aware dual attention, Couinaud liver segments), end to end:
``python -m keras_liver.experiments.bada``.

With no argument: generates the MRI-like phantom (portal-venous T1 look, bias field, Rician
noise; labels 1–9 = Couinaud segments I, II, III, IVa, IVb, V, VI, VII, VIII on every liver
voxel) in MSD layout, converts it to TFRecords, splits it 75/10/15 % by case, trains the reduced
``demo`` preset of ``experiments/bada.json`` (Dice + CE, Adam with PyTorch's coupled L2 weight
decay, learning rate ×0.1 when the validation Dice stalls, best validation-Dice model), scores the
held-out test cases per segment (Dice per segment and their mean, mean sensitivity and PPV over
the nine segments, per case on the original grid), exports the SavedModel and prints the scores
beside Table 3 and Table 4 (Tables 1–2 for an ablation).

``--ablation NAME`` trains one of the Tables 1–4 networks (``keras_liver.models.bada.VARIANTS``:
``bada``, ``bada_spatial_only``, ``bada_semantic_only``, ``bada_fcn_1up`` … ``bada_fcn_3up``,
``bada_unet``, ``bada_resunet``, ``bada_attention_unet``, ``bada_attention_resunet``);
``--data PATH --preset paper`` runs the published recipe on a real dataset (labels 0–9 as above,
any layout :mod:`keras_liver.data.datasets` reads).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from keras_liver.experiments import common

PAPER = "bada"
#: The paper tables a network's scores are printed beside, in this order of preference.
TABLES = ("table3", "table4", "table1", "table2")


def ablations() -> tuple[str, ...]:
    """The registered names of the Tables 1–4 networks."""
    from keras_liver.models.bada import VARIANTS

    return tuple(VARIANTS)


def resolve_config(experiment: dict[str, Any], preset: str, *, ablation: str | None = None,
                   **overrides) -> dict[str, Any]:
    """The preset's run config, for the Tables 1–4 network ``ablation`` (default: BADA)."""
    if ablation is not None and ablation not in ablations():
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {list(ablations())}")
    variant = None if ablation in (None, "bada") else ablation
    return common.resolve_config(experiment, preset, variant=variant, **overrides)


def paper_rows(experiment: dict[str, Any], model_name: str) -> list[tuple[str, str, dict]]:
    """``(table, row label, {metric: paper value as a fraction})`` of every paper table row
    that reports ``model_name`` (a registered BADA variant)."""
    rows = []
    for key in TABLES:
        table = experiment["tables"][key]
        for label, variant in table.get("variants", {}).items():
            if variant != model_name:
                continue
            values = {m: float(v) / 100.0 for m, v in zip(table["metrics"], table["rows"][label])
                      if m is not None}
            rows.append((key, label, values))
    return rows


def compare_with_paper(summary, experiment: dict[str, Any], model_name: str):
    """Ours (per case, mean ± std, and pooled) beside every paper row of this network: one
    row per (table, metric)."""
    import pandas as pd

    rows = []
    for table, label, values in paper_rows(experiment, model_name):
        for metric, paper in values.items():
            rows.append({"table": table, "row": label, "metric": metric,
                         "ours": float(summary.loc["mean", metric]),
                         "ours_std": float(summary.loc["std", metric]),
                         "ours_global": float(summary.loc["global", metric]),
                         "paper": paper, "difference": float(summary.loc["mean", metric]) - paper})
    return pd.DataFrame(rows, columns=["table", "row", "metric", "ours", "ours_std",
                                       "ours_global", "paper", "difference"])


def comparison_markdown(frame) -> str:
    lines = ["| table | metric | ours per case [%] | ours global [%] | paper [%] | difference |",
             "|---|---|---:|---:|---:|---:|"]
    for r in frame.itertuples():
        lines.append(f"| {r.table} | {r.metric} | {100 * r.ours:.2f} ± {100 * r.ours_std:.2f} | "
                     f"{100 * r.ours_global:.2f} | {100 * r.paper:.2f} | "
                     f"{100 * r.difference:+.2f} |")
    return "\n".join(lines)


def evaluate(predictor, dataset: str, config: dict[str, Any], *, split: str = "test",
             progress: bool = True):
    """Per-case segment scores (``keras_liver.metrics.segments``) of a trained run on a split,
    with the ``mean``/``std``/``global`` rows: ``(per_case, summary)``."""
    from keras_liver.metrics import segments

    ev = config.get("evaluation", {})
    classes = ev.get("classes")
    both_absent = ev.get("both_absent", "one")
    per_case = common.evaluate(
        predictor, dataset,
        lambda pred, ref, _: segments.segment_scores(pred, ref, classes, both_absent=both_absent),
        split=split, progress=progress)
    return per_case, segments.summarize_segments(per_case, both_absent=both_absent)


@dataclass
class ExperimentResult:
    out: str
    dataset: str
    model_name: str
    model: Any                   # the best validation model (keras.Model)
    per_case: Any                # DataFrame, one row per test case
    summary: Any                 # mean / std / global rows
    comparison: Any              # compare_with_paper
    epochs: int                  # epochs trained now (0: a finished run was reused)
    saved_model: str | None = None


def run(config: dict[str, Any], *, data: str | None, out: str, tf_data: str,
        experiment: dict[str, Any] | None = None, progress: bool = True,
        export: bool = True) -> ExperimentResult:
    """Train ``config``, score the held-out test cases per segment, compare with the paper
    and export; what the command line does, as a function (used by the notebook). A finished
    run of the same config and data in ``out`` is evaluated as it is, not retrained."""
    import pandas as pd

    from keras_liver import inference
    from keras_liver.metrics import report

    experiment = experiment or common.load_experiment(PAPER)
    model_name = config["model"]["name"]
    os.makedirs(out, exist_ok=True)
    dataset = common.prepare_data(data, config, tf_data=tf_data, workdir=out,
                                  seed=config["seed"],
                                  name=f"phantom-{PAPER}-{config['preset']}", progress=progress)
    model, epochs = common.train_or_reuse(config, dataset, out, progress=progress)
    common._log("scoring the held-out test cases per segment on their original grids")
    per_case, summary = evaluate(inference.Predictor.from_config(model, config), dataset,
                                 config, split="test", progress=progress)
    # the segment summary ``evaluate`` computed (its global row holds the pooled segment means)
    report.write_results(pd.concat([per_case.set_index("case"), summary]), out, name="metrics",
                         summary=False)
    comparison = compare_with_paper(summary, experiment, model_name)
    comparison.to_csv(os.path.join(out, "comparison.csv"), index=False)
    saved = common.export_unless_current(out, model) if export else None
    return ExperimentResult(out=out, dataset=dataset, model_name=model_name, model=model,
                            per_case=per_case, summary=summary, comparison=comparison,
                            epochs=epochs, saved_model=saved)


def parser():
    p = common.base_parser(PAPER, __doc__.split("\n\n")[0] + " Trains, scores per Couinaud "
                           "segment and exports BADA or a Tables 1-4 network on the MRI "
                           "phantom or a real dataset.")
    p.add_argument("--ablation", default=None, choices=list(ablations()),
                   help="Tables 1-4 network to train (default: the preset's, BADA)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    return p


def main(argv=None) -> int:
    from keras_liver.metrics.segments import SEGMENT_NAMES

    args, experiment, elapsed = common.start(PAPER, parser(), argv)

    config = resolve_config(experiment, args.preset, ablation=args.ablation,
                            **common.recipe_overrides(args))
    r = run(config, data=args.data, out=args.out, tf_data=args.tf_data, experiment=experiment,
            progress=not args.no_progress, export=not args.no_export)

    s = r.summary
    print()
    print(f"BADA experiment ({args.preset} preset, {r.model_name}, {len(r.per_case)} held-out "
          f"cases, {r.epochs} epochs, {elapsed():.0f} s)")
    print("Dice per segment (mean over cases): " + ", ".join(
        f"{name} {s.loc['mean', f'{name}_dice']:.3f}" for name in SEGMENT_NAMES))
    print(f"mean segment Dice {s.loc['mean', 'mean_dice']:.4f}, mean sensitivity "
          f"{s.loc['mean', 'mean_sensitivity']:.4f}, mean PPV {s.loc['mean', 'mean_ppv']:.4f}")
    if len(r.comparison):
        print(comparison_markdown(r.comparison))
    else:
        print("(the paper reports no row for this network)")
    print()
    print(f"run directory : {os.path.abspath(r.out)}")
    print(f"dataset       : {os.path.abspath(r.dataset)}")
    print(f"metrics       : {os.path.join(os.path.abspath(r.out), 'metrics.csv')}")
    if r.saved_model:
        print(f"saved model   : {r.saved_model}")
    print(f"predict       : keras-liver predict --model {r.out} IN.nii.gz --out OUT.nii.gz "
          f"(labels 0 background, 1-9 = Couinaud I-VIII)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
