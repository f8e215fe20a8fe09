"""Whole-volume prediction with a trained 2-D run (slice by slice, on the input grid).

The run directory's ``preprocessing.json`` (written by training) decides window, CLAHE,
normalisation and size, so prediction cannot disagree with training. Probabilities are resized
back to the input's in-plane grid, thresholded, optionally reduced to the largest 3-D connected
component, and written with the input's affine and header (never reoriented). A failed
prediction leaves no partial output file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from keras_liver.data import preprocessing as prep
from keras_liver.data.volumes import read_volume, write_volume
from keras_liver.errors import ModelInputError
from keras_liver.postprocess import largest_component
from keras_liver.training import BEST_MODEL, read_run_config

#: Test-time flips of a batch of slices ``(N, H, W, C)``: "vflip" reverses the rows (axis 1),
#: "hflip" the columns (axis 2) — the axes of :mod:`keras_liver.data.augment`'s flips.
TTA_FLIPS = {"vflip": 1, "hflip": 2}


def check_tta(tta) -> tuple[str, ...]:
    """The flips of a ``tta`` setting (``None``/``[]``: none) as a tuple, validated."""
    flips = tuple(tta or ())
    unknown = [t for t in flips if t not in TTA_FLIPS]
    if unknown or len(set(flips)) != len(flips):
        raise ValueError(f"tta must list distinct flips out of {sorted(TTA_FLIPS)}; "
                         f"received {list(flips)}")
    return flips


def predict_slices(model: keras.Model, slices: np.ndarray, *, tta=(), batch_size: int = 8
                   ) -> np.ndarray:
    """Model output for preprocessed slices ``(N, H, W, C)``; with ``tta`` (flips out of
    :data:`TTA_FLIPS`), the mean of the output on the slices as they are and on each flipped
    copy, flipped back (MSA-UNet's test-time augmentation: identity, horizontal and vertical
    flips averaged, then thresholded)."""
    def run(x):
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)

    flips = check_tta(tta)
    total = run(slices)
    for flip in flips:
        axis = TTA_FLIPS[flip]
        total += np.flip(run(np.flip(slices, axis=axis)), axis=axis)
    return total / (1 + len(flips))


@dataclass
class Predictor:
    """A trained 2-D model with the preprocessing it was trained with. ``tta`` lists the
    test-time flips averaged with the plain prediction (run config ``inference.tta``)."""

    model: keras.Model
    preprocessing: dict[str, Any]
    threshold: float = 0.5
    largest_component: bool = True
    batch_size: int = 8
    tta: tuple[str, ...] = ()

    def __post_init__(self):
        self.tta = check_tta(self.tta)

    @classmethod
    def from_config(cls, model: keras.Model, config: dict[str, Any], *,
                    preprocessing: dict[str, Any] | None = None, **kwargs) -> "Predictor":
        """``model`` with the preprocessing (``config["data"]`` unless given), threshold,
        post-processing and test-time augmentation of a run config; keyword arguments
        override them."""
        kwargs.setdefault("threshold", config.get("threshold", 0.5))
        kwargs.setdefault("largest_component",
                          config.get("postprocess", {}).get("largest_component", True))
        kwargs.setdefault("tta", (config.get("inference") or {}).get("tta", ()))
        return cls(model=model, preprocessing=preprocessing or config["data"], **kwargs)

    @classmethod
    def from_run(cls, run_dir: str, **kwargs) -> "Predictor":
        path = os.path.join(run_dir, BEST_MODEL)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no trained model in this run directory")
        config, preprocessing = read_run_config(run_dir)
        return cls.from_config(keras.models.load_model(path, compile=False), config,
                               preprocessing=preprocessing, **kwargs)

    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Foreground probabilities ``(x, y, z)`` (or ``(x, y, z, C)`` for C > 1 classes)."""
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3:
            raise ModelInputError(f"expected a 3-D volume (x, y, z), received shape {volume.shape}")
        slices = prep.preprocess_volume(volume, self.preprocessing, batch_size=self.batch_size)
        probs = predict_slices(self.model, slices, tta=self.tta, batch_size=self.batch_size)
        probs = prep.restore_slices(probs, volume.shape[:2])
        if probs.ndim == 4 and probs.shape[-1] == 1:
            probs = probs[..., 0]
        return probs

    def predict(self, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, label)`` on the volume's grid; label uint8."""
        probs = self.probabilities(volume)
        if probs.ndim == 3:
            label = probs > self.threshold
            if self.largest_component:
                label = largest_component(label)
            label = label.astype(np.uint8)
        else:
            label = np.argmax(probs, axis=-1).astype(np.uint8)
        return probs, label

    def predict_file(self, in_path: str, out_path: str) -> str:
        """Predict a NIfTI file and write the label volume with the input's affine and header."""
        vol = read_volume(in_path)
        _, label = self.predict(vol.data)
        return write_volume(out_path, label, vol.affine, header=vol.header, dtype=np.uint8)


def predict_file(run_dir: str, in_path: str, out_path: str, **kwargs) -> str:
    return Predictor.from_run(run_dir, **kwargs).predict_file(in_path, out_path)
