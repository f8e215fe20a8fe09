"""Train-step benchmark: FLOPs per step, steps/s, achieved FLOP/s and MFU of every model.

    python -m benchmarks.train_step                 # every model, demo and published sizes
    python -m benchmarks.train_step --quick         # tiny presets, about a minute
    python -m benchmarks.train_step --models ra_vnet,msa_unet --presets demo
    python -m benchmarks.train_step --precision mixed_bfloat16 --jit --device gpu

Models: every network of every ``experiments/*.json`` (one per preset, or each model of
Attention Residual UNet and each stage of RA-UNet's cascade; :func:`benchmarks._common.model_entries`)
plus :data:`BASELINES` (plain-convolution ablations of the same papers, the reference for the
plain-conv MFU target), at the ``demo`` preset's input size and batch and at the ``paper``
preset's published input size with the batch capped at ``--paper-batch`` (default 2; the
published batches, up to 90 slices, take minutes per step on a CPU). ``--quick`` uses the
``tiny`` presets.

The step is the one ``Model.fit`` runs: ``model.train_step((x, y))`` of a model compiled with
the recipe's loss and optimizer (``keras_liver.training.build_loss`` / ``build_optimizer``),
wrapped in one ``tf.function`` (``jit_compile=--jit``) with a fixed input signature, on
device-resident random inputs and targets of the model's output shape (binary masks for
sigmoid heads, one-hot maps for softmax heads), so the input pipeline is not measured here.
The traced function is checked for retracing (``traces`` must stay 1).

FLOPs are counted by TensorFlow's profiler (``tf.compat.v1.profiler.profile`` with
``ProfileOptionBuilder.float_operation()``) on the graph of that concrete function: forward,
backward (``tf.GradientTape``) and the optimizer update, every op with a registered ``flops``
statistic, a multiply-add = 2 FLOPs. TensorFlow registers Conv2D, its two backprops, Conv3D,
MatMul, BatchMatMul, BiasAdd, pooling and the element-wise arithmetic ops; it does not register
Conv3D's backprops, so :func:`register_missing_flops` adds them with the same formula as
Conv3D (2 * k^3 * C_in * C_out * voxels of the forward output). Activations (ReLU, sigmoid,
tanh), casts, resizes and data movement count 0. The per-op-type breakdown is computed with
the same registry (``ops.get_stats_for_node_def``) and must add up to the profiler's total.
:func:`analytic_conv_flops` cross-checks the convolution part from the layer shapes:
forward 2 * prod(kernel) * output voxels per convolution (ConvLSTM: input and recurrent
kernels per time step), backward 2x forward less the input gradient of the first layer.

MFU = achieved FLOP/s / the peak of a large Conv2D (2-D models) or Conv3D (3-D models)
measured in the same run, same dtype, same threads (:func:`benchmarks._common.peak_conv`).
Targets (issue 8): MFU >= 0.6 for plain convolution models (:data:`PLAIN_CONV`), >= 0.4 for
ConvLSTM- and attention-heavy ones. A model below its target gets an op-level profile of one
extra step (``tf.profiler.experimental`` trace; kernel time per op type and per layer,
:func:`op_profile`) unless a step takes longer than ``--profile-max-s``.
"""
from __future__ import annotations

import glob
import inspect
import math
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from typing import Any

from benchmarks import _common as C

#: Registry names of plain-convolution networks (no ConvLSTM, no attention): MFU target 0.6.
PLAIN_CONV = frozenset({"unet", "res_unet", "cofres_unet", "msa_unet_baseline", "bada_unet",
                        "bada_resunet"})
#: Plain-convolution ablations benchmarked by default: (experiment, registry name).
BASELINES = (("ra_vnet", "unet"),)
TARGET_PLAIN = 0.6
TARGET_ATTENTION = 0.4

COLUMNS = ["model", "preset", "input", "batch", "params", "GFLOP/step", "conv %", "steps/s",
           "slices/s", "GFLOP/s", "peak GFLOP/s", "MFU", "CPU s/step", "MFU (CPU)", "target",
           "met", "traces", "first call s"]


# --------------------------------------------------------------------------- FLOP counting

_REGISTERED = False


def register_missing_flops() -> None:
    """Register ``flops`` statistics for the Conv3D backprops, which TensorFlow leaves out:
    ``2 * out_backprop elements * prod(filter spatial) * C_in`` (= the forward Conv3D's count)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import numpy as np
    from tensorflow.python.framework import graph_util, ops
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401 (registers)

    def conv3d_backprop(graph, node):
        grad = graph_util.tensor_shape_from_node_def_name(graph, node.input[2])
        grad.assert_is_fully_defined()
        if node.op.startswith("Conv3DBackpropFilter"):
            kernel = graph_util.tensor_shape_from_node_def_name(graph, node.name)
        else:
            kernel = graph_util.tensor_shape_from_node_def_name(graph, node.input[1])
        kernel.assert_is_fully_defined()
        k = kernel.as_list()
        return ops.OpStats("flops", int(2 * grad.num_elements() * np.prod(k[:3]) * k[3]))

    for op_type in ("Conv3DBackpropInputV2", "Conv3DBackpropFilterV2"):
        try:
            ops.RegisterStatistics(op_type, "flops")(conv3d_backprop)
        except KeyError:   # already registered (a newer TensorFlow)
            pass
    _REGISTERED = True


#: Op types that do arithmetic but have no flops statistic; listed when a graph holds them.
_UNCOUNTED_HEAVY = ("Einsum", "Conv2DBackpropInputV2", "DepthwiseConv2dNativeBackpropInput",
                    "DepthwiseConv2dNativeBackpropFilter", "Conv3DBackpropInput",
                    "Conv3DBackpropFilter", "FusedBatchNormV3", "FusedBatchNormGradV3")


def graph_flops(graph) -> dict[str, Any]:
    """FLOPs of a (function) graph: the profiler's total, the per-op-type breakdown from the
    same registry, the convolution and matmul part, and the op types left uncounted."""
    import tensorflow as tf
    from tensorflow.python.framework import ops

    register_missing_flops()
    with C.quiet_tf():
        opts = (tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
            .with_empty_output().build())
        total = int(tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops)
    per_type: dict[str, int] = defaultdict(int)
    uncounted = set()
    for op in graph.get_operations():
        try:
            stat = ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except (ValueError, KeyError):
            stat = None
        if stat is not None and stat.value:
            per_type[op.type] += int(stat.value)
        elif op.type in _UNCOUNTED_HEAVY:
            uncounted.add(op.type)
    conv = sum(v for k, v in per_type.items() if k.startswith("Conv") or "MatMul" in k)
    return {"total": total, "per_type": dict(per_type), "conv_matmul": conv,
            "breakdown_total": sum(per_type.values()), "uncounted": sorted(uncounted)}


def _layers(model):
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        sub = getattr(layer, "layers", None)
        if sub:
            stack.extend(sub)
        else:
            yield layer


def analytic_conv_flops(model, batch: int) -> dict[str, int]:
    """Convolution FLOPs of one forward pass from the layer shapes (2 FLOPs per multiply-add):
    Conv{2,3}D ``2 * prod(kernel) * output voxels``; Conv{2,3}DTranspose ``2 * prod(kernel) *
    input voxels``; ConvLSTM ``time steps * 2 * (prod(kernel) + prod(recurrent kernel)) *
    output voxels``. Returns ``forward``, ``first_layer`` (the convolution on the image, which
    needs no input gradient) and ``train`` = 3 * forward - first_layer."""
    import keras

    forward = 0
    first = 0
    for layer in _layers(model):
        if isinstance(layer, (keras.layers.ConvLSTM2D, keras.layers.ConvLSTM3D)):
            steps = layer.input.shape[1]
            out_vox = math.prod(layer.output.shape[1:-1])
            kernel = math.prod(layer.cell.kernel.shape)
            rec = math.prod(layer.cell.recurrent_kernel.shape)
            forward += steps * 2 * (kernel + rec) * out_vox * batch
            continue
        if not hasattr(layer, "kernel") or len(layer.kernel.shape) < 4:
            continue
        kernel = math.prod(layer.kernel.shape)
        if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
            f = 2 * kernel * math.prod(layer.input.shape[1:-1]) * batch
        else:
            f = 2 * kernel * math.prod(layer.output.shape[1:-1]) * batch
        forward += f
        if any(layer.input is t for t in model.inputs):
            first += f
    return {"forward": forward, "first_layer": first, "train": 3 * forward - first}


# --------------------------------------------------------------------------- op profile

_EXECUTOR_EVENTS = {"ExecutorState::Process", "ThreadpoolListener::StartRegion",
                    "ThreadpoolListener::StopRegion"}


def _op_kind(kernel: str) -> str:
    """'_MklNativeConv2DBackpropFilterWithBias' -> 'Conv2DBackpropFilterWithBias'."""
    return re.sub(r"^_(MklNative|Mkl|FusedMkl|MklFused)?", "", kernel) or kernel


def _scope(node: str, model_name: str) -> str:
    """The layer an op belongs to: ``ra_vnet_1/enc1_conv/Conv2D`` -> ``enc1_conv``; gradient
    ops ``gradient_tape/ra_vnet_1/enc1_conv/...`` -> ``grad enc1_conv``; the optimizer's
    ops -> ``optimizer``; gradient sums ``AddN_12`` -> ``AddN (gradient sums)``."""
    parts = node.split("/")
    prefix = ""
    if parts[0] == "gradient_tape":
        prefix, parts = "grad ", parts[1:]
    if len(parts) > 1 and parts[0].startswith(model_name):
        return prefix + re.sub(r"_\d+$", "", parts[1])
    if re.match(r"AddN(_\d+)?$", parts[0]):
        return "AddN (gradient sums)"
    head = re.sub(r"_\d+$", "", parts[0])
    if head in ("adam", "sgd", "rmsprop", "adamw", "coupled_weight_decay_adam",
                "loss_scale_optimizer") or "optimizer" in head or "adam" in head:
        return "optimizer"
    return prefix + head


def op_profile(run_step, steps: int = 1, top: int = 10, model_name: str = "") -> dict[str, Any]:
    """Trace ``steps`` calls of ``run_step`` with ``tf.profiler.experimental`` and aggregate the
    kernel events of TensorFlow's executor threads: milliseconds per op type and per layer
    (the top-level name scope), per step, and the busy fraction of the executor threads."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="keras-liver-profile-")
    try:
        tf.profiler.experimental.start(logdir)
        import time

        t0 = time.perf_counter()
        for _ in range(steps):
            run_step()
        wall = time.perf_counter() - t0
        tf.profiler.experimental.stop()
        files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not files:
            raise RuntimeError(f"{logdir}: the profiler wrote no .xplane.pb")
        space = xplane_pb2.XSpace()
        with open(files[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    by_type: dict[str, float] = defaultdict(float)
    by_layer: dict[str, float] = defaultdict(float)
    threads = 0
    for plane in space.planes:
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            threads += 1
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if name in _EXECUTOR_EVENTS or ":" not in name:
                    continue
                node, kernel = name.rsplit(":", 1)
                ms = ev.duration_ps / 1e9 / steps
                by_type[_op_kind(kernel)] += ms
                by_layer[_scope(node, model_name)] += ms
    busy = sum(by_type.values())
    step_ms = wall / steps * 1e3
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
    layers = sorted(by_layer.items(), key=lambda kv: -kv[1])
    return {"step_ms": step_ms, "kernel_ms": busy, "threads": threads,
            "busy_fraction": busy / (step_ms * max(1, threads)) if step_ms else float("nan"),
            "conv_kernel_ms": sum(v for k, v in by_type.items()
                                  if re.match(r"(Fused)?Conv", k)),
            "ops": [{"op": k, "ms/step": v, "share": v / busy if busy else 0.0}
                    for k, v in ranked[:top]],
            "layers": [{"layer": k, "ms/step": v, "share": v / busy if busy else 0.0}
                       for k, v in layers[:top]]}


# --------------------------------------------------------------------------- models

def _variant_entry(entry: C.ModelEntry, variant: str) -> C.ModelEntry:
    from keras_liver.models import MODELS

    accepted = inspect.signature(MODELS[variant]).parameters
    model = {"name": variant, **{k: v for k, v in entry.model.items()
                                 if k in accepted and k != "name"}}
    return C.ModelEntry(id=f"{entry.id}:{variant}", experiment=entry.experiment,
                        preset=entry.preset, model=model, data=entry.data,
                        training=entry.training, config=entry.config)


def select_entries(presets, models: list[str] | None, baselines=BASELINES) -> list[C.ModelEntry]:
    """The benchmarked entries: every experiment network, plus ``baselines`` when ``models`` is
    not given, filtered by ``models``: entry ids (``ra_vnet``, ``arunet/liver``,
    ``ra_unet/localiser``), experiment names (all their networks) or ``EXPERIMENT:VARIANT``
    (a registered ablation at that experiment's sizes, e.g. ``ra_vnet:unet``)."""
    from keras_liver.models import MODELS

    base = C.model_entries(presets)
    wanted = list(models or ())
    specs = [tuple(m.split(":", 1)) for m in wanted if ":" in m] if wanted else list(baselines)
    out = list(base)
    for exp, variant in specs:
        if variant not in MODELS:
            raise ValueError(f"--models: {exp}:{variant}: {variant!r} is not a registered model; "
                             f"see keras_liver.models.MODELS")
        matches = [e for e in base if e.id == exp]
        if not matches:
            raise ValueError(f"--models: {exp}:{variant}: no single-model experiment {exp!r} in "
                             f"presets {list(presets)}")
        out.extend(_variant_entry(e, variant) for e in matches)
    if wanted:
        known = {e.id for e in base} | {e.experiment for e in base}
        missing = [m for m in wanted if ":" not in m and m not in known]
        if missing:
            raise ValueError(f"--models: unknown {missing}; known: {sorted(known)} (an experiment "
                             "name selects all its networks; EXPERIMENT:VARIANT adds an ablation)")
        out = [e for e in out if e.id in wanted or (e.experiment in wanted and ":" not in e.id)]
    return out


def target_for(entry: C.ModelEntry) -> float:
    return TARGET_PLAIN if entry.model["name"] in PLAIN_CONV else TARGET_ATTENTION


def _random_batch(model, batch: int, seed: int = 0):
    import tensorflow as tf

    shape = tuple(model.input_shape[1:])
    out_shape = tuple(model.output_shape[1:])
    g = tf.random.Generator.from_seed(seed)
    x = g.uniform((batch, *shape), dtype=tf.float32)
    k = out_shape[-1]
    if k == 1:
        y = tf.cast(g.uniform((batch, *out_shape)) > 0.5, tf.float32)
    else:
        labels = g.uniform((batch, *out_shape[:-1]), maxval=k, dtype=tf.int32)
        y = tf.one_hot(labels, k, dtype=tf.float32)
    return x, y


def build_step(entry: C.ModelEntry, batch: int, *, jit: bool, device: str):
    """Build, compile and trace the train step of ``entry``; returns a dict with the model,
    the traced function, its concrete function and the device-resident batch."""
    import keras
    import tensorflow as tf

    from keras_liver.training import build_loss, build_model, build_optimizer

    keras.utils.set_random_seed(0)
    with tf.device(device):
        model = build_model(entry.model)
        loss = build_loss(entry.training.get("loss", "dice"))
        optimizer = build_optimizer(entry.training.get("optimizer", {"name": "adam"}))
        model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
        model.optimizer.build(model.trainable_variables)
        x, y = _random_batch(model, batch)

        def step(xb, yb):
            return model.train_step((xb, yb))["loss"]

        fn = tf.function(step, jit_compile=bool(jit), reduce_retracing=False,
                         input_signature=[tf.TensorSpec(x.shape, x.dtype),
                                          tf.TensorSpec(y.shape, y.dtype)])
        concrete = fn.get_concrete_function()
    return {"model": model, "fn": fn, "concrete": concrete, "x": x, "y": y}


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape[:-1]) + f"x{shape[-1]}"


def benchmark_entry(entry: C.ModelEntry, batch: int, peak: dict, *, jit: bool, device: str,
                    repeats: int, budget_s: float, profile: bool, profile_max_s: float,
                    max_gflop: float | None = None) -> dict[str, Any]:
    """One row of the table; with ``max_gflop``, a step counted above it is not timed (the
    row keeps its FLOPs and says ``skipped``)."""
    import tensorflow as tf

    built = build_step(entry, batch, jit=jit, device=device)
    model, fn, x, y = built["model"], built["fn"], built["x"], built["y"]
    flops = graph_flops(built["concrete"].graph)
    analytic = analytic_conv_flops(model, batch)
    if max_gflop is not None and flops["total"] / 1e9 > max_gflop:
        row = {"model": entry.id, "registry": entry.model["name"], "preset": entry.preset,
               "input": _shape_str(entry.input_shape), "batch": batch, "rank": entry.rank,
               "params": model.count_params(), "GFLOP/step": flops["total"] / 1e9,
               "conv %": 100.0 * flops["conv_matmul"] / flops["total"],
               "target": target_for(entry), "met": "not timed",
               "skipped": f"{flops['total'] / 1e9:.0f} GFLOP/step > --max-gflop {max_gflop:g}",
               "flops": flops, "analytic": analytic,
               "conv check": (sum(v for k, v in flops["per_type"].items() if k.startswith("Conv"))
                              / analytic["train"]) if analytic["train"] else float("nan")}
        _release()
        return row

    def run():
        with tf.device(device):
            return fn(x, y).numpy()

    timing = C.time_call(run, warmup=1, repeats=repeats, min_repeats=2, budget_s=budget_s)
    step_s = timing.median
    achieved = flops["total"] / step_s
    mfu = achieved / peak["flops_per_s"]
    mfu_cpu = flops["total"] / timing.cpu_median / peak["flops_per_cpu_s"]
    target = target_for(entry)
    depth = entry.input_shape[2] if entry.rank == 3 else 1
    row = {
        "model": entry.id, "registry": entry.model["name"], "preset": entry.preset,
        "input": _shape_str(entry.input_shape), "batch": batch, "rank": entry.rank,
        "params": model.count_params(), "GFLOP/step": flops["total"] / 1e9,
        "conv %": 100.0 * flops["conv_matmul"] / flops["total"],
        "steps/s": 1.0 / step_s, "step s": step_s, "spread s": timing.spread,
        "repeats": len(timing.times), "first call s": timing.warmup_s,
        "slices/s": batch * depth / step_s, "examples/s": batch / step_s,
        "GFLOP/s": achieved / 1e9, "peak GFLOP/s": peak["flops_per_s"] / 1e9, "MFU": mfu,
        "CPU s/step": timing.cpu_median, "MFU (CPU)": mfu_cpu,
        "target": target, "met": mfu >= target,
        "traces": fn.experimental_get_tracing_count(),
        "flops": flops, "analytic": analytic,
        "conv check": (sum(v for k, v in flops["per_type"].items() if k.startswith("Conv"))
                       / analytic["train"]) if analytic["train"] else float("nan"),
    }
    if profile and mfu < target:
        if step_s <= profile_max_s:
            prof = op_profile(run, steps=1, model_name=model.name)
            conv_ms = prof["conv_kernel_ms"]
            prof["conv_kernel_gflops"] = (flops["conv_matmul"] / 1e9 / (conv_ms / 1e3)
                                          if conv_ms else float("nan"))
            row["profile"] = prof
        else:
            row["profile_skipped"] = (f"a step takes {step_s:.0f} s > --profile-max-s "
                                      f"{profile_max_s:.0f}")
    del built, model, fn
    _release()
    return row


def _release() -> None:
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


# --------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=None,
                   help="comma-separated entry ids (ra_vnet, msa_unet, bada, arunet/liver, "
                        "ra_unet/localiser, ra_vnet:unet, ...) or experiment names; default all")
    p.add_argument("--presets", default=None,
                   help="comma-separated presets (default 'demo,paper'; --quick: 'tiny')")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch for every model (default: the demo preset's, and the paper "
                        "preset's capped at --paper-batch)")
    p.add_argument("--paper-batch", type=int, default=2,
                   help="largest batch at the published input size (default 2)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop adding timed repeats after this many seconds (default 30, quick 5)")
    p.add_argument("--max-gflop", type=float, default=None,
                   help="count but do not time a step above this many GFLOP (default: time all)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the op-level profile of models below their MFU target")
    p.add_argument("--profile-max-s", type=float, default=30.0,
                   help="profile a model below target only if one step takes at most this long")
    args = p.parse_args(argv)
    C.check_positive("--batch-size", args.batch_size)
    C.check_positive("--paper-batch", args.paper_batch, allow_none=False)
    C.check_positive("--repeats", args.repeats)
    return args


def batch_for(entry: C.ModelEntry, args) -> int:
    if args.batch_size:
        return args.batch_size
    b = int(entry.data.get("batch_size", 1))
    return min(b, args.paper_batch) if entry.preset == "paper" else b


def main(argv=None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns ``{"machine", "peaks", "rows"}``."""
    args = parse_args(argv)
    import tensorflow as tf  # noqa: F401 (after argument errors)

    compute_dtype = C.set_precision(args.precision)
    device = C.device_name(args.device)
    presets = (args.presets.split(",") if args.presets else
               (["tiny"] if args.quick else ["demo", "paper"]))
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    entries = select_entries(presets, models)
    repeats = args.repeats or (2 if args.quick else 5)
    budget = args.budget_s if args.budget_s is not None else (5.0 if args.quick else 30.0)
    machine = C.machine()
    sections: list[str] = []
    print(f"machine: {C.machine_line(machine)}\ndevice {device}, precision {args.precision} "
          f"(compute {compute_dtype}), jit {args.jit}\n", flush=True)

    peaks = {}
    for rank in sorted({e.rank for e in entries}):
        peaks[rank] = C.peak_conv(rank, compute_dtype, device, quick=args.quick, jit=args.jit,
                                  repeats=repeats + 1)
    C.emit("Peak convolution (same run, same dtype and threads)", C.markdown_table(
        [{"op": f"Conv{r}D", "shape": p["shape"], "s": p["seconds"],
          "GFLOP/s": p["flops_per_s"] / 1e9, "CPU s": p["cpu_seconds"],
          "GFLOP per CPU s": p["flops_per_cpu_s"] / 1e9} for r, p in peaks.items()],
        ["op", "shape", "s", "GFLOP/s", "CPU s", "GFLOP per CPU s"]), sections)

    rows = []
    for entry in entries:
        batch = batch_for(entry, args)
        print(f"... {entry.id} ({entry.preset}, {_shape_str(entry.input_shape)}, batch {batch})",
              file=sys.stderr, flush=True)
        row = benchmark_entry(entry, batch, peaks[entry.rank], jit=args.jit,
                              device=device, repeats=repeats, budget_s=budget,
                              profile=not args.no_profile, profile_max_s=args.profile_max_s,
                              max_gflop=args.max_gflop)
        row.update(precision=args.precision, jit=args.jit, device=device)
        rows.append(row)
        # partial results survive an interrupted run (a 641-layer 3-D network takes minutes to
        # trace and optimise on a shared 2-core machine)
        C.write_outputs(args, {"machine": machine, "args": vars(args), "peaks": peaks,
                               "rows": rows, "complete": False}, sections)
        print(C.markdown_table([row], COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)

    C.emit(f"Train step ({args.precision}, jit {args.jit}, {device})",
           C.markdown_table(rows, COLUMNS), sections)
    C.emit("FLOP count check (convolution FLOPs: profiler / analytic 3*forward - first layer)",
           C.markdown_table([{
               "model": r["model"], "preset": r["preset"],
               "analytic fwd GFLOP": r["analytic"]["forward"] / 1e9,
               "analytic train GFLOP": r["analytic"]["train"] / 1e9,
               "profiler conv GFLOP": sum(v for k, v in r["flops"]["per_type"].items()
                                          if k.startswith("Conv")) / 1e9,
               "ratio": r["conv check"],
               "profiler total GFLOP": r["flops"]["total"] / 1e9,
               "uncounted ops": ", ".join(r["flops"]["uncounted"]) or "none"} for r in rows],
               ["model", "preset", "analytic fwd GFLOP", "analytic train GFLOP",
                "profiler conv GFLOP", "ratio", "profiler total GFLOP", "uncounted ops"]),
           sections)
    for r in rows:
        if "profile" in r:
            prof = r["profile"]
            text = (f"step {prof['step_ms']:.1f} ms traced; kernel time {prof['kernel_ms']:.1f} ms "
                    f"on {prof['threads']} executor threads (busy {100 * prof['busy_fraction']:.0f} %); "
                    f"convolution kernels (forward and both backprops) "
                    f"{100 * prof['conv_kernel_ms'] / prof['kernel_ms']:.0f} % of the kernel time, "
                    f"at {prof['conv_kernel_gflops']:.1f} GFLOP per kernel-second against a "
                    f"peak of {r['peak GFLOP/s']:.1f} GFLOP/s\n\n"
                    + C.markdown_table(prof["ops"], ["op", "ms/step", "share"]) + "\n\n"
                    + C.markdown_table(prof["layers"], ["layer", "ms/step", "share"]))
            C.emit(f"Profile: {r['model']} ({r['preset']}), MFU {r['MFU']:.2f} < {r['target']}",
                   text, sections)
        elif "profile_skipped" in r:
            C.emit(f"Profile: {r['model']} ({r['preset']}) skipped", r["profile_skipped"], sections)
    payload = {"machine": machine, "args": vars(args), "peaks": peaks, "rows": rows,
               "complete": True}
    C.write_outputs(args, payload, sections)
    return payload


if __name__ == "__main__":
    main()
