# segdistill: two commands from a fresh clone -> `make run`, `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: run test install dry-run lint report clean bench

$(BIN)/.installed: requirements/stack.txt requirements/dev.txt requirements/paddle-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/paddle-nodeps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default
	@$(BIN)/python -m segdistill.report.show results/report/summary.md

dry-run: install
	$(BIN)/snakemake -n --cores $(CORES) --resources gpu=4

test: install
	$(BIN)/python -m pytest -ra

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check workflow

report: install
	$(BIN)/snakemake --report results/report/report.html

bench: install
	$(BIN)/python bench/distill_step.py

clean:
	rm -rf results logs benchmarks .snakemake
