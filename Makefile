# Every target bootstraps .venv from nothing (only python3 needed), then runs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
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
	rm -rf data/real data/descriptions data/synthetic models metrics reports mlflow.db mlartifacts
