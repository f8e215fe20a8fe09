"""``keras-liver`` command line: one sub-command per stage (nnU-Net style).

    keras-liver phantom  --cases N --out DIR [--layout lits|msd] [--modality ct|mri]
                         [--task liver|hepatic_vessel|couinaud] [--seed S] [--workers N]
    keras-liver convert  SRC --out tf_data/NAME [--layout auto|lits|msd|flat] [--split a,b,c]
    keras-liver train    --experiment ra_vnet [--preset demo] --data tf_data/NAME --out RUN
                         [--precision float32|mixed_float16|mixed_bfloat16] [--jit]
    keras-liver evaluate PRED_DIR REF_DIR [--out DIR]
    keras-liver export   RUN_DIR [--out DIR] [--version N]
    keras-liver predict  --model RUN_DIR|ra_unet|arunet IN.nii.gz|DIR [IN2 ...] --out OUT.nii.gz|DIR
                         [--tta flips|none] [--blend mean|gaussian] [--overlap F]
                         [--batch-size N] [--no-largest-component]
    keras-liver serving  predict|write-config|project-config|serve-test ...  (TF Serving
                         client, models.config, loopback test server; see docs/serving.md)

Bad input ends with one line ``keras-liver: error: <file>: <problem>`` and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected three fractions summing to 1, e.g. 0.64,0.16,0.2; got {text!r}")
    return tuple(parts)


def _cmd_phantom(args):
    from keras_liver.data.phantom import write_dataset

    pairs = write_dataset(args.out, cases=args.cases, layout=args.layout, task=args.task,
                          modality=args.modality, seed=args.seed,
                          shape=tuple(args.shape) if args.shape else None,
                          progress=not args.no_progress, workers=args.workers)
    print(f"wrote {len(pairs)} phantom cases ({args.modality.upper()}, {args.layout} layout, "
          f"{args.task} task) to {os.path.abspath(args.out)}")


def _cmd_convert(args):
    from keras_liver.data.convert import convert

    manifest = convert(args.src, args.out, layout=args.layout, seed=args.seed, split=args.split,
                       progress=not args.no_progress, overwrite=args.overwrite)
    counts = manifest["counts"]
    print(f"converted {len(manifest['cases'])} cases to {os.path.abspath(args.out)}: {counts}")


def _cmd_train(args):
    from keras_liver import training
    from keras_liver.experiments import common

    experiment = common.load_experiment(args.experiment)
    if args.experiment in MULTI_MODEL_TRAINERS:
        if args.variant is not None:
            raise SystemExit(f"keras-liver train: --variant does not apply to {args.experiment}")
        return MULTI_MODEL_TRAINERS[args.experiment](args, experiment)
    config = common.resolve_config(experiment, args.preset, variant=args.variant,
                                   **common.recipe_overrides(args))
    result = training.train(config, data=args.data, out_dir=args.out, seed=args.seed)
    print(f"trained {result.epochs_run} epochs; best model in {os.path.join(args.out, training.BEST_MODEL)}")


def _train_cascade(args, experiment):
    """A multi-stage experiment (RA-UNet): every stage (and fold), then ``cascade.json``."""
    from keras_liver.cascade import write_cascade
    from keras_liver.experiments import common, ra_unet

    config = ra_unet.resolve_config(experiment, args.preset, **common.recipe_overrides(args))
    run_dirs, _ = ra_unet.train_stages(config, args.data, args.out)
    write_cascade(args.out, run_dirs, inference=config.get("cascade"), model=args.experiment)
    print(f"trained the {args.experiment} cascade in {args.out}; predict with "
          f"`keras-liver predict --model {args.out} IN.nii.gz --out OUT.nii.gz`")


def _train_linked(args, experiment):
    """The Attention Residual UNet's two linked models on the converted datasets
    ``DATA/liver`` and ``DATA/vessel`` (as the experiment writes them), then ``linked.json``."""
    from keras_liver.experiments import arunet, common

    config = arunet.resolve_config(experiment, args.preset, **common.recipe_overrides(args))
    datasets = {m: os.path.join(args.data, m) for m in arunet.MODELS}
    missing = [d for d in datasets.values() if not os.path.isfile(os.path.join(d, "manifest.json"))]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no manifest.json; `keras-liver train --experiment "
                                f"arunet` takes a folder with the converted liver/ and vessel/ "
                                f"datasets (python -m keras_liver.experiments.arunet writes "
                                f"them to RUN_DIR/data)")
    arunet.train_models(config, datasets, args.out)
    print(f"trained the {args.experiment} liver and vessel models in {args.out}; predict with "
          f"`keras-liver predict --model {args.out} IN.nii.gz --out OUT.nii.gz`")


#: Experiments whose preset trains several linked models (not one run).
MULTI_MODEL_TRAINERS = {"ra_unet": _train_cascade, "arunet": _train_linked}


def _cmd_evaluate(args):
    from keras_liver.evaluate import evaluate_folders
    from keras_liver.metrics import report

    df = evaluate_folders(args.pred_dir, args.ref_dir, out_dir=args.out,
                          progress=not args.no_progress)
    print(report.to_markdown(report.summarize(df)))
    if args.out:
        print(f"per-case metrics written to {os.path.abspath(args.out)}")


def _cmd_export(args):
    from keras_liver.export import export_run

    print(export_run(args.run_dir, args.out, version=args.version))


def resolve_model(model: str) -> str:
    """The run directory of ``--model`` (:func:`keras_liver.inference.resolve_model`)."""
    from keras_liver.inference import resolve_model as resolve

    return resolve(model)


def load_predictor(model: str, *, progress: bool = False, tta: str | None = None, **options):
    """The predictor for ``--model`` (:func:`keras_liver.inference.load`): the RA-UNet cascade
    for a directory with ``cascade.json``, the Attention Residual UNet's linked liver and
    vessel models for one with ``linked.json``, a 3-D run's sliding windows, else the 2-D
    slice-by-slice predictor of a training run. ``tta``: ``None`` keeps the run's test-time
    augmentation (``inference.tta`` of its config), ``"flips"`` averages the identity and
    every flip, ``"none"`` turns it off; ``options``: ``blend``, ``overlap``, ``batch_size``,
    ``largest_component`` (``None`` keeps the run's)."""
    from keras_liver.inference import load

    return load(model, progress=progress, tta=tta, **options)


def _overlap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), e.g. 0.5; got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _cmd_predict(args):
    from tqdm import tqdm

    from keras_liver import inference
    from keras_liver.data.volumes import is_nifti
    from keras_liver.errors import DataError

    files = inference.expand_inputs(args.inputs)
    many = (len(files) > 1 or any(os.path.isdir(p) for p in args.inputs)
            or os.path.isdir(args.out) or args.out.endswith(os.sep))
    if many:
        outs = inference.output_paths(files, args.out)
    elif not is_nifti(args.out):
        raise DataError(args.out, "the output of one input must be a .nii or .nii.gz file "
                                  "(or an existing folder)")
    else:
        outs = [args.out]
    predictor = load_predictor(
        args.model, progress=not args.no_progress, tta=args.tta, blend=args.blend,
        overlap=args.overlap, batch_size=args.batch_size,
        largest_component=False if args.no_largest_component else None)
    for src, out in tqdm(list(zip(files, outs)), desc="predict", unit="volume", file=sys.stderr,
                         disable=args.no_progress or len(files) == 1):
        predictor.predict_file(src, out)
        print(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keras-liver", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_, description=help_,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        s.set_defaults(fn=fn)
        s.add_argument("--no-progress", action="store_true", help="no progress bars")
        return s

    s = add("phantom", _cmd_phantom, "write synthetic abdominal CT (or MRI-like) phantom cases "
            "as NIfTI")
    s.add_argument("--cases", type=int, default=10)
    s.add_argument("--out", required=True)
    s.add_argument("--layout", choices=["lits", "msd"], default="lits")
    s.add_argument("--task", choices=["liver", "hepatic_vessel", "couinaud"], default="liver",
                   help="MSD task of --layout msd: Task03_Liver (1 liver, 2 tumour), "
                        "Task08_HepaticVessel (1 vessel, 2 tumour) or the Couinaud segments "
                        "(1..9 = I, II, III, IVa, IVb, V, VI, VII, VIII)")
    s.add_argument("--modality", choices=["ct", "mri"], default="ct",
                   help="CT in HU, or the MRI-like look (portal-venous T1, arbitrary scale; "
                        "couinaud task only)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="force the voxel grid (default: random per case)")
    s.add_argument("--workers", type=_positive, default=None,
                   help="processes generating cases at once (default: one per CPU core, at "
                        "most one per 10 cases; the files are the same for any number)")

    s = add("convert", _cmd_convert, "convert a NIfTI dataset to sharded GZIP TFRecords + manifest")
    s.add_argument("src", help="dataset folder (LiTS, MSD or flat layout)")
    s.add_argument("--out", required=True, help="e.g. tf_data/NAME")
    s.add_argument("--layout", choices=["auto", "lits", "msd", "flat"], default="auto")
    s.add_argument("--seed", type=int, default=42, help="seed of the split by case")
    s.add_argument("--split", type=_split, default=(0.64, 0.16, 0.2), help="train,val,test fractions")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a folder that holds a conversion of another dataset")

    s = add("train", _cmd_train, "train a paper's model with its recipe on a converted dataset")
    s.add_argument("--experiment", default="ra_vnet",
                   help="experiments/<name>.json (ra_unet trains its three stages and writes "
                        "the cascade)")
    s.add_argument("--preset", default="demo")
    s.add_argument("--variant", default=None)
    s.add_argument("--data", required=True, help="converted dataset folder (manifest.json)")
    s.add_argument("--out", required=True, help="run directory (resumes if interrupted)")
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--learning-rate", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    from keras_liver.experiments.common import add_compute_options

    add_compute_options(s)

    s = add("evaluate", _cmd_evaluate, "LiTS metrics of predicted label volumes against references")
    s.add_argument("pred_dir")
    s.add_argument("ref_dir")
    s.add_argument("--out", default=None, help="folder for metrics.csv and metrics.md")

    s = add("export", _cmd_export, "export a run's best model as a SavedModel for TF Serving: "
            "signature serving_default takes preprocessed network inputs, serve_hu raw HU "
            "slices (2-D runs) or a volume (3-D runs) with the run's preprocessing in the "
            "graph (docs/inference.md)")
    s.add_argument("run_dir")
    s.add_argument("--out", default=None, help="default RUN_DIR/saved_model")
    s.add_argument("--version", type=int, default=None, help="write into OUT/<version> (TF Serving layout)")

    s = add("predict", _cmd_predict, "predict label volumes for NIfTI inputs with a trained run "
            "(RA-UNet: the three-stage cascade, labels 0 background, 1 liver, 2 tumour; "
            "Attention Residual UNet: the liver then the vessel model, labels 0 background, "
            "1 liver, 2 liver tumour, 3 vessel)")
    s.add_argument("--model", required=True,
                   help="run directory (a 2-D training run, a cascade run with cascade.json or "
                        "a linked run with linked.json), or a paper name such as ra_unet or "
                        "arunet for its default run directory runs/NAME")
    s.add_argument("inputs", nargs="+",
                   help="input NIfTI file(s) or folder(s) (every *.nii / *.nii.gz in them, sorted)")
    s.add_argument("--out", required=True,
                   help="output file (one input file) or folder (several inputs, or a folder: "
                        "OUT/<name>_pred.nii.gz each)")
    s.add_argument("--tta", choices=["flips", "none"], default=None,
                   help="test-time augmentation: average the identity and every flip (2-D: "
                        "vertical and horizontal; 3-D runs: also along z), or none; default: "
                        "the run's own setting (MSA-UNet: flips)")
    s.add_argument("--blend", choices=["mean", "gaussian"], default=None,
                   help="blending of overlapping windows (3-D runs and the cascade): their "
                        "mean, or nnU-Net's Gaussian importance weighting; default: the run's "
                        "(mean)")
    s.add_argument("--overlap", type=_overlap, default=None,
                   help="overlap of neighbouring windows (3-D runs and the cascade), e.g. 0.5; "
                        "default: the run's strides")
    s.add_argument("--batch-size", type=_positive, default=None,
                   help="slices (2-D) or windows (3-D) per forward pass; bounds memory; "
                        "default: the run's (2-D 8, 3-D 2)")
    s.add_argument("--no-largest-component", action="store_true",
                   help="keep every connected component of the label (default: the run's "
                        "post-processing, largest 3-D component for liver models)")
    # Parsed by keras_liver.serving's own parser (main() hands it everything after "serving").
    sub.add_parser("serving", help="TF Serving: REST/gRPC client, models.config writer, "
                   "loopback test server (keras-liver serving --help)", add_help=False)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_liver.errors import DataError, ModelInputError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serving"]:
        from keras_liver.serving.__main__ import main as serving_main

        return serving_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (DataError, ModelInputError, FileNotFoundError) as err:
        print(f"keras-liver: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
