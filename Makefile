# vaelab: `make install` once, then `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch first, from TORCH_INDEX when given; every later pip call keeps it (constraints.txt).
TORCH_PIN := torch==2.13.0
# Empty: pip's own index settings (as configured on this machine). Elsewhere:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu     (the CPU build)
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu128   (a CUDA build)
TORCH_INDEX ?=

.PHONY: install test bench demo clean

install:
	$(PIP) install $(TORCH_PIN) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -c constraints.txt -e '.[test,sweeps]'

# One pytest-xdist worker per core, each on its own cores; a module is one unit of work
# (its fixtures run once), in collection order (tests/conftest.py puts the slow ones first).
test:
	$(PYTHON) -m pytest -q -n auto --dist loadscope --no-loadscope-reorder

bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

demo:
	WANDB_MODE=offline vaelab train experiment=quick

clean:
	rm -rf build dist *.egg-info .pytest_cache
