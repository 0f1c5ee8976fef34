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

.PHONY: run test screenshot install index chromium bench reader lint clean

run: install index
	$(BIN)/qa serve

# In a network namespace of its own with loopback alone (tests/netns.py): no server a test starts is reachable from elsewhere.
test: install chromium
	$(BIN)/python -m tests.netns $(BIN)/pytest -q

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

# qa/models/reader-int8.onnx from SQuAD v1.1 train, then ranker.json fit with it on squad-tune (../shared/data):
# the pairs, the training run in the parts it ran in (run1 in three, then four continuations on other questions and
# two second passes, each from the last one's checkpoint), the ranker (qa/models/reader.md). About 8.5 hours on 2 CPU
# cores.
READER_WORK ?= /tmp/qa-reader
PAIRS := $(READER_WORK)/pairs.jsonl.gz
TRAIN_READER := $(BIN)/python bench/train_reader.py $(PAIRS)
RUN1 := $(TRAIN_READER) --out $(READER_WORK)/run1 --questions 18000
MORE := --lr 3e-5 --span-weight 0.5
PASS2 := --lr 2e-5 --span-weight 0.5
reader: install
	[ -f $(PAIRS) ] || $(BIN)/python bench/reader_pairs.py $(PAIRS)
	[ -f $(READER_WORK)/run1/reader.json ] || ( $(RUN1) --stop-after 200 && $(RUN1) --max-steps 2200 --stop-after 400 \
		&& $(RUN1) --max-steps 2200 --span-weight 0.3 )
	[ -f $(READER_WORK)/run2/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run2 --init $(READER_WORK)/run1/work \
		--skip-questions 18000 --questions 9000 --unanswerable 0.6 --max-steps 1200 $(MORE)
	[ -f $(READER_WORK)/run3/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run3 --init $(READER_WORK)/run2/work \
		--skip-questions 27000 --questions 12000 --unanswerable 0.5 --max-steps 1500 $(MORE)
	[ -f $(READER_WORK)/run4/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run4 --init $(READER_WORK)/run3/work \
		--skip-questions 39000 --questions 20000 --unanswerable 0.5 --max-steps 2500 $(MORE)
	[ -f $(READER_WORK)/run5/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run5 --init $(READER_WORK)/run4/work \
		--skip-questions 59000 --questions 20000 --unanswerable 0.8 --max-steps 2500 $(MORE)
	[ -f $(READER_WORK)/run6/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run6 --init $(READER_WORK)/run5/work \
		--seed 14 --questions 20000 --unanswerable 0.8 --max-steps 2400 $(PASS2)
	[ -f $(READER_WORK)/run7/reader.json ] || $(TRAIN_READER) --out $(READER_WORK)/run7 --init $(READER_WORK)/run6/work \
		--seed 15 --questions 20000 --unanswerable 0.8 --role-swaps $(PASS2)
	cp $(READER_WORK)/run7/reader-int8.onnx $(READER_WORK)/run7/reader.json qa/models/
	cd qa/models && sha256sum reader-int8.onnx > reader-int8.onnx.sha256
	$(BIN)/qa train --squad ../shared/data/squad-tune/squad-v1.1-dev-tune.json.gz --folds 5 \
		--work $(READER_WORK)/squad --verifier qa/models/reader-int8.onnx --one-article --verify-margin 4 \
		--calibration top,margin,verifier_top,verifier_max,cosine,best_cosine,topic_gap --abstain-quantile 0.035 \
		--out qa/models/ranker.json
	cd qa/models && sha256sum ranker.json > ranker.json.sha256

lint: install
	$(BIN)/ruff check qa ui tests bench
	$(BIN)/ruff format --check qa ui tests bench
	$(BIN)/mypy qa ui

clean:
	rm -rf $(VENV) index/v-* index/CURRENT index/index.lock index/.tmp-*
