"""keras_liver.processes: the core count and the spawn pool the phantom writer and the
experiments' parallel trainings share."""
import operator
import os

import pytest

from keras_liver import processes


def test_available_cores_reads_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert processes.available_cores() == 3
    monkeypatch.delattr(processes.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(processes.os, "cpu_count", lambda: None)
    assert processes.available_cores() == 1


def test_single_threaded_blas_sets_and_restores_the_thread_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with processes.single_threaded_blas():
        assert [os.environ[k] for k in processes.THREAD_VARS] == ["1", "1", "1"]
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert "MKL_NUM_THREADS" not in os.environ


def test_run_spawned_returns_results_in_job_order_and_reports_each():
    done = []
    out = processes.run_spawned(operator.truediv, [(6, 3), (1, 2), (9, 3)], workers=2,
                                on_done=lambda i, r: done.append((i, r)))
    assert out == [2.0, 0.5, 3.0]
    assert sorted(done) == [(0, 2.0), (1, 0.5), (2, 3.0)]
    assert processes.run_spawned(operator.truediv, [], workers=2) == []


def test_run_spawned_raises_the_first_failure_named_or_as_it_is():
    with pytest.raises(ZeroDivisionError):
        processes.run_spawned(operator.truediv, [(1, 0)], workers=1)
    with pytest.raises(RuntimeError, match="job b failed: division by zero") as info:
        processes.run_spawned(operator.truediv, [(1, 1), (1, 0)], workers=2,
                              describe=lambda i: f"job {'ab'[i]}")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        processes.run_spawned(operator.truediv, [(1, 1)], workers=0)


def test_parallel_training_jobs_name_the_run_that_failed(tmp_path):
    """run_training_jobs(jobs=2) through the spawn pool: exporting a run directory that holds
    no model fails, and the error names that run."""
    from keras_liver.experiments import common

    ok = common.TrainingJob("run a", {}, "data", str(tmp_path / "a"), train=False)
    bad = common.TrainingJob("run b", {}, "data", str(tmp_path / "b"), train=False, export=True)
    with pytest.raises(RuntimeError, match=r"exporting the run b in .*b failed"):
        common.run_training_jobs([ok, bad], jobs=2)
