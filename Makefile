# labelloop — every target creates or reuses .venv/ at the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,serving,trainer,postgres
# Wheels kept outside the repo (torch is ~3 GB): pip takes them from here before the index.
WHEELS ?= $(HOME)/.cache/labelloop/wheels
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install run check test browser lint typecheck unit integration bench stop status clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@mkdir -p $(WHEELS)
	$(BIN)/python -m pip download --quiet --dest $(WHEELS) --find-links $(WHEELS) \
		"ultralytics>=8.3" "onnx>=1.16" "onnxruntime>=1.19" onnxslim
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

## make run: start the local stack and run the end-to-end job on bundled sample data
## (the demo is a development tool: tools/labelloop_tools, outside the installed package).
run: install
	$(BIN)/labelloop stack up --triton
	LABELLOOP_WEBHOOK_ALLOWLIST=127.0.0.0/8 $(BIN)/labelloop serve --detach
	$(BIN)/python -m labelloop_tools demo

## make check: the fast lane (lint, types, unit tests; no servers), under two minutes.
check: install lint typecheck
	$(BIN)/pytest -q tests/unit

## make test: the fast lane first, then every other test on the real stack (SQLite), then the
## integration suite once more against a PostgreSQL server it starts (Debian's postgresql
## binaries; the Label Studio and browser tests only once, on SQLite; the trainer cluster's only
## there, its queue shared through PostgreSQL), then the
## object-store tests (marker object_store) once more on versitygw.
test: check browser
	$(BIN)/pytest --ignore=tests/unit -m "not trainer_cluster"
	LABELLOOP_TEST_DATABASE=postgresql $(BIN)/pytest tests/integration -m "not label_studio and not browser"
	LABELLOOP_STACK_S3=versitygw $(BIN)/pytest tests/integration -m object_store

## make browser: Debian's chromium and chromium-driver, for the dashboard's browser test
## (browsers a tool downloads by itself cannot be had here).
browser:
	@test -x /usr/bin/chromedriver || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		chromium chromium-driver >/dev/null || (apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy labelloop schemas services tools tests

unit: install
	$(BIN)/pytest tests/unit

## make bench: measured figures, merged into var/bench.json.
bench: install
	$(BIN)/labelloop stack up --triton
	LABELLOOP_WEBHOOK_ALLOWLIST=127.0.0.0/8 $(BIN)/labelloop serve --detach
	$(BIN)/python -m labelloop_tools bench --out var/bench.json

stop: install
	$(BIN)/labelloop stack down

status: install
	$(BIN)/labelloop stack status

clean: stop
	rm -rf var
