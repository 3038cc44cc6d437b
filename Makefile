# The README's commands. Everything installs into .venv from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on this machine's disk; a GPU user overrides it (make install TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install
	$(VENV)/bin/ruff check --select F,E9 .
	$(PY) -m pytest $(PYTEST_ARGS)

# Table 3 on Iris with the paper's protocol at demo size (5 seeds x 2 splits, 100 epochs);
# `rnnhpo reproduce table3 --dataset iris` runs the full 10 seeds x 5 splits x 300 epochs.
demo: install
	$(VENV)/bin/rnnhpo reproduce table3 --dataset iris --quick

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
