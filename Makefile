# Two commands a newcomer needs:  `make demo`  and  `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUNS    ?= runs/demo
SPLIT   ?= forget_10

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# world -> base -> vanilla -> evaluation (each stage is skipped when its output already exists)
demo: $(STAMP)
	$(BIN)/asru demo --out $(RUNS) --forget-split $(SPLIT)

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest tests

clean:
	rm -rf runs artifacts
