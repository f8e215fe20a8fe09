"""Whole-volume prediction benchmark: end-to-end ``predict`` on a 512x512x100 phantom volume
against the pure model forward time on the same slices or windows.

    python -m benchmarks.predict                   # every 2-D demo model + RA-UNet-II liver
    python -m benchmarks.predict --quick           # tiny presets on a 96x96x16 volume
    python -m benchmarks.predict --models msa_unet,ra_vnet --size 512 --depth 100

Each model of the selected preset (``demo`` by default, ``tiny`` with ``--quick``) is built
with random weights (speed does not depend on training; the largest-component step does
depend on the mask, so it is timed on its own too) and wrapped in the library's predictor
exactly as a run directory would be: ``keras_liver.inference.Predictor.from_config(model,
config)`` for 2-D runs (slice by slice: ``preprocess_batch``, ``predict_on_batch`` in full
batches, flip TTA when the recipe has it, ``restore_slices``, threshold or argmax, largest 3-D
component) and ``VolumePredictor.from_config`` for RA-UNet-II's liver stage (volume
normalisation, in-plane resize, sliding 3-D windows, blending, resize back).

- end to end: ``predictor.predict(volume)`` on a ``keras_liver.data.phantom.generate_case``
  CT volume (HU), median of ``--repeats`` after one warm-up call;
- forward: a ``tf.function`` of ``model(x, training=False)`` (``jit_compile=--jit``) over the
  same inputs the predictor feeds, the same batch size and number of passes (1 + TTA flips),
  preprocessed once beforehand, inputs resident;
- label: ``predictor.label(volume)``, what ``keras-liver predict`` runs (the uint8 label
  volume only, no probability volume on the input grid), timed the same way;
- ratio = end to end / forward (target <= 1.15). A breakdown times each step of the 2-D path
  separately (preprocess, ``predict_on_batch`` passes, resize back + threshold/argmax, largest
  component; the predictor fuses the first three in one ``tf.function`` per batch).
"""
from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks import _common as C

COLUMNS = ["model", "preset", "input", "volume", "batch", "passes", "forward s",
           "predict s", "ratio", "target", "met", "forward CPU s", "predict CPU s", "CPU ratio",
           "label s", "label ratio", "label CPU s", "label CPU ratio"]
BREAKDOWN_COLUMNS = ["model", "preprocess s", "predict_on_batch s", "restore + label s",
                     "largest component s", "foreground %", "sum s", "predict s"]
TARGET = 1.15
DEFAULT_3D = ("ra_unet/liver",)


def select(preset: str, models: list[str] | None) -> list[C.ModelEntry]:
    """Every 2-D network of the preset plus :data:`DEFAULT_3D`, or the ``models`` asked for."""
    entries = C.model_entries([preset])
    if models:
        known = {e.id for e in entries} | {e.experiment for e in entries}
        missing = [m for m in models if m not in known]
        if missing:
            raise ValueError(f"--models: unknown {missing}; known: {sorted(known)}")
        return [e for e in entries if e.id in models or e.experiment in models]
    return [e for e in entries if e.rank == 2 or e.id in DEFAULT_3D]


def phantom_volume(size: int, depth: int, seed: int = 0) -> np.ndarray:
    from keras_liver.data.phantom import generate_case

    return np.asarray(generate_case(seed, shape=(size, size, depth)).image, np.float32)


def make_predictor(entry: C.ModelEntry, model):
    from keras_liver import inference

    if entry.rank == 2:
        return inference.Predictor.from_config(model, entry.config)
    return inference.VolumePredictor.from_config(model, entry.config)


def forward_inputs(entry: C.ModelEntry, predictor, volume: np.ndarray) -> np.ndarray:
    """The inputs the predictor feeds the model for ``volume``: preprocessed slices
    ``(Z, H, W, 1)`` (2-D) or the sliding windows ``(N, *window, 1)`` (3-D)."""
    from keras_liver import sliding_window as sw
    from keras_liver.data import preprocessing as prep
    from keras_liver.data import volumetric

    if entry.rank == 2:
        return prep.preprocess_volume(volume, predictor.preprocessing,
                                      batch_size=predictor.batch_size)
    cfg = predictor.preprocessing
    image = volumetric.normalize_volume(volume, cfg["window"])
    if cfg["kind"] == "liver_slabs":
        image = np.clip(volumetric.resize_in_plane(image, cfg["in_plane"], order=1), 0, 1)
    padded = sw.pad_to_window(image, predictor.window, volumetric.PAD_VALUE)
    padded = padded[0] if isinstance(padded, tuple) else padded
    starts = sw.grid_starts(padded.shape[:3], predictor.window, predictor.steps)
    wx, wy, wz = predictor.window
    return np.stack([padded[x:x + wx, y:y + wy, z:z + wz] for x, y, z in starts])[..., None]


def forward_fn(model, x: np.ndarray, batch: int, passes: int, jit: bool, device: str):
    """A function running ``passes`` forward passes over ``x`` in full batches of ``batch``
    (the last one zero-padded, as ``sliding_window.predict_full_batches`` pads it)."""
    import tensorflow as tf

    n = len(x)
    pad = (-n) % batch
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    with tf.device(device):
        chunks = [tf.constant(x[i:i + batch]) for i in range(0, len(x), batch)]
    fn = tf.function(lambda t: model(t, training=False), jit_compile=bool(jit),
                     input_signature=[tf.TensorSpec((batch, *x.shape[1:]), tf.float32)])

    def run():
        with tf.device(device):
            for _ in range(passes):
                for c in chunks:
                    out = fn(c)
            out.numpy()

    return run


def breakdown(entry: C.ModelEntry, predictor, volume: np.ndarray, repeats: int) -> dict:
    """Seconds of each step of the 2-D predictor on ``volume``, each timed on its own (the
    predictor runs them fused in one ``tf.function`` per batch; here each is its own graph)."""
    import tensorflow as tf

    from keras_liver import inference
    from keras_liver.data import preprocessing as prep
    from keras_liver.postprocess import largest_component

    b, cfg = predictor.batch_size, predictor.preprocessing
    chunks = [tf.constant(np.moveaxis(volume[:, :, i:i + b], 2, 0))
              for i in range(0, volume.shape[2], b)]
    pre_fn = tf.function(lambda c: prep.preprocess_batch(c, cfg, impl=predictor.preprocess_impl))
    pre = [None] * len(chunks)

    def do_pre():
        for i, c in enumerate(chunks):
            pre[i] = pre_fn(c).numpy()

    t_pre = C.time_call(do_pre, warmup=1, repeats=repeats).median
    outs = [None] * len(chunks)

    def do_model():
        for i, x in enumerate(pre):
            outs[i] = inference.predict_slices(predictor.model, x, tta=predictor.tta,
                                               batch_size=b)

    t_model = C.time_call(do_model, warmup=1, repeats=repeats).median
    xy = volume.shape[:2]
    thr = float(predictor.threshold)

    @tf.function
    def restore_label(p):
        if p.shape[1:3] != xy:
            p = tf.image.resize(p, xy, method="bilinear", antialias=False)
        label = (tf.cast(p[..., 0] > thr, tf.uint8) if p.shape[-1] == 1
                 else tf.cast(tf.argmax(p, axis=-1), tf.uint8))
        return tf.transpose(p, [1, 2, 0, 3]), tf.transpose(label, [1, 2, 0])

    labels = [None] * len(outs)

    def do_restore():
        for i, p in enumerate(outs):
            q, labels[i] = (t.numpy() for t in restore_label(tf.constant(p)))

    t_restore = C.time_call(do_restore, warmup=1, repeats=repeats).median
    label = np.concatenate(labels, axis=2)
    if outs[0].shape[-1] == 1 and predictor.largest_component:
        t_lc = C.time_call(lambda: largest_component(label > 0), warmup=1,
                           repeats=repeats).median
    else:
        t_lc = 0.0
    return {"model": entry.id, "preprocess s": t_pre, "predict_on_batch s": t_model,
            "restore + label s": t_restore, "largest component s": t_lc,
            "foreground %": 100.0 * float((label > 0).mean()),
            "sum s": t_pre + t_model + t_restore + t_lc}


def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=None,
                   help="comma-separated entry ids or experiment names (default: every 2-D "
                        "network of the preset and ra_unet/liver)")
    p.add_argument("--preset", default=None, help="experiment preset (default demo; quick tiny)")
    p.add_argument("--size", type=int, default=None, help="in-plane size (default 512, quick 96)")
    p.add_argument("--depth", type=int, default=None, help="slices (default 100, quick 16)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="override the predictors' batch size")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-step breakdown")
    args = p.parse_args(argv)
    for name in ("size", "depth", "batch_size", "repeats"):
        C.check_positive("--" + name.replace("_", "-"), getattr(args, name))
    return args


def main(argv=None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns ``{"machine", "rows", "breakdown"}``."""
    args = parse_args(argv)
    import keras
    import tensorflow as tf  # noqa: F401

    from keras_liver.training import build_model

    C.set_precision(args.precision)
    device = C.device_name(args.device)
    preset = args.preset or ("tiny" if args.quick else "demo")
    size = args.size or (96 if args.quick else 512)
    depth = args.depth or (16 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 3)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    entries = select(preset, models)
    machine = C.machine()
    print(f"machine: {C.machine_line(machine)}\ndevice {device}, precision {args.precision}, "
          f"jit {args.jit}\n", flush=True)
    t0 = time.perf_counter()
    volume = phantom_volume(size, depth)
    print(f"phantom volume {volume.shape} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)

    rows, parts = [], []
    sections: list[str] = []
    for entry in entries:
        print(f"... {entry.id} ({entry.preset}, {entry.input_shape})", file=sys.stderr, flush=True)
        keras.utils.set_random_seed(0)
        with tf.device(device):
            model = build_model(entry.model)
        predictor = make_predictor(entry, model)
        if args.batch_size:
            predictor.batch_size = args.batch_size
        passes = 1 + len(predictor.tta)
        x = forward_inputs(entry, predictor, volume)

        def run_predict():
            with tf.device(device):
                predictor.predict(volume)

        t_fwd = C.time_call(forward_fn(model, x, predictor.batch_size, passes, args.jit, device),
                            warmup=1, repeats=repeats)
        def run_label():
            with tf.device(device):
                predictor.label(volume)

        t_pred = C.time_call(run_predict, warmup=1, repeats=repeats)
        t_label = C.time_call(run_label, warmup=1, repeats=repeats)
        ratio = t_pred.median / t_fwd.median
        row = {"model": entry.id, "preset": entry.preset,
               "input": "x".join(map(str, entry.input_shape)),
               "volume": "x".join(map(str, volume.shape)), "batch": predictor.batch_size,
               "passes": f"{passes} x {len(x)}", "forward s": t_fwd.median,
               "predict s": t_pred.median, "ratio": ratio, "target": TARGET,
               "met": ratio <= TARGET, "forward CPU s": t_fwd.cpu_median,
               "predict CPU s": t_pred.cpu_median,
               "CPU ratio": t_pred.cpu_median / t_fwd.cpu_median,
               "label s": t_label.median, "label ratio": t_label.median / t_fwd.median,
               "label CPU s": t_label.cpu_median,
               "label CPU ratio": t_label.cpu_median / t_fwd.cpu_median}
        rows.append(row)
        print(C.markdown_table([row], COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)
        if entry.rank == 2 and not args.no_breakdown:
            part = breakdown(entry, predictor, volume, repeats)
            part["predict s"] = t_pred.median
            parts.append(part)
        del model, predictor
        keras.backend.clear_session()

    C.emit(f"Whole-volume prediction ({args.precision}, jit {args.jit}, {device})",
           C.markdown_table(rows, COLUMNS), sections)
    if parts:
        C.emit("Where the prediction time goes (2-D predictors, each step timed alone)",
               C.markdown_table(parts, BREAKDOWN_COLUMNS), sections)
    payload = {"machine": machine, "args": vars(args), "rows": rows, "breakdown": parts}
    C.write_outputs(args, payload, sections)
    return payload


if __name__ == "__main__":
    main()
