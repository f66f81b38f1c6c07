# avtoolkit: the two commands of a fresh clone are `make demo` and `make test`; both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := $(abspath requirements/constraints.txt)
STAMP := $(VENV)/.installed
BACKBONE := data/weights/resnet18_synth_64.pt
# Every pip install (ours, and a user's inside the venv via .venv/pip.conf) honours the pins.
export PIP_CONSTRAINT := $(CONSTRAINTS)
# No code path of ours downloads models; this stops libraries from trying (laion-clap, transformers).
export HF_HUB_OFFLINE := 1

.PHONY: demo test install system-deps lint docs benchmarks clean

demo: install system-deps ## Synthetic MUSIC data, the pre-trained backbone, train + test Sound of Pixels, a report
	$(BIN)/avtoolkit data synth music data/synthetic/music --size small --holdout true
	$(MAKE) --no-print-directory $(BACKBONE)
	$(BIN)/avtoolkit fit --config configs/experiment/quickstart_sop.yaml
	$(BIN)/avtoolkit test --config configs/experiment/quickstart_sop.yaml \
		--ckpt_path runs/quickstart_sop/checkpoints/best.ckpt
# `avtoolkit test` ends with the line "Report: <absolute path of runs/quickstart_sop/report/report.md>".

# The ResNet-18 every quick start starts from (the stand-in for ImageNet weights), never trained on the held-out
# picture family of the quick starts' data; made once.
$(BACKBONE):
	$(BIN)/avtoolkit pretrain backbone $@ --held_out_pictures openclipart

test: install system-deps ## Run the test suite (fast tests; `make test PYTEST_ARGS="-m slow"` for the long ones)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP) ## Create .venv with the pinned dependencies

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "avtoolkit needs Python >= 3.11; found: $$($(PYTHON) --version 2>&1). Run e.g. make PYTHON=python3.11 ..."; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
		echo "The Python venv module is missing: install it (Debian: apt-get install python3-venv)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	printf '[install]\nconstraint = %s\n' "$(CONSTRAINTS)" > $(VENV)/pip.conf
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $@

system-deps: ## Install the Debian packages the synthetic data needs (when root), or say what to install
	@scripts/system-deps.sh

lint: install ## ruff + mypy on the sources
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

docs: install ## Build the documentation site into site/ (strict: a broken link or reference fails)
	$(BIN)/mkdocs build --strict

benchmarks: install system-deps ## Speed and quality targets (each script exits non-zero on a miss)
	@status=0; for script in bss_eval_speed sep_pipeline sep_quality seg_quality; do \
		echo "== benchmarks/$$script.py"; $(BIN)/python benchmarks/$$script.py || status=1; \
	done; exit $$status  # all run (sep_quality ≈ 45 min, seg_quality ≈ 30 min on 2 CPU cores); fails if any missed a target

clean: ## Remove generated data, runs and reports (keeps .venv)
	rm -rf data/synthetic runs reports lightning_logs
