"""Synthetic abdominal CT phantom, and its MRI-like variant: the default data of every
command and test (SPEC §8).

A case is built in two stages so that other modalities can reuse the anatomy:

1. :func:`build_anatomy` draws the geometry from the seed and paints a *tissue-class map*
   (:class:`Tissue`, ``uint8``) together with the liver/tumour label, the Couinaud segments,
   the hepatic/portal vessel mask and a tumour-instance map. Nothing here knows about HU.
2. :func:`ct_intensities` maps tissue classes to Hounsfield units drawn per case (plus a
   low-frequency parenchymal texture), applies partial-volume blur and adds Gaussian noise.
   :func:`mri_intensities` replaces only this stage for the MRI-like variant of BADA
   (portal-venous-phase T1-weighted look, multiplicative bias field, Rician noise; see its
   docstring for the intensity table); :func:`generate_mri_case` is :func:`generate_case`
   with it, and :func:`couinaud_label` gives BADA's 10-class map (0 + segments I..VIII).

Anatomy (all sizes in mm, drawn per case):

- body outline: a perturbed super-ellipse 300-380 mm wide, depth 62-78 % of the width, whose
  size varies slowly along z; skin-side subcutaneous fat (thicker anteriorly), a muscle wall,
  and the abdominal cavity inside, filled with visceral fat, bowel loops and gas pockets;
- spine (vertebral bodies with a cortical shell and intervertebral discs, spinal canal,
  posterior arch, spinous and transverse processes), paraspinal and psoas muscles; ribs as
  oblique bone arcs in the muscle wall of the upper abdomen and lower thorax;
- diaphragm with two domes, lung bases and heart above it (slices above the liver dome);
- aorta and inferior vena cava (IVC), stomach with an air cap, spleen (same side as the
  stomach, HU close to the liver), two kidneys (enhancing cortex, medulla, sinus fat);
- the liver in the right upper abdomen: a smooth union of five ellipsoids (right lobe,
  inferior tip, medial part, left lateral lobe, caudate lobe around the IVC) deformed by
  low-frequency noise, clipped by the abdominal wall and the diaphragm and carved by the
  kidneys, spleen, vessels and spine; a gallbladder under segments IV/V in most cases;
- the nine Couinaud segments, defined geometrically: three vertical hepatic-vein planes through
  the IVC axis (right, middle = Cantlie's line, left) split the liver into four sectors, the
  portal plane splits each into a superior and an inferior segment (an oblique plane for
  II/III), and segment I is the caudate lobe beside the IVC; every liver voxel gets a segment;
- two fat-filled fissures: the fissure of the ligamentum venosum, a 2.5-3.5 mm cleft on the
  caudate lobe's face away from the IVC (between segment I and segments II/IV), and the
  umbilical fissure, a 2.5-3.5 mm cleft in the left vein plane from the liver's edge inward,
  below the portal level (between segment IV and segments III/II);
- hepatic veins run in the three vein planes to the IVC, each with five tributaries in its
  plane that reach from the trunk down to the liver's inferior part and up into the dome, so
  that most axial slices show the vein that marks a sector boundary; the portal vein enters at
  the hilum and branches to the centre of every segment (intersegmental veins, intrasegmental
  portal branches, as in the Couinaud scheme); 0-4 hypo-dense tumours (spheres/ellipsoids,
  lobulated) inside the liver.

Intensities (HU, drawn per case): liver 90-130, spleen within -5..+18 of the liver, kidney
cortex 150-200, medulla 90-140, hepatic/portal veins 150-220, tumours 20-70 and at least 25
below the liver (each tumour its own), fat -120..-80, muscle 40-60, vertebral bone 330-480
(cancellous) and 700-1000 (cortical, posterior elements), ribs 500-800, lung about -860, air
-1000, plus a smooth texture of a few HU. Blur sigma 0.5-1 voxel (at most 3 mm in-plane and
5 mm along z on coarse forced grids), then noise sigma 8-25 HU. Thin structures (ribs, kidney
cortex) read lower than their table value after the blur, as partial volume does in real CT.

Randomness: ``numpy.random.Generator`` streams from ``SeedSequence([seed, n])`` with n = 0
(grid and body size), 1 (anatomy), 2 (CT intensities), 3 (MRI intensities), 4 (MRI bias
field) and 5 (the fissures and the hepatic-vein tributaries), so the same seed gives identical
arrays and the CT and MRI renderings of a seed share the same anatomy (tissue map, labels,
Couinaud segments, vessels) exactly.

Cost (one core): a default case about 0.25 s, 512x512x100 about 3 s; the MRI rendering
adds about 0.2 s to a default case.

Orientation: arrays are in nibabel ``(x, y, z)`` order with axial slices along axis 2 and the
affine ``diag(-sx, -sy, sz)`` (as for CT converted from DICOM): voxel axis 0 runs from the
patient's right to left, axis 1 from anterior to posterior, axis 2 from inferior to superior.
``image[:, :, k].T`` therefore shows slice ``k`` in radiological convention (anterior up,
patient's right on the image's left): the liver on the left, the spleen on the right, the
spine at the bottom. The liver always spans a proper sub-range of the slices (lung/heart
above, bowel/kidneys below).

Labels come from the un-blurred geometry: ``label`` 1 = liver (including intrahepatic vessels,
as in LiTS), 2 = tumour; the IVC and the gallbladder are not liver. ``vessels`` marks hepatic-
and portal-vein voxels, including the portal trunk entering the liver; the IVC is not included.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy import ndimage

from keras_liver import processes
from keras_liver.data.volumes import write_volume

__all__ = [
    "Tissue", "Anatomy", "PhantomCase", "COUINAUD_NAMES", "build_anatomy", "ct_intensities",
    "generate_case", "case_seed", "write_dataset", "MSD_TASKS", "task_label",
    "MODALITIES", "mri_intensities", "mri_bias_field", "generate_mri_case", "couinaud_label",
]

#: Couinaud code -> name (``couinaud`` array values; 0 is outside the liver).
COUINAUD_NAMES = {1: "I", 2: "II", 3: "III", 4: "IVa", 5: "IVb", 6: "V", 7: "VI", 8: "VII", 9: "VIII"}

LAYOUTS = ("lits", "msd")
#: Image modalities the phantom renders (``write_dataset(modality=...)``).
MODALITIES = ("ct", "mri")

# Default grid (random per case): square in-plane grid, slice count, spacings (mm).
_INPLANE_VOXELS = (160, 224)
_INPLANE_SPACING = (1.6, 2.4)
_SLICES = (40, 64)
_SLICE_SPACING = (2.5, 5.0)
_BODY_WIDTH = (300.0, 380.0)
_MIN_COVERAGE = 190.0  # mm along z, so the liver (130-180 mm) leaves slices above and below


class Tissue(IntEnum):
    """Tissue classes of the anatomy map (``uint8``). Intensities are assigned per modality."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    BONE_CANCELLOUS = 3
    BONE_CORTICAL = 4
    RIB = 5
    DISC = 6
    CSF = 7
    LUNG = 8
    HEART = 9
    LIVER = 10
    TUMOUR = 11
    PORTAL_VEIN = 12
    HEPATIC_VEIN = 13
    IVC = 14
    AORTA = 15
    SPLEEN = 16
    KIDNEY_CORTEX = 17
    KIDNEY_MEDULLA = 18
    GALLBLADDER = 19
    STOMACH_WALL = 20
    STOMACH_CONTENT = 21
    BOWEL = 22
    GAS = 23


N_TISSUES = len(Tissue)


@dataclass
class Anatomy:
    """Modality-independent phantom geometry (all arrays ``(x, y, z)``)."""

    tissue: np.ndarray      # uint8 Tissue codes
    tumour_id: np.ndarray   # uint8: 0, or k = voxel of tumour k (1-based), for per-tumour intensity
    label: np.ndarray       # uint8: 0 background, 1 liver, 2 tumour
    couinaud: np.ndarray    # uint8: 0 outside the liver, 1..9 (COUINAUD_NAMES)
    vessels: np.ndarray     # uint8: 1 = hepatic/portal vein voxel
    affine: np.ndarray
    spacing: tuple
    info: dict = field(default_factory=dict)  # drawn parameters (sizes, positions), for reports


@dataclass
class PhantomCase:
    image: np.ndarray      # float32 (CT: HU; MRI: arbitrary units >= 0), (x, y, z) nibabel
    #                        order, axial slices along axis 2
    label: np.ndarray      # uint8: 0 background, 1 liver, 2 tumour (LiTS / MSD Task03 convention)
    couinaud: np.ndarray   # uint8: 0 outside liver, 1..9 = I, II, III, IVa, IVb, V, VI, VII, VIII
    vessels: np.ndarray    # uint8: 0, 1 = hepatic/portal vessel voxel (inside/entering the liver)
    affine: np.ndarray     # 4x4 float64, diag(-sx, -sy, sz) plus a translation
    spacing: tuple         # (sx, sy, sz) mm
    case_id: str
    tissue: np.ndarray | None = None  # uint8 Tissue map the image was rendered from
    modality: str = "ct"              # "ct" (ct_intensities) or "mri" (mri_intensities)


# --------------------------------------------------------------------------- grid helpers

class _Grid:
    """Voxel-centre coordinates in mm: x towards the patient's right, y anterior, z superior
    (z = 0 at the lowest slice). Index i runs right-to-left and j anterior-to-posterior."""

    def __init__(self, shape, spacing):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        nx, ny, nz = self.shape
        sx, sy, sz = self.spacing
        self.x = (((nx - 1) / 2.0 - np.arange(nx)) * sx).astype(np.float32)
        self.y = (((ny - 1) / 2.0 - np.arange(ny)) * sy).astype(np.float32)
        self.z = (np.arange(nz) * sz).astype(np.float32)
        self.axes = (self.x, self.y, self.z)

    def affine(self) -> np.ndarray:
        sx, sy, sz = self.spacing
        nx, ny, nz = self.shape
        aff = np.diag([-sx, -sy, sz, 1.0])
        aff[:3, 3] = [sx * (nx - 1) / 2.0, sy * (ny - 1) / 2.0, -sz * (nz - 1) / 2.0]
        return aff

    def box(self, lo, hi):
        """Slices of the voxels whose centres lie in the axis-aligned box [lo, hi] (mm);
        ``None`` when the box misses the grid."""
        out = []
        for c, a, b in zip(self.axes, lo, hi):
            idx = np.flatnonzero((c >= min(a, b)) & (c <= max(a, b)))
            if idx.size == 0:
                return None
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(out)

    def box_around(self, centre, half):
        c = np.asarray(centre, dtype=np.float64)
        h = np.asarray(half, dtype=np.float64)
        return self.box(c - h, c + h)

    def coords(self, box):
        """Open-grid coordinates of a box: x (n,1,1), y (1,m,1), z (1,1,k)."""
        return (self.x[box[0]][:, None, None], self.y[box[1]][None, :, None],
                self.z[box[2]][None, None, :])


def _union_box(boxes):
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _ellipsoid_e2(grid, box, centre, radii, angle=0.0, p=2.0, pz=2.0):
    """Squared normalised radius of an ellipsoid (rotated by ``angle`` rad about z) on ``box``.

    ``p``/``pz`` > 2 give a super-ellipsoid (boxier in-plane / flatter top and bottom):
    ``(|u/rx|^p + |v/ry|^p)^(2/p) + |w/rz|^pz``; the in-plane part is computed in 2-D.
    """
    x, y, z = grid.coords(box)
    dx, dy = x[:, :, 0] - np.float32(centre[0]), y[:, :, 0] - np.float32(centre[1])
    if angle:
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u, v = c * dx + s * dy, -s * dx + c * dy
    else:
        u, v = dx, dy
    w = np.abs((z[0, 0] - np.float32(centre[2])) / np.float32(radii[2]))
    if p == 2.0:
        inplane = (u / np.float32(radii[0])) ** 2 + (v / np.float32(radii[1])) ** 2
    else:
        inplane = (np.abs(u / np.float32(radii[0])) ** p + np.abs(v / np.float32(radii[1])) ** p) ** (2.0 / p)
    along = w ** 2 if pz == 2.0 else w ** pz
    return (inplane.astype(np.float32)[:, :, None] + along.astype(np.float32)[None, None, :])


def _ellipsoid_box(grid, centre, radii, pad=0.0):
    r = max(radii[0], radii[1]) + pad
    return grid.box_around(centre, (r, r, radii[2] + pad))


def _smooth_field(rng, shape, spacing, corr_mm):
    """Unit-variance smooth Gaussian random field with correlation length ``corr_mm``.

    A separable sum of Gaussian bumps on a coarse lattice (spacing ``corr_mm / 2``): three
    small matrix products, so it costs little even on a 512x512x100 grid.
    """
    mats = []
    for n, s in zip(shape, spacing):
        step = corr_mm / 2.0
        length = n * s
        nc = int(math.ceil(length / step)) + 3
        centres = (np.arange(nc) - 1.0) * step - (nc * step - length) / 2.0
        pos = np.arange(n) * s
        w = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / (corr_mm / 2.0)) ** 2)
        w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
        mats.append(w.astype(np.float32))
    coarse = rng.standard_normal(tuple(m.shape[1] for m in mats), dtype=np.float32)
    out = np.tensordot(coarse, mats[2], axes=([2], [1]))          # (a, b, nz)
    out = np.tensordot(mats[1], out, axes=([1], [1]))             # (ny, a, nz)
    out = np.tensordot(mats[0], out, axes=([1], [1]))             # (nx, ny, nz)
    return np.ascontiguousarray(out, dtype=np.float32)


def _smin(a, b, k):
    """Polynomial smooth minimum (smooth union of two signed distances, blend width k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _segment_dist2(grid, box, p0, p1):
    """Squared distance to the segment p0-p1 and the segment parameter t in [0, 1] on ``box``."""
    x, y, z = grid.coords(box)
    p0 = np.asarray(p0, np.float32)
    v = np.asarray(p1, np.float32) - p0
    vv = float(v @ v) or 1e-6
    dx, dy, dz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((dx * v[0] + dy * v[1] + dz * v[2]) / np.float32(vv), 0.0, 1.0)
    d2 = (dx - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dz - t * v[2]) ** 2
    return d2, t


class _Canvas:
    """Tissue map being painted, and the liver mask it carries (painting anything else over
    the liver carves it)."""

    def __init__(self, grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape, np.uint8)
        self.liver = np.zeros(grid.shape, bool)

    def paint(self, box, mask, tissue, *, only=None, keep_liver=False):
        if box is None:
            return
        if only is not None:
            mask = mask & np.isin(self.tissue[box], only)
        self.tissue[box][mask] = tissue
        if not keep_liver:
            self.liver[box][mask] = False


# --------------------------------------------------------------------------- geometry draw

def _draw_grid(rng, shape, spacing):
    """Grid size and spacing, and the body width/depth that fit its field of view."""
    width = rng.uniform(*_BODY_WIDTH)
    depth_ratio = rng.uniform(0.62, 0.78)
    if shape is None and spacing is None:
        n = int(rng.integers(_INPLANE_VOXELS[0], _INPLANE_VOXELS[1] + 1))
        s = rng.uniform(max(_INPLANE_SPACING[0], 335.0 / n), _INPLANE_SPACING[1])
        nz = int(rng.integers(_SLICES[0], _SLICES[1] + 1))
        sz = rng.uniform(max(_SLICE_SPACING[0], _MIN_COVERAGE / (nz - 1)), _SLICE_SPACING[1])
        shape, spacing = (n, n, nz), (s, s, sz)
    elif spacing is None:
        nx, ny, nz = shape
        s = max((width + rng.uniform(30, 80)) / nx, (width * depth_ratio + 40) / ny)
        sz = rng.uniform(_MIN_COVERAGE + 10, 300.0) / (nz - 1)
        spacing = (s, s, sz)
    elif shape is None:
        sx, sy, sz = spacing
        fov = width + rng.uniform(30, 80)
        shape = (int(math.ceil(fov / sx)), int(math.ceil(fov / sy)),
                 max(8, int(math.ceil(rng.uniform(_MIN_COVERAGE + 10, 300.0) / sz)) + 1))
    spacing = tuple(float(round(s, 3)) for s in spacing)
    shape = tuple(int(n) for n in shape)
    fov_x, fov_y = shape[0] * spacing[0], shape[1] * spacing[1]
    width = min(width, fov_x - 20.0)
    depth = min(width * depth_ratio, fov_y - 20.0)
    return shape, spacing, width, depth


def _check_args(seed, shape, spacing):
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"phantom seed must be a non-negative integer; received seed={seed!r}")
    if shape is not None:
        if len(shape) != 3 or any(int(n) != n for n in shape):
            raise ValueError(f"phantom shape must be three integers (X, Y, Z); received shape={shape!r}")
        if min(shape[:2]) < 32 or shape[2] < 8:
            raise ValueError(f"phantom shape must be at least (32, 32, 8); received shape={tuple(shape)}")
    if spacing is not None:
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"phantom spacing must be three positive numbers (mm); received spacing={spacing!r}")
    if shape is not None and spacing is not None:
        fov = (shape[0] * spacing[0], shape[1] * spacing[1], (shape[2] - 1) * spacing[2])
        if fov[0] < 200 or fov[1] < 150 or fov[2] < 60:
            raise ValueError("phantom field of view must be at least 200 x 150 x 60 mm to hold the "
                             f"abdomen; received shape={tuple(shape)}, spacing={tuple(spacing)} "
                             f"(field of view {fov[0]:.0f} x {fov[1]:.0f} x {fov[2]:.0f} mm)")


# --------------------------------------------------------------------------- anatomy

def build_anatomy(seed: int, *, shape=None, spacing=None) -> Anatomy:
    """Draw the anatomy of case ``seed`` (see the module docstring). Deterministic in ``seed``;
    ``shape``/``spacing`` force the grid (the anatomy is scaled to fit the field of view)."""
    _check_args(seed, shape, spacing)
    geo_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    U = rng.uniform

    shape, spacing, width, depth = _draw_grid(geo_rng, shape, spacing)
    g = _Grid(shape, spacing)
    cv = _Canvas(g)
    sx, sy, sz = spacing
    nz = shape[2]
    cover = (nz - 1) * sz
    vox = min(sx, sy)

    # ---- z layout: liver from z_bot to z_top, with slices free of liver above and below.
    m_top = max(U(0.06, 0.2) * cover, 2.5 * sz)
    m_bot = max(0.1 * cover, 2.5 * sz)
    L = min(U(130.0, 180.0), cover - m_top - m_bot)
    z_top = cover - m_top
    z_bot = z_top - L

    # ---- body outline (2-D super-ellipse profile, scaled slowly along z)
    fov_x, fov_y = shape[0] * sx, shape[1] * sy
    A = width / 2.0
    B_ant = depth / 2.0 * U(0.97, 1.03)
    B_post = depth / 2.0 * U(0.9, 1.0)
    cx = U(-1, 1) * 0.3 * max(0.0, fov_x / 2.0 - A - 5.0)
    cy = U(-1, 1) * 0.3 * max(0.0, fov_y / 2.0 - max(B_ant, B_post) - 5.0)
    p = U(2.0, 2.6)
    X2 = g.x[:, None] - np.float32(cx)
    Y2 = g.y[None, :] - np.float32(cy)
    B2 = np.where(Y2 >= 0, np.float32(B_ant), np.float32(B_post))
    rho = (np.abs(X2 / np.float32(A)) ** p + np.abs(Y2 / B2) ** p) ** (1.0 / p)
    theta = np.arctan2(Y2, X2)
    pert = np.ones_like(theta)
    for k in (2, 3, 4):
        pert = pert + U(-0.03, 0.03) * np.cos(k * theta + U(0, 2 * np.pi))
    rho = rho / pert
    r2d = np.hypot(X2, Y2)
    skin = np.where(rho > 1e-6, r2d / np.maximum(rho, 1e-6), np.float32(A)).astype(np.float32)
    t = (g.z - g.z.mean()) / np.float32(150.0)
    scale_z = (1.0 + U(-0.05, 0.05) * t + U(-0.05, 0.02) * t ** 2).astype(np.float32)
    depth3 = skin[:, :, None] * scale_z[None, None, :] - r2d[:, :, None]  # mm under the skin
    tf0, tm0 = U(8.0, 30.0), U(9.0, 14.0)
    t_fat = (tf0 * (1.0 + 0.35 * np.sin(theta) + 0.15 * np.cos(2 * theta))).astype(np.float32)
    t_mus = (tm0 * (1.0 + 0.2 * np.cos(2 * theta))).astype(np.float32)
    wall = (t_fat + t_mus)[:, :, None]
    body = depth3 > 0
    cavity = depth3 > wall
    cv.tissue[body] = Tissue.FAT
    cv.tissue[body & (depth3 > t_fat[:, :, None]) & ~cavity] = Tissue.MUSCLE
    cv.tissue[cavity] = Tissue.FAT                      # visceral fat
    A_c = A - tf0 * 1.15 - tm0 * 1.2                   # cavity half-width (lateral)
    B_c = B_ant - tf0 * 1.35 - tm0 * 0.8               # cavity half-depth, anterior
    B_cp = B_post - tf0 * 0.65 - tm0 * 0.8             # cavity half-depth, posterior
    B_m = (B_c + B_cp) / 2.0

    # ---- diaphragm: two domes (right higher) over the liver, lungs above
    xR, yR = cx + U(0.3, 0.45) * A_c, cy + U(-0.15, 0.1) * B_m
    xL, yL = cx - U(0.3, 0.45) * A_c, cy + U(-0.15, 0.1) * B_m
    rc_r, rc_l = U(70.0, 110.0), U(70.0, 110.0)
    dome_r = z_top + 2.0 - ((X2 - (xR - cx)) ** 2 + (1.3 * (Y2 - (yR - cy))) ** 2) / (2 * rc_r)
    dome_l = z_top - U(5.0, 20.0) - ((X2 - (xL - cx)) ** 2 + (1.3 * (Y2 - (yL - cy))) ** 2) / (2 * rc_l)
    z_diaph = np.maximum(dome_r, dome_l).astype(np.float32)          # (X, Y)
    below = g.z[None, None, :] < z_diaph[:, :, None] - 1.5          # abdomen side
    abdomen = cavity & below

    # ---- bowel loops and gas in the abdominal cavity (organs are painted over them)
    zb = g.box((-1e4, -1e4, -1e4), (1e4, 1e4, float(z_diaph.max())))
    if zb is not None:
        bshape = tuple(s.stop - s.start for s in zb)
        loops = _smooth_field(rng, bshape, spacing, U(14.0, 22.0))
        gas = _smooth_field(rng, bshape, spacing, U(7.0, 10.0))
        ab = abdomen[zb]
        bowel = ab & (loops > U(-0.1, 0.4))
        cv.paint(zb, bowel, Tissue.BOWEL)
        cv.paint(zb, bowel & (gas > U(1.5, 2.1)), Tissue.GAS)
        del loops, gas

    # ---- spine position (drawn now: the IVC, aorta and kidneys are placed relative to it)
    vb_x = cx + U(-3.0, 3.0)
    vb_y = cy - B_post + U(70.0, 85.0)
    vb_rx, vb_ry = U(20.0, 25.0), U(15.0, 18.0)
    ivc = (vb_x + U(20.0, 30.0), vb_y + vb_ry + U(9.0, 15.0))
    ivc_r = (U(11.0, 15.0), U(8.0, 11.0))
    aorta = (vb_x - U(10.0, 20.0), vb_y + vb_ry + U(10.0, 16.0))
    aorta_r = U(10.0, 14.0)

    # ---- stomach (left upper quadrant; air cap anteriorly, the patient lies supine)
    st_c = (cx - U(0.2, 0.4) * A_c, cy + U(0.05, 0.3) * B_c, z_top - U(45.0, 75.0))
    st_r = (U(35.0, 55.0), U(28.0, 42.0), U(35.0, 55.0))
    b = _ellipsoid_box(g, st_c, st_r)
    if b is not None:
        e2 = _ellipsoid_e2(g, b, st_c, st_r, U(-0.4, 0.4))
        inside = (e2 < 1.0) & abdomen[b]
        cv.paint(b, inside, Tissue.STOMACH_WALL)
        lumen = inside & (e2 < (1.0 - 4.0 / min(st_r)) ** 2)
        cv.paint(b, lumen, Tissue.STOMACH_CONTENT)
        if rng.random() < 0.75:
            y = g.coords(b)[1]
            cv.paint(b, lumen & (y > st_c[1] + st_r[1] * U(0.2, 0.55)), Tissue.GAS)

    # ---- kidneys (right one lower), cortex / medulla / sinus fat at the hilum
    zk_r = z_bot + U(0.0, 35.0)
    for side, zk in ((1.0, zk_r), (-1.0, zk_r + U(5.0, 20.0))):
        kc = (vb_x + side * U(55.0, 70.0), vb_y + U(-5.0, 10.0), zk)
        kr = (U(22.0, 27.0), U(18.0, 24.0), U(45.0, 58.0))
        b = _ellipsoid_box(g, kc, kr)
        if b is None:
            continue
        e2 = _ellipsoid_e2(g, b, kc, kr)
        alpha = U(0.35, 0.7)
        hc = (kc[0] - side * 0.85 * kr[0] * math.cos(alpha), kc[1] + 0.85 * kr[0] * math.sin(alpha), kc[2])
        hilum = _ellipsoid_e2(g, b, hc, (0.45 * kr[0], 0.4 * kr[1], 0.4 * kr[2])) < 1.0
        kid = (e2 < 1.0) & abdomen[b]
        cv.paint(b, kid, Tissue.KIDNEY_CORTEX)
        cv.paint(b, kid & (e2 < U(0.5, 0.62)), Tissue.KIDNEY_MEDULLA)
        cv.paint(b, kid & hilum, Tissue.FAT)

    # ---- spleen (posterolateral left, concave medial surface)
    hz = U(40.0, 55.0)
    sp_c = (cx - U(0.58, 0.7) * A_c, cy - U(0.2, 0.4) * B_cp, z_top - U(10.0, 30.0) - hz)
    sp_r = (U(22.0, 32.0), U(45.0, 60.0), hz)
    sp_a = U(0.35, 0.8)
    b = _ellipsoid_box(g, sp_c, sp_r)
    if b is not None:
        e2 = _ellipsoid_e2(g, b, sp_c, sp_r, sp_a)
        cc = (sp_c[0] + 0.95 * sp_r[0] * math.cos(sp_a), sp_c[1] + 0.95 * sp_r[0] * math.sin(sp_a), sp_c[2])
        cut = _ellipsoid_e2(g, b, cc, (0.55 * sp_r[0], 0.6 * sp_r[1], 0.85 * sp_r[2]), sp_a) < 1.0
        lob = _smooth_field(rng, e2.shape, spacing, 25.0)
        cv.paint(b, (e2 + 0.12 * lob < 1.0) & ~cut & abdomen[b], Tissue.SPLEEN)

    # ---- liver: smooth union of ellipsoids, deformed, clipped, carved
    # (centre, radii, rotation about z, in-plane exponent, z exponent)
    tip_z = z_bot + U(0.22, 0.3) * L
    comps = [
        # right lobe: boxy, pressed against the lateral wall, its dome cut by the diaphragm
        ((cx + U(0.33, 0.45) * A_c, cy + U(-0.1, 0.1) * B_c, z_bot + U(0.55, 0.65) * L),
         (U(0.62, 0.78) * A_c, U(0.85, 1.0) * B_m, U(0.5, 0.6) * L), U(-0.2, 0.2), U(2.4, 3.4), U(2.0, 3.0)),
        # inferior tip of the right lobe
        ((cx + U(0.4, 0.6) * A_c, cy + U(-0.2, 0.15) * B_c, tip_z),
         (U(0.25, 0.4) * A_c, U(0.35, 0.55) * B_m, tip_z - z_bot), U(-0.3, 0.3), 2.0, 2.0),
        # medial part (segment IV / hilum)
        ((cx + U(0.0, 0.15) * A_c, cy + U(0.15, 0.35) * B_c, z_bot + U(0.45, 0.6) * L),
         (U(0.25, 0.35) * A_c, U(0.35, 0.5) * B_c, U(0.25, 0.35) * L), U(-0.2, 0.2), 2.0, 2.0),
        # left lateral lobe
        ((cx - U(0.1, 0.3) * A_c, cy + U(0.3, 0.5) * B_c, z_bot + U(0.6, 0.75) * L),
         (U(0.3, 0.5) * A_c, U(0.22, 0.35) * B_c, U(0.14, 0.22) * L), U(-0.25, 0.25), 2.0, 2.0),
        # caudate lobe, left-anterior of the IVC
        ((ivc[0] - U(14.0, 20.0), ivc[1] + U(8.0, 14.0), z_bot + U(0.55, 0.7) * L),
         (U(18.0, 24.0), U(14.0, 18.0), U(0.15, 0.22) * L), 0.0, 2.0, 2.0),
    ]
    noise_amp = U(3.0, 7.0)
    lbox = _union_box([_ellipsoid_box(g, c[0], c[1], pad=noise_amp * 2.5 + 5.0) for c in comps])
    f = None
    for c, r, ang, pp, pz in comps:
        e2 = _ellipsoid_e2(g, lbox, c, r, ang, pp, pz)
        d = (np.sqrt(e2) - 1.0) * np.float32((r[0] * r[1] * r[2]) ** (1.0 / 3.0))
        f = d if f is None else _smin(f, d, np.float32(15.0))
    f += np.float32(noise_amp) * _smooth_field(rng, f.shape, spacing, U(35.0, 55.0))
    zz = g.coords(lbox)[2]
    liver = ((f < 0) & (depth3[lbox] > wall[lbox[:2]] + 1.5) & below[lbox]
             & (zz >= max(z_bot - 0.05 * L, 1.0 * sz)) & (zz <= (nz - 2) * sz))
    del f
    # the liver yields to kidneys, spleen and their fat; it displaces the stomach and bowel
    liver &= ~np.isin(cv.tissue[lbox], (Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA, Tissue.SPLEEN))
    cv.paint(lbox, liver, Tissue.LIVER, keep_liver=True)
    cv.liver[lbox] |= liver
    caud_c, caud_r = comps[4][:2]
    vr = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    # fissure of the ligamentum venosum: a thin fat cleft on the caudate's face away from the IVC
    b = _ellipsoid_box(g, caud_c, caud_r, pad=8.0)
    if b is not None:
        e = np.sqrt(_ellipsoid_e2(g, b, caud_c, caud_r))
        x, y, z = g.coords(b)
        ux, uy = caud_c[0] - ivc[0], caud_c[1] - ivc[1]
        un = math.hypot(ux, uy)
        dx, dy = x - np.float32(caud_c[0]), y - np.float32(caud_c[1])
        cos_half = np.float32(math.cos(math.radians(vr.uniform(70.0, 85.0))))
        facing = (dx * np.float32(ux / un) + dy * np.float32(uy / un)) > cos_half * np.hypot(dx, dy)
        th = vr.uniform(2.5, 3.5)
        shell = (e >= 1.0) & ((e - 1.0) * np.float32(0.5 * (caud_r[0] + caud_r[1])) < np.float32(th))
        shell &= facing & (np.abs(z - np.float32(caud_c[2])) < np.float32(0.85 * caud_r[2]))
        cv.paint(b, shell & cv.liver[b], Tissue.FAT)

    # ---- sector geometry around the IVC axis (Couinaud), from the liver drawn so far
    lx, ly, lz = _liver_points(g, cv.liver, rng, max_points=200_000)
    phi = _unwrap_deg(np.degrees(np.arctan2(ly - ivc[1], lx - ivc[0])))
    in_caud = ((lx - caud_c[0]) / caud_r[0]) ** 2 + ((ly - caud_c[1]) / caud_r[1]) ** 2 \
        + ((lz - caud_c[2]) / caud_r[2]) ** 2 < 1.0
    ph = phi[~in_caud]
    theta_r, theta_m, theta_l = (float(np.quantile(ph, q)) for q in
                                 (U(0.26, 0.34), U(0.56, 0.64), U(0.78, 0.84)))
    rad = np.hypot(lx - ivc[0], ly - ivc[1])

    def reach(angle):  # radial extent of the liver from the IVC axis along an azimuth
        sel = np.abs(phi - angle) < 10.0
        return float(np.quantile(rad[sel], 0.9)) if sel.sum() > 20 else 40.0

    z_q = np.quantile(lz, [0.15, 0.5, 0.88])

    # umbilical fissure (ligamentum teres): a fat cleft in the left vein plane, from the
    # liver's inferior-anterior edge inward, between segment IV and segments III/II
    b = g.box((-1e4, -1e4, -1e4), (1e4, 1e4, float(z_q[1]) + vr.uniform(0.0, 0.1) * L))
    if b is not None:
        x, y, z = g.coords(b)
        ddx, ddy = x[:, :, 0] - np.float32(ivc[0]), y[:, :, 0] - np.float32(ivc[1])
        a = math.radians(theta_l)
        along = ddx * np.float32(math.cos(a)) + ddy * np.float32(math.sin(a))
        across = -ddx * np.float32(math.sin(a)) + ddy * np.float32(math.cos(a))
        cleft = (np.abs(across) < np.float32(0.5 * vr.uniform(2.5, 3.5))) \
            & (along > np.float32(vr.uniform(0.45, 0.65) * reach(theta_l)))
        cv.paint(b, cleft[:, :, None] & cv.liver[b], Tissue.FAT)

    # ---- gallbladder under segments IV/V, along Cantlie's line
    if rng.random() < 0.75:
        a = math.radians(theta_m)
        dist = 0.7 * reach(theta_m)
        gb_c = (ivc[0] + dist * math.cos(a), ivc[1] + dist * math.sin(a), float(z_q[0]) + U(-5.0, 10.0))
        gb_r = (U(18.0, 25.0), U(11.0, 15.0), U(14.0, 22.0))
        b = _ellipsoid_box(g, gb_c, gb_r)
        if b is not None:
            e2 = _ellipsoid_e2(g, b, gb_c, gb_r, a)
            cv.paint(b, (e2 < 1.0) & abdomen[b], Tissue.GALLBLADDER)

    # ---- thorax above the diaphragm: diaphragm muscle, lung bases, heart
    zc = g.z[None, None, :]
    thorax = cavity & (zc >= z_diaph[:, :, None] - 1.5)
    cv.tissue[thorax] = Tissue.LUNG
    cv.tissue[thorax & (zc < z_diaph[:, :, None] + 3.5)] = Tissue.MUSCLE
    cv.liver[thorax] = False
    hc = (cx - U(0.0, 0.2) * A_c, cy + U(0.15, 0.35) * B_c, z_top + U(35.0, 55.0))
    hr = (U(50.0, 65.0), U(40.0, 50.0), U(45.0, 60.0))
    b = _ellipsoid_box(g, hc, hr)
    if b is not None:
        heart = (_ellipsoid_e2(g, b, hc, hr, U(-0.5, 0.0)) < 1.0) & thorax[b] \
            & (g.coords(b)[2] > z_diaph[b[:2]][:, :, None] + 3.5)
        cv.paint(b, heart, Tissue.HEART)

    # ---- great vessels (full height), spine, paraspinal and psoas muscles
    full_z = (-1.0, cover + 1.0)
    b = g.box((ivc[0] - ivc_r[0], ivc[1] - ivc_r[1], full_z[0]), (ivc[0] + ivc_r[0], ivc[1] + ivc_r[1], z_top + 25.0))
    if b is not None:
        x, y, _ = g.coords(b)
        m = (((x - ivc[0]) / ivc_r[0]) ** 2 + ((y - ivc[1]) / ivc_r[1]) ** 2 < 1.0) & body[b]
        cv.paint(b, m, Tissue.IVC)
    b = g.box((aorta[0] - aorta_r, aorta[1] - aorta_r, full_z[0]), (aorta[0] + aorta_r, aorta[1] + aorta_r, full_z[1]))
    if b is not None:
        x, y, _ = g.coords(b)
        cv.paint(b, ((x - aorta[0]) ** 2 + (y - aorta[1]) ** 2 < aorta_r ** 2) & body[b], Tissue.AORTA)
    _paint_spine(g, cv, rng, vb_x, vb_y, vb_rx, vb_ry, body, depth3, t_fat, z_bot, zk_r)

    # ---- ribs: oblique bone arcs in the muscle wall, upper abdomen and lower thorax
    _paint_ribs(g, cv, rng, cx, cy, depth3, t_fat, t_mus, z_bot, cover)

    # ---- Couinaud segments of the final liver
    couinaud = np.zeros(g.shape, np.uint8)
    I, J, K = np.nonzero(cv.liver)
    px, py, pz = g.x[I], g.y[J], g.z[K]
    pphi = _unwrap_deg(np.degrees(np.arctan2(py - ivc[1], px - ivc[0])))
    sector = np.digitize(pphi, [theta_r, theta_m, theta_l])
    seg = np.zeros(I.size, np.uint8)
    z_p = float(z_q[1]) + U(-0.05, 0.05) * L
    sup_inf = {0: (8, 7), 1: (9, 6), 2: (4, 5), 3: (2, 3)}    # sector -> (superior, inferior)
    for s_idx, (sup, inf) in sup_inf.items():
        sel = sector == s_idx
        if not sel.any():
            continue
        if s_idx == 3:  # II/III: oblique plane, II postero-superior, III antero-inferior
            coord = (pz[sel] - z_p) - 0.7 * (py[sel] - float(np.median(py[sel])))
            split = float(np.quantile(coord, U(0.4, 0.6)))
        else:
            coord = pz[sel]
            split = float(np.clip(z_p, *np.quantile(coord, [0.15, 0.85])))
        seg[sel] = np.where(coord > split, sup, inf)
    caud = (((px - caud_c[0]) / caud_r[0]) ** 2 + ((py - caud_c[1]) / caud_r[1]) ** 2
            + ((pz - caud_c[2]) / caud_r[2]) ** 2) < 1.0
    seg[caud] = 1
    couinaud[I, J, K] = seg

    # ---- hepatic veins (in the three vein planes) and portal vein (to every segment's centre)
    tubes_hv, tubes_pv = [], []
    z_conf = float(z_q[2])
    for ang in (theta_r, theta_m, theta_l):
        a, ext = math.radians(ang), reach(ang)
        d = np.array([math.cos(a), math.sin(a), 0.0])
        p0 = np.array([ivc[0], ivc[1], z_conf])
        p1 = p0 + 0.45 * ext * d + np.array([0, 0, -0.15 * L])
        p2 = p0 + 0.95 * ext * d + np.array([0, 0, -U(0.4, 0.55) * L])
        rv = U(4.5, 6.5)
        tubes_hv += [(p0, p1, rv, 0.65 * rv), (p1, p2, 0.65 * rv, 0.55 * rv)]
        # tributaries in the vein plane, down to the liver's inferior part
        near = np.abs(phi - ang) < 4.0
        if near.sum() > 20:
            zn, rn = lz[near], rad[near]
            for qlo, qhi in ((0.0, 0.03), (0.06, 0.14), (0.18, 0.3), (0.35, 0.5), (0.9, 0.98)):
                zt = float(np.quantile(zn, vr.uniform(qlo, qhi)))
                at = np.abs(zn - zt) <= 0.6 * sz
                if at.sum() < 3:
                    continue
                rt_ = float(np.quantile(rn[at], vr.uniform(0.3, 0.7)))
                q1 = np.array([ivc[0], ivc[1], zt]) + rt_ * d
                q0 = p1 + vr.uniform(0.2, 0.9) * (p2 - p1)
                tubes_hv.append((q0, q1, max(0.65 * rv, 3.5), 3.0))
    centroids = {}
    for code in range(1, 10):
        sel = seg == code
        if sel.any():
            centroids[code] = np.array([px[sel].mean(), py[sel].mean(), pz[sel].mean()])
    a_h = math.radians(U(80.0, 100.0))
    hil = np.array([ivc[0] + U(28.0, 38.0) * math.cos(a_h), ivc[1] + U(28.0, 38.0) * math.sin(a_h), z_p])
    trunk_end = hil + np.array([-U(10.0, 20.0), U(15.0, 30.0), -U(45.0, 60.0)])
    rt = U(6.0, 8.0)
    tubes_pv.append((trunk_end, hil, rt, rt))
    a = math.radians(theta_r)
    rp = np.array([ivc[0] + 0.4 * reach(theta_r) * math.cos(a), ivc[1] + 0.4 * reach(theta_r) * math.sin(a), z_p])
    a = math.radians(theta_l)
    lp = np.array([ivc[0] + 0.45 * reach(theta_l) * math.cos(a), ivc[1] + 0.45 * reach(theta_l) * math.sin(a), z_p])
    tubes_pv += [(hil, rp, 0.75 * rt, 0.65 * rt), (hil, lp, 0.6 * rt, 0.5 * rt)]
    for code, c in centroids.items():
        start = hil if code == 1 else (rp if code in (6, 7, 8, 9) else lp)
        r0 = 0.35 * rt if code == 1 else 0.45 * rt
        tubes_pv.append((start, c, r0, 0.3 * rt))
    rmin = 0.7 * vox
    hv_box, hv = _tubes(g, tubes_hv, rmin)
    if hv_box is not None:
        cv.paint(hv_box, hv & cv.liver[hv_box], Tissue.HEPATIC_VEIN, keep_liver=True)
    pv_box, pv = _tubes(g, tubes_pv, rmin)
    if pv_box is not None:
        cv.paint(pv_box, pv & cv.liver[pv_box], Tissue.PORTAL_VEIN, keep_liver=True)
        # the trunk entering the liver at the hilum, outside the liver
        tb, trunk = _tubes(g, tubes_pv[:1], rmin)
        if tb is not None:
            cv.paint(tb, trunk & ~cv.liver[tb] & abdomen[tb], Tissue.PORTAL_VEIN,
                     only=(Tissue.FAT, Tissue.BOWEL, Tissue.GAS, Tissue.STOMACH_WALL, Tissue.STOMACH_CONTENT))

    # ---- tumours (hypo-dense, inside the liver)
    tumour_id = np.zeros(g.shape, np.uint8)
    n_tum = int(rng.integers(0, 5))
    tumours = _place_tumours(g, cv, rng, n_tum, tumour_id)

    label = np.zeros(g.shape, np.uint8)
    label[cv.liver] = 1
    label[(tumour_id > 0) & cv.liver] = 2
    vessels = np.isin(cv.tissue, (Tissue.PORTAL_VEIN, Tissue.HEPATIC_VEIN)).astype(np.uint8)
    info = {
        "body_width_mm": round(float(width), 1), "body_depth_mm": round(float(depth), 1),
        "liver_z_mm": (round(float(z_bot), 1), round(float(z_top), 1)),
        "ivc_xy_mm": (round(float(ivc[0]), 1), round(float(ivc[1]), 1)),
        "hepatic_vein_planes_deg": (round(theta_r, 1), round(theta_m, 1), round(theta_l, 1)),
        "portal_plane_z_mm": round(z_p, 1), "tumours": tumours,
    }
    return Anatomy(tissue=cv.tissue, tumour_id=tumour_id, label=label, couinaud=couinaud,
                   vessels=vessels, affine=g.affine(), spacing=spacing, info=info)


def _unwrap_deg(phi):
    """Azimuth around the IVC in degrees, 0 = patient's right, 90 = anterior, unwrapped to
    (-135, 225] so that the left lobe (about 180) is contiguous."""
    return np.where(phi <= -135.0, phi + 360.0, phi)


def _liver_points(g, liver, rng, max_points):
    I, J, K = np.nonzero(liver)
    if I.size == 0:
        raise RuntimeError("phantom liver is empty; the field of view is too small for the anatomy")
    if I.size > max_points:
        keep = rng.choice(I.size, max_points, replace=False)
        keep.sort()
        I, J, K = I[keep], J[keep], K[keep]
    return g.x[I].astype(np.float64), g.y[J].astype(np.float64), g.z[K].astype(np.float64)


def _tubes(g, tubes, rmin):
    """Union of tapered tubes ``(p0, p1, r0, r1)``, on the bounding box of them all."""
    boxes = []
    for p0, p1, r0, r1 in tubes:
        r = max(r0, r1, rmin)
        boxes.append(g.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r))
    box = _union_box(boxes)
    if box is None:
        return None, None
    mask = np.zeros(tuple(s.stop - s.start for s in box), bool)
    for (p0, p1, r0, r1), b in zip(tubes, boxes):
        if b is None:
            continue
        d2, t = _segment_dist2(g, b, p0, p1)
        r = np.maximum(np.float32(r0) + (np.float32(r1) - np.float32(r0)) * t, np.float32(rmin))
        sub = tuple(slice(b[a].start - box[a].start, b[a].stop - box[a].start) for a in range(3))
        mask[sub] |= d2 < r * r
    return box, mask


def _place_tumours(g, cv, rng, n, tumour_id):
    """Paint ``n`` lobulated ellipsoidal tumours centred deep enough inside the liver."""
    if n == 0:
        return []
    # distance to the liver surface on a coarse (>= 3 mm) grid, to pick centres
    step = tuple(max(1, int(round(3.0 / s))) for s in g.spacing)
    coarse = cv.liver[::step[0], ::step[1], ::step[2]]
    dist = ndimage.distance_transform_edt(coarse, sampling=[s * k for s, k in zip(g.spacing, step)])
    cand = np.argwhere(dist > 6.0)
    out = []
    for k in range(1, n + 1):
        if cand.size == 0:
            break
        ci = cand[rng.integers(cand.shape[0])]
        d = float(dist[tuple(ci)])
        r = min(math.exp(rng.uniform(math.log(6.0), math.log(32.0))), d / 0.7)
        centre = (float(g.x[ci[0] * step[0]]), float(g.y[ci[1] * step[1]]), float(g.z[ci[2] * step[2]]))
        radii = tuple(r * rng.uniform(0.8, 1.2) for _ in range(3))
        b = _ellipsoid_box(g, centre, radii, pad=2.0)
        e2 = _ellipsoid_e2(g, b, centre, radii, rng.uniform(0, np.pi))
        lob = _smooth_field(rng, e2.shape, g.spacing, max(6.0, 0.6 * r))
        m = (e2 + 0.15 * lob < 1.0) & cv.liver[b]
        cv.paint(b, m, Tissue.TUMOUR, keep_liver=True)
        tumour_id[b][m] = k
        out.append({"centre_mm": tuple(round(c, 1) for c in centre), "radius_mm": round(r, 1),
                    "voxels": int(m.sum())})
    return out


def _paint_spine(g, cv, rng, vb_x, vb_y, vb_rx, vb_ry, body, depth3, t_fat, z_bot, zk_r):
    U = rng.uniform
    canal_r = U(8.0, 10.0)
    canal_y = vb_y - vb_ry - canal_r - 1.0
    x, y, z = g.coords((slice(None), slice(None), slice(None)))
    dx = x[:, :, 0] - np.float32(vb_x)                                   # (X, 1)
    # paraspinal muscles (all levels) beside the spinous process
    for side in (-1.0, 1.0):
        pc = (vb_x + side * U(30.0, 38.0), canal_y - U(20.0, 28.0))
        pr = (U(22.0, 28.0), U(18.0, 24.0))
        b = g.box((pc[0] - pr[0], pc[1] - pr[1], -1.0), (pc[0] + pr[0], pc[1] + pr[1], 1e4))
        if b is not None:
            bx, by, _ = g.coords(b)
            m = (((bx - pc[0]) / pr[0]) ** 2 + ((by - pc[1]) / pr[1]) ** 2 < 1.0) \
                & (depth3[b] > t_fat[b[:2]][:, :, None]) & body[b]
            cv.paint(b, m, Tissue.MUSCLE)
    # psoas muscles, growing towards the pelvis below the kidneys' upper half
    z_ps = zk_r + U(10.0, 30.0)
    r_ps = U(14.0, 22.0)
    b = g.box((vb_x - 80.0, vb_y - 40.0, -1.0), (vb_x + 80.0, vb_y + 40.0, z_ps))
    if b is not None:
        bx, by, bz = g.coords(b)
        rr = np.float32(r_ps) * np.clip((z_ps - bz) / 80.0, 0.15, 1.0)
        for side in (-1.0, 1.0):
            px = vb_x + side * (vb_rx + 0.8 * r_ps)
            m = ((bx - px) ** 2 + ((by - vb_y) / 1.2) ** 2 < rr ** 2) & body[b]
            cv.paint(b, m, Tissue.MUSCLE)
    # vertebrae: discs every 28-36 mm
    period, disc_h = U(28.0, 36.0), U(7.0, 10.0)
    phase = U(0.0, period)
    is_disc = ((g.z - phase) % period) < disc_h                          # (Z,)
    e2 = (dx / vb_rx) ** 2 + ((y[:, :, 0] - vb_y) / vb_ry) ** 2          # (X, Y)
    vb = e2 < 1.0
    shell = vb & (e2 > (1.0 - 2.5 / vb_ry) ** 2)
    canal = dx ** 2 + (y[:, :, 0] - canal_y) ** 2 < canal_r ** 2
    ring = (dx ** 2 + (y[:, :, 0] - canal_y) ** 2 < (canal_r + 5.0) ** 2) & ~canal \
        & (y[:, :, 0] < canal_y + 0.5 * canal_r)
    spinous = (np.abs(dx) < 4.0) & (y[:, :, 0] < canal_y - canal_r) \
        & (y[:, :, 0] > canal_y - canal_r - U(30.0, 40.0))
    transverse = (np.abs(y[:, :, 0] - canal_y - 2.0) < 4.0) & (np.abs(dx) > canal_r) \
        & (np.abs(dx) < canal_r + U(25.0, 35.0))
    # height within the vertebra (0 at the disc below, 1 at the disc above): the posterior
    # elements occupy only part of each vertebra's height
    u = (((g.z - phase) % period) - disc_h) / (period - disc_h)
    vert = ~is_disc
    t = cv.tissue
    parts = ((vb, Tissue.BONE_CANCELLOUS, Tissue.DISC, vert),
             (shell, Tissue.BONE_CORTICAL, Tissue.DISC, vert),
             (ring, Tissue.BONE_CORTICAL, None, vert & (u > 0.05) & (u < 0.95)),
             (spinous, Tissue.BONE_CORTICAL, None, vert & (u > 0.15) & (u < 0.85)),
             (transverse, Tissue.BONE_CORTICAL, None, vert & (u > 0.3) & (u < 0.65)),
             (canal, Tissue.CSF, Tissue.CSF, vert))
    for m2, cls_v, cls_d, zsel in parts:
        ii, jj = np.nonzero(m2)
        if ii.size == 0:
            continue
        sub = t[ii, jj, :]                                                # (n, Z)
        keep = body[ii, jj, :]
        sub[keep & zsel[None, :]] = cls_v
        if cls_d is not None:
            sub[keep & is_disc[None, :]] = cls_d
        t[ii, jj, :] = sub
        cv.liver[ii, jj, :] = False


def _paint_ribs(g, cv, rng, cx, cy, depth3, t_fat, t_mus, z_bot, cover):
    U = rng.uniform
    lo = (t_fat + 0.1 * t_mus)[:, :, None]
    hi = (t_fat + 0.95 * t_mus)[:, :, None]
    z_low = z_bot + U(-5.0, 30.0)                      # posterior end of the lowest (12th) rib
    gap = U(22.0, 30.0)
    ribs = []
    zr, k = z_low, 0
    while zr < cover + 160.0:
        end = (U(0.3, 0.42) if k == 0 else U(0.5, 0.62) if k == 1 else U(0.72, 0.9)) * np.pi
        ribs.append((zr, U(100.0, 150.0), end, max(U(4.0, 6.0), 0.55 * g.spacing[2]), U(-4.0, 4.0)))
        zr += gap * U(0.9, 1.1)
        k += 1
    z_min = min(r[0] - r[1] * (r[2] / np.pi) - r[3] for r in ribs)
    kb = g.box((-1e4, -1e4, z_min), (1e4, 1e4, 1e4))
    if kb is None:
        return
    ring = (depth3[kb] > lo) & (depth3[kb] < hi)
    I, J, K = np.nonzero(ring)
    K = K + kb[2].start
    X2 = g.x[I] - np.float32(cx)
    Y2 = g.y[J] - np.float32(cy)
    psi = np.abs(np.arctan2(X2, -Y2))                  # 0 posterior midline, pi anterior midline
    side = X2 > 0
    zz = g.z[K]
    bone = np.zeros(I.size, bool)
    psi0 = np.float32(0.18 * np.pi)
    for z0, drop, end, h, asym in ribs:
        zc = z0 + np.where(side, asym, -asym) - drop * (psi - psi0) / np.pi
        bone |= (psi >= psi0) & (psi <= end) & (np.abs(zz - zc) < h)
    cv.tissue[I[bone], J[bone], K[bone]] = Tissue.RIB
    cv.liver[I[bone], J[bone], K[bone]] = False


# --------------------------------------------------------------------------- CT rendering

#: Per-case HU ranges of each tissue (uniform draws), and the amplitude of its texture (HU).
_CT_HU = {
    Tissue.AIR: ((-1000, -1000), 0.0), Tissue.FAT: ((-120, -80), 8.0), Tissue.MUSCLE: ((40, 60), 5.0),
    Tissue.BONE_CANCELLOUS: ((330, 480), 40.0), Tissue.BONE_CORTICAL: ((700, 1000), 60.0),
    Tissue.RIB: ((500, 800), 50.0), Tissue.DISC: ((70, 100), 5.0), Tissue.CSF: ((5, 20), 3.0),
    Tissue.LUNG: ((-880, -830), 25.0), Tissue.HEART: ((100, 160), 10.0),
    Tissue.LIVER: ((90, 130), 5.0), Tissue.TUMOUR: ((20, 70), 8.0),
    Tissue.PORTAL_VEIN: ((150, 220), 5.0), Tissue.HEPATIC_VEIN: ((150, 220), 5.0),
    Tissue.IVC: ((110, 170), 8.0), Tissue.AORTA: ((150, 250), 5.0), Tissue.SPLEEN: ((0, 0), 4.0),
    Tissue.KIDNEY_CORTEX: ((150, 200), 6.0), Tissue.KIDNEY_MEDULLA: ((90, 140), 8.0),
    Tissue.GALLBLADDER: ((0, 20), 3.0), Tissue.STOMACH_WALL: ((40, 70), 5.0),
    Tissue.STOMACH_CONTENT: ((0, 30), 8.0), Tissue.BOWEL: ((20, 50), 15.0),
    Tissue.GAS: ((-1000, -950), 10.0),
}


def ct_intensities(anatomy: Anatomy, seed: int) -> np.ndarray:
    """Render ``anatomy`` as CT: per-case HU per tissue (per tumour), smooth texture,
    partial-volume Gaussian blur (sigma 0.5-1 voxel), then Gaussian noise (sigma 8-25 HU).
    Returns float32 HU clipped to [-1024, 3071]."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    lut = np.zeros(N_TISSUES, np.float32)
    amp = np.zeros(N_TISSUES, np.float32)
    for tissue, ((a, b), texture) in _CT_HU.items():
        lut[tissue] = rng.uniform(a, b)
        amp[tissue] = texture
    lut[Tissue.SPLEEN] = lut[Tissue.LIVER] + rng.uniform(-5.0, 18.0)
    lut[Tissue.HEPATIC_VEIN] = min(lut[Tissue.HEPATIC_VEIN], lut[Tissue.PORTAL_VEIN] + 20.0)
    shape, spacing = anatomy.tissue.shape, anatomy.spacing
    hu = lut[anatomy.tissue]
    n_tum = int(anatomy.tumour_id.max())
    if n_tum:
        tum_lut = np.zeros(n_tum + 1, np.float32)
        # hypo-dense: 20-70 HU and at least 25 HU below the parenchyma
        tum_lut[1:] = rng.uniform(20.0, min(70.0, lut[Tissue.LIVER] - 25.0), size=n_tum)
        m = anatomy.tumour_id > 0
        hu[m] = tum_lut[anatomy.tumour_id[m]]
    hu += amp[anatomy.tissue] * _smooth_field(rng, shape, spacing, rng.uniform(8.0, 14.0))
    # sigma 0.5-1 voxel; on coarse grids (forced small shapes) capped at 3 mm in-plane and
    # 5 mm along z, so that thick slices are not smeared over several centimetres
    s_xy = min(rng.uniform(0.5, 1.0), max(0.3, 3.0 / min(spacing[:2])))
    s_z = min(rng.uniform(0.5, 1.0), max(0.3, 5.0 / spacing[2]))
    ndimage.gaussian_filter(hu, sigma=(s_xy, s_xy, s_z), output=hu, truncate=3.0)
    hu += np.float32(rng.uniform(8.0, 25.0)) * rng.standard_normal(shape, dtype=np.float32)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu


def generate_case(seed: int, *, shape=None, spacing=None, case_id=None) -> PhantomCase:
    """One phantom CT case. ``shape``/``spacing`` ``None`` are drawn from the seed (square grid
    of 160-224 voxels at 1.6-2.4 mm, 40-64 slices at 2.5-5 mm); a forced ``shape=(X, Y, Z)``
    gets the spacing that fits the body (e.g. ``(512, 512, 100)`` for benchmarks). Same seed,
    same arrays."""
    anatomy = build_anatomy(seed, shape=shape, spacing=spacing)
    image = ct_intensities(anatomy, seed)
    return PhantomCase(image=image, label=anatomy.label, couinaud=anatomy.couinaud,
                       vessels=anatomy.vessels, affine=anatomy.affine, spacing=anatomy.spacing,
                       case_id=case_id if case_id is not None else f"phantom-{seed}",
                       tissue=anatomy.tissue)


# --------------------------------------------------------------------------- MRI rendering

#: Liver parenchyma intensity (arbitrary units, uniform per case): the scale of every case.
_MRI_LIVER = (350.0, 550.0)

#: Per-case intensity of each tissue as a multiple of the liver's (uniform draws), and the
#: amplitude of its texture (same multiple). Contrast-enhanced T1-weighted gradient echo in
#: the portal-venous phase with spectral fat suppression, as the dynamic contrast-enhanced
#: liver protocols acquire it (3-D T1 GRE such as LAVA, VIBE, THRIVE): fat is dark, not
#: iso-intense to the liver.
_MRI_T1PV = {
    Tissue.AIR: ((0.0, 0.0), 0.0), Tissue.FAT: ((0.25, 0.45), 0.03), Tissue.MUSCLE: ((0.45, 0.6), 0.02),
    Tissue.BONE_CANCELLOUS: ((0.4, 0.6), 0.05), Tissue.BONE_CORTICAL: ((0.02, 0.08), 0.01),
    Tissue.RIB: ((0.1, 0.3), 0.02), Tissue.DISC: ((0.3, 0.45), 0.02), Tissue.CSF: ((0.1, 0.2), 0.01),
    Tissue.LUNG: ((0.03, 0.08), 0.01), Tissue.HEART: ((1.3, 1.7), 0.05),
    Tissue.LIVER: ((1.0, 1.0), 0.02), Tissue.TUMOUR: ((0.3, 0.65), 0.03),
    Tissue.PORTAL_VEIN: ((1.4, 1.9), 0.03), Tissue.HEPATIC_VEIN: ((1.3, 1.8), 0.03),
    Tissue.IVC: ((1.3, 1.8), 0.04), Tissue.AORTA: ((1.4, 2.0), 0.03), Tissue.SPLEEN: ((0.85, 1.1), 0.02),
    Tissue.KIDNEY_CORTEX: ((1.3, 1.7), 0.03), Tissue.KIDNEY_MEDULLA: ((1.0, 1.4), 0.04),
    Tissue.GALLBLADDER: ((0.1, 0.3), 0.01), Tissue.STOMACH_WALL: ((0.7, 1.0), 0.03),
    Tissue.STOMACH_CONTENT: ((0.1, 0.4), 0.04), Tissue.BOWEL: ((0.4, 0.8), 0.1),
    Tissue.GAS: ((0.0, 0.03), 0.005),
}

#: Peak deviation of the bias field from 1 over the body (uniform per case), and its
#: correlation length (mm).
_MRI_BIAS_PEAK = (0.15, 0.3)
_MRI_BIAS_CORR = (250.0, 400.0)


def mri_bias_field(anatomy: Anatomy, seed: int) -> np.ndarray:
    """The multiplicative receive-coil bias field of case ``seed`` (float32, ``anatomy``'s
    shape), as :func:`mri_intensities` applies it.

    A smooth random field (correlation length 250-400 mm, so one or two gentle undulations
    across the body) scaled so that over the body (tissue other than air) its mean is 1 and
    its largest deviation from 1 is a per-case 0.15-0.3: the field stays within 0.7-1.3 on
    the body (clipped to 0.5-1.5 in the air around it). Own stream ``SeedSequence([seed, 4])``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))
    peak = rng.uniform(*_MRI_BIAS_PEAK)
    f = _smooth_field(rng, anatomy.tissue.shape, anatomy.spacing, rng.uniform(*_MRI_BIAS_CORR))
    body = anatomy.tissue != Tissue.AIR
    vals = f[body] if body.any() else f.ravel()
    mean = np.float32(vals.mean())
    dev = float(np.abs(vals - mean).max()) or 1.0
    f -= mean
    f *= np.float32(peak / dev)
    f += np.float32(1.0)
    np.clip(f, 0.5, 1.5, out=f)
    return f


def mri_intensities(anatomy: Anatomy, seed: int) -> np.ndarray:
    """Render ``anatomy`` as a portal-venous-phase T1-weighted-like MRI (BADA's data):
    float32, arbitrary positive units (no HU), the same anatomy as :func:`ct_intensities`.

    Steps: per-case intensity per tissue (per tumour), a smooth texture, partial-volume
    Gaussian blur (sigma 0.5-1 voxel, capped as for CT), a multiplicative bias field
    (:func:`mri_bias_field`, 0.7-1.3 over the body), then Rician noise: the magnitude of the
    signal plus complex Gaussian noise of sigma = liver / SNR with SNR 20-40, so the air
    reads sigma * sqrt(pi / 2) on average (about 1-3 % of the liver), never exactly 0.
    Stream ``SeedSequence([seed, 3])`` (the bias field has its own, n = 4).

    Intensities, per case, as multiples of the liver (liver itself uniform in 350-550):

    ===============================  ==========  ==============================================
    tissue                           x liver     why (T1 + gadolinium, portal-venous phase)
    ===============================  ==========  ==============================================
    liver                            1           moderately bright, enhanced parenchyma
    portal vein / hepatic veins      1.4-1.9 /   enhanced blood (hepatic veins at most 0.1
                                     1.3-1.8     above the portal vein)
    IVC / aorta / heart (blood)      1.3-1.8 /   enhanced blood pool
                                     1.4-2.0 /
                                     1.3-1.7
    tumour (each its own)            0.3-0.65    hypo-intense (metastasis-like washout)
    spleen                           0.85-1.1    homogeneous enhancement close to the liver
    kidney cortex / medulla          1.3-1.7 /   enhancing (nephrographic)
                                     1.0-1.4
    fat                              0.25-0.45   suppressed (fat-saturated DCE sequence;
                                                 incomplete, so not black)
    vertebral marrow                 0.4-0.6     fatty marrow, partly suppressed
    muscle / disc                    0.45-0.6 /  darker than liver on T1
                                     0.3-0.45
    stomach wall / content / bowel   0.7-1.0 /   enhancing mucosa; fluid dark on T1
                                     0.1-0.4 /
                                     0.4-0.8
    gallbladder (bile) / CSF         0.1-0.3 /   fluid, long T1
                                     0.1-0.2
    ribs / cortical bone             0.1-0.3 /   no signal from cortical bone
                                     0.02-0.08
    lung / gas / air                 0.03-0.08   no protons: noise floor only
                                     / 0-0.03 /
                                     0
    ===============================  ==========  ==============================================

    Texture amplitudes are 0.5-10 % of the liver (bowel the most). The result is clipped at 0
    (the magnitude image is non-negative anyway).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    liver = np.float32(rng.uniform(*_MRI_LIVER))
    lut = np.zeros(N_TISSUES, np.float32)
    amp = np.zeros(N_TISSUES, np.float32)
    for tissue, ((a, b), texture) in _MRI_T1PV.items():
        lut[tissue] = liver * rng.uniform(a, b)
        amp[tissue] = liver * texture
    lut[Tissue.HEPATIC_VEIN] = min(lut[Tissue.HEPATIC_VEIN], lut[Tissue.PORTAL_VEIN] + 0.1 * liver)
    shape, spacing = anatomy.tissue.shape, anatomy.spacing
    img = lut[anatomy.tissue]
    n_tum = int(anatomy.tumour_id.max())
    if n_tum:
        tum_lut = np.zeros(n_tum + 1, np.float32)
        lo, hi = _MRI_T1PV[Tissue.TUMOUR][0]
        tum_lut[1:] = liver * rng.uniform(lo, hi, size=n_tum)
        m = anatomy.tumour_id > 0
        img[m] = tum_lut[anatomy.tumour_id[m]]
    img += amp[anatomy.tissue] * _smooth_field(rng, shape, spacing, rng.uniform(8.0, 14.0))
    np.maximum(img, 0.0, out=img)
    s_xy = min(rng.uniform(0.5, 1.0), max(0.3, 3.0 / min(spacing[:2])))
    s_z = min(rng.uniform(0.5, 1.0), max(0.3, 5.0 / spacing[2]))
    ndimage.gaussian_filter(img, sigma=(s_xy, s_xy, s_z), output=img, truncate=3.0)
    img *= mri_bias_field(anatomy, seed)
    sigma = np.float32(liver / rng.uniform(20.0, 40.0))
    real = img + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    img = np.hypot(real, imag)
    del real, imag
    np.maximum(img, 0.0, out=img)
    return img.astype(np.float32, copy=False)


def generate_mri_case(seed: int, *, shape=None, spacing=None, case_id=None) -> PhantomCase:
    """One MRI-like phantom case (:func:`mri_intensities`): the anatomy, labels, Couinaud map
    and vessels of ``generate_case(seed, shape=shape, spacing=spacing)`` exactly, rendered as
    a portal-venous-phase T1-weighted image (float32, arbitrary units >= 0)."""
    anatomy = build_anatomy(seed, shape=shape, spacing=spacing)
    image = mri_intensities(anatomy, seed)
    return PhantomCase(image=image, label=anatomy.label, couinaud=anatomy.couinaud,
                       vessels=anatomy.vessels, affine=anatomy.affine, spacing=anatomy.spacing,
                       case_id=case_id if case_id is not None else f"phantom-mri-{seed}",
                       tissue=anatomy.tissue, modality="mri")


def couinaud_label(case) -> np.ndarray:
    """BADA's label map of ``case`` (a :class:`PhantomCase` or :class:`Anatomy`), uint8:
    0 background, 1..9 = Couinaud segments I, II, III, IVa, IVb, V, VI, VII, VIII
    (:data:`COUINAUD_NAMES`).

    Every liver voxel (``case.label > 0``) gets its segment and nothing else is labelled:
    BADA segments the whole liver, so a tumour voxel keeps the segment it lies in and an
    intrahepatic vessel voxel (hepatic or portal vein) the segment it runs through; the
    IVC, the gallbladder and the portal trunk outside the liver are background. The anatomy
    assigns a segment to every liver voxel, tumours and vessels included; should a liver
    voxel lack one, it takes the segment of the nearest segmented voxel.
    """
    liver = np.asarray(case.label) > 0
    seg = np.where(liver, np.asarray(case.couinaud), 0).astype(np.uint8)
    missing = liver & (seg == 0)
    if missing.any() and (seg > 0).any():
        idx = ndimage.distance_transform_edt(seg == 0, sampling=getattr(case, "spacing", None),
                                            return_distances=False, return_indices=True)
        seg[missing] = seg[tuple(i[missing] for i in idx)]
    return seg


# --------------------------------------------------------------------------- datasets

def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset written with ``seed`` (deterministic)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


#: MSD tasks the phantom writes (``write_dataset(layout="msd", task=...)``): file stem, the
#: task's ``dataset.json`` name and labels, and the modalities it may be rendered in.
#: Task03_Liver labels liver and tumour; Task08_HepaticVessel labels the hepatic and portal
#: veins and the tumours (MSD's own label names); both are CT tasks. ``"couinaud"`` is BADA's
#: liver-segment task (no MSD counterpart; written in the MSD layout): 0 background, 1..9 the
#: Couinaud segments I..VIII (:func:`couinaud_label`), in MRI (BADA's data) or CT.
MSD_TASKS = {
    "liver": {"stem": "liver", "name": "Liver", "task": "Task03_Liver",
              "labels": {"0": "background", "1": "liver", "2": "cancer"},
              "modalities": ("ct",)},
    "hepatic_vessel": {"stem": "hepaticvessel", "name": "HepaticVessel",
                       "task": "Task08_HepaticVessel",
                       "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
                       "modalities": ("ct",)},
    "couinaud": {"stem": "couinaud", "name": "LiverSegments",
                 "task": "Couinaud liver segments (BADA)",
                 "labels": {"0": "background", **{str(k): v for k, v in COUINAUD_NAMES.items()}},
                 "modalities": ("ct", "mri")},
}

#: ``dataset.json`` ``"modality"`` entry and description of each modality.
_MODALITY_META = {
    "ct": ("CT", "Synthetic abdominal CT phantom (keras-liver)"),
    "mri": ("MRI", "Synthetic abdominal MRI-like phantom, T1-weighted portal-venous phase "
                   "(keras-liver)"),
}


def task_label(case: PhantomCase, task: str = "liver") -> np.ndarray:
    """The label map of ``case`` for an MSD ``task`` (uint8): ``"liver"`` is the LiTS/Task03
    map (1 liver, 2 tumour); ``"hepatic_vessel"`` the Task08 map: 1 = hepatic or portal vein
    voxel (``case.vessels``), 2 = tumour (tumour wins where both hold), 0 elsewhere,
    liver parenchyma included; ``"couinaud"`` BADA's map (:func:`couinaud_label`: 1..9 =
    segments I..VIII over the whole liver, tumours and vessels included)."""
    if task not in MSD_TASKS:
        raise ValueError(f"unknown phantom task {task!r}; expected one of {sorted(MSD_TASKS)}")
    if task == "liver":
        return case.label
    if task == "couinaud":
        return couinaud_label(case)
    label = np.zeros(case.label.shape, np.uint8)
    label[np.asarray(case.vessels, dtype=bool)] = 1
    label[case.label == 2] = 2
    return label


def _write_case(img_path: str, lab_path: str, case_id: str, seed: int, shape, task: str,
                modality: str) -> None:
    """Generate one case and write its image and label files (one :func:`write_dataset` job)."""
    if modality == "ct":
        case = generate_case(seed, shape=shape, case_id=case_id)
        image = np.rint(case.image).astype(np.int16)
    else:
        case = generate_mri_case(seed, shape=shape, case_id=case_id)
        image = np.clip(np.rint(case.image), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    write_volume(img_path, image, case.affine)
    del image
    write_volume(lab_path, task_label(case, task), case.affine, dtype=np.uint8)


def default_workers(cases: int) -> int:
    """Processes :func:`write_dataset` uses by default: one per available CPU core, at most one
    per 10 cases (a process costs about half a second to start)."""
    return max(1, min(processes.available_cores(), int(cases) // 10))


def write_dataset(out_dir, cases: int = 10, *, layout: str = "lits", seed: int = 0,
                  shape=None, task: str = "liver", progress: bool = True,
                  modality: str = "ct", workers: int | None = None) -> list[tuple[str, str]]:
    """Write ``cases`` phantom cases under ``out_dir``; returns ``(image_path, label_path)`` pairs.

    Case ``i`` uses ``generate_case(case_seed(seed, i), shape=shape)``. Layouts:
    ``"lits"``: ``volume-{i}.nii.gz`` / ``segmentation-{i}.nii.gz``; ``"msd"``: the Medical
    Segmentation Decathlon layout of ``task`` (:data:`MSD_TASKS`): ``dataset.json``,
    ``imagesTr/{stem}_{i}.nii.gz``, ``labelsTr/{stem}_{i}.nii.gz`` — ``"liver"`` as
    Task03_Liver (``liver_{i}``: 1 liver, 2 tumour), ``"hepatic_vessel"`` as
    Task08_HepaticVessel (``hepaticvessel_{i}``: 1 vessel, 2 tumour; :func:`task_label`),
    ``"couinaud"`` as BADA's liver-segment task (``couinaud_{i}``: 0 background, 1..9 =
    segments I, II, III, IVa, IVb, V, VI, VII, VIII; :func:`couinaud_label`).

    ``modality``: ``"ct"`` (:func:`generate_case`; images int16 HU, ``dataset.json``
    modality ``{"0": "CT"}``) or ``"mri"`` (:func:`generate_mri_case`, the same anatomy per
    case; images uint16, the float intensities rounded, lossless to 0.5 units against a noise
    sigma of 9-28 units; modality ``{"0": "MRI"}``). Supported: the liver and hepatic_vessel
    tasks in CT only, the couinaud task (MSD layout) in CT or MRI; LiTS is the CT liver task.
    Other combinations raise ``ValueError`` naming them. Labels are uint8, with the image's
    affine. Files are written atomically.

    ``workers``: processes generating cases at once (default :func:`default_workers`); each case
    depends only on its seed, so the files are the same for any number of workers.

    Idempotent to the byte: nibabel (>= 3) writes gzip streams with mtime 0 and no file name,
    and ``dataset.json`` is written with sorted keys, so re-running with the same arguments
    rewrites byte-identical files.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown phantom layout {layout!r}; expected one of {LAYOUTS}")
    if task not in MSD_TASKS:
        raise ValueError(f"unknown phantom task {task!r}; expected one of {sorted(MSD_TASKS)}")
    if modality not in MODALITIES:
        raise ValueError(f"unknown phantom modality {modality!r}; expected one of {MODALITIES}")
    if layout == "lits" and task != "liver":
        raise ValueError(f"the LiTS layout holds the liver task only; write task {task!r} "
                         "with layout='msd'")
    if modality not in MSD_TASKS[task]["modalities"]:
        ok = sorted(t for t, v in MSD_TASKS.items() if modality in v["modalities"])
        raise ValueError(f"the phantom cannot write modality={modality!r} with task={task!r} "
                         f"(layout={layout!r}): task {task!r} is "
                         f"{'/'.join(m.upper() for m in MSD_TASKS[task]['modalities'])} only; "
                         f"modality {modality!r} writes task {' or '.join(map(repr, ok))} "
                         "with layout='msd'")
    if int(cases) != cases or cases < 0:
        raise ValueError(f"cases must be a non-negative integer; received cases={cases!r}")
    cases = int(cases)
    workers = default_workers(cases) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1; received workers={workers!r}")
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    msd = MSD_TASKS[task]
    if layout == "lits":
        names = [(f"volume-{i}.nii.gz", f"segmentation-{i}.nii.gz", f"volume-{i}") for i in range(cases)]
    else:
        stem = msd["stem"]
        names = [(f"imagesTr/{stem}_{i}.nii.gz", f"labelsTr/{stem}_{i}.nii.gz", f"{stem}_{i}")
                 for i in range(cases)]
    pairs = [(os.path.join(out_dir, img), os.path.join(out_dir, lab)) for img, lab, _ in names]
    jobs = [(*pairs[i], names[i][2], case_seed(seed, i), shape, task, modality)
            for i in range(cases)]
    from tqdm import tqdm

    bar = tqdm(total=cases, desc="phantom", unit="case", disable=not progress)
    with bar:
        if workers == 1 or cases <= 1:
            for job in jobs:
                _write_case(*job)
                bar.update()
        else:
            # spawn: a fresh interpreter (the caller may hold TensorFlow's threads); the
            # phantom itself needs only NumPy, SciPy and nibabel. One BLAS/OpenMP thread per
            # process (inherited from the environment at spawn): with their default of one
            # thread per core, two processes on 2 cores took 8.1 s for 40 cases against 5.1 s
            # for one process, and 3.6 s with one thread each.
            processes.run_spawned(_write_case, jobs, workers=workers,
                                  on_done=lambda i, _: bar.update(), blas_threads_one=True)
    if layout == "msd":
        meta = {
            "name": msd["name"],
            "description": f"{_MODALITY_META[modality][1]}, {msd['task']} layout",
            "reference": "keras_liver.data.phantom",
            "licence": "CC-0",
            "release": "1.0",
            "tensorImageSize": "3D",
            "modality": {"0": _MODALITY_META[modality][0]},
            "labels": dict(msd["labels"]),
            "numTraining": cases,
            "numTest": 0,
            "training": [{"image": f"./{n[0]}", "label": f"./{n[1]}"} for n in names],
            "test": [],
        }
        tmp = os.path.join(out_dir, ".dataset.json.partial")
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, os.path.join(out_dir, "dataset.json"))
    return pairs
