"""RA V-Net (Lee et al.), end to end: ``python -m keras_liver.experiments.ra_vnet``.

With no argument: generates the synthetic phantom, converts it to TFRecords, trains the
reduced ``demo`` preset of ``experiments/ra_vnet.json``, evaluates the held-out test cases on
their original grids (Dice, Jaccard, VOE, RVD, ASSD, RMSD, MSD, accuracy, precision), exports
the SavedModel and prints the results beside Table 4 of the paper.

``--data PATH --preset paper`` runs the published recipe (§3.1: Dice loss, Adam 1e-4, batch 1,
500 epochs, stop at loss 5e-4) on a real dataset; ``--variant`` trains one of the Tables 2–4
networks instead of RA V-Net.
"""
from __future__ import annotations

import os
import sys

from keras_liver.experiments import common

PAPER = "ra_vnet"
TABLE_ROW = {"ra_vnet": ("table4_overall", "ra_vnet"), "unet": ("table4_overall", "unet"),
             "res_unet": ("table4_overall", "res_unet"),
             "cofres_unet": ("table4_overall", "cofres_unet"),
             "ra_vnet_without_cofres": ("table4_overall", "ra_vnet_without_cofres")}


def parser():
    p = common.base_parser(PAPER, __doc__.split("\n\n")[0] + " Trains, evaluates and exports "
                           "RA V-Net (or a Tables 2-4 variant) on the phantom or a real dataset.")
    p.add_argument("--variant", default=None, choices=sorted(TABLE_ROW),
                   help="network to train (default: the preset's, RA V-Net)")
    return p


def main(argv=None) -> int:
    args, experiment, elapsed = common.start(PAPER, parser(), argv)

    from keras_liver import export, inference, training
    from keras_liver.metrics import report

    config = common.resolve_config(experiment, args.preset, variant=args.variant,
                                   **common.recipe_overrides(args))
    os.makedirs(args.out, exist_ok=True)
    data = common.prepare_data(args.data, config, tf_data=args.tf_data, workdir=args.out,
                               seed=args.seed, name=f"phantom-{PAPER}-{args.preset}",
                               progress=not args.no_progress)

    common._log(f"training {config['model']['name']} ({args.preset} preset) in {args.out}")
    result = training.train(config, data=data, out_dir=args.out, seed=args.seed,
                            verbose=0 if args.no_progress else "auto")

    common._log("evaluating held-out test cases on their original grids")
    predictor = inference.Predictor.from_config(result.model, config)
    per_case = common.evaluate_binary(predictor, data, split="test", progress=not args.no_progress)
    tables = report.write_results(per_case, args.out, name="metrics")

    saved_model = export.export_run(args.out)

    table, row = TABLE_ROW[config["model"]["name"]]
    paper = common.paper_row(experiment, table, row)
    comparison = report.compare_with_paper(report.summarize(per_case), paper)
    print()
    print(f"RA V-Net experiment ({args.preset} preset, model {config['model']['name']}, "
          f"{len(per_case)} held-out cases, {result.epochs_run} epochs, {elapsed():.0f} s)")
    print(report.to_markdown(comparison))
    print()
    print(f"paper: {experiment['tables'][table]['caption']} (LiTS2017; ours: "
          f"{'phantom' if args.data is None else args.data})")
    print(f"run directory : {os.path.abspath(args.out)}")
    print(f"dataset       : {os.path.abspath(data)}")
    print(f"weights       : {os.path.join(os.path.abspath(args.out), training.BEST_MODEL)}")
    for name, path in tables.items():
        print(f"{name:<14}: {path}")
    print(f"saved model   : {saved_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
