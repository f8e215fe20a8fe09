import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Small phantom grid used by the integration tests (the model sees 64x64 slices).
TINY_SHAPE = (96, 96, 20)

#: Session fixtures that train a tiny experiment, the costliest first. ``make test`` runs the
#: suite on three pytest-xdist workers (``--dist loadgroup``); every test that uses one of these
#: fixtures is put in the fixture's group, so each experiment is trained once, on one worker,
#: while the other workers run the rest of the suite.
TRAINING_FIXTURES = ("ra_unet_run", "arunet_run", "tiny_run", "bada_run")


def _schedule_rank(item) -> int:
    """Where a test goes in the collection, which ``make test`` (``--no-loadscope-reorder``)
    hands out in order: the training groups first, the costliest first (the RA-UNet run and
    the tests on it take about 850 s of one worker: started late, it would end the suite alone),
    then the other ``slow`` tests (notebooks, trainings), then the rest in file order."""
    groups = [m.args[0] for m in item.iter_markers("xdist_group") if m.args]
    if groups and groups[0] in TRAINING_FIXTURES:
        return TRAINING_FIXTURES.index(groups[0])
    if groups:
        return len(TRAINING_FIXTURES)
    return len(TRAINING_FIXTURES) + (1 if item.get_closest_marker("slow") else 2)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # tryfirst: pytest-xdist's own hook turns the xdist_group marks into node-id suffixes, so
    # the marks must be there before it runs. (pytest 9 ignores the suffix xdist 3.8 writes,
    # and every worker then trained its own copy of each fixture: setup.cfg pins pytest < 9.)
    for item in items:
        for name in TRAINING_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
                break
    items.sort(key=_schedule_rank)   # stable: file order within a rank


@pytest.fixture(scope="session")
def phantom_lits(tmp_path_factory):
    """Five small phantom cases in LiTS layout (generated once per session)."""
    from keras_liver.data.phantom import write_dataset

    root = tmp_path_factory.mktemp("phantom_lits")
    write_dataset(str(root), cases=5, layout="lits", seed=3, shape=TINY_SHAPE, progress=False)
    return str(root)


@pytest.fixture(scope="session")
def tiny_dataset(phantom_lits, tmp_path_factory):
    """The five cases converted to TFRecords with a 3/1/1 split."""
    from keras_liver.data.convert import convert

    out = str(tmp_path_factory.mktemp("tf_data") / "tiny")
    convert(phantom_lits, out, seed=0, split=(0.6, 0.2, 0.2), progress=False)
    return out


class KillAtEpoch(keras.callbacks.Callback):
    """Interrupts training as a kill would, at the start of epoch ``epoch`` (0-based), to test
    resuming from ``BackupAndRestore``."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


def run_python(code: str, *, env_extra=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for TF device set-up, or to prove an artifact loads
    without this project)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or REPO)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``python -m keras_liver.experiments.ra_vnet --preset tiny`` run once per session.

    Returns ``(run_dir, tf_data_dir, stdout)``.
    """
    import contextlib
    import io

    from keras_liver.experiments import ra_vnet

    root = tmp_path_factory.mktemp("tiny_run")
    run_dir, tf_data = str(root / "run"), str(root / "tf_data")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = ra_vnet.main(["--preset", "tiny", "--out", run_dir, "--tf-data", tf_data,
                             "--no-progress"])
    assert code == 0
    return run_dir, tf_data, buf.getvalue()


@pytest.fixture(scope="session")
def ra_unet_run(tiny_dataset, tmp_path_factory):
    """``python -m keras_liver.experiments.ra_unet --preset tiny`` on the tiny dataset, run
    once per session (the three stages, the cascade on the test case, the exports).

    Returns ``(run_dir, stdout, stderr)``.
    """
    import contextlib
    import io

    from keras_liver.experiments import ra_unet

    root = tmp_path_factory.mktemp("ra_unet_run")
    run_dir = str(root / "run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ra_unet.main(["--preset", "tiny", "--data", tiny_dataset, "--out", run_dir,
                             "--tf-data", str(root / "tf_data"), "--no-progress"])
    assert code == 0, err.getvalue()[-3000:]
    return run_dir, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def arunet_run(tmp_path_factory):
    """``python -m keras_liver.experiments.arunet --preset tiny`` run once per session (its own
    phantoms of both MSD tasks, both models, scores, exports, linked.json).

    Returns ``(run_dir, stdout, stderr)``.
    """
    import contextlib
    import io

    from keras_liver.experiments import arunet

    root = tmp_path_factory.mktemp("arunet_run")
    run_dir = str(root / "run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = arunet.main(["--preset", "tiny", "--out", run_dir, "--tf-data",
                            str(root / "tf_data"), "--no-progress"])
    assert code == 0, err.getvalue()[-3000:]
    return run_dir, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def bada_run(tmp_path_factory):
    """``python -m keras_liver.experiments.bada --preset tiny`` run once per session (its own
    MRI Couinaud phantom, BADA at 32x32, one epoch, segment scores, the export).

    Returns ``(run_dir, stdout, stderr)``.
    """
    import contextlib
    import io

    from keras_liver.experiments import bada

    root = tmp_path_factory.mktemp("bada_run")
    run_dir = str(root / "run")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = bada.main(["--preset", "tiny", "--out", run_dir, "--tf-data",
                          str(root / "tf_data"), "--no-progress"])
    assert code == 0, err.getvalue()[-3000:]
    return run_dir, out.getvalue(), err.getvalue()


def assert_label_volume_on_input_grid(src, out, labels):
    """``out`` is a uint8 label volume (values in ``labels``) on the grid of the NIfTI ``src``:
    same shape, affine and zooms."""
    import nibabel as nib
    import numpy as np

    ref, pred = nib.load(src), nib.load(out)
    assert pred.shape == ref.shape and pred.get_data_dtype() == np.uint8
    np.testing.assert_allclose(pred.affine, ref.affine)
    assert pred.header.get_zooms() == ref.header.get_zooms()
    assert set(np.unique(np.asarray(pred.dataobj))) <= set(labels)


#: The start of a script that must run as TF Serving would, with no project Python: it makes
#: ``keras_liver`` unimportable (and checks it is), then imports NumPy and TensorFlow.
WITHOUT_PROJECT = r"""
import importlib.abc, json, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "keras_liver" or name.startswith("keras_liver."):
            raise ImportError("keras_liver is not importable here")
sys.meta_path.insert(0, _Block())
sys.path = [p for p in sys.path if p not in ("", ".")]
import numpy as np, tensorflow as tf
try:
    import keras_liver
    raise SystemExit("keras_liver should not be importable")
except ImportError:
    pass
"""

#: Loads a SavedModel with keras_liver made unimportable, as TF Serving would (no project
#: Python): prints the signature's inputs/outputs and the outputs for a saved input.
NO_PROJECT_LOADER = WITHOUT_PROJECT + r"""
model_dir, x_path, out_path = sys.argv[1:4]
fn = tf.saved_model.load(model_dir).signatures["serving_default"]
x = np.load(x_path)
out = fn(image=tf.constant(x))
np.savez(out_path, **{k: v.numpy() for k, v in out.items()})
print(json.dumps({"inputs": sorted(fn.structured_input_signature[1]),
                  "outputs": sorted(fn.structured_outputs)}))
"""


def load_without_project(model_dir, x, tmp_path):
    """Run ``NO_PROJECT_LOADER`` in a fresh interpreter outside the repository."""
    import json

    import numpy as np

    x_path, out_path = str(tmp_path / "x.npy"), str(tmp_path / "out.npz")
    np.save(x_path, x)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", NO_PROJECT_LOADER, model_dir, x_path, out_path],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sig = json.loads(proc.stdout.strip().splitlines()[-1])
    return sig, dict(np.load(out_path))
