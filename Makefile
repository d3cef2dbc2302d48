# zoo: `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))

.PHONY: setup demo test test-slow lint bench clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first: the CPU build this machine keeps on disk, else any release in the project's range
	$(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q "torch>=2.6,<3"
	$(BIN)/python -m pip install -q -e ".[dev,serve,plot,bpe,images,onnx,tensorboard,datasets,mlflow,wandb,completion]" $(foreach p,$(PLUGINS),-e $(p))
	$(BIN)/python -m pip install -q -e "plugins/zoo-hf[lora]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/zoo train --model minigpt-rope-small --trainer lm-demo --out runs/demo --force
	$(BIN)/zoo plot runs/demo
	$(BIN)/zoo generate runs/demo --prompt "The function" --sampler creative --max-new-tokens 110

lint: setup
	$(BIN)/ruff check zoo plugins tests bench scripts
	$(BIN)/ruff format --check zoo plugins tests bench scripts
	$(BIN)/mypy

# a worker per core and one more (many tests wait on processes they started: 3 workers on 2 cores
# took 3 min 14 s, 2 took 3 min 53 s, 4 took 3 min 27 s); tests/conftest.py says which tests share
# a worker and puts the slow first
WORKERS := $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest -n $(WORKERS) --dist loadgroup

# the slow tests too (more signals and kills at random moments), and the fuzzers' full number of cases
test-slow: setup
	ZOO_THOROUGH=1 HF_HUB_OFFLINE=1 $(BIN)/pytest -n $(WORKERS) --dist loadgroup -m "slow or not slow"

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py
	$(BIN)/python bench/report.py  # the README tables from the new results

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
