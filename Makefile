# vaelab: `make install` once, then `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU wheel of torch first; every later pip call keeps it (no multi-GB CUDA build).
TORCH_PIN := torch==2.13.0

.PHONY: install test bench demo clean

install:
	$(PIP) install $(TORCH_PIN)
	$(PIP) install -c constraints.txt -e '.[test,sweeps]'

test:
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) benchmarks/run.py

demo:
	WANDB_MODE=offline vaelab train experiment=quick

clean:
	rm -rf build dist *.egg-info .pytest_cache
