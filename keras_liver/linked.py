"""The two linked models of the Attention Residual UNet paper (Abouabdallah, "Liver and Hepatic
Vessel Segmentation Using Attention Residual UNet Architecture": "two linked models, one aimed
at the liver and another for the vessels").

:class:`LinkedLiverVessel` runs the liver model (MSD Task03 classes: background, liver,
tumour) on every axial slice, keeps the liver it found (liver ∪ tumour, its largest 3-D
component), then runs the vessel model (MSD Task08 classes: background, vessel, tumour) on the
slices that hold that liver and keeps its vessels inside the liver. One label volume comes out,
on the input grid with the input's affine and header:

====  =============================================================
0     background
1     liver (parenchyma)
2     liver tumour (the liver model's; ``tumour="union"`` adds the vessel model's tumour
      voxels inside the liver)
3     hepatic vessel (the vessel model's vessel class, inside the liver, not on a tumour)
====  =============================================================

Each model is a 2-D training run (``keras_liver.training``) and brings its own preprocessing
(per-slice min–max, its own input size), read from its run directory, so the two cannot
disagree with their training. A linked run directory holds ``linked.json``::

    {"model": "arunet", "models": {"liver": "liver", "vessel": "vessel"},
     "inference": {"largest_component": true, "margin": 0, "tumour": "liver"}}

(model run directories relative to it). ``keras-liver predict --model RUN_DIR IN --out OUT``
and :meth:`LinkedLiverVessel.from_run` read it.

Readings (the paper says only that the models are linked; ``docs/fidelity.md``): the vessel
model sees whole slices, as it was trained on whole Task08 slices, not a crop of the liver;
"inside the liver" is the liver model's mask applied to the vessel model's output.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_liver import fileio
from keras_liver.data.volumes import read_volume, write_volume
from keras_liver.errors import ModelInputError
from keras_liver.inference import Predictor
from keras_liver.postprocess import largest_component
from keras_liver.training import write_json

LINKED_FILE = "linked.json"
MODELS = ("liver", "vessel")
#: Output label → name.
LABELS = {0: "background", 1: "liver", 2: "liver tumour", 3: "vessel"}
#: Class indices of the two models' softmax outputs (MSD Task03 and Task08).
LIVER_CLASSES = {"liver": 1, "tumour": 2}
VESSEL_CLASSES = {"vessel": 1, "tumour": 2}
TUMOUR_SOURCES = ("liver", "union")
DEFAULT_INFERENCE = {"largest_component": True, "margin": 0, "tumour": "liver"}


@dataclass
class LinkedResult:
    """``label``: the 0/1/2/3 volume; ``liver`` and ``vessel``: the two models' own argmax
    label volumes (``vessel`` is 0 outside the slices it was run on)."""

    label: np.ndarray
    liver: np.ndarray
    vessel: np.ndarray
    slices: tuple[int, int] | None   # [first, last) axial slices given to the vessel model


@dataclass
class LinkedLiverVessel:
    """The liver model, then the vessel model inside the liver it found (module docstring).

    ``largest_component``: keep the liver model's largest 3-D component of liver ∪ tumour;
    ``margin``: axial slices beyond the liver's extent that the vessel model also sees;
    ``tumour``: ``"liver"`` (the liver model's tumour class) or ``"union"`` (also the vessel
    model's tumour voxels inside the liver).
    """

    liver: Predictor
    vessel: Predictor
    largest_component: bool = True
    margin: int = 0
    tumour: str = "liver"

    def __post_init__(self):
        if self.tumour not in TUMOUR_SOURCES:
            raise ValueError(f"tumour must be one of {TUMOUR_SOURCES}; received {self.tumour!r}")
        if int(self.margin) < 0:
            raise ValueError(f"margin must be >= 0; received {self.margin}")

    @classmethod
    def from_runs(cls, liver_run: str, vessel_run: str, **inference) -> "LinkedLiverVessel":
        return cls(Predictor.from_run(liver_run), Predictor.from_run(vessel_run),
                   **{**DEFAULT_INFERENCE, **inference})

    @classmethod
    def from_run(cls, run_dir: str, **inference) -> "LinkedLiverVessel":
        """The linked models described by ``run_dir/linked.json``."""
        spec = read_linked(run_dir)
        runs = {k: os.path.join(run_dir, v) for k, v in spec["models"].items()}
        return cls.from_runs(runs["liver"], runs["vessel"],
                             **{**spec.get("inference", {}), **inference})

    @staticmethod
    def _labels(predictor: Predictor, volume: np.ndarray, name: str) -> np.ndarray:
        probs = predictor.probabilities(volume)
        if probs.ndim != 4 or probs.shape[-1] < 3:
            raise ModelInputError(f"the {name} model must have a softmax over (background, "
                                  f"{name}, tumour); its output has shape {probs.shape}")
        return np.argmax(probs, axis=-1).astype(np.uint8)

    def run(self, volume: np.ndarray) -> LinkedResult:
        """Label a CT volume ``(x, y, z)`` in HU (module docstring)."""
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3:
            raise ModelInputError(f"expected a 3-D volume (x, y, z), received shape {volume.shape}")
        liver = self._labels(self.liver, volume, "liver")
        organ = liver > 0
        if self.largest_component:
            organ = largest_component(organ)
        label = np.where(organ, liver, 0).astype(np.uint8)
        vessel = np.zeros_like(label)
        slices = None
        if organ.any():
            z = np.flatnonzero(organ.any(axis=(0, 1)))
            first = max(int(z[0]) - int(self.margin), 0)
            last = min(int(z[-1]) + int(self.margin) + 1, volume.shape[2])
            slices = (first, last)
            vessel[:, :, first:last] = self._labels(self.vessel, volume[:, :, first:last],
                                                    "vessel")
            if self.tumour == "union":
                label[organ & (vessel == VESSEL_CLASSES["tumour"])] = 2
            label[organ & (vessel == VESSEL_CLASSES["vessel"]) & (label != 2)] = 3
        return LinkedResult(label=label, liver=liver, vessel=vessel, slices=slices)

    def predict(self, volume: np.ndarray) -> tuple[None, np.ndarray]:
        """``(None, label)``, the :class:`~keras_liver.inference.Predictor` interface."""
        return None, self.run(volume).label

    def predict_file(self, in_path: str, out_path: str) -> str:
        """Label a NIfTI file; the output has the input's grid, affine and header (a failed
        prediction leaves no output file)."""
        vol = read_volume(in_path)
        label = self.run(vol.data).label
        return write_volume(out_path, label, vol.affine, header=vol.header, dtype=np.uint8)


# --------------------------------------------------------------------------- linked.json

def write_linked(run_dir: str, runs: dict[str, str], *, inference: dict[str, Any] | None = None,
                 model: str = "arunet") -> str:
    """Write ``run_dir/linked.json`` naming the two model runs (made relative to it)."""
    missing = [m for m in MODELS if not runs.get(m)]
    unknown = sorted(set(runs) - set(MODELS))
    if missing or unknown:
        raise ValueError(f"linked models need exactly the runs {list(MODELS)}; "
                         f"missing {missing}, unknown {unknown}")
    path = os.path.join(run_dir, LINKED_FILE)
    write_json(path, {"model": model,
                      "models": {m: os.path.relpath(runs[m], run_dir) for m in MODELS},
                      "inference": {**DEFAULT_INFERENCE, **(inference or {})}})
    return path


def read_linked(run_dir: str) -> dict[str, Any]:
    return fileio.read_json(os.path.join(run_dir, LINKED_FILE), missing=(
        f"not a linked run directory (no {LINKED_FILE}); train one with "
        "`python -m keras_liver.experiments.arunet`"))


def is_linked_run(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, LINKED_FILE))
