# Sluice: `make run` serves the embedded default, `make test` runs the whole suite against real
# PostgreSQL and Redis (installing/starting them when absent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev airflow-venv services lint typecheck bench migrate clean

# The Airflow provider's own virtualenv: Airflow pins its own FastAPI and SQLAlchemy, so it never
# shares Sluice's. The pinned set (constraints.txt) resolves on Python 3.11.
AIRFLOW_DIR := contrib/airflow
AIRFLOW_VENV := $(AIRFLOW_DIR)/.venv
AIRFLOW_VERSION := 3.3.2

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(AIRFLOW_VENV)/.installed: $(AIRFLOW_DIR)/pyproject.toml $(AIRFLOW_DIR)/constraints.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet -c $(AIRFLOW_DIR)/constraints.txt \
		"apache-airflow==$(AIRFLOW_VERSION)" pytest "mypy>=1.11" -e $(AIRFLOW_DIR)
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

airflow-venv: $(AIRFLOW_VENV)/.installed

migrate: install
	@mkdir -p var
	$(BIN)/python -m app migrate

run: migrate
	@key=$$($(BIN)/python -m app dev-key) && \
	echo "" && \
	echo "  Sluice:      http://$(HOST):$(PORT)" && \
	echo "  API docs:    http://$(HOST):$(PORT)/docs" && \
	echo "  Web admin:   http://$(HOST):$(PORT)/admin  (password: the API key)" && \
	echo "  Dev API key: $$key" && \
	echo "" && \
	echo "  try: curl -H 'X-API-Key: $$key' -H 'X-Client-ID: demo' -H 'X-Language-ID: en' http://$(HOST):$(PORT)/v1/products" && \
	echo ""
	PUBLIC_URL=http://$(HOST):$(PORT) LOG_FORMAT=$${LOG_FORMAT:-text} \
		$(BIN)/uvicorn app.main:create_app --factory --host $(HOST) --port $(PORT) --no-access-log

services:
	@bash scripts/ensure-services.sh

lint: install-dev
	$(BIN)/ruff check app tests bench alembic $(AIRFLOW_DIR)
	$(BIN)/ruff format --check app tests bench alembic $(AIRFLOW_DIR)

# Sluice, then the Airflow provider against Airflow's own types, in its virtualenv.
typecheck: install-dev airflow-venv
	$(BIN)/mypy
	cd $(AIRFLOW_DIR) && .venv/bin/mypy

test: install-dev airflow-venv services lint typecheck
	$(BIN)/pytest -q

bench: install services
	$(BIN)/python -m bench.gateway

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) var .pytest_cache .mypy_cache .ruff_cache
