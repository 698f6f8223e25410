# Two commands a newcomer needs:  `make demo`  and  `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUNS    ?= runs/demo
SPLIT   ?= forget_10

.PHONY: demo test test-fast rebuild setup clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# world -> shipped base, vanilla and oracle -> evaluation -> ASRU vs GA-Diff vs NPO -> report (finished stages are reused)
demo: $(STAMP)
	$(BIN)/asru demo --out $(RUNS) --forget-split $(SPLIT)

# train every shipped model from scratch (~90 min on 2 cores), then compare it figure by figure with the shipped ones
rebuild: demo
	$(BIN)/asru demo --rebuild --out runs/rebuild --forget-split $(SPLIT) --compare ""
	$(BIN)/python benchmarks/testbed_check.py --rebuild runs/rebuild --shipped $(RUNS) --forget-split $(SPLIT)

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest tests

# the edit-test loop: unit tests only (no trained micro models, no end-to-end or multi-process runs)
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not micro and not e2e"

clean:
	rm -rf runs artifacts
