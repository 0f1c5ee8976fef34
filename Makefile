# Two commands: `make run` (set up, build the index if needed, open the web chat)
# and `make test` (set up, then the whole suite, browser tests included).
# Both are idempotent: set-up is skipped when nothing changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test screenshot install index chromium bench lint clean

run: install index
	$(BIN)/qa serve

test: install chromium
	$(BIN)/pytest -q

# docs/screenshot.png and docs/screenshot-abstained.png are tracked: only this target rewrites them (the browser test reads QA_SCREENSHOT).
screenshot: install chromium
	QA_SCREENSHOT=1 $(BIN)/pytest -q tests/test_browser.py -k "highlighted or off_topic"

install: $(STAMP)

# torch first, pinned to the local CPU build: any other torch spec pulls CUDA.
$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,cluster]"
	touch $(STAMP)

index: install
	$(BIN)/qa index build

chromium:
	@command -v chromium >/dev/null || ( $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium )

bench: install
	$(BIN)/python bench/latency.py

lint: install
	$(BIN)/ruff check qa ui tests bench
	$(BIN)/ruff format --check qa ui tests bench
	$(BIN)/mypy qa ui

clean:
	rm -rf $(VENV) index/v-* index/CURRENT index/index.lock index/.tmp-*
