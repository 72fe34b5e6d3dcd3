# segdistill: two commands from a fresh clone -> `make run`, `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
# GPU=<CUDA tag of Paddle's package index> (cu118, cu126, ...): `make install GPU=cu126` swaps CPU Paddle for the
# same version's paddlepaddle-gpu build from Paddle's own index (PyPI has no Paddle 3.x GPU wheels).
GPU    ?=
PADDLE_INDEX   := https://www.paddlepaddle.org.cn/packages/stable
PADDLE_VERSION := $(shell sed -n 's/^paddlepaddle==//p' requirements/stack.txt)

.PHONY: run test install dry-run lint report clean bench gpu-check

# uv installs the pinned stack from its cache in seconds where pip takes most of a minute (docs/benchmark.md);
# pip installs it and stays in the venv (the GPU swap below uses it). Not in requirements/: it installs the stack,
# it is not part of it (segdistill doctor checks the stack's pins in conda environments too).
# --compile-bytecode: pip writes every module's .pyc at install, uv only when asked. Without them each job compiles
# paddle's and paddleseg's ~1,700 modules from source at import, and again in every job where PYTHONDONTWRITEBYTECODE
# is set (container images): 5.3 s to import the trainer against 2.0 s (docs/benchmark.md).
UV_VERSION := 0.13.9
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

$(BIN)/.installed: Makefile requirements/stack.txt requirements/dev.txt requirements/paddle-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(UV) -r requirements/dev.txt
	$(UV) --no-deps -r requirements/paddle-nodeps.txt
	$(UV) --no-deps -e .
	touch $@

install: $(BIN)/.installed
ifneq ($(GPU),)
ifeq ($(filter cu%,$(GPU)),)
$(error GPU=$(GPU): expected a CUDA tag of Paddle's index such as cu118 or cu126)
endif
install: $(BIN)/.gpu-$(GPU)
endif

# Not a pattern rule: one GPU build per venv, whichever tag was asked for last.
$(BIN)/.gpu-$(GPU): $(BIN)/.installed
	$(BIN)/pip uninstall --yes paddlepaddle paddlepaddle-gpu
	$(BIN)/pip install paddlepaddle-gpu==$(PADDLE_VERSION) --index-url $(PADDLE_INDEX)/$(GPU)/
	rm -f $(BIN)/.gpu-*
	$(BIN)/segdistill doctor
	touch $@

run: install
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default
	@$(BIN)/python -m segdistill.report.show results/report/summary.md

dry-run: install
	$(BIN)/snakemake -n --cores $(CORES) --resources gpu=4

test: install
	$(BIN)/python -m pytest -ra

lint: install
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check workflow

report: install
	$(BIN)/snakemake --report results/report/report.html

# Tiny trainings per precision/level (train, eval, resume) and a 2-GPU distillation: what works on this box.
gpu-check: install
	$(BIN)/segdistill doctor --train

bench: install
	$(BIN)/python bench/distill_step.py

clean:
	rm -rf results logs benchmarks .snakemake
