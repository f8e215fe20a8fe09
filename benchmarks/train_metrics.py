"""What the compiled training metrics cost a train step:

    python -m benchmarks.train_metrics                    # BADA demo (96x96, batch 4, XLA)
    python -m benchmarks.train_metrics --model ra_vnet
    python -m benchmarks.train_metrics --quick            # tiny preset (smoke test)

One model of an experiment preset is compiled three times with the preset's loss, optimizer
and ``jit_compile`` (``--jit`` forces XLA on): with no metrics; with the metrics the runner
compiles (``keras_liver.training.build_metrics``: for a multi-class target one overlap
metric keeps the per-class counts and the other scores read them); and with the same scores
as separate metrics, each with its own argmax, one-hot and sums of the batch (the library
before the counts were shared). ``train_on_batch`` on one random batch of the preset's
shape, ``--steps`` steps per timed repeat, the three variants in turn in every round, so
the machine's drift reaches all three alike; each figure is the median over the rounds and
``ratio`` is it over the median without metrics, measured in the same run.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks import _common as C

COLUMNS = ["metrics", "count", "ms/step", "CPU ms/step", "ratio", "CPU ratio"]


def parser():
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bada",
                   help="a network of experiments/: 'bada', 'ra_unet/liver', "
                        "'arunet/vessel' ... (default bada)")
    p.add_argument("--preset", default=None, help="its preset (default demo, --quick: tiny)")
    p.add_argument("--steps", type=int, default=None,
                   help="train steps per timed repeat (default 60, --quick: 3)")
    return p


def _entry(args) -> C.ModelEntry:
    preset = args.preset or ("tiny" if args.quick else "demo")
    entries = {e.id: e for e in C.model_entries([preset])}
    if args.model not in entries:
        raise ValueError(f"unknown model {args.model!r} in preset {preset!r}; choose one of "
                         f"{sorted(entries)}")
    return entries[args.model]


def main(argv=None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    repeats = C.check_positive("--repeats", args.repeats) or (2 if args.quick else 5)
    steps = C.check_positive("--steps", args.steps) or (3 if args.quick else 60)
    entry = _entry(args)

    import keras

    from keras_liver import training
    from keras_liver.data import pipeline, volumetric

    training_cfg = entry.training
    data_cfg = (volumetric if volumetric.is_volumetric(entry.data) else pipeline).resolve_config(
        entry.data)
    jit = bool(args.jit or training_cfg.get("jit_compile", False))
    class_names = training_cfg.get("class_names")
    variants = {"none": lambda: [],
                "shared counts": lambda: training.build_metrics(data_cfg, class_names),
                "separate": lambda: training.build_metrics(data_cfg, class_names,
                                                           share_counts=False)}
    rng = np.random.default_rng(0)
    shape = tuple(entry.input_shape)
    batch = int(data_cfg["batch_size"])
    x = rng.random((batch, *shape), dtype=np.float32)
    if training._task(data_cfg) == "binary":
        y = (rng.random((batch, *shape[:-1], 1)) > 0.5).astype(np.float32)
    else:
        k = int(data_cfg["num_classes"])
        y = np.eye(k, dtype=np.float32)[rng.integers(0, k, (batch, *shape[:-1]))]

    models, counts = {}, {}
    for name, make in variants.items():
        keras.utils.set_random_seed(0)
        model = training.build_model(entry.model)
        metrics = make()
        counts[name] = len(metrics)
        model.compile(optimizer=training.build_optimizer(training_cfg.get("optimizer", {})),
                      loss=training.build_loss(training_cfg["loss"]), metrics=metrics,
                      jit_compile=jit)
        for _ in range(2 if args.quick else 5):  # trace, compile and settle
            model.train_on_batch(x, y)
        models[name] = model

    wall = {n: [] for n in models}
    cpu = {n: [] for n in models}
    for _ in range(repeats):
        for name, model in models.items():
            c, s = time.process_time(), time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            wall[name].append((time.perf_counter() - s) / steps * 1e3)
            cpu[name].append((time.process_time() - c) / steps * 1e3)
    base, base_cpu = float(np.median(wall["none"])), float(np.median(cpu["none"]))
    rows = []
    for name in models:
        ms, cms = float(np.median(wall[name])), float(np.median(cpu[name]))
        rows.append({"metrics": name, "count": counts[name], "ms/step": ms, "CPU ms/step": cms,
                     "ratio": ms / base, "CPU ratio": cms / base_cpu,
                     "ms/step per round": [round(v, 2) for v in wall[name]]})
    m = C.machine()
    sections: list[str] = []
    title = (f"Training metrics: {entry.id} ({entry.preset}) "
             f"{'x'.join(map(str, shape))}, batch {batch}, jit {jit}, {steps} steps x "
             f"{repeats} rounds")
    C.emit(title, C.machine_line(m) + "\n\n" + C.markdown_table(rows, COLUMNS), sections)
    payload = {"machine": m, "rows": rows, "jit": jit, "steps": steps, "repeats": repeats}
    C.write_outputs(args, payload, sections)
    return payload


if __name__ == "__main__":
    main()
    sys.exit(0)
