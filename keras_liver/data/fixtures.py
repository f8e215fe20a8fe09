"""Real-anatomy fixture: the LiTS-117 liver crop shipped on PyPI (SPEC §8).

`liver-ct-segmentation-package==1.6.0` (installed with ``--no-deps`` by ``make install``)
ships ``data/img_117.mrc`` (128³ float32 HU) and ``data/lab_117.mrc`` (128³ uint16;
0 background, 1 liver, 2 tumour): a liver-box crop of LiTS volume 117. An MRC file is a
1024-byte header followed by little-endian raw voxels; the header's first three int32 are the
dimensions and the fourth the mode (2 = float32, 6 = uint16). The voxel order, read in C order,
puts the axial direction on axis 2, the same ``(x, y, z)`` order as a nibabel array.
The crop does not record its voxel spacing.
"""
from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass

import numpy as np

_PACKAGE = "liver_ct_segmentation_package"
_MRC_HEADER_BYTES = 1024
_MRC_DTYPES = {0: "<i1", 1: "<i2", 2: "<f4", 6: "<u2"}


class FixtureNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class Lits117:
    """The LiTS-117 crop: ``image`` float32 HU and ``label`` uint8 in ``(x, y, z)`` order."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray  # identity: the crop has no stored geometry
    source: str


def data_dir() -> str:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FixtureNotInstalled(
            "The LiTS-117 fixture needs `pip install --no-deps liver-ct-segmentation-package==1.6.0` "
            "(run `make install`)."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def read_mrc(path: str) -> np.ndarray:
    """Read a plain (non-extended-header) MRC volume as an array in ``(x, y, z)`` order."""
    with open(path, "rb") as f:
        header = f.read(_MRC_HEADER_BYTES)
        if len(header) != _MRC_HEADER_BYTES:
            raise ValueError(f"{path}: truncated MRC header ({len(header)} of 1024 bytes)")
        nx, ny, nz, mode = struct.unpack("<4i", header[:16])
        if mode not in _MRC_DTYPES:
            raise ValueError(f"{path}: unsupported MRC mode {mode}")
        dtype = np.dtype(_MRC_DTYPES[mode])
        data = np.frombuffer(f.read(), dtype=dtype)
    expected = nx * ny * nz
    if data.size != expected:
        raise ValueError(f"{path}: expected {expected} voxels for {nx}x{ny}x{nz}, found {data.size}")
    # The file's C order makes the slowest axis first; with these crops that puts the
    # axial direction last, matching nibabel's (x, y, z).
    return data.reshape(nz, ny, nx).copy()


def load_lits117() -> Lits117:
    """Load the LiTS-117 crop (image HU float32, label uint8 in {0, 1, 2})."""
    root = data_dir()
    image = read_mrc(os.path.join(root, "img_117.mrc")).astype(np.float32)
    label = read_mrc(os.path.join(root, "lab_117.mrc")).astype(np.uint8)
    return Lits117(image=image, label=label, affine=np.eye(4), source=root)
