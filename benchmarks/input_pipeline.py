"""Input-pipeline benchmark: slices/s of the tf.data training pipeline against a bare NumPy +
OpenCV loop doing the same per-slice work, in the same run.

    python -m benchmarks.input_pipeline            # MSA-UNet's demo and paper data configs
    python -m benchmarks.input_pipeline --quick    # its tiny config on a small phantom

The data: a phantom dataset (``keras_liver.data.phantom.write_dataset``, LiTS layout, CT at
512x512 in-plane, ``--cases`` cases of ``--depth`` slices) converted to GZIP TFRecord slice
shards (``keras_liver.data.convert.convert``), kept in ``--data-dir`` and reused.

The configurations: MSA-UNet's (``experiments/msa_unet.json``), the only recipe with every
stage of the issue's chain: TFRecord -> parse -> window [-200, 250] HU -> CLAHE (clip 2, 8x8
tiles) -> resize -> augment (flips, crop <= 10 % resized back, translation +-10 %) -> batch.
Both sides read every slice of the train split (slice filter off, cache off: a cached pipeline
would skip the per-slice work after the first epoch) with the preset's batch size.

- tf.data: ``keras_liver.data.pipeline.build_split(root, "train", config)`` as training
  builds it (parallel interleave, parallel maps, AUTOTUNE), iterated to the end of one epoch;
  window -> CLAHE is the pipeline's default (``pipeline.DEFAULT_PREPROCESS_IMPL``: OpenCV in
  one ``tf.numpy_function``; the stage table also times the pure-TF CLAHE of
  ``keras_liver.data.clahe`` that export and serving use).
- Bare loop: one Python thread reads the same shards (``gzip`` + the TFRecord framing, no TF),
  decodes each ``tf.train.Example`` protobuf to NumPy, then ``preprocessing.window_np``, one
  reused ``cv2.createCLAHE``, ``cv2.resize`` (bilinear image, half-pixel nearest label as ``tf.image.resize``), NumPy flips,
  crop + ``cv2.resize``, a zero-filled shift, and ``np.stack`` of each batch.

Figures: slices/s (median of ``--repeats`` epochs after one warm-up epoch) and the ratio
tf.data / bare loop (target >= 0.8). With ``--train-json`` (default
``benchmarks/results/train_step.json`` when it exists) the tf.data rate is also set against
the slices/s the heaviest 2-D model of the same preset consumes in training (target >= 10x).
Where the ratio falls short, a per-stage table (one slice through each stage, tf.function
against NumPy/OpenCV) shows where the time goes.
"""
from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import tempfile
import time
from typing import Any, Iterator

import numpy as np

from benchmarks import _common as C

COLUMNS = ["config", "image", "slices", "batch", "tf.data slices/s", "bare loop slices/s",
           "ratio", "target", "met", "tf.data CPU ms/slice", "bare CPU ms/slice", "CPU ratio"]
HEADROOM_COLUMNS = ["config", "tf.data slices/s", "heaviest 2-D model", "model slices/s",
                    "headroom", "target", "met", "tf.data slices per CPU s",
                    "model slices per CPU s", "CPU headroom"]
STAGE_COLUMNS = ["stage", "tf ms/slice", "NumPy/OpenCV ms/slice", "tf / bare", "tf CPU ms/slice",
                 "NumPy/OpenCV CPU ms/slice", "CPU tf / bare"]
TARGET_RATIO = 0.8
TARGET_HEADROOM = 10.0
DEFAULT_TRAIN_JSON = os.path.join(C.RESULTS_DIR, "train_step.json")


# --------------------------------------------------------------------------- data

def make_dataset(data_dir: str, cases: int, shape) -> str:
    """A converted phantom dataset in ``data_dir`` (written once, reused): returns its root."""
    from keras_liver.data.convert import convert
    from keras_liver.data.phantom import write_dataset

    tag = f"phantom-{cases}x{'x'.join(map(str, shape))}"
    src = os.path.join(data_dir, tag, "nifti")
    out = os.path.join(data_dir, tag, "tfrecord")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        write_dataset(src, cases, layout="lits", seed=0, shape=tuple(shape), progress=False)
        convert(src, out, layout="lits", split=(1.0, 0.0, 0.0), kinds=("slices",),
                progress=False)
    return out


def pipeline_config(preset: str) -> dict[str, Any]:
    """MSA-UNet's data config of ``preset``, every slice read, nothing cached."""
    with open(os.path.join(C.experiments_dir(), "msa_unet.json")) as f:
        data = dict(json.load(f)["presets"][preset]["data"])
    data.update(cache=False, slice_filter=None, shuffle_buffer=64)
    return data


# --------------------------------------------------------------------------- bare loop

def tfrecord_payloads(path: str) -> Iterator[bytes]:
    """The records of a GZIP TFRecord file, read with ``gzip`` and the TFRecord framing
    (uint64 length, uint32 CRC, data, uint32 CRC; the CRCs are not checked)."""
    with gzip.open(path, "rb") as f:
        while True:
            head = f.read(12)
            if len(head) < 12:
                return
            (n,) = struct.unpack("<Q", head[:8])
            data = f.read(n)
            f.read(4)
            yield data


class BareLoop:
    """The pipeline's per-slice work in NumPy + OpenCV, single-threaded."""

    def __init__(self, config: dict[str, Any], seed: int = 0):
        import cv2

        from keras_liver.data.preprocessing import resolve_config

        self.cv2 = cv2
        self.cfg = resolve_config(config)
        c = self.cfg["clahe"]
        self.clahe = (cv2.createCLAHE(clipLimit=float(c["clip_limit"]),
                                      tileGridSize=tuple(int(t) for t in c["tile_grid"]))
                      if c is not None else None)
        self.rng = np.random.default_rng(seed)

    # each stage takes and returns (image float32 (H, W), label uint8 (H, W))
    def decode(self, payload: bytes):
        from keras_liver.data.schema import decode_example

        ex = decode_example(payload)
        return ex["image"], ex["label"]

    def preprocess(self, image, label):
        from keras_liver.data import preprocessing as prep

        cfg, cv2 = self.cfg, self.cv2
        x = image
        if cfg["window"] is not None:
            x = prep.window_np(x, *cfg["window"])
        if self.clahe is not None:
            x = self.clahe.apply(prep.to_uint8_np(x)).astype(np.float32) / np.float32(255.0)
        if cfg["normalize"] == "minmax":
            x = prep.minmax_np(x)
        elif cfg["normalize"] == "zscore":
            x = prep.zscore_np(x)
        if cfg["image_size"] is not None:
            h, w = cfg["image_size"]
            x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return x, label

    def resize(self, x01, label):
        """The resize stage alone (image bilinear, label nearest)."""
        cv2 = self.cv2
        h, w = self.cfg["image_size"] or x01.shape
        return (cv2.resize(x01, (w, h), interpolation=cv2.INTER_LINEAR),
                cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT))

    def target(self, x, label):
        cfg = self.cfg
        if cfg["target"] == "liver":
            y = (label >= 1).astype(np.float32)[..., None]
        elif cfg["target"] == "tumour":
            y = (label == 2).astype(np.float32)[..., None]
        else:
            y = np.eye(cfg["num_classes"], dtype=np.float32)[label]
        return x[..., None], y

    def augment(self, x, y):
        aug, cv2, rng = self.cfg["augment"], self.cv2, self.rng
        if aug["vflip"] and rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        if aug["hflip"] and rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        h, w = x.shape[:2]
        if aug["crop"] > 0:
            t, b, l, r = np.floor(rng.uniform(0, aug["crop"], 4) * [h, h, w, w]).astype(int)
            xc = np.ascontiguousarray(x[t:h - b, l:w - r, 0])
            yc = np.ascontiguousarray(y[t:h - b, l:w - r])
            x = cv2.resize(xc, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
            y = cv2.resize(yc, (w, h), interpolation=cv2.INTER_NEAREST_EXACT).reshape(h, w, -1)
        if aug["translate"] > 0:
            dy, dx = np.round(rng.uniform(-aug["translate"], aug["translate"], 2) * [h, w]).astype(int)
            x, y = _shift(x, dy, dx), _shift(y, dy, dx)
        return x, y

    def epoch(self, shards: list[str]) -> int:
        """One pass over ``shards``; returns the number of slices in full batches."""
        batch, n = [], 0
        size = self.cfg["batch_size"]
        for path in shards:
            for payload in tfrecord_payloads(path):
                x, y = self.augment(*self.target(*self.preprocess(*self.decode(payload))))
                batch.append((x, y))
                if len(batch) == size:
                    np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
                    n += size
                    batch = []
        return n


def _shift(a, dy: int, dx: int):
    """Shift ``(H, W, C)`` by whole pixels (+ = down/right), zeros where uncovered."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


# --------------------------------------------------------------------------- tf.data

def tf_epoch(root: str, config: dict[str, Any], seed: int = 0):
    """A function running one epoch of the training pipeline; returns the slices seen."""
    from keras_liver.data.pipeline import build_split

    ds = build_split(root, "train", config, seed=seed)

    def run() -> int:
        n = 0
        for image, _ in ds:
            n += int(image.shape[0])
        return n

    return run


# --------------------------------------------------------------------------- stages

def stage_table(root: str, config: dict[str, Any], repeats: int, n: int = 64
                ) -> list[dict[str, Any]]:
    """Per-slice cost of each stage: the pipeline's op mapped (parallel, AUTOTUNE) over ``n``
    copies of one slice in a ``tf.data`` pipeline run to the end in C++ (``Dataset.reduce``),
    against the bare loop's NumPy/OpenCV code called ``n`` times. Wall and CPU ms per slice."""
    import tensorflow as tf

    from keras_liver.data import augment as A
    from keras_liver.data import pipeline as PL
    from keras_liver.data import preprocessing as prep
    from keras_liver.data import schema
    from keras_liver.data.pipeline import split_shards

    cfg = prep.resolve_config(config)
    payload = next(tfrecord_payloads(split_shards(root, "train")[0]))
    bare = BareLoop(cfg)
    image, label = bare.decode(payload)
    x01 = prep.window_np(image, *cfg["window"]) if cfg["window"] else image
    xt, yt = bare.target(*bare.preprocess(image, label))
    plain = dict(cfg, clahe=None, window=None)
    seed = tf.constant([1, 2], tf.int64)

    stages = [
        ("parse", lambda s_: schema.parse_image_label(s_, 2), (payload,),
         lambda: bare.decode(payload)),
    ]
    if cfg["clahe"] is not None:
        c = cfg["clahe"]

        def bare_window_clahe():
            return bare.clahe.apply(prep.to_uint8_np(prep.window_np(image, *cfg["window"])))

        for impl in (PL.DEFAULT_PREPROCESS_IMPL,
                     *(i for i in prep.IMPLS if i != PL.DEFAULT_PREPROCESS_IMPL)):
            stages.append((STAGE_NAMES[impl],
                           lambda a, impl=impl: prep.window_clahe(
                               a[tf.newaxis], *cfg["window"], c["clip_limit"], c["tile_grid"],
                               impl=impl)[0],
                           (image,), bare_window_clahe))
    else:
        stages.append(("window", lambda a: prep.window(a, *cfg["window"]), (image,),
                       lambda: prep.window_np(image, *cfg["window"])))
    stages += [
        ("resize + target", lambda a, b: (prep.preprocess_batch(a[tf.newaxis], plain)[0],
                                          prep.target_batch(b[tf.newaxis], cfg)[0]),
         (x01, label), lambda: bare.target(*bare.resize(x01, label))),
        ("augment", lambda a, b: A.augment(a, b, seed, cfg), (xt, yt),
         lambda: bare.augment(xt, yt)),
    ]
    # the augmentation's parts on their own (the same draws, the other parts off)
    aug = cfg["augment"]
    parts = [("augment: flips", {"vflip": aug["vflip"], "hflip": aug["hflip"]},
              aug["vflip"] or aug["hflip"]),
             ("augment: crop + resize", {"crop": aug["crop"]}, aug["crop"] > 0),
             ("augment: translate", {"translate": aug["translate"]}, aug["translate"] > 0)]
    for name, only, active in parts:
        if active:
            part_cfg = dict(cfg, augment=only)
            part_bare = BareLoop(part_cfg)
            stages.append((name, lambda a, b, c=prep.resolve_config(part_cfg):
                           A.augment(a, b, seed, c), (xt, yt),
                           lambda pb=part_bare: pb.augment(xt, yt)))
    rows = []
    for name, tf_fn, args, np_fn in stages:
        base = tf.data.Dataset.from_tensors(tuple(tf.constant(a) for a in args)).repeat(n)
        mapped = base.map(lambda *a, f=tf_fn: f(*a), num_parallel_calls=tf.data.AUTOTUNE)

        def run_tf(mapped=mapped):
            mapped.reduce(np.int64(0), lambda acc, _: acc + 1).numpy()

        def run_np(np_fn=np_fn):
            for _ in range(n):
                np_fn()

        t_tf = C.time_call(run_tf, warmup=1, repeats=repeats)
        t_np = C.time_call(run_np, warmup=1, repeats=repeats)
        rows.append({"stage": name, "tf ms/slice": 1e3 * t_tf.median / n,
                     "NumPy/OpenCV ms/slice": 1e3 * t_np.median / n,
                     "tf / bare": t_tf.median / t_np.median,
                     "tf CPU ms/slice": 1e3 * t_tf.cpu_median / n,
                     "NumPy/OpenCV CPU ms/slice": 1e3 * t_np.cpu_median / n,
                     "CPU tf / bare": t_tf.cpu_median / t_np.cpu_median})
    return rows


# --------------------------------------------------------------------------- consumers

def heaviest_consumers(path: str | None) -> dict[str, dict[str, Any]]:
    """Per preset, the 2-D train-step row with the fewest slices/s in a train_step JSON."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = json.load(f).get("rows", [])
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("rank") != 2:
            continue
        best = out.get(r["preset"])
        if best is None or r["slices/s"] < best["slices/s"]:
            out[r["preset"]] = r
    return out


# --------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default=None,
                   help="MSA-UNet data presets to run (default 'demo,paper'; --quick: 'tiny')")
    p.add_argument("--cases", type=int, default=None, help="phantom cases (default 3, quick 1)")
    p.add_argument("--depth", type=int, default=None, help="slices per case (default 32, quick 8)")
    p.add_argument("--size", type=int, default=None,
                   help="in-plane phantom size (default 512, quick 96)")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch")
    p.add_argument("--data-dir", default=None,
                   help="where the phantom dataset is written and reused "
                        "(default: $TMPDIR/keras-liver-bench)")
    p.add_argument("--train-json", default=DEFAULT_TRAIN_JSON,
                   help="train_step --json output, for the headroom over the heaviest 2-D model")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage table")
    args = p.parse_args(argv)
    for name in ("cases", "depth", "size", "batch_size", "repeats"):
        C.check_positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.size is not None and args.size < 32 or args.depth is not None and args.depth < 8:
        raise ValueError("--size must be >= 32 and --depth >= 8 (the phantom's smallest volume)")
    return args


def main(argv=None) -> dict[str, Any]:
    """Run the benchmark, print its tables; returns ``{"machine", "rows", ...}``."""
    args = parse_args(argv)
    import tensorflow as tf  # noqa: F401

    from keras_liver.data.pipeline import split_shards

    presets = args.presets.split(",") if args.presets else (["tiny"] if args.quick else
                                                             ["demo", "paper"])
    cases = args.cases or (1 if args.quick else 3)
    depth = args.depth or (8 if args.quick else 32)
    size = args.size or (96 if args.quick else 512)
    repeats = args.repeats or (2 if args.quick else 3)
    data_dir = args.data_dir or os.path.join(tempfile.gettempdir(), "keras-liver-bench")
    machine = C.machine()
    print(f"machine: {C.machine_line(machine)}\n", flush=True)

    t0 = time.perf_counter()
    root = make_dataset(data_dir, cases, (size, size, depth))
    print(f"dataset {root} ({cases} cases of {size}x{size}x{depth}) ready in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    shards = split_shards(root, "train")

    sections: list[str] = []
    rows, stages = [], {}
    consumers = heaviest_consumers(args.train_json)
    headroom = []
    for preset in presets:
        cfg = pipeline_config(preset)
        if args.batch_size:
            cfg["batch_size"] = args.batch_size
        run_tf = tf_epoch(root, cfg)
        bare = BareLoop(cfg)
        t_tf = C.time_call(run_tf, warmup=1, repeats=repeats)
        t_np = C.time_call(lambda: bare.epoch(shards), warmup=1, repeats=repeats)
        n_tf, n_np = run_tf(), bare.epoch(shards)
        if n_tf != n_np:
            raise RuntimeError(f"tf.data yielded {n_tf} slices per epoch, the bare loop {n_np}")
        r_tf, r_np = n_tf / t_tf.median, n_np / t_np.median
        ratio = r_tf / r_np
        h, w = cfg["image_size"]
        row = {"config": f"msa_unet {preset}", "preset": preset, "image": f"{size}->{h}x{w}",
               "slices": n_tf, "batch": cfg["batch_size"], "tf.data slices/s": r_tf,
               "bare loop slices/s": r_np, "ratio": ratio, "target": TARGET_RATIO,
               "met": ratio >= TARGET_RATIO, "tf.data s/epoch": t_tf.median,
               "tf.data CPU ms/slice": 1e3 * t_tf.cpu_median / n_tf,
               "bare CPU ms/slice": 1e3 * t_np.cpu_median / n_np,
               "CPU ratio": t_np.cpu_median / t_tf.cpu_median,
               "bare s/epoch": t_np.median, "clahe": _clahe_kind()}
        rows.append(row)
        print(C.markdown_table([row], COLUMNS).splitlines()[-1], file=sys.stderr, flush=True)
        if not args.no_stages:
            stages[preset] = stage_table(root, cfg, repeats, n=16 if args.quick else 64)
        consumer = consumers.get(preset)
        if consumer is not None:
            head = r_tf / consumer["slices/s"]
            # the same in CPU time (slices per CPU second of each side), which does not
            # count what other jobs took: the two figures come from different runs
            tf_cpu = 1e3 / row["tf.data CPU ms/slice"]
            cpu_step = consumer.get("CPU s/step")
            model_cpu = consumer["batch"] / cpu_step if cpu_step else float("nan")
            headroom.append({"config": row["config"], "tf.data slices/s": r_tf,
                             "heaviest 2-D model": f"{consumer['model']} ({consumer['input']}, "
                                                   f"batch {consumer['batch']})",
                             "model slices/s": consumer["slices/s"], "headroom": head,
                             "target": TARGET_HEADROOM, "met": head >= TARGET_HEADROOM,
                             "tf.data slices per CPU s": tf_cpu,
                             "model slices per CPU s": model_cpu,
                             "CPU headroom": tf_cpu / model_cpu})

    C.emit(f"Input pipeline (CLAHE: {_clahe_kind()})", C.markdown_table(rows, COLUMNS), sections)
    if headroom:
        C.emit(f"Headroom over the heaviest 2-D model in training ({args.train_json})",
               C.markdown_table(headroom, HEADROOM_COLUMNS), sections)
    else:
        C.emit("Headroom over the heaviest 2-D model",
               f"no train_step results for presets {presets} at {args.train_json}: run "
               "`python -m benchmarks.train_step --json benchmarks/results/train_step.json` "
               "first", sections)
    for preset, table in stages.items():
        C.emit(f"Stages, one slice each (msa_unet {preset})",
               C.markdown_table(table, STAGE_COLUMNS), sections)
    payload = {"machine": machine, "args": vars(args), "dataset": root, "rows": rows,
               "headroom": headroom, "stages": stages}
    C.write_outputs(args, payload, sections)
    return payload


IMPL_NAMES = {"opencv": "OpenCV in tf.numpy_function", "tf": "TF ops"}
#: Stage-table rows of window -> CLAHE per implementation (the pipeline's default first).
STAGE_NAMES = {"opencv": "window + CLAHE (OpenCV)", "tf": "window + CLAHE (TF ops)"}


def _clahe_kind() -> str:
    """Which window -> CLAHE the training pipeline runs (``pipeline.DEFAULT_PREPROCESS_IMPL``)."""
    from keras_liver.data.pipeline import DEFAULT_PREPROCESS_IMPL

    return IMPL_NAMES[DEFAULT_PREPROCESS_IMPL]


if __name__ == "__main__":
    main()
