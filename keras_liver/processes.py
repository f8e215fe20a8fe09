"""Work spread over fresh processes: how many CPU cores this process may use, and a ``spawn``
process pool that runs a list of jobs, cancels what is left at the first failure, and reports
each job as it finishes.

Used by the phantom writer (:func:`keras_liver.data.phantom.write_dataset`: one case per job)
and the experiments' parallel trainings (:func:`keras_liver.experiments.common.run_training_jobs`:
one run per job). ``spawn`` because the caller may already hold TensorFlow's thread pools, which
a forked child would inherit in an undefined state; a spawned child is a fresh interpreter.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Sequence

#: Thread-count variables of the BLAS/OpenMP libraries NumPy and SciPy may use.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (Linux;
    a container's or ``taskset``'s limit), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def single_threaded_blas():
    """Set the BLAS/OpenMP thread counts (:data:`THREAD_VARS`) to 1 in ``os.environ`` while
    worker processes are spawned (they read them at start), then restore them."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: "1" for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_spawned(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int,
                on_done: Callable[[int, Any], None] | None = None,
                describe: Callable[[int], str] | None = None,
                blas_threads_one: bool = False) -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed in at most ``workers`` spawned processes.

    ``fn`` and the jobs' arguments must be picklable (``fn`` a module-level function).
    ``on_done(i, result)`` is called in this process as each job finishes (for progress).
    The first job to fail cancels those not yet started and raises: its own exception, or,
    with ``describe``, ``RuntimeError(f"{describe(i)} failed: {error}")`` chained to it.
    ``blas_threads_one`` starts the workers with one BLAS/OpenMP thread each
    (:func:`single_threaded_blas`), for NumPy/SciPy work that one process per core already
    parallelises.
    """
    import concurrent.futures
    import multiprocessing

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, received {workers}")
    results: list[Any] = [None] * len(jobs)
    if not jobs:
        return results
    context = multiprocessing.get_context("spawn")
    threads = single_threaded_blas() if blas_threads_one else contextlib.nullcontext()
    with concurrent.futures.ProcessPoolExecutor(min(int(workers), len(jobs)),
                                                mp_context=context) as pool, threads:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as err:
                    if describe is None:
                        raise
                    raise RuntimeError(f"{describe(i)} failed: {err}") from err
                if on_done is not None:
                    on_done(i, results[i])
        except BaseException:
            for future in futures:   # the first error ends the run
                future.cancel()
            raise
    return results
