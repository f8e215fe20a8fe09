"""RA-UNet cascade inference: 2-D liver localisation → 3-D liver → 3-D tumour (Jin et al.,
Fig. 2; SPEC §1 "Cascade inference").

Stage by stage, on one CT volume in HU, arrays in nibabel order ``(x, y, z)``:

1. **Localisation** (RA-UNet-I, Fig. 2(a)): the 2-D model on every slice with the
   preprocessing it was trained with (:class:`keras_liver.inference.Predictor`), probabilities
   resized back to the input grid, threshold, largest 3-D connected component, bounding box
   grown by ``margin`` (10) voxels on every side.
2. **Liver** (RA-UNet-II, Fig. 2(b)): the volume normalised as in training
   (:func:`keras_liver.data.volumetric.normalize_volume`, whole volume), cropped to the box,
   resized in-plane to the model's size (224×224), cut into overlapping slabs of ``depth``
   (32) slices with the liver config's ``stride`` (20), the last slab ending at the box's end;
   the probabilities of overlapping slabs are averaged (the paper's voting), resized back to
   the box, thresholded, and reduced to the largest connected component.
3. **Tumour** (RA-UNet-II, Fig. 2(c)): the box of the predicted liver + ``margin``, at native
   resolution, tiled by overlapping ``patch_size`` (128×128×32) patches with ``tumour_stride``
   (half a patch, ASSUMPTION: the paper does not give the overlap); patches without a liver
   voxel are skipped (they cannot change a liver voxel's average); averaged, thresholded and
   masked by the liver.

Output: a ``uint8`` label volume on the input grid, 0 background, 1 liver, 2 tumour; written
with the input's affine and header, never reoriented.

Each stage may hold several models (the 5-fold ensemble of §IV-A): their probabilities are
averaged window by window. A cascade run directory holds ``cascade.json``, which names the
stage run directories (relative to it) and the inference settings::

    {"model": "ra_unet",
     "stages": {"localiser": ["stage1_localiser"],
                "liver": ["stage2_liver/fold0", ...], "tumour": ["stage3_tumour/fold0", ...]},
     "inference": {"threshold": 0.5, "margin": 10, "tumour_stride": [64, 64, 16],
                   "batch_size": 2}}

Windows run through :mod:`keras_liver.sliding_window` (the 2-D and 3-D predictors' module):
``blend="mean"`` (default) is the averaging above, ``"gaussian"`` weights each window by
nnU-Net's importance map instead; ``overlap`` replaces the strides by the step of that overlap.
Memory is bounded by ``batch_size`` windows at a time plus a few float32 copies of the volume.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import keras
import numpy as np

from keras_liver import fileio, sliding_window
from keras_liver.data import volumetric
from keras_liver.data.volumes import read_volume, write_volume
from keras_liver.errors import ModelInputError
from keras_liver.inference import Predictor
from keras_liver.postprocess import bounding_box, largest_component
from keras_liver.training import BEST_MODEL, load_model, read_run_config, write_json

CASCADE_FILE = "cascade.json"
STAGES = ("localiser", "liver", "tumour")
DEFAULT_INFERENCE = {"threshold": 0.5, "margin": volumetric.LIVER_MARGIN,
                     "tumour_stride": None, "batch_size": 2}


class Ensemble:
    """Models whose probabilities are averaged (the fold ensemble of one stage).

    Has the ``predict(x, batch_size=None, verbose=0)`` of a ``keras.Model``, so it can stand
    where one model is expected (e.g. in :class:`~keras_liver.inference.Predictor`).
    """

    def __init__(self, models: Sequence[keras.Model]):
        self.models = list(models)
        if not self.models:
            raise ValueError("an ensemble needs at least one model")
        shapes = {tuple(m.inputs[0].shape[1:]) for m in self.models}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members take different input shapes: {sorted(shapes)}")
        self.input_shape = shapes.pop()

    def __len__(self) -> int:
        return len(self.models)

    def _mean(self, predict) -> np.ndarray:
        total = None
        for model in self.models:
            p = np.asarray(predict(model), np.float32)
            total = p if total is None else total + p
        return total / len(self.models)

    def predict(self, x, batch_size: int | None = None, verbose=0) -> np.ndarray:
        return self._mean(lambda m: m.predict(x, batch_size=batch_size, verbose=verbose))

    def predict_on_batch(self, x) -> np.ndarray:
        """One forward pass per member on one batch (no ``tf.data`` set-up per call)."""
        return self._mean(lambda m: m.predict_on_batch(x))


def _load_models(run_dirs: Sequence[str]) -> list[keras.Model]:
    models = []
    for run_dir in run_dirs:
        path = os.path.join(run_dir, BEST_MODEL)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no trained model in this stage's run directory")
        models.append(load_model(path))
    return models


def _stage_preprocessing(run_dirs: Sequence[str], kind: str | None) -> tuple[dict, dict]:
    """``(config, preprocessing)`` shared by a stage's runs (they must agree)."""
    configs = [read_run_config(d) for d in run_dirs]
    if not configs:
        raise ValueError("a stage needs at least one run directory")
    config, prep = configs[0]
    for d, (_, other) in zip(run_dirs[1:], configs[1:]):
        if other != prep:
            raise ValueError(f"{d}: preprocessing differs from {run_dirs[0]}'s; the runs of one "
                             "stage must be trained on the same data configuration")
    if kind is not None and prep.get("kind") != kind:
        raise ValueError(f"{run_dirs[0]}: expected a '{kind}' run, found data kind "
                         f"{prep.get('kind')!r}")
    return config, prep


@dataclass
class CascadeOutput:
    """What :meth:`RAUNetCascade.run` computed for one volume."""

    label: np.ndarray                     # uint8 (x, y, z): 0 background, 1 liver, 2 tumour
    liver_probability: np.ndarray         # float32 (x, y, z), 0 outside the stage-2 box
    tumour_probability: np.ndarray        # float32 (x, y, z), 0 outside the stage-3 box
    boxes: dict[str, Any] = field(default_factory=dict)   # stage → tuple of slices or None


class RAUNetCascade:
    """The three stages of Fig. 2 with their trained models (one or an ensemble each).

    Args:
        localiser: a :class:`Predictor` (2-D model + slice preprocessing).
        liver: ensemble (or model) of the 3-D liver stage and its 3-D data config
            (``kind="liver_slabs"``).
        tumour: ensemble (or model) of the 3-D tumour stage and its data config
            (``kind="tumour_patches"``), or ``None`` for a liver-only cascade.
        threshold: of every stage's probabilities (paper: 0.5).
        margin: voxels added around the localised and the predicted liver (paper: 10).
        tumour_stride: patch step per axis; default half a patch.
        batch_size: windows per forward pass (bounds memory).
        blend: ``"mean"`` (the paper's averaging) or ``"gaussian"`` (nnU-Net's importance
            weighting; :mod:`keras_liver.sliding_window`).
        overlap: when given, the liver slabs' and tumour patches' step is the one of this
            overlap (:func:`~keras_liver.sliding_window.step_for_overlap`) instead of the liver
            config's ``stride`` and ``tumour_stride``.
        progress: show a progress bar per 3-D stage.
    """

    def __init__(self, localiser: Predictor, liver, liver_config: dict, tumour=None,
                 tumour_config: dict | None = None, *, threshold: float = 0.5,
                 margin: int = volumetric.LIVER_MARGIN, tumour_stride=None, batch_size: int = 2,
                 blend: str = "mean", overlap: float | None = None, progress: bool = False):
        self.localiser = localiser
        self.liver = liver if isinstance(liver, Ensemble) else Ensemble([liver])
        self.liver_config = volumetric.resolve_config(liver_config)
        if self.liver_config["kind"] != "liver_slabs":
            raise ValueError("liver_config must be a 'liver_slabs' data config")
        self._check_input(self.liver, volumetric.sample_shape(self.liver_config), "liver")
        self.tumour = None
        self.tumour_config = None
        if tumour is not None:
            self.tumour = tumour if isinstance(tumour, Ensemble) else Ensemble([tumour])
            self.tumour_config = volumetric.resolve_config(tumour_config)
            if self.tumour_config["kind"] != "tumour_patches":
                raise ValueError("tumour_config must be a 'tumour_patches' data config")
            self._check_input(self.tumour, volumetric.sample_shape(self.tumour_config), "tumour")
        self.threshold = float(threshold)
        self.margin = int(margin)
        patch = (self.tumour_config or {}).get("patch_size", list(volumetric.TUMOUR_PATCH))
        stride = tumour_stride or [max(1, p // 2) for p in patch]
        self.tumour_stride = tuple(int(s) for s in stride)
        if len(self.tumour_stride) != 3 or min(self.tumour_stride) < 1:
            raise ValueError(f"tumour_stride must be three positive steps, received {stride}")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, received {batch_size}")
        if blend not in sliding_window.BLENDS:
            raise ValueError(f"blend must be one of {sliding_window.BLENDS}; received {blend!r}")
        self.blend = blend
        self.overlap = None if overlap is None else float(overlap)
        if self.overlap is not None:
            sliding_window.step_for_overlap(1, self.overlap)   # checks the range
        self.progress = bool(progress)

    @staticmethod
    def _check_input(ensemble: Ensemble, expected, stage: str) -> None:
        if tuple(ensemble.input_shape[:3]) != tuple(expected):
            raise ValueError(f"the {stage} model takes {ensemble.input_shape}, but its data "
                             f"config cuts windows of {tuple(expected)}")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_stage_runs(cls, localiser: str | Sequence[str], liver: Sequence[str],
                        tumour: Sequence[str] | None = None, **kwargs) -> "RAUNetCascade":
        """A cascade from training run directories (each with ``model.keras`` and its
        ``preprocessing.json``); a list per stage is averaged as an ensemble."""
        loc_dirs = [localiser] if isinstance(localiser, str) else list(localiser)
        loc_config, loc_prep = _stage_preprocessing(loc_dirs, "slices")
        kwargs.setdefault("threshold", loc_config.get("threshold", 0.5))
        predictor = Predictor(model=Ensemble(_load_models(loc_dirs)), preprocessing=loc_prep,
                              threshold=kwargs["threshold"], largest_component=True)
        _, liver_prep = _stage_preprocessing(list(liver), "liver_slabs")
        liver_models = Ensemble(_load_models(liver))
        tumour_models = tumour_prep = None
        if tumour:
            _, tumour_prep = _stage_preprocessing(list(tumour), "tumour_patches")
            tumour_models = Ensemble(_load_models(tumour))
        return cls(predictor, liver_models, liver_prep, tumour_models, tumour_prep, **kwargs)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs) -> "RAUNetCascade":
        """The cascade described by ``run_dir/cascade.json`` (see the module docstring)."""
        spec = read_cascade(run_dir)
        stages = {k: [os.path.join(run_dir, d) for d in v] for k, v in spec["stages"].items()}
        inference = {**DEFAULT_INFERENCE, **spec.get("inference", {}), **kwargs}
        return cls.from_stage_runs(stages["localiser"], stages["liver"], stages.get("tumour"),
                                   **inference)

    # ------------------------------------------------------------------ the stages

    def _windows(self, ensemble: Ensemble, image: np.ndarray, starts, size, desc: str
                 ) -> np.ndarray:
        """Blended probability of the windows of ``image`` at ``starts`` (the cascade's
        ``blend``, mean by default: the paper's voting), ``batch_size`` windows per forward
        pass; voxels no window covers get 0 (:func:`keras_liver.sliding_window.blend_windows`)."""
        probs = sliding_window.blend_windows(
            ensemble.predict_on_batch, image, starts, size,
            weights=sliding_window.importance_map(size, self.blend), batch_size=self.batch_size,
            progress=self.progress, desc=desc)
        return probs[..., 0]

    def localise(self, hu: np.ndarray) -> tuple[slice, ...] | None:
        """Stage 1: the liver box (+ margin) from the 2-D model, or ``None`` if it finds none."""
        _, mask = self.localiser.predict(hu)
        return bounding_box(mask > 0, margin=self.margin)

    def liver_probability(self, normalised: np.ndarray, box: Sequence[slice]) -> np.ndarray:
        """Stage 2: averaged liver probabilities on the box (native grid of the box)."""
        cfg = self.liver_config
        crop = normalised[tuple(box)]
        image = np.clip(volumetric.resize_in_plane(crop, cfg["in_plane"], order=1), 0.0, 1.0)
        image, before = volumetric.pad_to(image, (0, 0, cfg["depth"]))
        step = (cfg["stride"] if self.overlap is None
                else sliding_window.step_for_overlap(cfg["depth"], self.overlap))
        starts = [(0, 0, z) for z in sliding_window.window_starts(image.shape[2], cfg["depth"],
                                                                 step)]
        probs = self._windows(self.liver, image, starts, (*cfg["in_plane"], cfg["depth"]),
                              "liver slabs")
        probs = probs[:, :, before[2]:before[2] + crop.shape[2]]
        return np.clip(volumetric.resize_in_plane(probs, crop.shape[:2], order=1), 0.0, 1.0)

    def tumour_probability(self, normalised: np.ndarray, liver: np.ndarray,
                           box: Sequence[slice]) -> np.ndarray:
        """Stage 3: averaged tumour probabilities on ``box`` (native resolution)."""
        patch = tuple(self.tumour_config["patch_size"])
        crop = normalised[tuple(box)]
        image, before = volumetric.pad_to(crop, patch)
        inside, _ = volumetric.pad_to(liver[tuple(box)], patch, 0)
        steps = (self.tumour_stride if self.overlap is None
                 else sliding_window.steps_for_overlap(patch, self.overlap))
        starts = [s for s in sliding_window.grid_starts(image.shape, patch, steps)
                  if inside[tuple(slice(a, a + p) for a, p in zip(s, patch))].any()]
        probs = self._windows(self.tumour, image, starts, patch, "tumour patches")
        return probs[tuple(slice(b, b + n) for b, n in zip(before, crop.shape))]

    def run(self, hu: np.ndarray) -> CascadeOutput:
        """All three stages on a volume in HU ``(x, y, z)``."""
        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim != 3:
            raise ModelInputError(f"the RA-UNet cascade takes a 3-D volume (x, y, z); "
                                  f"received shape {hu.shape}")
        label = np.zeros(hu.shape, np.uint8)
        liver_p = np.zeros(hu.shape, np.float32)
        tumour_p = np.zeros(hu.shape, np.float32)
        boxes: dict[str, Any] = {"localiser": None, "tumour": None}
        box = self.localise(hu)
        boxes["localiser"] = box
        if box is None:  # nothing localised: no liver, no tumour
            return CascadeOutput(label, liver_p, tumour_p, boxes)
        normalised = volumetric.normalize_volume(hu, self.liver_config["window"])
        liver_p[box] = self.liver_probability(normalised, box)
        liver = largest_component(liver_p > self.threshold)
        label[liver] = 1
        if self.tumour is not None and liver.any():
            tbox = bounding_box(liver, margin=self.margin)
            boxes["tumour"] = tbox
            if self.tumour_config["window"] != self.liver_config["window"]:
                normalised = volumetric.normalize_volume(hu, self.tumour_config["window"])
            tumour_p[tbox] = self.tumour_probability(normalised, liver, tbox)
            label[(tumour_p > self.threshold) & liver] = 2
        return CascadeOutput(label, liver_p, tumour_p, boxes)

    def predict(self, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (x, y, z, 2): liver, tumour; label uint8 (x, y, z))``."""
        out = self.run(hu)
        return np.stack([out.liver_probability, out.tumour_probability], axis=-1), out.label

    def predict_file(self, in_path: str, out_path: str) -> str:
        """Predict a NIfTI file; write the 0/1/2 labels with the input's affine and header."""
        vol = read_volume(in_path)
        try:
            label = self.run(vol.data).label
        except ModelInputError as err:
            raise ModelInputError(f"{in_path}: {err}") from None
        return write_volume(out_path, label, vol.affine, header=vol.header, dtype=np.uint8)


# --------------------------------------------------------------------------- cascade.json

def write_cascade(run_dir: str, stages: dict[str, Sequence[str]], *,
                  inference: dict[str, Any] | None = None, model: str = "ra_unet") -> str:
    """Write ``run_dir/cascade.json`` naming the stage run directories (made relative)."""
    missing = [s for s in ("localiser", "liver") if not stages.get(s)]
    if missing:
        raise ValueError(f"a cascade needs run directories for {missing}")
    rel = {k: [os.path.relpath(d, run_dir) for d in v] for k, v in stages.items() if v}
    unknown = sorted(set(rel) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown cascade stages {unknown}; stages are {STAGES}")
    path = os.path.join(run_dir, CASCADE_FILE)
    write_json(path, {"model": model, "stages": rel,
                      "inference": {**DEFAULT_INFERENCE, **(inference or {})}})
    return path


def read_cascade(run_dir: str) -> dict[str, Any]:
    return fileio.read_json(os.path.join(run_dir, CASCADE_FILE), missing=(
        f"not a cascade run directory (no {CASCADE_FILE}); train one with "
        "`python -m keras_liver.experiments.ra_unet`"))


def is_cascade_run(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, CASCADE_FILE))
