# The two commands a newcomer runs (see README.md):
#   make demo   -- installs into .venv, then runs the RA V-Net experiment end to end on the phantom
#   make test   -- installs into .venv, then runs the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# Real anatomy fixture (SPEC §8): a LiTS-117 crop shipped in a PyPI package; its own
	# dependencies (torch, ...) are not needed to read the data files.
	$(PY) -m pip install --quiet --no-deps liver-ct-segmentation-package==1.6.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m keras_liver.experiments.ra_vnet $(ARGS)

# Three pytest-xdist workers on the CI machine's 2 cores: many tests leave a core idle part of
# the time (subprocesses, file I/O, single-threaded tracing), and the third worker fills it
# (measured on a 2-core AMD EPYC: 1731 s with two workers, 1260 s with three). tests/conftest.py
# groups the tests of each trained tiny experiment onto one worker and puts the costliest
# groups first in the collection, which --no-loadscope-reorder hands out in that order.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadgroup --no-loadscope-reorder $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
