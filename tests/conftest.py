import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Small phantom grid used by the integration tests (the model sees 64x64 slices).
TINY_SHAPE = (96, 96, 20)


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


def run_python(code: str, *, env_extra=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for TF device set-up, or to prove an artifact loads
    without this project)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or REPO)
