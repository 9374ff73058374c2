# Every target bootstraps .venv from nothing (only python3 needed), then runs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The tests and the micro pipeline never reach the Hugging Face hub; demo and dvc repro may (a hub id as base).
test test-all smoke: export HF_HUB_OFFLINE := 1
test test-all smoke: export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1
export OMP_WAIT_POLICY := PASSIVE
export NO_ALBUMENTATIONS_UPDATE := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: install lint test test-all demo smoke bench ui clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-all: lint
	$(BIN)/python -m pytest -m "not gpu" -q

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	$(BIN)/python -m pipelines.show_results

smoke: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pipelines.smoke

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

clean:
	rm -rf data/real data/public data/descriptions data/synthetic models metrics reports mlflow.db mlartifacts

# ------------------------------------------------------------------ GPU check (benchmarks/gpu_check.py)
# bench-gpu runs where there is no .venv too (the lent GPU machine: plain python3, no registry, no pip install),
# so it has no $(STAMP) prerequisite; on a machine without CUDA it refuses with one line (exit status 2).
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
.PHONY: bench-gpu bench-gpu-rehearse gpu-wheels

bench-gpu:
	@$(GPU_PY) -m benchmarks.gpu_check $(ARGS)

# The same check on the CPU at tiny sizes, in an environment holding only the lent machine's packages plus the
# carried wheels (benchmarks/lent_env.py); writes $${TMPDIR:-/tmp}/skindualgen-bench-gpu-rehearsal.md, never RESULTS.md.
bench-gpu-rehearse: $(STAMP)
	@ls .whl/*.whl >/dev/null 2>&1 || $(MAKE) --no-print-directory gpu-wheels
	$(BIN)/python -m benchmarks.lent_env -- python3 -m benchmarks.gpu_check --rehearse $(ARGS)

# Wheels the lent machine lacks (diffusers, importlib-metadata; peft at the tested version) into .whl/ (git-ignored).
gpu-wheels: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_wheels
