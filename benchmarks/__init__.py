"""Benchmarks of keras-liver: how close to the machine's limit we train, feed and predict.

Each module runs as ``python -m benchmarks.NAME`` and prints a Markdown table
(``docs/benchmarks.md`` holds the measured figures and the exact commands):

- :mod:`benchmarks.train_step` — FLOPs per train step (TensorFlow's profiler), steps/s,
  achieved FLOP/s and MFU against a large Conv2D/Conv3D measured in the same run, for every
  model of every experiment at its demo and its published input size;
- :mod:`benchmarks.input_pipeline` — slices/s of the tf.data training pipeline against a bare
  NumPy + OpenCV loop doing the same per-slice work;
- :mod:`benchmarks.predict` — end-to-end ``Predictor.predict`` on a 512x512x100 phantom volume
  against the pure model forward time on the same slices.

Shared pieces (timing, machine description, tables, the peak convolution) live in
:mod:`benchmarks._common`. Every module has ``--quick`` (small sizes, about a minute; the smoke
test in ``tests/test_benchmarks.py`` runs it) and a ``main(argv) -> dict`` entry point that
returns the printed rows, so tests call it in-process.
"""
