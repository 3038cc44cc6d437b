# The README's commands. Everything installs into .venv from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on this machine's disk; a GPU user overrides it (make install TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install browser test demo bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(MAKE) browser
	touch $@

# Debian's Chromium for the browser tests of /ui (Playwright's client drives it; Playwright's own
# browser download is never used). Without it those tests skip locally and fail under CI=true.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium is not installed: the /ui browser tests will skip (and fail under CI=true)"

test: install
	$(VENV)/bin/ruff check --select F,E9 .
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/rnnhpo run examples/iris-table3.yaml

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
