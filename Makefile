# cpinspect — every target creates or refreshes .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' || { echo "cpinspect needs Python 3.9 or newer as '$(PYTHON)'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create or refresh .venv with cpinspect and its dev tools

system-deps: ## Install system tools the tests need (gdb, memcached) when running as root
	@bash scripts/system-deps.sh

demo: $(STAMP) ## Start the demo CherryPy app with a staged incident and open the inspector on it
	$(BIN)/cpinspect demo

# Three test files at once: most tests wait on real processes, not on a core. A file stays on
# one worker (--dist loadfile), so its module-scoped targets are started once.
TEST_JOBS ?= 3

test: $(STAMP) system-deps ## Run the whole test suite (TEST_JOBS=0: in one process)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy (strict) and the import contracts
	$(BIN)/ruff check cpinspect tests bench
	$(BIN)/ruff format --check cpinspect tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix cpinspect tests bench
	$(BIN)/ruff format cpinspect tests bench

screenshots: $(STAMP) ## Regenerate screenshots/*.svg from the real TUI on the demo
	$(BIN)/python scripts/screenshots.py screenshots

bench: $(STAMP) ## Run the benchmarks in bench/ (prints ratios; record them in BENCHMARKS.md)
	$(BIN)/python bench/agent_overhead.py
	$(BIN)/python bench/saturated_latency.py
	$(BIN)/python bench/snapshot_latency.py
	$(BIN)/python bench/gil_hog.py
	$(BIN)/python bench/inject_soak.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/attach_time.py
	$(BIN)/python bench/give_up_times.py
	$(BIN)/python bench/routes_scale.py
	$(BIN)/python bench/snapshot_capture.py
	$(BIN)/python bench/sessions_scale.py
	$(BIN)/python bench/log_burst.py
	$(BIN)/python bench/log_follow.py
	$(BIN)/python bench/threads_delta.py
	$(BIN)/python bench/scale.py

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

.PHONY: help venv system-deps demo test lint format screenshots bench clean
