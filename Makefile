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

# Two pytest-xdist workers (the CI machine has 2 cores); tests/conftest.py groups the tests of
# each trained tiny experiment onto one worker.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
