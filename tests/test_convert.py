"""NIfTI → TFRecord conversion: exact round trip, manifest, split, validation before writing,
resumption and idempotence (SPEC §6)."""
import os
import shutil

import numpy as np
import pytest

from keras_liver.data import convert as convert_mod
from keras_liver.data import schema
from keras_liver.data.convert import convert, file_sha256, split_cases, split_sizes
from keras_liver.data.volumes import read_volume, write_volume
from keras_liver.errors import DataError
from test_datasets import AFFINE, make_arrays, make_flat, make_lits, make_msd, truncate, write_pair

LITS_IDS = ["lits-000", "lits-001", "lits-002", "lits-010"]


@pytest.fixture
def lits(tmp_path):
    return make_lits(tmp_path / "LiTS")


def snapshot(folder, backdate=False):
    """``{relative path: (inode, mtime_ns, bytes)}`` of every file below ``folder``.

    ``backdate`` first sets every mtime to 2001, so a rewrite shows even within one clock tick.
    """
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            if backdate:
                os.utime(path, ns=(10**18, 10**18))
            st = os.stat(path)
            out[os.path.relpath(path, folder)] = (st.st_ino, st.st_mtime_ns, open(path, "rb").read())
    return out


def records(path):
    import tensorflow as tf
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=schema.COMPRESSION)]


def case_files(snap, case_id):
    return {k: v for k, v in snap.items() if os.path.basename(k).startswith(case_id + ".")}


# --------------------------------------------------------------------------- round trip

def test_round_trip_and_manifest(lits, tmp_path):
    import tensorflow as tf

    out = str(tmp_path / "tf_data" / "tiny")
    manifest = convert(lits, out, seed=0, progress=False)
    assert tuple(k for k in manifest if k != "root") == schema.MANIFEST_KEYS
    assert manifest == schema.load_manifest(out)
    assert manifest["name"] == "tiny" and manifest["source"] == os.path.abspath(lits)
    assert manifest["layout"] == "lits" and manifest["seed"] == 0
    assert manifest["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert [c["id"] for c in manifest["cases"]] == LITS_IDS
    assert manifest["counts"]["total"] == {"cases": 4, "slices": 24, "foreground_slices": 12}
    assert sum(manifest["counts"][s]["slices"] for s in ("train", "val", "test")) == 24
    assert not any(name.endswith(".partial") for name in snapshot(out))

    for case in manifest["cases"]:
        image, label = read_volume(case["image"]), read_volume(case["label"], np.float32)
        assert case["image_sha256"] == file_sha256(case["image"])
        assert case["label_sha256"] == file_sha256(case["label"])
        assert case["shape"] == [16, 16, 6] and case["num_slices"] == 6
        assert case["spacing"] == pytest.approx([0.8, 0.8, 2.5])
        np.testing.assert_allclose(case["affine"], AFFINE)
        assert case["label_values"] == [0, 1, 2] and case["foreground_slices"] == 3
        assert case["slices"] == f"slices/{case['id']}.tfrecord.gz"
        assert case["volume"] == f"volumes/{case['id']}.tfrecord.gz"

        slices = [schema.decode_example(r) for r in records(os.path.join(out, case["slices"]))]
        assert [s["slice_index"] for s in slices] == list(range(6))
        for z, ex in enumerate(slices):
            assert ex["case_id"] == case["id"]
            np.testing.assert_array_equal(ex["image"], image.data[:, :, z])
            np.testing.assert_array_equal(ex["label"], label.data[:, :, z].astype(np.uint8))
            assert ex["foreground"] == int(np.count_nonzero(label.data[:, :, z]))
        (vol,) = [schema.decode_example(r) for r in records(os.path.join(out, case["volume"]))]
        np.testing.assert_array_equal(vol["image"], image.data)
        np.testing.assert_array_equal(vol["label"], label.data.astype(np.uint8))
        assert vol["slice_index"] == -1 and vol["spacing"] == pytest.approx((0.8, 0.8, 2.5))

        for kind, rank in (("slices", 2), ("volume", 3)):
            ds = tf.data.TFRecordDataset(os.path.join(out, case[kind]), compression_type=schema.COMPRESSION)
            for ex in ds.map(lambda s, r=rank: schema.parse_example(s, r)).as_numpy_iterator():
                z = ex["slice_index"]
                ref_img = image.data if rank == 3 else image.data[:, :, z]
                ref_lab = label.data if rank == 3 else label.data[:, :, z]
                assert ex["image"].dtype == np.float32 and ex["label"].dtype == np.uint8
                np.testing.assert_array_equal(ex["image"], ref_img)
                np.testing.assert_array_equal(ex["label"], ref_lab.astype(np.uint8))


def test_msd_and_flat_layouts_convert(tmp_path):
    msd = convert(make_msd(tmp_path / "Task03_Liver", n=3), str(tmp_path / "msd"),
                  kinds=("volumes",), progress=False)
    assert msd["layout"] == "msd" and msd["labels"]["2"] == "cancer"
    assert [c["id"] for c in msd["cases"]] == ["liver_0", "liver_5", "liver_10"]
    assert "slices" not in msd["cases"][0] and not os.path.exists(tmp_path / "msd" / "slices")
    assert all(len(v) == 1 for v in msd["split"].values())
    flat = convert(make_flat(tmp_path / "flat", convention="suffix"), str(tmp_path / "flat_tf"),
                   kinds="slices", progress=False)
    assert flat["layout"] == "flat" and [c["id"] for c in flat["cases"]] == ["a", "b", "c"]
    assert flat["counts"]["total"]["slices"] == 18


# --------------------------------------------------------------------------- bad cases

def _bad_last_case(src, problem):
    """Spoil case lits-010 (the last one, so validating first is what keeps the others unwritten)."""
    folder = os.path.join(src, "Training Batch 2")
    image_path = os.path.join(folder, "volume-10.nii")
    label_path = os.path.join(folder, "segmentation-10.nii")
    image, label = make_arrays(10)
    if problem == "truncated":
        os.remove(image_path)
        image_path += ".gz"
        write_volume(image_path, image, AFFINE)
        truncate(image_path)
        return image_path, "cannot read NIfTI"
    if problem == "nan":
        image[1, 2, 3] = np.nan
        write_volume(image_path, image, AFFINE)
        return image_path, "NaN"
    if problem == "shape":
        write_volume(label_path, label[:, :8], AFFINE)
        return label_path, r"label shape \(16, 8, 6\) differs from the image's shape \(16, 16, 6\)"
    if problem == "affine":
        write_volume(label_path, label, np.diag([0.8, 0.8, 3.0, 1.0]))
        return label_path, "label affine differs"
    label[0, 0, 0] = 3
    write_volume(label_path, label, AFFINE)
    return label_path, r"unexpected label values \{3\}"


@pytest.mark.parametrize("problem", ["truncated", "nan", "shape", "affine", "label3"])
def test_bad_case_fails_before_anything_is_written(lits, tmp_path, problem):
    out = str(tmp_path / "good")
    convert(lits, out, progress=False)
    before = snapshot(out, backdate=True)
    path, message = _bad_last_case(lits, problem)
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match=message) as err:
        convert(lits, str(fresh), progress=False)
    assert err.value.path == path
    assert not fresh.exists()
    with pytest.raises(DataError, match=message):
        convert(lits, out, progress=False)
    assert snapshot(out) == before


def test_other_source_needs_overwrite(lits, tmp_path):
    out = str(tmp_path / "out")
    convert(lits, out, kinds="volumes", progress=False)
    flat = make_flat(tmp_path / "flat")
    with pytest.raises(DataError, match="holds a conversion of another dataset"):
        convert(flat, out, kinds="volumes", progress=False)
    manifest = convert(flat, out, kinds="volumes", progress=False, overwrite=True)
    assert manifest["source"] == os.path.abspath(flat)
    assert sorted(os.listdir(os.path.join(out, "volumes"))) == ["a.tfrecord.gz", "b.tfrecord.gz",
                                                                 "c.tfrecord.gz"]
    assert sorted(os.listdir(os.path.join(out, "cases"))) == ["a.json", "b.json", "c.json"]


# --------------------------------------------------------------------------- split

def test_split_sizes_and_rounding():
    assert split_sizes(5, (0.6, 0.2, 0.2)) == (3, 1, 1)
    assert split_sizes(131, (0.64, 0.16, 0.2)) == (84, 21, 26)
    assert split_sizes(1, (0.64, 0.16, 0.2)) == (1, 0, 0)
    assert split_sizes(5, (0.8, 0.2, 0.0)) == (4, 1, 0)
    for n in range(3, 60):
        sizes = split_sizes(n, (0.64, 0.16, 0.2))
        assert sum(sizes) == n and min(sizes) >= 1
        assert split_sizes(n, (0.98, 0.01, 0.01))[1:] == (1, 1)
    with pytest.raises(ValueError, match="summing to 1"):
        split_sizes(5, (0.5, 0.2, 0.2))


def test_split_is_deterministic_disjoint_and_seeded():
    ids = [f"case_{i}" for i in range(20)]
    a = split_cases(ids, (0.64, 0.16, 0.2), seed=42)
    assert a == split_cases(ids, (0.64, 0.16, 0.2), seed=42)
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ids)
    assert not (set(a["train"]) & set(a["val"]) or set(a["train"]) & set(a["test"])
                or set(a["val"]) & set(a["test"]))
    assert [len(a[s]) for s in ("train", "val", "test")] == [13, 3, 4]
    assert any(split_cases(ids, (0.64, 0.16, 0.2), seed=s) != a for s in range(5))
    assert a["train"] == [c for c in ids if c in a["train"]]  # case order kept


# --------------------------------------------------------------------------- resume / idempotence

def test_rerun_rewrites_nothing_and_new_seed_only_the_manifest(lits, tmp_path):
    out = str(tmp_path / "out")
    first = convert(lits, out, seed=1, progress=False)
    before = snapshot(out, backdate=True)
    assert convert(lits, out, seed=1, progress=False) == first
    assert snapshot(out) == before
    second = convert(lits, out, seed=7, progress=False)
    assert second["split"] == split_cases(LITS_IDS, (0.64, 0.16, 0.2), seed=7)
    after = snapshot(out)
    assert {k for k in after if after[k] != before[k]} <= {"manifest.json"}


def test_resume_after_interruption(lits, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    calls = {"n": 0}
    real = convert_mod._write_shard

    def crashing(path, examples):
        calls["n"] += 1
        if calls["n"] == 5:  # first shard of the third case: die half-way through it
            def some():
                yield next(iter(examples))
                raise KeyboardInterrupt
            return real(path, some())
        return real(path, examples)

    monkeypatch.setattr(convert_mod, "_write_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        convert(lits, out, progress=False)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert sorted(os.listdir(os.path.join(out, "cases"))) == ["lits-000.json", "lits-001.json"]
    assert not any(p.endswith(".partial") for p in snapshot(out))
    open(os.path.join(out, "slices", "lits-002.tfrecord.gz.partial"), "w").close()  # a killed writer
    before = snapshot(out, backdate=True)

    manifest = convert(lits, out, progress=False)
    after = snapshot(out)
    for done in ("lits-000", "lits-001"):
        assert case_files(after, done) == case_files(before, done)
    assert set(case_files(after, "lits-010")) == {"slices/lits-010.tfrecord.gz",
                                                   "volumes/lits-010.tfrecord.gz", "cases/lits-010.json"}
    assert not any(p.endswith(".partial") for p in after)
    assert manifest["cases"] == convert(lits, str(tmp_path / "ref"), progress=False)["cases"]


def test_deleted_shard_and_record_rewrite_only_that_case(lits, tmp_path):
    out = str(tmp_path / "out")
    convert(lits, out, progress=False)
    os.remove(os.path.join(out, "slices", "lits-001.tfrecord.gz"))
    os.remove(os.path.join(out, "cases", "lits-001.json"))
    os.remove(os.path.join(out, "volumes", "lits-002.tfrecord.gz"))  # shard gone, record kept
    before = snapshot(out, backdate=True)
    convert(lits, out, progress=False)
    after = snapshot(out)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"manifest.json", "slices/lits-001.tfrecord.gz", "volumes/lits-001.tfrecord.gz",
                       "cases/lits-001.json", "volumes/lits-002.tfrecord.gz", "cases/lits-002.json"}


def test_changed_source_is_reconverted_and_removed_case_dropped(lits, tmp_path):
    out = str(tmp_path / "out")
    convert(lits, out, progress=False)
    before = snapshot(out, backdate=True)
    image_path, _ = write_pair(os.path.join(lits, "Training Batch 1", "volume-0.nii.gz"),
                               os.path.join(lits, "Training Batch 1", "segmentation-0.nii.gz"), seed=99)
    for name in ("volume-1.nii", "segmentation-1.nii"):
        os.remove(os.path.join(lits, "Training Batch 2", name))
    manifest = convert(lits, out, progress=False)
    after = snapshot(out)
    assert [c["id"] for c in manifest["cases"]] == ["lits-000", "lits-002", "lits-010"]
    assert not case_files(after, "lits-001")
    assert case_files(after, "lits-002") == case_files(before, "lits-002")
    assert manifest["cases"][0]["image_sha256"] == file_sha256(image_path)
    (vol,) = [schema.decode_example(r) for r in records(os.path.join(out, "volumes", "lits-000.tfrecord.gz"))]
    np.testing.assert_array_equal(vol["image"], make_arrays(99)[0])


def test_kinds_added_later_and_progress_bar(lits, tmp_path, capsys):
    out = str(tmp_path / "out")
    convert(lits, out, kinds=("slices",), progress=False)
    assert capsys.readouterr().err == ""
    before = snapshot(out, backdate=True)
    manifest = convert(lits, out, progress=True)
    assert "convert" in capsys.readouterr().err
    after = snapshot(out)
    assert all(after[k] == v for k, v in before.items() if k.startswith("slices/"))
    assert all(os.path.exists(os.path.join(out, c["volume"])) for c in manifest["cases"])


def test_bad_arguments(lits, tmp_path):
    with pytest.raises(ValueError, match="kinds"):
        convert(lits, str(tmp_path / "o"), kinds=("patches",), progress=False)
    with pytest.raises(ValueError, match="split"):
        convert(lits, str(tmp_path / "o"), split=(0.5, 0.5), progress=False)
    assert not (tmp_path / "o").exists()
    shutil.rmtree(lits)
    with pytest.raises(DataError, match="not found"):
        convert(lits, str(tmp_path / "o"), progress=False)
