"""Shared pieces of the benchmarks: command-line options, device and precision set-up, timing,
the machine description, the peak convolution, the experiment presets and Markdown tables.

Timing (:func:`time_call`): ``warmup`` untimed calls (the first one traces and compiles), then
``repeats`` timed calls, each of which must block until its result exists (the callers
``.numpy()`` a result); the figure reported is the median, and the spread (min, max) is kept.
:func:`time_call` also stops adding repeats once ``budget_s`` seconds of timed calls have run
(never fewer than ``min_repeats``), so a 100-s train step does not take half an hour.

Peak (:func:`peak_conv`): the FLOP/s of one large convolution (``tf.nn.convolution``, 'SAME',
stride 1) in the compute dtype of the run, on the run's device and thread pools, with FLOPs
counted as ``2 * prod(kernel) * C_in * C_out * output voxels`` (a multiply-add = 2 FLOPs).
Several shapes are tried and the best kept: that is the machine's measured convolution limit
in this process, the denominator of every MFU.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from keras_liver import processes

#: Keras dtype policies a benchmark may run under.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEVICES = ("auto", "cpu", "gpu")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")


# --------------------------------------------------------------------------- options

def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats (about a minute; used by the smoke test)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="Keras dtype policy of the models (and dtype of the peak convolution)")
    p.add_argument("--jit", action="store_true", help="compile the timed functions with XLA")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="'auto': the first GPU when one is visible, else the CPU")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per figure (default: 5, --quick: 2)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows and the machine description as JSON to PATH")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the printed tables to PATH")
    return p


def check_positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")
    return value


# --------------------------------------------------------------------------- device, precision

def device_name(kind: str = "auto") -> str:
    """The TensorFlow device string for ``kind`` ('auto', 'cpu' or 'gpu')."""
    import tensorflow as tf

    if kind not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}; received {kind!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "gpu" and not gpus:
        raise RuntimeError("--device gpu: TensorFlow sees no GPU on this machine "
                           f"(tf.config.list_logical_devices('GPU') == [])")
    if kind == "gpu" or (kind == "auto" and gpus):
        return "/GPU:0"
    return "/CPU:0"


def set_precision(policy: str) -> str:
    """Set the global Keras dtype policy; returns the compute dtype ('float32', 'bfloat16',
    'float16')."""
    import keras

    if policy not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}; received {policy!r}")
    keras.mixed_precision.set_global_policy(policy)
    return keras.mixed_precision.global_policy().compute_dtype


# --------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Seconds per call: wall-clock and process CPU time (all threads) of each timed repeat."""

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    warmup_s: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times)

    @property
    def spread(self) -> str:
        return f"{min(self.times):.4g}-{max(self.times):.4g}"


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5,
              min_repeats: int = 2, budget_s: float | None = None) -> Timing:
    """Time ``fn()`` (which must block until its work is done): ``warmup`` untimed calls, then
    up to ``repeats`` timed ones, stopping early once ``budget_s`` seconds have been spent on
    timed calls and at least ``min_repeats`` have run. Each repeat records wall-clock seconds
    (``time.perf_counter``) and the process's CPU seconds over all its threads
    (``time.process_time``): on a machine shared with other jobs the wall clock includes the
    time the scheduler gave to them, the CPU time does not."""
    t = Timing()
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    t.warmup_s = time.perf_counter() - start
    spent = 0.0
    for i in range(max(1, repeats)):
        c = time.process_time()
        s = time.perf_counter()
        fn()
        dt = time.perf_counter() - s
        t.cpu_times.append(time.process_time() - c)
        t.times.append(dt)
        spent += dt
        if budget_s is not None and spent >= budget_s and i + 1 >= min_repeats:
            break
    return t


# --------------------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, load, TensorFlow/Keras versions, date."""
    import keras
    import tensorflow as tf

    cores = processes.available_cores()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": cores,
        "load_average_1_5_15": [round(x, 2) for x in load],
        "gpus": gpus,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }


def machine_line(m: dict[str, Any]) -> str:
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    return (f"{m['date']}; {m['cpu']}, {m['cores']} cores ({gpu}); load average "
            f"{m['load_average_1_5_15'][0]}; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
            f"Python {m['python']}")


# --------------------------------------------------------------------------- peak

#: Peak-convolution shapes tried: (batch, spatial, C_in, C_out, kernel side).
PEAK_SHAPES = {
    2: [(8, (128, 128), 128, 128, 3), (4, (128, 128), 256, 256, 3), (16, (64, 64), 256, 256, 3)],
    3: [(2, (32, 32, 32), 64, 64, 3), (2, (32, 32, 16), 128, 128, 3)],
}
QUICK_PEAK_SHAPES = {2: [(4, (64, 64), 64, 64, 3)], 3: [(1, (16, 16, 16), 32, 32, 3)]}


def conv_flops(batch: int, spatial: Sequence[int], c_in: int, c_out: int, kernel: int) -> int:
    """FLOPs of a 'SAME', stride-1 convolution: 2 * k^d * C_in * C_out * output voxels."""
    voxels = batch * math.prod(spatial)
    return 2 * kernel ** len(spatial) * c_in * c_out * voxels


def peak_conv(rank: int, dtype: str, device: str, *, quick: bool = False, jit: bool = False,
              repeats: int = 5) -> dict[str, Any]:
    """The best measured FLOP/s of a large Conv2D (``rank`` 2) or Conv3D (``rank`` 3) in
    ``dtype`` on ``device``; returns ``{"flops_per_s", "seconds", "flops_per_cpu_s",
    "cpu_seconds", "shape"}`` (per CPU second: FLOPs over the process's CPU time, the
    denominator of the CPU-time MFU)."""
    import tensorflow as tf

    best = None
    for batch, spatial, c_in, c_out, k in (QUICK_PEAK_SHAPES if quick else PEAK_SHAPES)[rank]:
        with tf.device(device):
            x = tf.random.uniform((batch, *spatial, c_in), dtype=tf.float32)
            w = tf.random.uniform((*([k] * rank), c_in, c_out), -0.05, 0.05, dtype=tf.float32)
            x, w = tf.cast(x, dtype), tf.cast(w, dtype)
            fn = tf.function(lambda a, b: tf.reduce_sum(tf.cast(
                tf.nn.convolution(a, b, padding="SAME")[..., :1], tf.float32)),
                jit_compile=jit)
            timing = time_call(lambda: fn(x, w).numpy(), warmup=2, repeats=repeats)
        flops = conv_flops(batch, spatial, c_in, c_out, k)
        rate = flops / timing.median
        if best is None or rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "seconds": timing.median,
                    "flops_per_cpu_s": flops / timing.cpu_median, "cpu_seconds": timing.cpu_median,
                    "shape": f"{batch}x{'x'.join(map(str, spatial))}x{c_in}->{c_out}, k{k}"}
    return best


# --------------------------------------------------------------------------- presets

@dataclass
class ModelEntry:
    """One trained network of an experiment preset: its id (``experiment`` or
    ``experiment/role``), preset, and the model, data and training blocks of the config."""

    id: str
    experiment: str
    preset: str
    model: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    config: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model["input_shape"])

    @property
    def rank(self) -> int:
        return len(self.input_shape) - 1


def experiments_dir() -> str:
    path = os.environ.get("KERAS_LIVER_EXPERIMENTS") or os.path.join(REPO_ROOT, "experiments")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no experiments folder (set $KERAS_LIVER_EXPERIMENTS)")
    return path


def model_entries(presets: Iterable[str]) -> list[ModelEntry]:
    """Every network of every ``experiments/*.json`` in the given presets, in file order.

    A preset holds one network (top-level ``model``), several (``models``: Attention Residual
    UNet's liver and vessel models) or a cascade (``stages``: RA-UNet's localiser, liver and
    tumour stages); each becomes one entry, ``experiment/role`` for the latter two.
    """
    out = []
    folder = experiments_dir()
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".json"):
            continue
        exp = fname[:-5]
        with open(os.path.join(folder, fname)) as f:
            spec = json.load(f)
        for preset in presets:
            cfg = spec.get("presets", {}).get(preset)
            if cfg is None:
                continue
            if "model" in cfg:
                parts = [(exp, cfg)]
            else:
                group = cfg.get("models") or cfg.get("stages") or {}
                parts = [(f"{exp}/{role}", sub) for role, sub in group.items()]
            for eid, sub in parts:
                if "model" not in sub:
                    continue
                out.append(ModelEntry(id=eid, experiment=exp, preset=preset,
                                      model=dict(sub["model"]), data=dict(sub.get("data", {})),
                                      training=dict(sub.get("training", {})), config=sub))
    return out


def variants(experiment: str) -> dict[str, str]:
    with open(os.path.join(experiments_dir(), f"{experiment}.json")) as f:
        return dict(json.load(f).get("variants", {}))


# --------------------------------------------------------------------------- output

def fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000 or mag < 1e-3:
            return f"{value:.{digits}g}"
        return f"{value:.{max(0, digits - 1 - int(math.floor(math.log10(mag))))}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with the given ``columns`` (missing cells: '')."""
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def emit(title: str, text: str, sink: list[str]) -> None:
    """Print a section and keep it for ``--markdown``."""
    block = f"### {title}\n\n{text}\n"
    print(block, flush=True)
    sink.append(block)


def write_outputs(args, payload: dict[str, Any], sections: list[str]) -> None:
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
            f.write("\n")
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write("\n".join(sections))


@contextlib.contextmanager
def quiet_tf():
    """Silence TensorFlow's Python-side deprecation chatter (the v1 profiler API logs)."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)
