"""NIfTI volumes read and written with nibabel, keeping affine, header and spacing (SPEC §6).

Arrays are in nibabel's on-disk ``(x, y, z)`` order; nothing here reorients. Writing is atomic
(temporary file in the destination folder, then rename), so an interrupted or failed write
never leaves a partial file and never replaces a good one.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from keras_liver.errors import DataError
from keras_liver.fileio import write_atomically

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Volume:
    """A 3-D NIfTI volume: voxels, geometry and the header it came with."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.header.get_zooms()[:3])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def read_volume(path: str, dtype=np.float32, *, check_finite: bool = True) -> Volume:
    """Read a 3-D NIfTI volume as ``dtype`` (scaling by the header's slope/intercept).

    Raises :class:`DataError` naming the file when it is missing, truncated or corrupt (a
    ``.nii.gz`` whose gzip stream ends early too, even when the voxels were all there),
    not 3-D (a trailing singleton 4th axis is dropped), or holds NaN/inf voxels.
    """
    path = str(path)
    if not os.path.exists(path):
        raise DataError(path, "file not found")
    try:
        img = nib.load(path)
        data = np.asarray(img.get_fdata(dtype=np.float32) if np.dtype(dtype).kind == "f"
                          else img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(path, f"cannot read NIfTI (truncated or corrupt file): {err}") from None
    if path.endswith(".gz"):
        _check_gzip_complete(path, img)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3-D volume, found shape {data.shape}")
    if check_finite and data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(path, f"{bad} voxel(s) are NaN or infinite")
    return Volume(data=data.astype(dtype, copy=False), affine=np.asarray(img.affine, dtype=np.float64),
                  header=img.header.copy(), path=path)


def _check_gzip_complete(path: str, img) -> None:
    """Raise :class:`DataError` when a ``.nii.gz`` file's gzip stream is cut short.

    nibabel reads only as many bytes as the header asks for, so a file missing the end of its
    gzip stream (a truncated copy losing its last bytes) still yields the voxels. The gzip
    trailer's last four bytes hold the uncompressed size; when they do not match the size the
    header implies, the stream is decompressed to its end (several gzip members are legal),
    and an early end is an error.
    """
    import gzip

    expected = int(img.header.get("vox_offset", 0)) + int(
        np.prod(img.header.get_data_shape(), dtype=np.int64)) * img.header.get_data_dtype().itemsize
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() >= 4:
            f.seek(-4, os.SEEK_END)
            if int.from_bytes(f.read(4), "little") == expected % 2 ** 32:
                return
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(path, f"cannot read NIfTI (truncated or corrupt file): {err}") from None


def write_volume(path: str, data: np.ndarray, affine: np.ndarray, header=None, dtype=None) -> str:
    """Write ``data`` as NIfTI at ``path`` atomically; returns ``path``.

    With ``header`` (e.g. the input's), its geometry and units are kept and the data type is
    set to ``dtype`` (default: the array's own).
    """
    path = str(path)
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(data, affine, header=hdr)
    img.set_data_dtype(data.dtype)
    if hdr is not None:
        # Keep the input's geometry, but the voxels are written unscaled.
        img.header.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if path.endswith(".gz") else ".nii"
    return write_atomically(path, lambda tmp: nib.save(img, tmp), suffix=suffix)
