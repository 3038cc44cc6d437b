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

demo: install
	$(VENV)/bin/rnnhpo run examples/iris-table3.yaml

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
