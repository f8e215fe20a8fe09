"""Synthetic abdominal CT phantom (keras_liver.data.phantom): geometry, labels, HU, I/O."""
import hashlib
import json
import os

import numpy as np
import pytest
from scipy import ndimage

from keras_liver.data import phantom as P
from keras_liver.data.phantom import Tissue
from keras_liver.data.volumes import read_volume

TINY = (96, 96, 20)
DEFAULT_SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def default_cases():
    return [P.generate_case(s) for s in DEFAULT_SEEDS]


def _median(case, mask):
    assert mask.any()
    return float(np.median(case.image[mask]))


def _centroid(mask):
    return np.array([ax.mean() for ax in np.nonzero(mask)])


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_arrays_and_different_seed_differs():
    a, b, c = P.generate_case(7, shape=TINY), P.generate_case(7, shape=TINY), P.generate_case(8, shape=TINY)
    for name in ("image", "label", "couinaud", "vessels", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.spacing == b.spacing
    assert a.spacing != c.spacing or not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.label, c.label)


def test_default_case_is_deterministic(default_cases):
    again = P.generate_case(DEFAULT_SEEDS[1])
    np.testing.assert_array_equal(again.image, default_cases[1].image)
    np.testing.assert_array_equal(again.couinaud, default_cases[1].couinaud)


def test_anatomy_does_not_depend_on_intensity_rendering(default_cases):
    """The tissue map / labels come from build_anatomy alone (an MRI variant can reuse them)."""
    anat = P.build_anatomy(DEFAULT_SEEDS[0])
    case = default_cases[0]
    np.testing.assert_array_equal(anat.tissue, case.tissue)
    np.testing.assert_array_equal(anat.label, case.label)
    assert anat.tissue.dtype == np.uint8 and anat.tissue.max() < len(Tissue)


# --------------------------------------------------------------------------- grid

def test_default_grid_ranges_and_affine(default_cases):
    for case in default_cases:
        nx, ny, nz = case.image.shape
        sx, sy, sz = case.spacing
        assert nx == ny and 160 <= nx <= 224 and 40 <= nz <= 64
        assert sx == sy and 1.6 <= sx <= 2.4 and 2.5 <= sz <= 5.0
        assert case.image.dtype == np.float32
        assert case.label.dtype == case.couinaud.dtype == case.vessels.dtype == np.uint8
        assert case.label.shape == case.couinaud.shape == case.vessels.shape == case.image.shape
        assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
        np.testing.assert_allclose(np.abs(np.diag(case.affine)[:3]), case.spacing)
        # the body (HU > -500) is 300-380 mm wide (+-5 % for the outline's irregularity) and
        # fits inside the field of view
        body = case.image[:, :, nz // 2] > -500
        cols = np.flatnonzero(body.any(axis=1))
        width = (cols[-1] - cols[0] + 1) * sx
        assert 280 <= width <= 400, width
        assert cols[0] > 0 and cols[-1] < nx - 1
        rows = np.flatnonzero(body.any(axis=0))
        assert rows[0] > 0 and rows[-1] < ny - 1


@pytest.mark.parametrize("shape", [TINY, (128, 112, 24)])
def test_forced_shape(shape):
    case = P.generate_case(11, shape=shape)
    assert case.image.shape == case.label.shape == shape
    assert set(np.unique(case.label)) <= {0, 1, 2} and (case.label == 1).any()
    assert np.count_nonzero(np.bincount(case.couinaud.ravel(), minlength=10)[1:]) == 9
    # the spacing makes the field of view hold the body
    assert shape[0] * case.spacing[0] >= 300


def test_forced_shape_and_spacing():
    case = P.generate_case(3, shape=(150, 150, 40), spacing=(2.5, 2.5, 6.0))
    assert case.image.shape == (150, 150, 40) and case.spacing == (2.5, 2.5, 6.0)
    np.testing.assert_allclose(np.diag(case.affine)[:3], (-2.5, -2.5, 6.0))
    assert (case.label == 1).any()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        P.generate_case(0, shape=(16, 16, 4))
    with pytest.raises(ValueError, match="spacing"):
        P.generate_case(0, spacing=(1.0, -1.0, 2.0))
    with pytest.raises(ValueError, match="field of view"):
        P.generate_case(0, shape=(64, 64, 20), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="seed"):
        P.generate_case(-1)


# --------------------------------------------------------------------------- labels

def test_labels_tumours_and_couinaud_cover_the_liver(default_cases):
    n_tumour_cases = 0
    for case in default_cases:
        assert set(np.unique(case.label)) <= {0, 1, 2}
        liver = case.label > 0
        np.testing.assert_array_equal(case.couinaud > 0, liver)
        counts = np.bincount(case.couinaud.ravel(), minlength=10)
        assert counts.size == 10 and (counts[1:] > 0).all(), counts
        tumour = case.label == 2
        if tumour.any():
            n_tumour_cases += 1
            assert (case.tissue[tumour] == Tissue.TUMOUR).all()
            assert (case.couinaud[tumour] > 0).all()
        assert not ((case.tissue == Tissue.TUMOUR) & ~liver).any()
        # LiTS convention: intrahepatic vessels are liver, the IVC and gallbladder are not
        assert (case.label[case.tissue == Tissue.IVC] == 0).all()
        assert (case.label[case.tissue == Tissue.GALLBLADDER] == 0).all()
    assert n_tumour_cases >= 2


def test_liver_spans_a_proper_z_subrange(default_cases):
    for case in default_cases + [P.generate_case(5, shape=TINY)]:
        per_slice = (case.label > 0).any(axis=(0, 1))
        ks = np.flatnonzero(per_slice)
        nz = per_slice.size
        assert ks[0] >= 2 and ks[-1] <= nz - 3, (ks[0], ks[-1], nz)
        # contiguous and a substantial part of the volume
        assert ks[-1] - ks[0] + 1 == ks.size
        assert 0.3 * nz <= ks.size <= 0.9 * nz


def test_orientation_liver_right_spleen_left_spine_posterior(default_cases):
    """Voxel axis 0 runs patient right -> left, axis 1 anterior -> posterior (affine diag(-,-,+))."""
    for case in default_cases:
        body = _centroid(case.tissue != Tissue.AIR)
        liver = _centroid(case.label > 0)
        spleen = _centroid(case.tissue == Tissue.SPLEEN)
        spine = _centroid(case.tissue == Tissue.BONE_CANCELLOUS)
        assert liver[0] < spine[0] < spleen[0]
        assert liver[0] < body[0] < spleen[0]
        assert spine[1] > body[1] and spine[1] > liver[1]
        assert case.affine[0, 0] < 0 and case.affine[1, 1] < 0 and case.affine[2, 2] > 0


def test_couinaud_geometry(default_cases):
    for case in default_cases:
        c = {k: _centroid(case.couinaud == k) for k in range(1, 10)}
        # left lateral segments (II, III) lie to the patient's left of the right-lobe
        # segments (V-VIII), i.e. at larger voxel index along axis 0
        for left in (2, 3):
            for right in (6, 7, 8, 9):
                assert c[left][0] > c[right][0]
        # superior (VII, VIII, IVa) above inferior (VI, V, IVb)
        assert c[8][2] > c[7][2] and c[9][2] > c[6][2] and c[4][2] > c[5][2]
        # the posterior sector (VI, VII) lies posterior to the anterior sector (V, VIII)
        assert c[7][1] + c[8][1] > c[6][1] + c[9][1]
        # the caudate lobe (I) borders the IVC
        ivc = _centroid(case.tissue == Tissue.IVC)
        dist_mm = np.hypot(*((c[1][:2] - ivc[:2]) * case.spacing[:2]))
        assert dist_mm < 40
        assert (case.couinaud == 1).sum() < 0.1 * (case.label > 0).sum()


def test_vessels_inside_or_entering_the_liver(default_cases):
    for case in default_cases:
        v = case.vessels > 0
        assert set(np.unique(case.vessels)) == {0, 1}
        assert np.isin(case.tissue[v], (Tissue.PORTAL_VEIN, Tissue.HEPATIC_VEIN)).all()
        inside = (case.label[v] > 0).mean()
        assert inside > 0.7, inside
        assert (case.tissue[case.label > 0] == Tissue.HEPATIC_VEIN).any()


@pytest.fixture(scope="module")
def default_anatomies():
    return [P.build_anatomy(s) for s in DEFAULT_SEEDS]


def _angle_from_ivc(anatomy):
    """Angle (degrees) of each in-plane voxel around the IVC axis, as the vein planes use."""
    g = P._Grid(anatomy.tissue.shape, anatomy.spacing)
    x, y = np.meshgrid(g.x, g.y, indexing="ij")
    ivc = anatomy.info["ivc_xy_mm"]
    return np.degrees(np.arctan2(y - ivc[1], x - ivc[0]))


def test_hepatic_veins_reach_the_lower_liver_in_every_plane(default_anatomies):
    # The tributaries carry each vein plane (a sector boundary) down to the inferior liver,
    # where the trunks alone never reached: in the lowest quarter of the liver's slices, most
    # slices show a hepatic-vein voxel within 8 degrees of each plane.
    for a in default_anatomies:
        phi = _angle_from_ivc(a)
        liver = a.label > 0
        hv = (a.tissue == Tissue.HEPATIC_VEIN) & liver
        zs = np.nonzero(liver.any((0, 1)))[0]
        low = range(zs.min(), zs.min() + (zs.max() - zs.min()) // 4 + 1)
        for ang in a.info["hepatic_vein_planes_deg"]:
            band = np.abs((phi - ang + 180) % 360 - 180) < 8
            ks = [k for k in low if (liver[:, :, k] & band).sum() >= 5]
            assert ks, ang
            share = np.mean([(hv[:, :, k] & band).any() for k in ks])
            assert share > 0.3, (a.info["hepatic_vein_planes_deg"], ang, share)


def _fissure_fat(a):
    """Fat voxels enclosed by the liver in their slice (the fissures), and neighbour masks."""
    st2 = np.zeros((3, 3, 3), bool)
    st2[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    liver = a.label > 0
    enclosed = (a.tissue == Tissue.FAT) & ndimage.binary_closing(liver, st2, iterations=3) & ~liver

    def near(codes, r):
        return ndimage.binary_dilation(np.isin(a.couinaud, codes), st2, iterations=r)
    return enclosed, near


def test_fissure_of_the_ligamentum_venosum_separates_the_caudate(default_anatomies):
    for a in default_anatomies:
        enclosed, near = _fissure_fat(a)
        cleft = enclosed & near((1,), 1) & near((2, 4), 2)
        assert cleft.sum() > 50, cleft.sum()
        # thin: a few mm of fat, not a hole in the liver
        assert enclosed.sum() < 0.02 * (a.label > 0).sum()
        # on the caudate's face away from the IVC
        ivc = np.array(a.info["ivc_xy_mm"])
        g = P._Grid(a.tissue.shape, a.spacing)
        x, y = np.meshgrid(g.x, g.y, indexing="ij")
        r = np.hypot(x - ivc[0], y - ivc[1])[:, :, None] * np.ones(a.tissue.shape[2])
        assert r[cleft].mean() > r[a.couinaud == 1].mean()


def test_umbilical_fissure_between_segment_iv_and_the_left_lateral_segments(default_anatomies):
    for a in default_anatomies:
        enclosed, near = _fissure_fat(a)
        # (away from the caudate, whose fissure also borders segments II and IV)
        cleft = enclosed & near((4, 5), 2) & near((2, 3), 2) & ~near((1,), 3)
        assert cleft.sum() > 100, cleft.sum()
        # in the left vein plane, and mostly below the portal level (the liver's median height)
        phi = _angle_from_ivc(a)[:, :, None] * np.ones(a.tissue.shape[2])
        theta_l = a.info["hepatic_vein_planes_deg"][2]
        assert np.median(np.abs((phi[cleft] - theta_l + 180) % 360 - 180)) < 5
        assert np.median(np.nonzero(cleft)[2]) < np.median(np.nonzero(a.label > 0)[2])


# --------------------------------------------------------------------------- intensities

def test_hounsfield_units_per_tissue(default_cases):
    for case in default_cases:
        t = case.tissue
        liver = _median(case, (case.label == 1) & (t == Tissue.LIVER))
        assert 85 <= liver <= 135
        assert abs(_median(case, t == Tissue.SPLEEN) - liver) <= 25
        assert _median(case, np.isin(t, (Tissue.BONE_CANCELLOUS, Tissue.BONE_CORTICAL))) > 300
        assert np.percentile(case.image[t == Tissue.RIB], 75) > 300  # thin: partial volume
        assert np.percentile(case.image[t == Tissue.BONE_CORTICAL], 90) > 500
        assert -135 <= _median(case, t == Tissue.FAT) <= -60
        assert 25 <= _median(case, t == Tissue.MUSCLE) <= 75
        assert _median(case, t == Tissue.KIDNEY_CORTEX) > liver + 15
        assert _median(case, np.isin(t, (Tissue.PORTAL_VEIN, Tissue.HEPATIC_VEIN))) > liver + 15
        assert _median(case, t == Tissue.AIR) < -950
        assert _median(case, t == Tissue.LUNG) < -700
        if (case.label == 2).any():
            assert _median(case, case.label == 2) < liver - 15
        # noise sigma 8-25 HU (added after the blur): adjacent liver voxels differ by about
        # sqrt(2) * sigma
        pair = (t[1:] == Tissue.LIVER) & (t[:-1] == Tissue.LIVER)
        sigma = np.std(np.diff(case.image, axis=0)[pair]) / np.sqrt(2)
        assert 6.0 <= sigma <= 30.0, sigma
    assert np.isfinite(default_cases[0].image).all()


# --------------------------------------------------------------------------- datasets

def _digest(paths):
    return {os.path.relpath(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths}


def test_write_dataset_lits_layout_and_idempotence(tmp_path):
    out = tmp_path / "lits"
    pairs = P.write_dataset(str(out), cases=2, layout="lits", seed=4, shape=TINY, progress=False)
    assert pairs == [(str(out / f"volume-{i}.nii.gz"), str(out / f"segmentation-{i}.nii.gz")) for i in range(2)]
    assert sorted(os.listdir(out)) == ["segmentation-0.nii.gz", "segmentation-1.nii.gz",
                                       "volume-0.nii.gz", "volume-1.nii.gz"]
    case0 = P.generate_case(P.case_seed(4, 0), shape=TINY)
    for i, (img_path, lab_path) in enumerate(pairs):
        img, lab = read_volume(img_path), read_volume(lab_path, dtype=np.uint8)
        np.testing.assert_allclose(img.affine, lab.affine)
        assert img.header.get_data_dtype() == np.int16 and lab.header.get_data_dtype() == np.uint8
        assert img.shape == lab.shape == TINY
        assert set(np.unique(lab.data)) <= {0, 1, 2}
        if i == 0:
            np.testing.assert_allclose(img.affine, case0.affine, atol=1e-4)
            np.testing.assert_allclose(img.spacing, case0.spacing, rtol=1e-6)
            np.testing.assert_array_equal(lab.data, case0.label)
            np.testing.assert_array_equal(img.data, np.rint(case0.image))
    files = [p for pair in pairs for p in pair]
    before = _digest(files)
    assert len(set(before.values())) == 4  # the two cases differ
    P.write_dataset(str(out), cases=2, layout="lits", seed=4, shape=TINY, progress=False)
    assert _digest(files) == before


def test_write_dataset_msd_layout(tmp_path):
    out = tmp_path / "Task03_Liver"
    pairs = P.write_dataset(str(out), cases=3, layout="msd", seed=1, shape=TINY, progress=True)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert meta["numTraining"] == 3 and meta["numTest"] == 0 and meta["test"] == []
    assert meta["training"] == [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                                for i in range(3)]
    assert isinstance(meta["name"], str) and isinstance(meta["description"], str)
    for i, (img_path, lab_path) in enumerate(pairs):
        assert img_path == str(out / "imagesTr" / f"liver_{i}.nii.gz")
        assert lab_path == str(out / "labelsTr" / f"liver_{i}.nii.gz")
        img, lab = read_volume(img_path), read_volume(lab_path)
        np.testing.assert_array_equal(img.affine, lab.affine)
        assert (lab.data == 1).any()
    files = [p for pair in pairs for p in pair] + [str(out / "dataset.json")]
    before = _digest(files)
    P.write_dataset(str(out), cases=3, layout="msd", seed=1, shape=TINY, progress=False)
    assert _digest(files) == before
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_write_dataset_hepatic_vessel_task(tmp_path):
    """Task08_HepaticVessel layout: 1 = the hepatic/portal vein voxels, 2 = tumour (winning
    where both hold), everything else, liver parenchyma included, background."""
    from keras_liver.data.datasets import discover

    out = tmp_path / "Task08_HepaticVessel"
    pairs = P.write_dataset(str(out), cases=2, layout="msd", task="hepatic_vessel", seed=1,
                            shape=TINY, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "HepaticVessel"
    assert meta["labels"] == {"0": "background", "1": "Vessel", "2": "Tumour"}
    assert [e["label"] for e in meta["training"]] == [f"./labelsTr/hepaticvessel_{i}.nii.gz"
                                                      for i in range(2)]
    found = discover(str(out))
    assert found.layout == "msd" and [c.case_id for c in found.cases] == [
        "hepaticvessel_0", "hepaticvessel_1"]
    assert found.labels == {0: "background", 1: "Vessel", 2: "Tumour"}
    for i, (_, lab_path) in enumerate(pairs):
        case = P.generate_case(P.case_seed(1, i), shape=TINY)
        label = read_volume(lab_path).data
        vessels = case.vessels.astype(bool)
        assert vessels.any() and vessels.sum() < 0.05 * vessels.size
        np.testing.assert_array_equal(label == 1, vessels & (case.label != 2))
        np.testing.assert_array_equal(label == 2, case.label == 2)
        assert set(np.unique(label)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="LiTS layout holds the liver task only"):
        P.write_dataset(str(tmp_path / "x"), cases=1, layout="lits", task="hepatic_vessel")
    with pytest.raises(ValueError, match="unknown phantom task"):
        P.write_dataset(str(tmp_path / "y"), cases=1, layout="msd", task="spleen")


def test_write_dataset_seeds_differ_per_case_and_bad_layout(tmp_path):
    assert len({P.case_seed(0, i) for i in range(50)}) == 50
    assert P.case_seed(0, 1) != P.case_seed(1, 0)
    with pytest.raises(ValueError, match="layout"):
        P.write_dataset(str(tmp_path), cases=1, layout="nnunet", progress=False)


# --------------------------------------------------------------------------- MRI-like variant (BADA)

MRI_SEEDS = (0, 2, 3, 5)  # TINY cases; 2, 3 and 5 hold tumours


@pytest.fixture(scope="module")
def mri_tiny():
    return {s: P.generate_mri_case(s, shape=TINY) for s in MRI_SEEDS}


@pytest.fixture(scope="module")
def mri_default():
    return P.generate_mri_case(DEFAULT_SEEDS[0])


def test_mri_same_anatomy_as_ct_and_deterministic(mri_tiny):
    mri, again = mri_tiny[3], P.generate_mri_case(3, shape=TINY)
    ct = P.generate_case(3, shape=TINY)
    for name in ("image", "label", "couinaud", "vessels", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(mri, name), getattr(again, name), err_msg=name)
    for name in ("label", "couinaud", "vessels", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(mri, name), getattr(ct, name), err_msg=name)
    assert mri.spacing == ct.spacing and mri.image.shape == ct.image.shape
    assert mri.modality == "mri" and ct.modality == "ct" and mri.case_id == "phantom-mri-3"
    assert not np.array_equal(mri.image, ct.image)
    assert not np.array_equal(mri.image, mri_tiny[2].image)
    # the renderer alone, on the anatomy, gives the same image
    np.testing.assert_array_equal(P.mri_intensities(P.build_anatomy(3, shape=TINY), 3), mri.image)


def test_mri_default_case_anatomy_and_couinaud_map(default_cases, mri_default):
    ct = default_cases[0]
    for name in ("label", "couinaud", "vessels", "tissue", "affine"):
        np.testing.assert_array_equal(getattr(mri_default, name), getattr(ct, name), err_msg=name)
    img = mri_default.image
    assert img.dtype == np.float32 and img.shape == ct.image.shape and np.isfinite(img).all()
    seg = P.couinaud_label(mri_default)
    assert seg.dtype == np.uint8 and seg.shape == img.shape
    counts = np.bincount(seg.ravel(), minlength=10)
    assert counts.size == 10 and (counts[1:] > 0).all(), counts
    # only (and every) liver voxel is labelled, tumours and intrahepatic vessels included
    liver = mri_default.label > 0
    np.testing.assert_array_equal(seg > 0, liver)
    np.testing.assert_array_equal(seg[liver], ct.couinaud[liver])
    assert (mri_default.label == 2).any() and (seg[mri_default.label == 2] > 0).all()
    assert (seg[(mri_default.vessels > 0) & liver] > 0).all()
    assert (seg[mri_default.tissue == Tissue.IVC] == 0).all()
    np.testing.assert_array_equal(P.task_label(mri_default, "couinaud"), seg)


def test_mri_intensities_per_tissue(mri_tiny, mri_default):
    cases = list(mri_tiny.values()) + [mri_default]
    n_tumour_cases = 0
    for case in cases:
        t, img = case.tissue, case.image
        # a magnitude image on an arbitrary positive scale: nothing HU-like below zero
        assert img.dtype == np.float32 and img.min() >= 0.0
        liver = _median(case, t == Tissue.LIVER)
        assert 250.0 <= liver <= 750.0, liver
        # air, lung and cortical bone near zero, but the air is noise, not exactly 0
        air = img[t == Tissue.AIR]
        assert 0.0 < air.mean() < 0.1 * liver and (air > 0).mean() > 0.99
        assert _median(case, t == Tissue.LUNG) < 0.2 * liver
        assert _median(case, t == Tissue.BONE_CORTICAL) < 0.3 * liver
        vessels = (case.vessels > 0) & (case.label > 0)
        assert _median(case, vessels) > 1.15 * liver
        # fat-suppressed DCE look: fat well below the liver (unlike T1 without fat sat)
        assert 0.15 * liver < _median(case, t == Tissue.FAT) < 0.6 * liver
        assert _median(case, t == Tissue.MUSCLE) < 0.8 * liver
        assert _median(case, t == Tissue.KIDNEY_CORTEX) > liver
        assert abs(_median(case, t == Tissue.SPLEEN) - liver) < 0.35 * liver
        if (case.label == 2).any():
            n_tumour_cases += 1
            assert _median(case, case.label == 2) < 0.8 * liver
    assert n_tumour_cases >= 4


def test_mri_noise_is_rician(mri_tiny):
    """Far from the body the signal is 0, so the voxels are Rayleigh distributed: the
    magnitude of complex Gaussian noise (coefficient of variation sqrt(4/pi - 1) = 0.523;
    a half-normal, |real noise|, would give 0.756)."""
    from scipy import ndimage

    for case in mri_tiny.values():
        far = ndimage.binary_erosion(case.tissue == Tissue.AIR, iterations=4)
        air = case.image[far]
        assert air.size > 10_000
        assert abs(air.std() / air.mean() - np.sqrt(4 / np.pi - 1)) < 0.03


def test_mri_bias_field(mri_tiny):
    for seed, case in mri_tiny.items():
        anatomy = P.build_anatomy(seed, shape=TINY)
        field = P.mri_bias_field(anatomy, seed)
        assert field.dtype == np.float32 and field.shape == case.image.shape
        np.testing.assert_array_equal(field, P.mri_bias_field(anatomy, seed))
        body = field[anatomy.tissue != Tissue.AIR]
        assert 0.69 <= body.min() and body.max() <= 1.31
        assert abs(body.mean() - 1.0) < 1e-3 and np.abs(body - 1.0).max() >= 0.149
        # low frequency: under 1 % per mm along every axis
        for axis in range(3):
            assert np.abs(np.diff(field, axis=axis)).max() / case.spacing[axis] < 0.01
        # the field shows in the image: the liver's halves (split along some axis) differ in
        # mean intensity, and dividing the field out makes them more alike
        liver = np.nonzero(anatomy.tissue == Tissue.LIVER)
        raw, flat = case.image[liver], (case.image / field)[liver]

        def spread(values):
            return max(abs(values[ax < np.median(ax)].mean() / values[ax >= np.median(ax)].mean() - 1.0)
                       for ax in liver)

        assert spread(raw) > 0.03 and spread(flat) < spread(raw)


def test_couinaud_label_fills_unsegmented_liver_and_clears_the_rest(mri_tiny):
    import dataclasses

    case = mri_tiny[2]
    liver = case.label > 0
    couinaud = case.couinaud.copy()
    holes = np.zeros_like(liver)
    holes[tuple(np.argwhere(liver)[::50].T)] = True
    couinaud[holes] = 0
    couinaud[case.tissue == Tissue.IVC] = 1  # stray values outside the liver are dropped
    seg = P.couinaud_label(dataclasses.replace(case, couinaud=couinaud))
    np.testing.assert_array_equal(seg > 0, liver)
    # the holes take the segment of a neighbour: nearly always their own
    assert (seg[holes] == case.couinaud[holes]).mean() > 0.9


def test_write_dataset_mri_couinaud_task(tmp_path):
    from keras_liver.data.datasets import discover, validate_case

    out = tmp_path / "LiverSegments"
    pairs = P.write_dataset(str(out), cases=2, layout="msd", modality="mri", task="couinaud",
                            seed=1, shape=TINY, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    names = {"0": "background", "1": "I", "2": "II", "3": "III", "4": "IVa", "5": "IVb",
             "6": "V", "7": "VI", "8": "VII", "9": "VIII"}
    assert meta["modality"] == {"0": "MRI"} and meta["labels"] == names
    assert meta["name"] == "LiverSegments" and "MRI" in meta["description"]
    assert meta["training"] == [{"image": f"./imagesTr/couinaud_{i}.nii.gz",
                                 "label": f"./labelsTr/couinaud_{i}.nii.gz"} for i in range(2)]
    found = discover(str(out))
    assert found.layout == "msd" and [c.case_id for c in found.cases] == ["couinaud_0", "couinaud_1"]
    assert found.labels == {int(k): v for k, v in names.items()}
    for i, (img_path, lab_path) in enumerate(pairs):
        validate_case(found.cases[i], found.labels)
        case = P.generate_mri_case(P.case_seed(1, i), shape=TINY)
        img, lab = read_volume(img_path), read_volume(lab_path, dtype=np.uint8)
        assert img.header.get_data_dtype() == np.uint16 and lab.header.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(img.affine, lab.affine)
        np.testing.assert_array_equal(img.data, np.rint(case.image))
        np.testing.assert_array_equal(lab.data, P.couinaud_label(case))
        assert set(np.unique(lab.data)) <= set(range(10))
    files = [p for pair in pairs for p in pair] + [str(out / "dataset.json")]
    before = _digest(files)
    P.write_dataset(str(out), cases=2, layout="msd", modality="mri", task="couinaud",
                    seed=1, shape=TINY, progress=False)
    assert _digest(files) == before
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    # the CT rendering of the same dataset: int16 HU, and byte-identical label files
    ct_out = tmp_path / "ct"
    ct_pairs = P.write_dataset(str(ct_out), cases=1, layout="msd", modality="ct", task="couinaud",
                               seed=1, shape=TINY, progress=False)
    ct_meta = json.loads((ct_out / "dataset.json").read_text())
    assert ct_meta["modality"] == {"0": "CT"} and ct_meta["labels"] == names
    assert read_volume(ct_pairs[0][0]).header.get_data_dtype() == np.int16
    assert open(ct_pairs[0][1], "rb").read() == open(pairs[0][1], "rb").read()


def test_write_dataset_in_two_processes_writes_the_same_files(tmp_path):
    """Each case depends only on its seed: two worker processes write the files one process
    writes, byte for byte, in the same order."""
    one = P.write_dataset(str(tmp_path / "one"), cases=3, layout="msd", modality="mri",
                          task="couinaud", seed=5, shape=TINY, progress=False, workers=1)
    two = P.write_dataset(str(tmp_path / "two"), cases=3, layout="msd", modality="mri",
                          task="couinaud", seed=5, shape=TINY, progress=False, workers=2)
    assert [os.path.relpath(p, tmp_path / "two") for pair in two for p in pair] == \
        [os.path.relpath(p, tmp_path / "one") for pair in one for p in pair]
    for a, b in zip(one, two):
        for pa, pb in zip(a, b):
            assert open(pa, "rb").read() == open(pb, "rb").read(), pa
    with pytest.raises(ValueError, match="workers must be >= 1"):
        P.write_dataset(str(tmp_path / "x"), cases=1, workers=0)


def test_default_workers_is_one_per_core_and_at_most_one_per_ten_cases(monkeypatch):
    from keras_liver import processes

    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [P.default_workers(n) for n in (0, 5, 19, 20, 400)] == [1, 1, 1, 2, 2]


def test_write_dataset_ct_default_modality_unchanged(tmp_path):
    a = P.write_dataset(str(tmp_path / "a"), cases=1, layout="msd", seed=2, shape=TINY, progress=False)
    b = P.write_dataset(str(tmp_path / "b"), cases=1, layout="msd", seed=2, shape=TINY,
                        progress=False, modality="ct")
    for pa, pb in zip(a[0] + (str(tmp_path / "a" / "dataset.json"),),
                      b[0] + (str(tmp_path / "b" / "dataset.json"),)):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["description"] == "Synthetic abdominal CT phantom (keras-liver), Task03_Liver layout"
    assert P.MSD_TASKS["couinaud"]["labels"]["9"] == "VIII" and set(P.MODALITIES) == {"ct", "mri"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(layout="msd", modality="mri", task="liver"), "modality='mri' with task='liver'"),
    (dict(layout="msd", modality="mri", task="hepatic_vessel"), "modality='mri' with task='hepatic_vessel'"),
    (dict(layout="lits", modality="mri"), "modality='mri' with task='liver'.*layout='lits'"),
    (dict(layout="lits", modality="mri", task="couinaud"), "LiTS layout holds the liver task only"),
    (dict(layout="lits", task="couinaud"), "LiTS layout holds the liver task only"),
    (dict(layout="msd", modality="pet", task="couinaud"), "unknown phantom modality 'pet'"),
])
def test_write_dataset_refuses_unsupported_combinations(tmp_path, kwargs, match):
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=match):
        P.write_dataset(str(out), cases=1, shape=TINY, progress=False, **kwargs)
    assert not out.exists()
