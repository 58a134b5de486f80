# Two entry points for a fresh machine (python3.11 + pip, no virtualenv):
#   make demo   set up .venv and compile the bundled digits model for loihi2-sim
#   make test   set up .venv and run the test suite
# Both are idempotent: the environment is rebuilt only when constraints.txt or
# pyproject.toml change.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test setup bench clean

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	# torch==2.13.0 resolves to the local CPU wheel (pip find-links); the
	# constraints keep every other package on numpy 1.x.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,snntorch,nir,spikingjelly]"
	# lava-nc/lava-dl metadata refuses Python 3.11 and pins torch<2.4; both
	# are pure Python and run here with inflor_deploy.lava_compat's shims.
	# spikingjelly's metadata pulls torchvision/torchaudio builds for other
	# torch versions; its activation_based package needs only loguru (the
	# [spikingjelly] extra above).
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python \
		lava-nc==0.10.0 lava-dl==0.6.0 spikingjelly==2.0.0
	$(BIN)/python -m inflor_deploy.lava_compat --check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/inflor-deploy demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
