# The two quickstart commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[collector,embedded,web,test,bench]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/python -m etcdcron.demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# All benchmarks: firing lag against APScheduler (docs/benchmarks.md), failover gap and scale (docs/scale.md).
bench: $(BIN)/.installed
	$(BIN)/python bench/firing_lag.py --rates 100,1000,2000
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
